#!/usr/bin/env python
"""Train a masked language model (BERT, RoBERTa, DistilBERT, ...) on a text file or a hub dataset, training an
adapter (`--train_adapter`) or the full model, from a pretrained model or from scratch.

    python run_mlm.py --model_name_or_path roberta-base --train_file train.txt --validation_file valid.txt \
        --do_train --do_eval --output_dir /tmp/test-mlm --train_adapter --adapter_config seq_bn

By default the texts are tokenized, concatenated and cut into blocks of --max_seq_length tokens; with --line_by_line
every non-empty line is one example. --max_train_samples/--max_eval_samples count those blocks (or lines).
Masking is dynamic (new masks every batch); --whole_word_mask masks all the tokens of a word together.
Evaluation reports eval_loss, eval_accuracy on the masked tokens (computed offline) and perplexity.
A single `.json` argument is read as a file of arguments.

main() reads as a table of contents: arguments, data, model, preprocessing, trainer, train/evaluate.
"""
import logging
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Optional

import torch
from adapters import AdapterArguments
from transformers import (
    MODEL_FOR_MASKED_LM_MAPPING,
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    TrainingArguments,
    set_seed,
)
from transformers.data.data_collator import pad_without_fast_tokenizer_warning
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

MODEL_CONFIG_CLASSES = list(MODEL_FOR_MASKED_LM_MAPPING.keys())
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
        "Override some existing default config settings when a model is trained from scratch. Example: "
        "n_embd=10,resid_pdrop=0.2,scale_attn_weights=false,summary_type=cls_index")})
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
        "(AutoModelForMaskedLM.from_pretrained, no adapters library). With --do_train, or --load_adapter in an "
        "evaluation-only run. Other adapters are refused before training.")})

    def __post_init__(self):
        if self.config_overrides is not None and (self.config_name is not None or self.model_name_or_path is not None):
            raise UsageError(
                "--config_overrides can't be used in combination with --config_name or --model_name_or_path"
            )


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
    overwrite_cache: bool = field(default=False, metadata={"help": "Overwrite the cached training and evaluation sets"})
    validation_split_percentage: Optional[int] = field(default=5, metadata={"help": (
        "The percentage of the train set used as validation set in case there's no validation split")})
    max_seq_length: Optional[int] = field(default=None, metadata={"help": (
        "The maximum total input sequence length after tokenization (the block size). Sequences longer than this "
        "will be truncated. Default: the tokenizer's model_max_length, at most 1024.")})
    preprocessing_num_workers: Optional[int] = field(default=None, metadata={"help": (
        "The number of processes to use for the preprocessing.")})
    mlm_probability: float = field(default=0.15, metadata={"help": (
        "Ratio of tokens to mask for masked language modeling loss")})
    line_by_line: bool = field(default=False, metadata={"help": (
        "Whether distinct lines of text in the dataset are to be handled as distinct sequences.")})
    pad_to_max_length: bool = field(default=False, metadata={"help": (
        "Whether to pad all samples to `max_seq_length`. If False, will pad the samples dynamically when batching "
        "to the maximum length in the batch.")})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": (
        "Truncate the number of training blocks (or lines, with --line_by_line) to this value.")})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": (
        "Truncate the number of evaluation blocks (or lines, with --line_by_line) to this value.")})
    streaming: bool = field(default=False, metadata={"help": (
        "Enable streaming mode (hub datasets and local files; needs --max_steps)")})
    whole_word_mask: bool = field(default=False, metadata={"help": (
        "Mask whole words: when a word is picked (with probability mlm_probability), all of its tokens are masked. "
        "Words are the tokenizer's own (fast tokenizers' word_ids).")})

    def __post_init__(self):
        check_lm_data_args(self)


# Model ----------------------------------------------------------------------------------------------------------------


def load_config_and_tokenizer(model_args, data_args):
    """A pretrained config, or a new one of --model_type with --config_overrides applied; the pretrained tokenizer,
    which needs a mask token (and, for --whole_word_mask, to be fast)."""
    config = load_lm_config(model_args, MODEL_TYPES, overrides_on_pretrained=False)
    tokenizer = load_lm_tokenizer(model_args)
    if tokenizer.mask_token is None:
        raise UsageError(f"The tokenizer '{tokenizer.name_or_path}' has no mask token, which masked language modelling "
                         "needs.")
    if data_args.whole_word_mask and not tokenizer.is_fast:
        raise UsageError("--whole_word_mask needs a fast tokenizer (its word_ids); drop --use_fast_tokenizer False.")
    return config, tokenizer


