#!/usr/bin/env python
"""Fine-tune a model with a span-extraction head (BERT, RoBERTa, DistilBERT, ...) for extractive question answering
on SQuAD-style data, training an adapter (`--train_adapter`) or the full model.

    python run_qa.py --model_name_or_path roberta-base --dataset_name squad_v2 --version_2_with_negative \
        --do_train --do_eval --max_seq_length 384 --doc_stride 128 --output_dir /tmp/debug_squad/ \
        --train_adapter --adapter_config seq_bn

Local files (--train_file/--validation_file/--test_file) may be the flattened Hugging Face JSON ({"data": [...]}),
the original nested SQuAD v1.1/v2.0 JSON, JSON Lines, CSV or TSV; the format is detected from the content. Another
layout of records and answers: see "Your data format" below.
A single `.json` argument is read as a file of arguments. main() reads as a table of contents.
"""
import logging
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Optional

import adapters
from adapters import AdapterArguments
from transformers import AutoModelForQuestionAnswering, EvalPrediction, TrainingArguments, set_seed
from transformers.utils import check_min_version
from transformers.utils.versions import require_version

import checks  # checks.py: optional pre-flight checks; to go without, delete the lines ending so and the file
from adapter_setup import adapter_name, check_merge_flag, save_merged_model, setup_adapters
from qa_data import (build_stage_features, check_qa_data_files, load_qa_examples, padding_collator,
                     repair_qa_examples, squad_answers, squad_references)
from script_utils import (UsageError, capped_length, detect_last_checkpoint, end_process_group, hub_kwargs,
                          load_config_and_tokenizer, parse_args, prepare_output_dir, release_output_dir,
                          require_fast_tokenizer, save_model_card, setup_logging, start_cpu_process_group,
                          train_evaluate_predict)
from squad_metric import compute_squad_eval_metrics, tuned_null_threshold
from trainer_qa import QuestionAnsweringAdapterTrainer, QuestionAnsweringTrainer
from utils_qa import postprocess_qa_predictions

check_min_version("4.44.0")
require_version("datasets>=1.8.0", "To fix: pip install -r requirements.txt")

logger = logging.getLogger(__name__)


# Arguments ------------------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    """Arguments pertaining to which model/config/tokenizer we are going to fine-tune from."""

    model_name_or_path: str = field(metadata={"help": (
        "Path to pretrained model or model identifier from huggingface.co/models")})
    config_name: Optional[str] = field(default=None, metadata={"help": (
        "Pretrained config name or path if not the same as model_name")})
    tokenizer_name: Optional[str] = field(default=None, metadata={"help": (
        "Pretrained tokenizer name or path if not the same as model_name")})
    cache_dir: Optional[str] = field(default=None, metadata={"help": (
        "Path to directory to store the pretrained models downloaded from huggingface.co")})
    model_revision: str = field(default="main", metadata={"help": (
        "The specific model version to use (can be a branch name, tag name or commit id).")})
    token: str = field(default=None, metadata={"help": (
        "The token to use as HTTP bearer authorization for remote files.")})
    trust_remote_code: bool = field(default=False, metadata={"help": (
        "Allow custom models defined on the Hub in their own modeling files. Off unless asked.")})
    merge_adapter_on_save: bool = field(default=False, metadata={"help": (
        "With --train_adapter and an adapter that merges into the weights (lora, ia3, vera, dora, dvora): also save "
        "OUTPUT_DIR/merged/, the model with the adapter merged in, which plain transformers loads "
        "(AutoModelForQuestionAnswering.from_pretrained, no adapters library). With --do_train, or --load_adapter in "
        "an evaluation-only run. Other adapters are refused before training.")})


