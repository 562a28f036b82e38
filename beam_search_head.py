"""A beam-search question-answering head for the encoders that `adapters` supports (BERT, RoBERTa, DistilBERT, ...).

XLNet and XLM answer questions with a "SQuAD head": start logits over the tokens, end logits conditioned on the
hidden state of a start token, and an answer-class logit (is the question answerable?) computed from the CLS token.
At inference the head returns the `start_n_top` best starts, for each of them the `end_n_top` best ends, and the
answer-class logit; `utils_qa.postprocess_qa_predictions_with_beam_search` turns these into answers. `adapters`
cannot add adapters to XLNet or XLM, so `BeamSearchQuestionAnsweringModel` puts the same head (transformers' XLM
layers, unchanged) on top of an encoder that it can.

Saving and loading need no code of their own: after `adapters.init(model)` the model is an adapters "model with a
static head", so `save_adapter` / `save_all_adapters` (what `AdapterTrainer` calls) write the head weights next to
the adapter (`pytorch_model_head.bin`, every parameter outside the encoder), and `load_adapter` restores both.
"""
import types

from transformers import AutoModel, PreTrainedModel
from transformers.models.xlm.modeling_xlm import XLMSQuADHead

DEFAULT_N_TOP = 5  # start_n_top / end_n_top of XLNet and XLM


class BeamSearchQuestionAnsweringModel(PreTrainedModel):
    """An encoder (`AutoModel`) plus XLM's SQuAD head, stored as `qa_outputs`.

    Training takes `start_positions`, `end_positions` and, for SQuAD v2, `cls_index` and `is_impossible`; evaluation
    returns `start_top_log_probs`, `start_top_index`, `end_top_log_probs`, `end_top_index` and `cls_logits`, exactly
    like `XLMForQuestionAnswering`. `p_mask` (1.0 = this token cannot be part of an answer) masks both.
    """

    # The encoder has already checked the attention implementation in the config; the head has no attention.
    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = _supports_attention_backend = True

    def __init__(self, config, encoder=None):
        super().__init__(config)
        encoder = AutoModel.from_config(config) if encoder is None else encoder
        # The encoder sits under its usual attribute (`bert`, `roberta`, ...), so that `base_model` and adapters'
        # notion of "head" = "every parameter outside base_model_prefix" work as for BertForQuestionAnswering.
        self.base_model_prefix = encoder.base_model_prefix
        setattr(self, self.base_model_prefix, encoder)
        config.start_n_top = getattr(config, "start_n_top", DEFAULT_N_TOP)
        config.end_n_top = getattr(config, "end_n_top", DEFAULT_N_TOP)
        head_config = types.SimpleNamespace(
            hidden_size=config.hidden_size,
            layer_norm_eps=getattr(config, "layer_norm_eps", 1e-12),
            start_n_top=config.start_n_top,
            end_n_top=config.end_n_top,
        )
        self.qa_outputs = XLMSQuADHead(head_config)
        self.qa_outputs.apply(self._init_weights)  # normal(0, initializer_range) as the encoder's own heads

    @classmethod
    def from_encoder(cls, model_name_or_path, **kwargs):
        """The pretrained encoder of `model_name_or_path` with a new, randomly initialised head."""
        encoder = AutoModel.from_pretrained(model_name_or_path, **kwargs)
        return cls(encoder.config, encoder)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        start_positions=None,
        end_positions=None,
        cls_index=None,
        is_impossible=None,
        p_mask=None,
        **kwargs,
    ):
        encoder_inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:  # DistilBERT and RoBERTa tokenizers do not produce them
            encoder_inputs["token_type_ids"] = token_type_ids
        hidden_states = self.base_model(**encoder_inputs, **kwargs)[0]
        return self.qa_outputs(
            hidden_states,
            start_positions=start_positions,
            end_positions=end_positions,
            cls_index=cls_index,
            is_impossible=is_impossible,
            p_mask=p_mask,
            return_dict=True,
        )