def max_seq_length_for(data_args, tokenizer, config=None) -> int:
    """--max_seq_length capped at the tokenizer's maximum; by default the tokenizer's maximum, at most 1024."""
    if data_args.max_seq_length is not None:
        return capped_length(data_args.max_seq_length, tokenizer, "max_seq_length")
    if tokenizer.model_max_length > 1024:
        logger.warning(
            "The chosen tokenizer supports a `model_max_length` that is longer than the default maximum length "
            "of 1024. If you would like to use a longer sequence length up to `tokenizer.model_max_length` you "
            "can override this default with `--max_seq_length xxx`."
        )
        return 1024
    return tokenizer.model_max_length


def load_model(model_args, config, tokenizer):
    return load_lm_model(AutoModelForMaskedLM, model_args, config, tokenizer)


# Preprocessing --------------------------------------------------------------------------------------------------------


def add_word_starts(encoding, n_texts):
    """word_starts[i][t] = 1 where token t of text i begins a word (fast tokenizers' word_ids), else 0 (special
    tokens, padding, and the later tokens of a word). Unlike word ids, these survive concatenation into blocks."""
    word_starts = []
    for i in range(n_texts):
        previous, starts = None, []
        for word_id in encoding.word_ids(i):
            starts.append(int(word_id is not None and word_id != previous))
            previous = word_id
        word_starts.append(starts)
    encoding["word_starts"] = word_starts
    return encoding


def tokenize_lines(examples, tokenizer, text_column_name, max_seq_length, padding, whole_word_mask):
    """--line_by_line: every non-empty, non-whitespace line is one example, truncated to max_seq_length."""
    lines = [line for line in examples[text_column_name] if line and not line.isspace()]  # None: an empty CSV cell
    if not lines:  # a batch of blank lines: no examples (a fast tokenizer given no text fails with an IndexError)
        columns = list(tokenizer([""], return_special_tokens_mask=True).keys())
        return {name: [] for name in columns + (["word_starts"] if whole_word_mask else [])}
    encoding = tokenizer(
        lines,
        padding=padding,
        truncation=True,
        max_length=max_seq_length,
        # We use this option because DataCollatorForLanguageModeling (see below) is more efficient when it
        # receives the `special_tokens_mask`.
        return_special_tokens_mask=True,
    )
    return add_word_starts(encoding, len(lines)) if whole_word_mask else encoding


def tokenize_texts(examples, tokenizer, text_column_name, whole_word_mask):
    """Default mode: tokenize every text whole (they are concatenated and cut into blocks afterwards)."""
    texts = [text if text is not None else "" for text in examples[text_column_name]]  # None: an empty CSV cell
    encoding = tokenizer(texts, return_special_tokens_mask=True)
    return add_word_starts(encoding, len(texts)) if whole_word_mask else encoding


def build_examples(raw_split, split, tokenizer, text_column_name, max_seq_length, data_args, training_args):
    """Tokenized examples of one split: one per non-empty line (--line_by_line), or blocks of max_seq_length tokens
    cut from the concatenated texts (per map batch of 1,000 rows; remainders dropped). Returns (tokenized, examples).
    """
    column_names = lm_column_names(raw_split)
    map_kwargs = {"batched": True}
    if not data_args.streaming:  # a stream is processed lazily: no workers, no cache
        map_kwargs.update(num_proc=data_args.preprocessing_num_workers,
                          load_from_cache_file=not data_args.overwrite_cache)

    def describe(desc):
        return {} if data_args.streaming else {"desc": desc}

    if data_args.line_by_line:
        fn_kwargs = {
            "tokenizer": tokenizer,
            "text_column_name": text_column_name,
            "max_seq_length": max_seq_length,
            "padding": "max_length" if data_args.pad_to_max_length else False,
            "whole_word_mask": data_args.whole_word_mask,
        }
        with training_args.main_process_first(desc="dataset map tokenization"):
            # All columns go: empty lines are dropped, so other columns would no longer line up (the upstream script kept
            # them and failed on such files).
            tokenized = raw_split.map(tokenize_lines, fn_kwargs=fn_kwargs, remove_columns=column_names, **map_kwargs,
                                      **describe(f"Running tokenizer on the {split} dataset line_by_line"))
        return tokenized, tokenized

    fn_kwargs = {"tokenizer": tokenizer, "text_column_name": text_column_name,
                 "whole_word_mask": data_args.whole_word_mask}
    with training_args.main_process_first(desc="dataset map tokenization"):
        tokenized = raw_split.map(tokenize_texts, fn_kwargs=fn_kwargs, remove_columns=column_names, **map_kwargs,
                                  **describe(f"Running tokenizer on every text in the {split} dataset"))
    with training_args.main_process_first(desc="grouping texts together"):
        blocks = tokenized.map(group_texts, fn_kwargs={"block_size": max_seq_length}, **map_kwargs,
                               **describe(f"Grouping texts in chunks of {max_seq_length}"))
    return tokenized, blocks