@dataclass
class DataTrainingArguments:
    """Arguments pertaining to what data we are going to input our model for training and eval."""

    dataset_name: Optional[str] = field(default=None, metadata={"help": (
        "The name of the dataset to use (via the datasets library).")})
    dataset_config_name: Optional[str] = field(default=None, metadata={"help": (
        "The configuration name of the dataset to use (via the datasets library).")})
    train_file: Optional[str] = field(default=None, metadata={"help": (
        "The input training data file (SQuAD JSON, nested SQuAD, JSON Lines, CSV or TSV).")})
    validation_file: Optional[str] = field(default=None, metadata={"help": (
        "An optional input evaluation data file (same formats as --train_file).")})
    test_file: Optional[str] = field(default=None, metadata={"help": (
        "An optional input test data file (answers not needed).")})
    overwrite_cache: bool = field(default=False, metadata={"help": "Overwrite the cached training and evaluation sets"})
    preprocessing_num_workers: Optional[int] = field(default=None, metadata={"help": (
        "The number of processes to use for the preprocessing.")})
    max_seq_length: int = field(default=384, metadata={"help": (
        "The maximum total input sequence length after tokenization. Sequences longer than this will be truncated, "
        "sequences shorter will be padded.")})
    pad_to_max_length: bool = field(default=True, metadata={"help": (
        "Whether to pad all samples to `max_seq_length`. If False, will pad the samples dynamically when batching "
        "to the maximum length in the batch (which can be faster on GPU but will be slower on TPU).")})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": (
        "Truncate the number of training examples to this value if set.")})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": (
        "Truncate the number of evaluation examples to this value if set.")})
    max_predict_samples: Optional[int] = field(default=None, metadata={"help": (
        "Truncate the number of prediction examples to this value if set.")})
    version_2_with_negative: bool = field(default=False, metadata={"help": (
        "If true, some of the examples do not have an answer.")})
    null_score_diff_threshold: float = field(default=0.0, metadata={"help": (
        "The threshold used to select the null answer: if the best answer has a score that is less than the score "
        "of the null answer minus this threshold, the null answer is selected for this example. Only useful when "
        "`version_2_with_negative=True`.")})
    tune_null_threshold: bool = field(default=False, metadata={"help": (
        "SQuAD v2.0 with --do_eval and --do_predict: --do_predict uses the threshold with the best F1 on the "
        "evaluation data (eval_best_f1_thresh, a null score difference) instead of --null_score_diff_threshold, and "
        "predict_results.json records it as predict_null_score_diff_threshold.")})
    doc_stride: int = field(default=128, metadata={"help": (
        "When splitting up a long document into chunks, how much stride to take between chunks.")})
    n_best_size: int = field(default=20, metadata={"help": (
        "The total number of n-best predictions to generate when looking for an answer.")})
    max_answer_length: int = field(default=30, metadata={"help": (
        "The maximum length of an answer that can be generated. This is needed because the start and end "
        "predictions are not conditioned on one another.")})
    id_column: str = field(default="id", metadata={"help": "The column holding each question's unique id."})
    question_column: str = field(default="question", metadata={"help": "The column holding the questions."})
    context_column: str = field(default="context", metadata={"help": "The column holding the contexts."})
    answer_column: str = field(default="answers", metadata={"help": (
        "The column holding the answers, read by answer_spans() in this script (where it reads several columns, the "
        "first of them); the answers in the SQuAD layout go there for the run. Not needed in a test file.")})

    def __post_init__(self):
        check_qa_data_files(self)


# Your data format -----------------------------------------------------------------------------------------------------
# The column names come from the four --*_column flags above; how your records hold questions and answers is read by
# the two functions here. Adapt them to your layout (docs/customising.md shows several): the checks, the features and
# the metric all read answers through answer_spans.


def one_example_per_question(records):
    """A batch of records {column: [values]} as one example per question {column: [values]} (a batched map): a record
    holding one context and a list of questions returns one example for each. SQuAD has one question per record."""
    return records


