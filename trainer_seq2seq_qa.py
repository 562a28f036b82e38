"""Trainer subclasses for generative question answering (T5, BART): the evaluation and prediction of trainer_qa's
QuestionAnsweringTrainer (post-processing into answers, SQuAD metrics, `eval_` / `test_` keys), with a prediction loop
that generates the answers and decodes them batch by batch. The adapter variant saves and loads adapters instead of
the whole model.
"""
import contextlib
import inspect
from typing import List, NamedTuple

import torch
from adapters import AdapterTrainer
from torch.distributed.fsdp import FullyShardedDataParallel
from transformers import Seq2SeqTrainer
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.integrations.fsdp import is_fsdp_managed_module

from trainer_qa import QuestionAnsweringTrainer


class GeneratedAnswers(NamedTuple):
    """What a generating prediction loop hands to `post_process_function`: one decoded answer per feature (window),
    in dataset order, and its score: the mean log-probability per generated token (EOS included), which is what beam
    search ranks by with the default length_penalty=1.0; with beams it is the beam score itself."""

    texts: List[str]
    scores: List[float]


def generated_sequence_scores(model, output) -> List[float]:
    """Score of each generated sequence (see GeneratedAnswers), from `generate(..., output_scores=True,
    return_dict_in_generate=True)`."""
    if getattr(output, "sequences_scores", None) is not None:
        return output.sequences_scores.float().tolist()
    steps = model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True).float()
    generated = output.sequences[:, -steps.shape[1] :]
    eos = model.generation_config.eos_token_id
    eos = torch.tensor([eos] if isinstance(eos, int) else list(eos or []), device=generated.device)
    is_eos = torch.isin(generated, eos).long()
    # A step counts until the first EOS, that EOS included; later steps are padding of an already finished answer.
    counted = (torch.cumsum(is_eos, dim=1) - is_eos) == 0
    total = torch.where(counted, steps, torch.zeros_like(steps)).sum(dim=1)
    return (total / counted.sum(dim=1).clamp(min=1)).tolist()


class QuestionAnsweringSeq2SeqTrainer(QuestionAnsweringTrainer, Seq2SeqTrainer):
    """Generative QA (T5, BART): the extractive trainer's evaluate()/predict(), with answers generated.

    With `--predict_with_generate` each batch is generated and decoded to text right away (with its score), so
    evaluation keeps strings, not token arrays padded to the longest answer of the whole dataset; the
    post-processing function receives a `GeneratedAnswers`. Without it, the loop computes the loss only and there is
    nothing to post-process (compute_metrics is None), as in the upstream script.

    Generation settings: keyword arguments of evaluate()/predict() win, then `generation_kwargs` given at
    construction (the script passes `max_length`/`num_beams` from its flags, so evaluations during training and
    predict() use them too), then `--generation_max_length`/`--generation_num_beams`, then the model's
    generation_config.
    """

    def __init__(self, *args, eval_examples=None, post_process_function=None, generation_kwargs=None, **kwargs):
        super().__init__(*args, eval_examples=eval_examples, post_process_function=post_process_function, **kwargs)
        self.generation_kwargs = dict(generation_kwargs or {})
        self._generated = None  # list of (text, score) while a generating prediction loop runs

    def evaluate(self, eval_dataset=None, eval_examples=None, ignore_keys=None, metric_key_prefix: str = "eval",
                 **gen_kwargs):
        self._gen_kwargs = self._resolve_gen_kwargs(gen_kwargs)
        return super().evaluate(eval_dataset, eval_examples, ignore_keys, metric_key_prefix)

    def predict(self, predict_dataset, predict_examples, ignore_keys=None, metric_key_prefix: str = "test",
                **gen_kwargs):
        self._gen_kwargs = self._resolve_gen_kwargs(gen_kwargs)
        return super().predict(predict_dataset, predict_examples, ignore_keys, metric_key_prefix)

    def _resolve_gen_kwargs(self, gen_kwargs):
        resolved = {"max_length": self.args.generation_max_length, "num_beams": self.args.generation_num_beams}
        for source in (self.generation_kwargs, gen_kwargs):
            resolved.update({key: value for key, value in source.items() if value is not None})
        return {key: value for key, value in resolved.items() if value is not None}

    def _set_signature_columns_if_needed(self):
        """Keep the columns the model really takes. adapters' T5 wrapper declares forward(*args, input_ids, labels,
        **kwargs), so the Trainer would drop `attention_mask` and the model would attend to padding; the wrapped
        transformers class's forward names the real inputs."""
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            parameters = inspect.signature(self.model.forward).parameters.values()
            if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters):
                for klass in type(self.model).__mro__:
                    if klass.__module__.startswith("transformers.") and "forward" in vars(klass):
                        self._signature_columns += list(inspect.signature(klass.forward).parameters)
                        break

    def _prediction_loop(self, dataloader, description, ignore_keys, metric_key_prefix):
        self._generated = []
        try:
            output = super()._prediction_loop(dataloader, description, ignore_keys, metric_key_prefix)
            generated = self._generated
        finally:
            self._generated = None
        if generated:
            if len(generated) != output.num_samples:
                raise RuntimeError(f"Generated {len(generated)} answers for {output.num_samples} features.")
            output = output._replace(predictions=GeneratedAnswers([t for t, _ in generated], [s for _, s in generated]))
        return output

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        if not self.args.predict_with_generate or prediction_loss_only or self._generated is None:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)
        # The teacher-forced loss (None without labels), then the answers, decoded now: nothing else is accumulated.
        loss = None
        if inputs.get("labels") is not None:  # DataCollatorForSeq2Seq sets labels=None when there are none
            loss, _, _ = super().prediction_step(model, inputs, prediction_loss_only=True, ignore_keys=ignore_keys)
        texts, scores = self._generate_answers(self._prepare_inputs(inputs), gen_kwargs or self._gen_kwargs)
        self._generated.extend(self.accelerator.gather_for_metrics(list(zip(texts, scores)), use_gather_object=True))
        return loss, None, None

    def _generate_answers(self, inputs, gen_kwargs):
        # The collator derives decoder_input_ids from the labels: generation must start from scratch instead.
        generation_inputs = {
            k: v for k, v in inputs.items() if k not in ("labels", "decoder_input_ids", "decoder_attention_mask")
        }
        gen_kwargs = dict(gen_kwargs)
        gen_kwargs.setdefault("synced_gpus", is_deepspeed_zero3_enabled() or is_fsdp_managed_module(self.model))
        summon_full_params = (
            FullyShardedDataParallel.summon_full_params(self.model)
            if isinstance(self.model, FullyShardedDataParallel)
            else contextlib.nullcontext()
        )
        with summon_full_params:
            output = self.model.generate(
                **generation_inputs, **gen_kwargs, return_dict_in_generate=True, output_scores=True
            )
        # As Seq2SeqTrainer: keep generate() from re-deriving the generation config from the model config every batch.
        if self.model.generation_config._from_model_config:
            self.model.generation_config._from_model_config = False
        texts = self.processing_class.batch_decode(output.sequences, skip_special_tokens=True)
        return texts, generated_sequence_scores(self.model, output)


class QuestionAnsweringSeq2SeqAdapterTrainer(QuestionAnsweringSeq2SeqTrainer, AdapterTrainer):
    """Generative QA training only the adapter; saves the adapter (and the model's head weights) per AdapterTrainer."""
