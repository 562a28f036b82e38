#!/usr/bin/env python
# coding=utf-8
"""Train a causal language model (GPT-2, ...) on a text file or a hub dataset, training an adapter
(`--train_adapter`) or the full model, from a pretrained model or from scratch.

    python run_clm.py --model_name_or_path gpt2 --train_file train.txt --validation_file valid.txt \
        --do_train --do_eval --output_dir /tmp/test-clm --train_adapter --adapter_config seq_bn

    # a model created on the fly (--config_overrides also works on a pretrained config here)
    python run_clm.py --model_type gpt2 --tokenizer_name gpt2 \
        --config_overrides "n_embd=1024,n_head=16,n_layer=48,n_positions=102" --train_adapter ...

The texts are tokenized, concatenated and cut into blocks of --block_size tokens; --max_train_samples and
--max_eval_samples count those blocks. Evaluation reports eval_loss, eval_accuracy (next-token, computed offline)
and perplexity. A single `.json` argument is read as a file of arguments.

main() reads as a table of contents: arguments, data, model, preprocessing, trainer, train/evaluate.
"""
import logging
import os
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Optional

import torch
import transformers
from transformers import (
    CONFIG_MAPPING,
    MODEL_FOR_CAUSAL_LM_MAPPING,
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    default_data_collator,
    is_torch_xla_available,
    set_seed,
)
from transformers.testing_utils import CaptureLogger
from transformers.utils import check_min_version
from transformers.utils.versions import require_version

import adapters
from adapters import AdapterArguments, AdapterTrainer
from script_utils import (
    UsageError,
    adapter_name,
    capped_length,
    detect_last_checkpoint,
    evaluate_and_save,
    from_pretrained_or_fail,
    parse_args,
    prepare_output_dir,
    save_model_card,
    setup_adapters,
    setup_logging,
    train_and_save,
)
from utils_lm import (
    count_rows,
    first_rows,
    apply_config_overrides,
    argmax_logits,
    check_lm_data_args,
    group_texts,
    lm_accuracy,
    lm_column_names,
    load_lm_raw_datasets,
    perplexity,
)


check_min_version("4.44.0")
require_version("datasets>=2.14.0", "To fix: pip install -r requirements.txt")

logger = logging.getLogger(__name__)

MODEL_CONFIG_CLASSES = list(MODEL_FOR_CAUSAL_LM_MAPPING.keys())
MODEL_TYPES = tuple(conf.model_type for conf in MODEL_CONFIG_CLASSES)