def prepare_split(raw_datasets, split, tokenizer, text_column_name, max_seq_length, data_args, training_args):
    """Examples for one split, cut to max_{split}_samples, with a log line saying what was counted."""
    flag = "--max_train_samples" if split == "train" else "--max_eval_samples"
    max_samples = data_args.max_train_samples if split == "train" else data_args.max_eval_samples
    tokenized, examples = build_examples(raw_datasets[split], split, tokenizer, text_column_name, max_seq_length,
                                         data_args, training_args)
    dataset = first_rows(examples, max_samples)
    unit = "non-empty lines (one example each)" if data_args.line_by_line else f"blocks of {max_seq_length} tokens"
    if data_args.streaming:
        logger.info(f"{split}: streamed, so its size is unknown in advance; {flag} counts {unit}.")
        return dataset
    n_rows = len(raw_datasets[split])
    if data_args.line_by_line:
        logger.info(
            f"{split}: {n_rows} rows of text -> {len(examples)} examples (one per non-empty line, truncated to "
            f"{max_seq_length} tokens). {flag} counts these examples (empty lines excluded): using {len(dataset)}."
        )
    else:
        logger.info(
            f"{split}: {n_rows} rows of text -> {len(examples)} blocks of {max_seq_length} tokens (texts concatenated "
            f"per 1,000 rows, remainders dropped). {flag} counts blocks, not rows or documents: using "
            f"{len(dataset)} blocks."
        )
    if len(examples) == 0:
        if data_args.line_by_line:
            raise UsageError(f"The {split} split has no non-empty line: use more {split} text.")
        n_tokens = sum(len(ids) for ids in tokenized["input_ids"])
        raise UsageError(
            f"The {split} split gives no block of {max_seq_length} tokens: its {n_rows} rows have {n_tokens} tokens "
            f"in all. Use more {split} text, a smaller --max_seq_length, or --line_by_line."
        )
    return dataset


# Masking and metric ---------------------------------------------------------------------------------------------------


@dataclass
class DataCollatorForWholeWordMasking(DataCollatorForLanguageModeling):
    """Dynamic masking of whole words, from the `word_starts` column written at tokenization.

    Each word (a first token plus the tokens until the next word start) is picked with probability mlm_probability
    and then all of its tokens get labels; each picked token is replaced by the mask token with probability
    mask_replace_prob (0.8), by a random token with probability random_replace_prob (0.1), or kept, as in BERT's
    whole-word masking. Tokens of a word cut off at the start of a block belong to no complete word and are never
    masked. Works on the examples as they come from the dataset (the Trainer must keep the word_starts column).
    """

    def torch_call(self, examples):
        keep = set(self.tokenizer.model_input_names) | {"special_tokens_mask"}
        word_starts = [list(example["word_starts"]) for example in examples]
        examples = [{k: v for k, v in example.items() if k in keep} for example in examples]
        batch = pad_without_fast_tokenizer_warning(
            self.tokenizer, examples, return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of
        )
        length = batch["input_ids"].shape[1]
        starts = torch.zeros(batch["input_ids"].shape, dtype=torch.bool)
        for row, row_starts in enumerate(word_starts):
            values = torch.tensor(row_starts, dtype=torch.bool)
            if self.tokenizer.padding_side == "left":
                starts[row, length - len(row_starts):] = values
            else:
                starts[row, : len(row_starts)] = values
        special_tokens_mask = batch.pop("special_tokens_mask", None)
        if special_tokens_mask is None:
            special_tokens_mask = torch.tensor(
                [self.tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
                 for ids in batch["input_ids"].tolist()]
            )
        batch["input_ids"], batch["labels"] = self.mask_whole_words(
            batch["input_ids"], special_tokens_mask.bool(), starts
        )
        return batch

    def mask_whole_words(self, inputs, special_tokens_mask, word_starts):
        labels = inputs.clone()
        word_starts = word_starts & ~special_tokens_mask
        # Word number of every token: 0 before the first word start of the row (a cut-off word), then 1, 2, ...
        word_index = torch.cumsum(word_starts.long(), dim=1)
        picked_starts = torch.bernoulli(
            torch.where(word_starts, self.mlm_probability, 0.0), generator=self.generator
        ).bool()
        picked_words = torch.zeros(inputs.shape[0], inputs.shape[1] + 1)
        picked_words.scatter_add_(1, word_index, picked_starts.float())
        masked_indices = picked_words.gather(1, word_index).bool() & (word_index > 0) & ~special_tokens_mask
        labels[~masked_indices] = -100  # We only compute loss on masked tokens

        # mask_replace_prob of the time, we replace masked input tokens with tokenizer.mask_token ([MASK])
        indices_replaced = (
            torch.bernoulli(torch.full(labels.shape, self.mask_replace_prob), generator=self.generator).bool()
            & masked_indices
        )
        inputs[indices_replaced] = self.tokenizer.convert_tokens_to_ids(self.tokenizer.mask_token)
        if self.mask_replace_prob == 1 or self.random_replace_prob == 0:
            return inputs, labels
        # random_replace_prob of the time, a random token; the rest of the time the token is kept.
        random_replace_prob_scaled = self.random_replace_prob / (1 - self.mask_replace_prob)
        indices_random = (
            torch.bernoulli(torch.full(labels.shape, random_replace_prob_scaled), generator=self.generator).bool()
            & masked_indices
            & ~indices_replaced
        )
        random_words = torch.randint(len(self.tokenizer), labels.shape, dtype=torch.long, generator=self.generator)
        inputs[indices_random] = random_words[indices_random]
        return inputs, labels