def answer_spans(example, columns):
    """One example's answers (the whole record: every column) as (texts, start character offsets in the context),
    empty lists when it has none. A start may be None: the text is then looked up in the context. Every text counts
    as a reference for the metric; the first one found in the context is the training label. SQuAD stores them as
    {"text": ["Paris"], "answer_start": [17]} (in a CSV/TSV cell, that as JSON text)."""
    return squad_answers(example[columns.answer])


# Model ----------------------------------------------------------------------------------------------------------------


def load_model(model_args, config):
    model = AutoModelForQuestionAnswering.from_pretrained(
        model_args.model_name_or_path, from_tf=".ckpt" in model_args.model_name_or_path, config=config,
        **hub_kwargs(model_args),
    )
    # Convert the model into an adapter model (the upstream script does this even without --train_adapter).
    adapters.init(model)
    return model


# Preprocessing --------------------------------------------------------------------------------------------------------


def tokenize_windows(examples, tokenizer, columns, max_seq_length, doc_stride, pad_to_max_length):
    """Question and context tokenized together; long contexts overflow into several windows overlapping by
    doc_stride tokens. The question goes first unless the tokenizer pads on the left (e.g. XLNet)."""
    pad_on_right = tokenizer.padding_side == "right"
    # Some of the questions have lots of whitespace on the left, which is not useful and will make the
    # truncation of the context fail (the tokenized question will take a lots of space). So we remove that
    # left whitespace
    questions = [q.lstrip() for q in examples[columns.question]]
    contexts = examples[columns.context]
    return tokenizer(
        questions if pad_on_right else contexts, contexts if pad_on_right else questions,
        truncation="only_second" if pad_on_right else "only_first", max_length=max_seq_length, stride=doc_stride,
        return_overflowing_tokens=True, return_offsets_mapping=True,
        padding="max_length" if pad_to_max_length else False,
    )


def prepare_train_features(examples, tokenizer, columns, max_seq_length, doc_stride, pad_to_max_length):
    """Training features: start/end token positions of the answer, or of the CLS token when the question has no
    answer or the answer is not fully inside this window."""
    tokenized_examples = tokenize_windows(examples, tokenizer, columns, max_seq_length, doc_stride, pad_to_max_length)
    context_index = 1 if tokenizer.padding_side == "right" else 0

    # Since one example might give us several features if it has a long context, we need a map from a feature to
    # its corresponding example. The offset mappings give us a map from token to character position in the
    # original context.
    sample_mapping = tokenized_examples.pop("overflow_to_sample_mapping")
    offset_mapping = tokenized_examples.pop("offset_mapping")
    tokenized_examples["start_positions"] = []
    tokenized_examples["end_positions"] = []

    for i, offsets in enumerate(offset_mapping):
        # We will label impossible answers with the index of the CLS token.
        input_ids = tokenized_examples["input_ids"][i]
        if tokenizer.cls_token_id in input_ids:
            cls_index = input_ids.index(tokenizer.cls_token_id)
        elif tokenizer.bos_token_id in input_ids:
            cls_index = input_ids.index(tokenizer.bos_token_id)
        else:
            cls_index = 0

        # Grab the sequence corresponding to that example (to know what is the context and what is the question).
        sequence_ids = tokenized_examples.sequence_ids(i)
        answers = examples[columns.answer][sample_mapping[i]]  # in the SQuAD layout by now (with_squad_answers)
        start, end = cls_index, cls_index
        if len(answers["answer_start"]) > 0:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])

            # Start/end token index of the current span in the text.
            token_start_index = 0
            while sequence_ids[token_start_index] != context_index:
                token_start_index += 1
            token_end_index = len(input_ids) - 1
            while sequence_ids[token_end_index] != context_index:
                token_end_index -= 1

            # Label with the answer's tokens only if the answer is fully inside the span; otherwise CLS.
            if offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char:
                # Move token_start_index and token_end_index to the two ends of the answer. The start walk stops at
                # the window's last context token: the upstream script walked on into [SEP]/padding, whose (0, 0)
                # offsets made a wrong label when the answer starts at the last token of a window (its "edge case").
                context_end_index = token_end_index
                while token_start_index <= context_end_index and offsets[token_start_index][0] <= start_char:
                    token_start_index += 1
                while offsets[token_end_index][1] >= end_char:
                    token_end_index -= 1
                start, end = token_start_index - 1, token_end_index + 1
        tokenized_examples["start_positions"].append(start)
        tokenized_examples["end_positions"].append(end)

    return tokenized_examples