# ----------------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    """Arguments pertaining to which model/config/tokenizer we are going to fine-tune, or train from scratch."""

    model_name_or_path: Optional[str] = field(default=None, metadata={"help": (
        "The model checkpoint for weights initialization. Don't set if you want to train a model from scratch.")})
    model_type: Optional[str] = field(
        default=None,
        metadata={"help": "If training from scratch, pass a model type from the list: " + ", ".join(MODEL_TYPES)},
    )
    config_overrides: Optional[str] = field(default=None, metadata={"help": (
        "Override some existing default config settings, of a new config (from scratch) or of a pretrained one. "
        "Example: n_embd=10,resid_pdrop=0.2,scale_attn_weights=false,summary_type=cls_index")})
    config_name: Optional[str] = field(default=None, metadata={"help": (
        "Pretrained config name or path if not the same as model_name")})
    tokenizer_name: Optional[str] = field(default=None, metadata={"help": (
        "Pretrained tokenizer name or path if not the same as model_name")})
    cache_dir: Optional[str] = field(default=None, metadata={"help": (
        "Where do you want to store the pretrained models downloaded from huggingface.co")})
    use_fast_tokenizer: bool = field(default=True, metadata={"help": (
        "Whether to use one of the fast tokenizer (backed by the tokenizers library) or not.")})
    model_revision: str = field(default="main", metadata={"help": (
        "The specific model version to use (can be a branch name, tag name or commit id).")})
    token: str = field(default=None, metadata={"help": (
        "The token to use as HTTP bearer authorization for remote files.")})
    trust_remote_code: bool = field(default=False, metadata={"help": (
        "Allow custom models defined on the Hub in their own modeling files. Off unless asked.")})
    torch_dtype: Optional[str] = field(
        default=None,
        metadata={
            "help": "Override the default `torch.dtype` and load the model under this dtype (passed as `dtype`). "
            "If `auto` is passed, the dtype will be automatically derived from the model's weights.",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )
    low_cpu_mem_usage: bool = field(default=False, metadata={"help": (
        "Passed to from_pretrained; transformers 4.57 ignores it (loading is always memory-lean).")})


@dataclass
class DataTrainingArguments:
    """Arguments pertaining to what data we are going to input our model for training and eval."""

    dataset_name: Optional[str] = field(default=None, metadata={"help": (
        "The name of the dataset to use (via the datasets library).")})
    dataset_config_name: Optional[str] = field(default=None, metadata={"help": (
        "The configuration name of the dataset to use (via the datasets library).")})
    train_file: Optional[str] = field(default=None, metadata={"help": (
        "The input training data file (a text, csv, json or jsonl file).")})
    validation_file: Optional[str] = field(default=None, metadata={"help": (
        "An optional input evaluation data file to evaluate the perplexity on (same formats).")})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": (
        "Truncate the number of training blocks (of block_size tokens) to this value if set.")})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": (
        "Truncate the number of evaluation blocks (of block_size tokens) to this value if set.")})
    streaming: bool = field(default=False, metadata={"help": (
        "Enable streaming mode (hub datasets and local files; needs --max_steps)")})
    block_size: Optional[int] = field(default=None, metadata={"help": (
        "Optional input sequence length after tokenization. The training dataset will be truncated in block of "
        "this size for training. Default to the model max input length for single sentence inputs (take into "
        "account special tokens).")})
    overwrite_cache: bool = field(default=False, metadata={"help": "Overwrite the cached training and evaluation sets"})
    validation_split_percentage: Optional[int] = field(default=5, metadata={"help": (
        "The percentage of the train set used as validation set in case there's no validation split")})
    preprocessing_num_workers: Optional[int] = field(default=None, metadata={"help": (
        "The number of processes to use for the preprocessing.")})
    keep_linebreaks: bool = field(default=True, metadata={"help": (
        "Whether to keep line breaks when using TXT files or not.")})

    def __post_init__(self):
        check_lm_data_args(self)


# ----------------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------------


def model_name(model_args) -> str:
    """How to name the model in a message: its folder or Hub id, else how it is built from scratch."""
    return model_args.model_name_or_path or model_args.config_name or f"--model_type {model_args.model_type}"


def hub_kwargs(model_args):
    return {
        "cache_dir": model_args.cache_dir,
        "revision": model_args.model_revision,
        "token": model_args.token,
        "trust_remote_code": model_args.trust_remote_code,
    }


def load_config_and_tokenizer(model_args):
    """A pretrained config or a new one of --model_type, with --config_overrides applied to either (the upstream script
    allowed them only from scratch); the pretrained tokenizer."""
    name = model_args.config_name or model_args.model_name_or_path
    if name:
        config = from_pretrained_or_fail(AutoConfig.from_pretrained, name, "config", **hub_kwargs(model_args))
    elif model_args.model_type not in MODEL_TYPES:
        raise UsageError(
            "Training from scratch (no --model_name_or_path) needs --model_type, one of: " + ", ".join(MODEL_TYPES)
        )
    else:
        config = CONFIG_MAPPING[model_args.model_type]()
        logger.warning("You are instantiating a new config instance from scratch.")
    if model_args.config_overrides is not None:
        logger.info(f"Overriding config: {model_args.config_overrides}")
        apply_config_overrides(config, model_args.config_overrides)
        logger.info(f"New config: {config}")
    name = model_args.tokenizer_name or model_args.model_name_or_path
    if not name:
        raise UsageError(
            "You are instantiating a new tokenizer from scratch. This is not supported by this script. Train one "
            "elsewhere, save it, and pass it with --tokenizer_name."
        )
    tokenizer = from_pretrained_or_fail(
        AutoTokenizer.from_pretrained, name, "tokenizer", use_fast=model_args.use_fast_tokenizer,
        **hub_kwargs(model_args)
    )
    return config, tokenizer


