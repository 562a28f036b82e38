#!/usr/bin/env python
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
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Optional

import transformers
from adapters import AdapterArguments
from transformers import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    AutoModelForCausalLM,
    TrainingArguments,
    default_data_collator,
    set_seed,
)
from transformers.testing_utils import CaptureLogger
from transformers.utils import check_min_version
from transformers.utils.versions import require_version

import checks_lm  # checks.py: optional pre-flight checks; to go without, delete the lines ending so and the files
from adapter_setup import adapter_name, check_merge_flag, save_merged_model, setup_adapters
from script_utils import (
    UsageError,
    capped_length,
    detect_last_checkpoint,
    end_process_group,
    evaluate_and_save,
    parse_args,
    prepare_output_dir,
    release_output_dir,
    save_model_card,
    setup_logging,
    start_cpu_process_group,
    train_and_save,
)
from utils_lm import (
    check_lm_data_args,
    first_rows,
    group_texts,
    lm_accuracy,
    lm_column_names,
    load_lm_config,
    load_lm_model,
    load_lm_raw_datasets,
    load_lm_tokenizer,
    make_lm_trainer,
    perplexity_metric,
    prepare_lm_splits,
    save_scratch_base_model,
)

check_min_version("4.44.0")
require_version("datasets>=2.14.0", "To fix: pip install -r requirements.txt")

logger = logging.getLogger(__name__)

MODEL_CONFIG_CLASSES = list(MODEL_FOR_CAUSAL_LM_MAPPING.keys())
MODEL_TYPES = tuple(conf.model_type for conf in MODEL_CONFIG_CLASSES)


# Arguments ------------------------------------------------------------------------------------------------------------


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
    merge_adapter_on_save: bool = field(default=False, metadata={"help": (
        "With --train_adapter and an adapter that merges into the weights (lora, ia3, vera, dora, dvora): also save "
        "OUTPUT_DIR/merged/, the model with the adapter merged in, which plain transformers loads "
        "(AutoModelForCausalLM.from_pretrained, no adapters library). With --do_train, or --load_adapter in an "
        "evaluation-only run. Other adapters are refused before training.")})


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
    text_column: Optional[str] = field(default=None, metadata={"help": (
        "The column holding the text (CSV, JSON Lines or a Hub dataset). Default: `text`, else the first column if it "
        "holds text.")})
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


# Model ----------------------------------------------------------------------------------------------------------------


def load_config_and_tokenizer(model_args):
    """A pretrained config or a new one of --model_type, with --config_overrides applied to either (the upstream script
    allowed them only from scratch); the pretrained tokenizer."""
    return load_lm_config(model_args, MODEL_TYPES, overrides_on_pretrained=True), load_lm_tokenizer(model_args)


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


def load_model(model_args, config, tokenizer):
    return load_lm_model(AutoModelForCausalLM, model_args, config, tokenizer)


# Preprocessing --------------------------------------------------------------------------------------------------------


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
    """(train blocks, evaluation blocks, number of evaluation blocks) for the stages asked for."""
    prepare = partial(prepare_split, tokenizer=tokenizer, block_size=block_size, data_args=data_args,
                      training_args=training_args)
    return prepare_lm_splits(raw_datasets, prepare, f"blocks of {block_size} tokens", data_args, training_args)


# Trainer --------------------------------------------------------------------------------------------------------------


def make_trainer(model, tokenizer, train_dataset, eval_dataset, data_args, training_args, adapter_args):
    # default_data_collator: the blocks are all of one length (the Trainer would default to padding them).
    return make_lm_trainer(model, tokenizer, train_dataset, eval_dataset, default_data_collator, compute_metrics,
                           training_args, adapter_args)


# Train / evaluate -----------------------------------------------------------------------------------------------------


def main(argv=None):
    """Run the script with the given command-line arguments; returns the Trainer (for tests and notebooks)."""
    start_cpu_process_group(argv)  # torchrun without a GPU: one gloo job (set before TrainingArguments reads it)
    # Arguments
    model_args, data_args, training_args, adapter_args = parse_args(
        (ModelArguments, DataTrainingArguments, TrainingArguments, AdapterArguments), argv
    )
    setup_logging(training_args, logger)
    last_checkpoint = detect_last_checkpoint(training_args, adapter_args)  # prepare_output_dir cleans up later
    check_merge_flag(model_args, training_args, adapter_args, AutoModelForCausalLM)  # --merge_adapter_on_save
    checks_lm.check_lm_arguments(model_args, data_args, training_args, adapter_args)  # checks.py

    set_seed(training_args.seed)  # before the model is created, so new weights are reproducible

    # Config and tokenizer (the model's weights load once every check has passed)
    config, tokenizer = load_config_and_tokenizer(model_args)
    block_size = block_size_for(data_args, tokenizer, config)
    checks_lm.check_clm_model(config, model_args, data_args, adapter_args, block_size)  # checks.py

    # Data
    raw_datasets, carved = load_lm_raw_datasets(
        data_args, model_args, text_builder_kwargs={"keep_linebreaks": data_args.keep_linebreaks}
    )
    checks_lm.check_lm_data(raw_datasets, carved, data_args, training_args)  # checks.py

    # Model
    model = load_model(model_args, config, tokenizer)
    base_weights = dict(model.state_dict())  # the base model's own weights, for save_scratch_base_model
    setup_adapters(model, adapter_args, adapter_name(data_args, "clm"))  # its errors: one line, nothing written

    # Preprocessing
    train_dataset, eval_dataset, n_eval_blocks = prepare_splits(raw_datasets, tokenizer, block_size, data_args,
                                                                training_args)

    # Trainer (created first: where it fails, e.g. on a --report_to integration that is not installed, the output
    # folder is as it was), then the first write
    trainer = make_trainer(model, tokenizer, train_dataset, eval_dataset, data_args, training_args, adapter_args)
    prepare_output_dir(training_args, last_checkpoint)  # every check passed: clear what an earlier run left
    save_scratch_base_model(model, base_weights, model_args, training_args, adapter_args)

    # Train / evaluate
    if training_args.do_train:
        train_and_save(trainer, last_checkpoint, data_args.max_train_samples, train_dataset)
    if training_args.do_eval:
        evaluate_and_save(trainer, data_args.max_eval_samples, n_eval_blocks, more_metrics=perplexity_metric)

    save_merged_model(trainer, model_args, AutoModelForCausalLM)  # --merge_adapter_on_save: OUTPUT_DIR/merged/
    save_model_card(trainer, model_args, data_args, "text-generation")
    release_output_dir(training_args)  # the lock on --output_dir (a process that ends lets go anyway)
    return trainer


if __name__ == "__main__":
    try:
        main()
    except UsageError as err:
        sys.exit(f"error: {err}")
    finally:
        end_process_group()  # a distributed run's, before the interpreter exits (which gloo's threads may abort)