def prepare_validation_features(examples, tokenizer, columns, max_seq_length, doc_stride, pad_to_max_length):
    """Evaluation features: each window keeps the id of its example and the offsets of its context tokens (None for
    question and special tokens), to map predicted positions back to text."""
    tokenized_examples = tokenize_windows(examples, tokenizer, columns, max_seq_length, doc_stride, pad_to_max_length)
    context_index = 1 if tokenizer.padding_side == "right" else 0
    sample_mapping = tokenized_examples.pop("overflow_to_sample_mapping")

    tokenized_examples["example_id"] = []
    for i in range(len(tokenized_examples["input_ids"])):
        sequence_ids = tokenized_examples.sequence_ids(i)
        tokenized_examples["example_id"].append(examples[columns.id][sample_mapping[i]])
        # Set to None the offset_mapping that are not part of the context so it's easy to determine if a token
        # position is part of the context or not.
        tokenized_examples["offset_mapping"][i] = [
            (o if sequence_ids[k] == context_index else None)
            for k, o in enumerate(tokenized_examples["offset_mapping"][i])
        ]
    return tokenized_examples


# Post-processing and metric -------------------------------------------------------------------------------------------


def post_processing_function(examples, features, predictions, stage="eval", *, data_args, columns, output_dir,
                             log_level):
    """Answers as text for the metric (and the {stage}_predictions.json files); references when answers exist. In v2
    each answer also carries its best non-null answer and null odds, for the metric's best-threshold sweep."""
    predictions, _, null_odds, best_non_null = postprocess_qa_predictions(
        examples=examples, features=features, predictions=predictions,
        version_2_with_negative=data_args.version_2_with_negative, n_best_size=data_args.n_best_size,
        max_answer_length=data_args.max_answer_length, null_score_diff_threshold=data_args.null_score_diff_threshold,
        output_dir=output_dir, log_level=log_level, prefix=stage, id_column=columns.id, context_column=columns.context,
    )
    formatted_predictions = [{"id": str(k), "prediction_text": v} for k, v in predictions.items()]
    if data_args.version_2_with_negative:
        for prediction, k in zip(formatted_predictions, predictions):
            prediction.update(no_answer_probability=0.0, best_non_null_text=best_non_null[k], null_odds=null_odds[k])
    references = None
    if columns.answer in examples.column_names:  # of the answered questions: one without features has no answer
        answered = {prediction["id"] for prediction in formatted_predictions}
        references = [r for r in squad_references(examples, columns) if r["id"] in answered]
    return EvalPrediction(predictions=formatted_predictions, label_ids=references)


def build_all_features(examples, tokenizer, columns, max_seq_length, data_args, training_args) -> dict:
    """{stage: features}: training windows with answer labels, evaluation/prediction windows with offsets."""
    feature_kwargs = dict(tokenizer=tokenizer, columns=columns, max_seq_length=max_seq_length,
                          doc_stride=data_args.doc_stride, pad_to_max_length=data_args.pad_to_max_length)
    return build_stage_features(examples, prepare_train_features, prepare_validation_features, feature_kwargs,
                                feature_kwargs, data_args, training_args)


# Trainer --------------------------------------------------------------------------------------------------------------