def block_size_for(data_args, tokenizer, config) -> int:
    """--block_size capped at the tokenizer's maximum; by default the tokenizer's maximum, at most 1024 and at most the
    model's position embeddings."""
    if data_args.block_size is not None:
        return capped_length(data_args.block_size, tokenizer, "block_size")
    # Define a default value if the attribute is missing in the config.
    max_pos_embeddings = getattr(config, "max_position_embeddings", 1024)
    if tokenizer.model_max_length > max_pos_embeddings:
        logger.warning(
            f"The tokenizer picked seems to have a very large `model_max_length` ({tokenizer.model_max_length}). "
            f"Using block_size={min(1024, max_pos_embeddings)} instead. You can change that default value by "
            "passing --block_size xxx."
        )
        return min(1024, max_pos_embeddings) if max_pos_embeddings > 0 else 1024
    return tokenizer.model_max_length


def torch_dtype(model_args):
    """--torch_dtype as the `dtype` argument of from_pretrained/from_config ("auto"/None passed through)."""
    if model_args.torch_dtype in ("auto", None):
        return model_args.torch_dtype
    return getattr(torch, model_args.torch_dtype)


def load_model(model_args, config, tokenizer):
    if model_args.model_name_or_path:
        model = from_pretrained_or_fail(
            AutoModelForCausalLM.from_pretrained,
            model_args.model_name_or_path,
            "model",
            from_tf=bool(".ckpt" in model_args.model_name_or_path),
            config=config,
            dtype=torch_dtype(model_args),
            low_cpu_mem_usage=model_args.low_cpu_mem_usage,
            **hub_kwargs(model_args),
        )
    else:
        model = AutoModelForCausalLM.from_config(
            config, trust_remote_code=model_args.trust_remote_code,
            # "auto" means the dtype of saved weights, which a new model does not have.
            dtype=None if model_args.torch_dtype == "auto" else torch_dtype(model_args),
        )
        n_params = sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())
        logger.info(f"Training new model from scratch - Total size={n_params/2**20:.2f}M params")

    # Convert the model into an adapter model (the upstream script does this even without --train_adapter).
    adapters.init(model)

    # We resize the embeddings only when necessary to avoid index errors. If you are creating a model from scratch
    # on a small vocab and want a smaller embedding size, remove this test.
    embedding_size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > embedding_size:
        model.resize_token_embeddings(len(tokenizer))
    return model


def save_scratch_base_model(model, base_weights, model_args, training_args, adapter_args):
    """An adapter trained on a model created from scratch is useless without that (random, frozen) base model, which
    adapter checkpoints do not contain: save it (config.json + weights) next to the adapter, after every check has
    passed. base_weights: the model's state dict taken before the adapter was added."""
    if model_args.model_name_or_path or not (
        adapter_args.train_adapter and training_args.do_train and training_args.should_save
    ):
        return
    os.makedirs(training_args.output_dir, exist_ok=True)
    # transformers' own save: adapters' save_pretrained override unlinks the prefix-tuning pools, which breaks the
    # adapter training that follows. base_weights are exactly the base model's (no adapter weights).
    PreTrainedModel.save_pretrained(model, training_args.output_dir, state_dict=base_weights)
    logger.info(
        f"Saved the new base model to {training_args.output_dir} (config.json + weights): reload it with "
        "--model_name_or_path and the adapter with --load_adapter."
    )


# ----------------------------------------------------------------------------------------------------------------------
# Preprocessing
# ----------------------------------------------------------------------------------------------------------------------


def tokenize_function(examples, tokenizer, text_column_name):
    # clm input could be much much longer than block_size: the tokenizer's warning about it is followed by a notice.
    tok_logger = transformers.utils.logging.get_logger("transformers.tokenization_utils_base")
    with CaptureLogger(tok_logger) as cl:
        # None is an empty CSV cell: an empty text, as an empty line of a .txt file.
        output = tokenizer([text if text is not None else "" for text in examples[text_column_name]])
    if "Token indices sequence length is longer than the" in cl.out:
        tok_logger.warning(
            "^^^^^^^^^^^^^^^^ Please ignore the warning above - this long input will be chunked into smaller bits"
            " before being passed to the model."
        )
    return output