def prepare_splits(raw_datasets, tokenizer, max_seq_length, data_args, training_args):
    """(train examples, evaluation examples, number of evaluation examples) for the stages asked for."""
    prepare = partial(prepare_split, tokenizer=tokenizer, max_seq_length=max_seq_length, data_args=data_args,
                      training_args=training_args)
    return prepare_lm_splits(raw_datasets, prepare, "examples", data_args, training_args)


def make_data_collator(tokenizer, data_args, training_args):
    """Dynamic masking (a new random mask every batch), by token or (--whole_word_mask) by word."""
    pad_to_multiple_of_8 = data_args.line_by_line and training_args.fp16 and not data_args.pad_to_max_length
    collator_class = DataCollatorForWholeWordMasking if data_args.whole_word_mask else DataCollatorForLanguageModeling
    if data_args.whole_word_mask and training_args.remove_unused_columns:
        # The Trainer would drop the word_starts column (not a model input); the collator keeps model inputs only.
        training_args.remove_unused_columns = False
    return collator_class(
        tokenizer=tokenizer,
        mlm_probability=data_args.mlm_probability,
        pad_to_multiple_of=8 if pad_to_multiple_of_8 else None,
    )


def compute_metrics(eval_preds):
    """Accuracy of the predictions (argmax of logits) on the masked tokens only (labels != -100)."""
    preds, labels = eval_preds
    return lm_accuracy(preds, labels, ignore_index=-100)


def make_trainer(model, tokenizer, train_dataset, eval_dataset, data_args, training_args, adapter_args):
    # The data collator takes care of randomly masking the tokens.
    data_collator = make_data_collator(tokenizer, data_args, training_args)
    return make_lm_trainer(model, tokenizer, train_dataset, eval_dataset, data_collator, compute_metrics,
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
    check_merge_flag(model_args, training_args, adapter_args, AutoModelForMaskedLM)  # --merge_adapter_on_save
    checks_lm.check_lm_arguments(model_args, data_args, training_args, adapter_args)  # checks.py

    set_seed(training_args.seed)  # before the model is created, so new weights are reproducible

    # Config and tokenizer (the model's weights load once every check has passed)
    config, tokenizer = load_config_and_tokenizer(model_args, data_args)
    max_seq_length = max_seq_length_for(data_args, tokenizer)
    checks_lm.check_mlm_model(config, model_args, data_args, adapter_args, max_seq_length)  # checks.py

    # Data
    raw_datasets, carved = load_lm_raw_datasets(data_args, model_args)
    checks_lm.check_lm_data(raw_datasets, carved, data_args, training_args)  # checks.py

    # Model
    model = load_model(model_args, config, tokenizer)
    base_weights = dict(model.state_dict())  # the base model's own weights, for save_scratch_base_model
    setup_adapters(model, adapter_args, adapter_name(data_args, "mlm"))  # its errors: one line, nothing written

    # Preprocessing
    train_dataset, eval_dataset, n_eval_examples = prepare_splits(raw_datasets, tokenizer, max_seq_length, data_args,
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
        evaluate_and_save(trainer, data_args.max_eval_samples, n_eval_examples, more_metrics=perplexity_metric)

    save_merged_model(trainer, model_args, AutoModelForMaskedLM)  # --merge_adapter_on_save: OUTPUT_DIR/merged/
    save_model_card(trainer, model_args, data_args, "fill-mask")
    release_output_dir(training_args)  # the lock on --output_dir (a process that ends lets go anyway)
    return trainer


if __name__ == "__main__":
    try:
        main()
    except UsageError as err:
        sys.exit(f"error: {err}")
    finally:
        end_process_group()  # a distributed run's, before the interpreter exits (which gloo's threads may abort)