def make_trainer(model, tokenizer, examples, features, columns, data_args, training_args, adapter_args, log_level):
    trainer_class = QuestionAnsweringAdapterTrainer if adapter_args.train_adapter else QuestionAnsweringTrainer
    return trainer_class(
        model=model, args=training_args, processing_class=tokenizer,
        train_dataset=features.get("train"), eval_dataset=features.get("eval"), eval_examples=examples.get("eval"),
        data_collator=padding_collator(tokenizer, data_args, training_args),
        post_process_function=partial(post_processing_function, data_args=data_args, columns=columns,
                                      output_dir=training_args.output_dir, log_level=log_level),
        compute_metrics=partial(compute_squad_eval_metrics, version_2_with_negative=data_args.version_2_with_negative),
    )


# Train / evaluate / predict -------------------------------------------------------------------------------------------


def main(argv=None):
    start_cpu_process_group(argv)  # torchrun without a GPU: one gloo job (set before TrainingArguments reads it)
    # Arguments
    model_args, data_args, training_args, adapter_args = parse_args(
        (ModelArguments, DataTrainingArguments, TrainingArguments, AdapterArguments), argv
    )
    log_level = setup_logging(training_args, logger)
    last_checkpoint = detect_last_checkpoint(training_args, adapter_args)  # prepare_output_dir cleans up later
    check_merge_flag(model_args, training_args, adapter_args, AutoModelForQuestionAnswering)  # --merge_adapter_on_save
    checks.check_qa_arguments(model_args, data_args, training_args, adapter_args)  # checks.py

    set_seed(training_args.seed)  # before the model is created, so the head and adapter weights are reproducible

    # Config and tokenizer (the model's weights load once every check has passed)
    config, tokenizer = load_config_and_tokenizer(model_args)
    require_fast_tokenizer(tokenizer)  # offsets map tokens back to text, and long contexts overflow into windows
    max_seq_length = capped_length(data_args.max_seq_length, tokenizer, "max_seq_length")
    checks.check_qa_model(config, adapter_args, max_seq_length)  # checks.py

    # Data: {"train"/"eval"/"predict": raw examples} for the stages asked for, cut to --max_*_samples
    examples, columns = load_qa_examples(data_args, model_args, training_args, answer_spans,
                                         one_example_per_question)
    checks.check_qa_data(examples, columns, data_args, training_args, answer_spans)  # checks.py
    checks.check_windows_fit(examples, columns, tokenizer, max_seq_length, data_args)  # checks.py

    # Repair: answers into the SQuAD layout; training answers not where answer_start says realigned, or dropped
    examples = repair_qa_examples(examples, data_args, columns, answer_spans, training_args)

    # Model
    model = load_model(model_args, config)
    setup_adapters(model, adapter_args, adapter_name(data_args, "squad"))  # its errors: one line, nothing written

    # Preprocessing
    features = build_all_features(examples, tokenizer, columns, max_seq_length, data_args, training_args)

    # Trainer (created first: where it fails, e.g. on a --report_to integration that is not installed, the output
    # folder is as it was), then the first write
    trainer = make_trainer(model, tokenizer, examples, features, columns, data_args, training_args, adapter_args,
                           log_level)
    prepare_output_dir(training_args, last_checkpoint)  # every check passed: clear what an earlier run left

    # Train / evaluate / predict (--tune_null_threshold: predict with the null threshold that evaluation found best)
    before_predict = partial(tuned_null_threshold, data_args) if data_args.tune_null_threshold else None
    train_evaluate_predict(trainer, last_checkpoint, data_args, features, examples.get("predict"), before_predict)
    save_merged_model(trainer, model_args, AutoModelForQuestionAnswering)  # --merge_adapter_on_save: OUTPUT_DIR/merged/
    save_model_card(trainer, model_args, data_args, "question-answering")
    release_output_dir(training_args)  # the lock on --output_dir (a process that ends lets go anyway)


if __name__ == "__main__":
    try:
        main()
    except UsageError as err:
        sys.exit(f"error: {err}")
    finally:
        end_process_group()  # a distributed run's, before the interpreter exits (which gloo's threads may abort)