def build_blocks(raw_split, split, tokenizer, text_column_name, block_size, data_args, training_args):
    """Tokenize whole texts, then concatenate them (per map batch of 1,000 rows) into blocks of block_size tokens
    with labels = input_ids; the remainder of each batch is dropped."""
    column_names = lm_column_names(raw_split)
    map_kwargs = {"batched": True}
    if not data_args.streaming:  # a stream is processed lazily: no workers, no cache
        map_kwargs.update(num_proc=data_args.preprocessing_num_workers,
                          load_from_cache_file=not data_args.overwrite_cache)
    with training_args.main_process_first(desc="dataset map tokenization"):
        tokenized = raw_split.map(
            tokenize_function,
            fn_kwargs={"tokenizer": tokenizer, "text_column_name": text_column_name},
            remove_columns=column_names,
            **map_kwargs,
            **({} if data_args.streaming else {"desc": f"Running tokenizer on the {split} dataset"}),
        )
    with training_args.main_process_first(desc="grouping texts together"):
        blocks = tokenized.map(
            group_texts,
            fn_kwargs={"block_size": block_size, "add_labels": True},
            **map_kwargs,
            **({} if data_args.streaming else {"desc": f"Grouping texts in chunks of {block_size}"}),
        )
    return tokenized, blocks


def prepare_split(raw_datasets, split, tokenizer, text_column_name, block_size, data_args, training_args):
    """Blocks for one split, cut to max_{split}_samples blocks, with a log line saying what was counted."""
    flag = "--max_train_samples" if split == "train" else "--max_eval_samples"
    max_samples = data_args.max_train_samples if split == "train" else data_args.max_eval_samples
    tokenized, blocks = build_blocks(raw_datasets[split], split, tokenizer, text_column_name, block_size,
                                     data_args, training_args)
    dataset = first_rows(blocks, max_samples)
    if data_args.streaming:
        logger.info(f"{split}: streamed, so its size is unknown in advance; {flag} counts blocks of {block_size} "
                    "tokens.")
        return dataset
    n_rows, n_blocks = len(raw_datasets[split]), len(blocks)
    logger.info(
        f"{split}: {n_rows} rows of text -> {n_blocks} blocks of {block_size} tokens (texts concatenated per 1,000 "
        f"rows, remainders dropped). {flag} counts blocks, not rows or documents: using {len(dataset)} blocks."
    )
    if n_blocks == 0:
        n_tokens = sum(len(ids) for ids in tokenized["input_ids"])
        raise UsageError(
            f"The {split} split gives no block of {block_size} tokens: its {n_rows} rows have {n_tokens} tokens in "
            f"all. Use more {split} text or a smaller --block_size."
        )
    return dataset


def compute_metrics(eval_preds):
    """Next-token accuracy: preds (argmax of logits) at position t against the label at t+1."""
    preds, labels = eval_preds
    # preds have the same shape as the labels, after the argmax(-1) has been calculated
    # by preprocess_logits_for_metrics but we need to shift the labels
    labels = labels[:, 1:].reshape(-1)
    preds = preds[:, :-1].reshape(-1)
    return lm_accuracy(preds, labels)


def prepare_splits(raw_datasets, tokenizer, block_size, data_args, training_args):
    """(train blocks, evaluation blocks, number of evaluation blocks) for the stages asked for (None, 0 otherwise). A
    stream has no length: its evaluation blocks are counted by reading it once."""
    column_names = lm_column_names(raw_datasets["train" if training_args.do_train else "validation"])
    text_column_name = "text" if "text" in column_names else column_names[0]
    prepare = partial(prepare_split, raw_datasets, tokenizer=tokenizer, text_column_name=text_column_name,
                      block_size=block_size, data_args=data_args, training_args=training_args)
    train_dataset = prepare("train") if training_args.do_train else None
    eval_dataset = prepare("validation") if training_args.do_eval else None
    if data_args.streaming and training_args.do_train and next(iter(train_dataset), None) is None:
        raise UsageError(f"The streamed training data gives no block of {block_size} tokens: use more text.")
    n_eval_blocks = count_rows(eval_dataset) if training_args.do_eval else 0
    if data_args.streaming and training_args.do_eval:
        logger.info(f"validation: {n_eval_blocks} blocks of {block_size} tokens (counted by reading the stream).")
        if n_eval_blocks == 0:
            raise UsageError(f"The streamed validation data gives no block of {block_size} tokens: use more text.")
    return train_dataset, eval_dataset, n_eval_blocks


# ----------------------------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------------------------


def make_trainer(model, tokenizer, train_dataset, eval_dataset, data_args, training_args, adapter_args):
    # Accuracy is computed offline, and only where the upstream script computes it (an evaluation with logits).
    with_metrics = training_args.do_eval and not is_torch_xla_available()
    trainer_class = AdapterTrainer if adapter_args.train_adapter else Trainer
    return trainer_class(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        # Data collator will default to DataCollatorWithPadding, so we change it.
        data_collator=default_data_collator,
        compute_metrics=compute_metrics if with_metrics else None,
        preprocess_logits_for_metrics=argmax_logits if with_metrics else None,
    )


def perplexity_metric(metrics) -> dict:
    return {"perplexity": perplexity(metrics["eval_loss"])}


# ----------------------------------------------------------------------------------------------------------------------
# Train / evaluate
# ----------------------------------------------------------------------------------------------------------------------


def main(argv=None):
    """Run the script with the given command-line arguments; returns the Trainer (for tests and notebooks)."""
    # Arguments
    model_args, data_args, training_args, adapter_args = parse_args(
        (ModelArguments, DataTrainingArguments, TrainingArguments, AdapterArguments), argv
    )
    setup_logging(training_args, logger)
    last_checkpoint = detect_last_checkpoint(training_args, remove_stale=False)  # prepare_output_dir cleans up later

    # Pre-flight checks (checks_lm.py, checks.py): arguments, model, adapter sources and data, each failing with one
    # line that says what to fix, before anything is loaded or written. A copy of this script may delete this block
    # and those two files.
    import checks_lm
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CLM_HEADS

    checks_lm.check_lm_run(model_args, data_args, training_args, adapter_args, CLM_HEADS, "causal language-modelling",
                           block_size_for)

    set_seed(training_args.seed)  # before the model is created, so new weights are reproducible

    # Data
    raw_datasets, carved = load_lm_raw_datasets(
        data_args, model_args, text_builder_kwargs={"keep_linebreaks": data_args.keep_linebreaks}
    )
    config, tokenizer = load_config_and_tokenizer(model_args)
    block_size = block_size_for(data_args, tokenizer, config)

    # Model
    model = load_model(model_args, config, tokenizer)
    base_weights = dict(model.state_dict())  # the base model's own weights, for save_scratch_base_model
    setup_adapters(model, adapter_args, adapter_name(data_args, "clm"))  # its errors: one line, nothing written

    # Preprocessing
    train_dataset, eval_dataset, n_eval_blocks = prepare_splits(raw_datasets, tokenizer, block_size, data_args,
                                                                training_args)

    # Trainer
    prepare_output_dir(training_args, last_checkpoint)  # every check passed: clear what an earlier run left
    save_scratch_base_model(model, base_weights, model_args, training_args, adapter_args)
    trainer = make_trainer(model, tokenizer, train_dataset, eval_dataset, data_args, training_args, adapter_args)

    # Train / evaluate
    if training_args.do_train:
        train_and_save(trainer, last_checkpoint, data_args.max_train_samples, train_dataset)
    if training_args.do_eval:
        evaluate_and_save(trainer, data_args.max_eval_samples, n_eval_blocks, more_metrics=perplexity_metric)

    save_model_card(trainer, model_args, data_args, "text-generation")
    return trainer


if __name__ == "__main__":
    try:
        main()
    except UsageError as err:
        sys.exit(f"error: {err}")
