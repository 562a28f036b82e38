#!/usr/bin/env python
"""Fine-tune an encoder-decoder model (T5, BART, ...) to answer SQuAD-style questions by generating the answer text,
training an adapter (`--train_adapter`) or the full model.

    python run_seq2seq_qa.py --model_name_or_path t5-small --dataset_name squad_v2 --version_2_with_negative \
        --context_column context --question_column question --answer_column answers \
        --do_train --do_eval --max_seq_length 384 --doc_stride 128 --output_dir /tmp/debug_seq2seq_squad/ \
        --train_adapter --adapter_config seq_bn

The model reads "question: <question> context: <context>" and is trained to write the first gold answer ("" for an
unanswerable question). Evaluation generates the answers and scores them with SQuAD exact match / F1; the answers go
to eval_predictions.json / predict_predictions.json. Local files (--train_file/--validation_file/--test_file) may be
the flattened Hugging Face JSON ({"data": [...]}), the original nested SQuAD v1.1/v2.0 JSON, JSON Lines, CSV or TSV.
A single `.json` argument is read as a file of arguments.

main() reads as a table of contents: arguments, data, model, preprocessing, trainer, train/eval/predict.
"""
import json
import logging
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Optional

import adapters
from adapters import AdapterArguments
from transformers import (
    AutoModelForSeq2SeqLM,
    DataCollatorForSeq2Seq,
    EvalPrediction,
    Seq2SeqTrainingArguments,
    set_seed,
)
from transformers.utils import check_min_version
from transformers.utils.versions import require_version

import checks  # checks.py: optional pre-flight checks; to go without, delete the lines ending so and the files
import checks_seq2seq  # checks.py
from adapter_setup import adapter_name, check_merge_flag, save_merged_model, setup_adapters
from prediction_files import write_prediction_files
from qa_data import (build_stage_features, check_qa_data_files, load_qa_examples, repair_qa_examples,
                     squad_answers)
from script_utils import (
    UsageError,
    capped_length,
    detect_last_checkpoint,
    end_process_group,
    load_config_and_tokenizer,
    parse_args,
    prepare_output_dir,
    release_output_dir,
    require_fast_tokenizer,
    save_model_card,
    setup_logging,
    start_cpu_process_group,
    train_evaluate_predict,
    use_the_models_own_loss,
)
from squad_metric import compute_squad_eval_metrics
from trainer_seq2seq_qa import QuestionAnsweringSeq2SeqAdapterTrainer, QuestionAnsweringSeq2SeqTrainer

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
    use_fast_tokenizer: bool = field(default=True, metadata={"help": (
        "Whether to use one of the fast tokenizer (backed by the tokenizers library) or not.")})
    model_revision: str = field(default="main", metadata={"help": (
        "The specific model version to use (can be a branch name, tag name or commit id).")})
    token: str = field(default=None, metadata={"help": (
        "The token to use as HTTP bearer authorization for remote files.")})
    trust_remote_code: bool = field(default=False, metadata={"help": (
        "Allow custom models defined on the Hub in their own modeling files. Off unless asked.")})
    merge_adapter_on_save: bool = field(default=False, metadata={"help": (
        "With --train_adapter and an adapter that merges into the weights (lora, ia3, vera, dora, dvora): also save "
        "OUTPUT_DIR/merged/, the model with the adapter merged in, which plain transformers loads "
        "(AutoModelForSeq2SeqLM.from_pretrained, no adapters library). With --do_train, or --load_adapter in an "
        "evaluation-only run. Other adapters are refused before training.")})


@dataclass
class DataTrainingArguments:
    """Arguments pertaining to what data we are going to input our model for training and eval."""

    dataset_name: Optional[str] = field(default=None, metadata={"help": (
        "The name of the dataset to use (via the datasets library).")})
    dataset_config_name: Optional[str] = field(default=None, metadata={"help": (
        "The configuration name of the dataset to use (via the datasets library).")})
    context_column: Optional[str] = field(default="context", metadata={"help": (
        "The name of the column in the datasets containing the contexts (for question answering).")})
    question_column: Optional[str] = field(default="question", metadata={"help": (
        "The name of the column in the datasets containing the questions (for question answering).")})
    answer_column: Optional[str] = field(default="answers", metadata={"help": (
        "The column holding the answers, read by answer_spans() in this script (where it reads several columns, the "
        "first of them); the answers in the SQuAD layout go there for the run. Not needed in a test file.")})
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
        "The maximum total input sequence length after tokenization. Longer inputs are truncated for training and "
        "split into overlapping windows (see --doc_stride) for evaluation and prediction.")})
    max_answer_length: int = field(default=30, metadata={"help": (
        "The maximum total sequence length for target text after tokenization. Sequences longer than this will be "
        "truncated, sequences shorter will be padded.")})
    val_max_answer_length: Optional[int] = field(default=None, metadata={"help": (
        "The maximum length of a generated answer, in tokens, for evaluation and prediction. Will default to "
        "`max_answer_length`. Overridden by --generation_max_length.")})
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
        "Accepted for compatibility with run_qa.py; unused by generative QA (as in the upstream script).")})
    doc_stride: int = field(default=128, metadata={"help": (
        "When an evaluation/prediction input is longer than --max_seq_length, its context is split into windows, "
        "each with the question, overlapping by this many tokens.")})
    n_best_size: int = field(default=20, metadata={"help": (
        "Accepted for compatibility with run_qa.py; unused by generative QA (as in the upstream script).")})
    num_beams: Optional[int] = field(default=None, metadata={"help": (
        "Number of beams to use for evaluation and prediction. Defaults to --generation_num_beams, then to the "
        "model's generation config.")})
    ignore_pad_token_for_loss: bool = field(default=True, metadata={"help": (
        "Whether to ignore the tokens corresponding to padded labels in the loss computation or not.")})

    id_column: str = field(default="id", metadata={"help": "The column holding each question's unique id."})

    def __post_init__(self):
        check_qa_data_files(self)
        if self.val_max_answer_length is None:
            self.val_max_answer_length = self.max_answer_length


def explicitly_given(argv, name: str) -> bool:
    """Whether the command line (or the .json arguments file) sets `name` itself rather than leaving its default."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        with open(argv[0], encoding="utf-8") as f:
            return name in json.load(f)
    spellings = {f"--{name}", f"--{name.replace('_', '-')}", f"--no_{name}", f"--no-{name.replace('_', '-')}"}
    return any(arg.split("=", 1)[0] in spellings for arg in argv)


def resolve_generation(training_args, argv) -> bool:
    """Evaluation generates answers unless the user explicitly passed `--predict_with_generate False`.

    The upstream generated (and computed exact match/F1) only with --predict_with_generate; without it evaluation
    reported the loss alone. Here generation is on unless explicitly switched off. Returns whether answers are
    generated.
    """
    if not explicitly_given(argv, "predict_with_generate"):
        training_args.predict_with_generate = True
    if training_args.prediction_loss_only:
        return False
    return training_args.predict_with_generate


def log_generation_mode(generate: bool, training_args):
    if generate:
        logger.info(
            "Evaluation and prediction generate the answers and score them with SQuAD exact match/F1 "
            "(--predict_with_generate is on unless you pass --predict_with_generate False)."
        )
    elif training_args.do_eval or training_args.do_predict:
        reason = "--prediction_loss_only" if training_args.prediction_loss_only else "--predict_with_generate False"
        logger.warning(
            f"{reason}: no answers are generated, so evaluation and prediction report only the teacher-forced loss "
            "on the gold answers (eval_loss/test_loss) and the speed metrics: no exact match/F1 and no "
            "*_predictions.json. Drop the flag to get them."
        )


# Model ----------------------------------------------------------------------------------------------------------------


def load_model(model_args, config, tokenizer, label_smoothing_factor=0.0):
    model = AutoModelForSeq2SeqLM.from_pretrained(
        model_args.model_name_or_path,
        from_tf=bool(".ckpt" in model_args.model_name_or_path),
        config=config,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )
    # Convert the model into an adapter model (the upstream script does this even without --train_adapter).
    adapters.init(model)

    # We resize the embeddings only when necessary to avoid index errors.
    embedding_size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > embedding_size:
        model.resize_token_embeddings(len(tokenizer))

    if model.config.decoder_start_token_id is None:
        raise UsageError(
            "The model config has no decoder_start_token_id: set `decoder_start_token_id` in its config.json "
            "(T5 uses the pad token id, BART the eos token id)."
        )
    if label_smoothing_factor > 0 and not hasattr(model, "prepare_decoder_input_ids_from_labels"):
        logger.warning(
            "label_smoothing is enabled but the `prepare_decoder_input_ids_from_labels` method is not defined for "
            f"`{model.__class__.__name__}`. This will lead to loss being calculated twice and will take up more memory"
        )
    return use_the_models_own_loss(model)


# Preprocessing --------------------------------------------------------------------------------------------------------


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


def squad_inputs_and_targets(examples, columns):
    """The upstream script's input text "question: <q> context: <c>" and target (first gold answer, "" if none).

    Returns (inputs, targets, context_starts); targets is None without an answer column; context_starts[i] is the
    character where the context begins in inputs[i].
    """
    inputs, context_starts = [], []
    for question, context in zip(examples[columns.question], examples[columns.context]):
        text = " ".join(["question:", question.lstrip(), "context:", context.lstrip()])
        inputs.append(text)
        context_starts.append(len(text) - len(context.lstrip()))
    targets = None
    if columns.answer in examples:  # in the SQuAD layout by now (with_squad_answers); a test file may have none
        targets = [answer["text"][0] if len(answer["text"]) > 0 else "" for answer in examples[columns.answer]]
    return inputs, targets, context_starts


def tokenize_targets(targets, tokenizer, max_answer_length, padding, ignore_pad_token_for_loss):
    labels = tokenizer(text_target=targets, max_length=max_answer_length, padding=padding, truncation=True)
    # If we are padding here, replace all tokenizer.pad_token_id in the labels by -100 when we want to ignore
    # padding in the loss.
    if padding == "max_length" and ignore_pad_token_for_loss:
        return [[(t if t != tokenizer.pad_token_id else -100) for t in label] for label in labels["input_ids"]]
    return labels["input_ids"]


def prepare_train_features(examples, tokenizer, columns, max_seq_length, max_answer_length, padding,
                           ignore_pad_token_for_loss):
    """Training features, as upstream: the input truncated to max_seq_length, the answer as labels."""
    inputs, targets, _ = squad_inputs_and_targets(examples, columns)
    model_inputs = tokenizer(inputs, max_length=max_seq_length, padding=padding, truncation=True)
    model_inputs["labels"] = tokenize_targets(targets, tokenizer, max_answer_length, padding,
                                              ignore_pad_token_for_loss)
    return model_inputs


def split_into_windows(input_ids, offsets, special_tokens_mask, context_start, max_length, doc_stride):
    """Token id lists of at most max_length tokens, each holding the special tokens, the whole "question: ...
    context:" part and a slice of the context; consecutive slices overlap by doc_stride tokens (fewer when the
    question leaves less room than that). An input that fits is returned unchanged, as the only window. If the
    question alone fills max_length, the input is truncated instead, like training inputs."""
    if len(input_ids) <= max_length:
        return [list(input_ids)]
    n_lead = 0
    while special_tokens_mask[n_lead]:
        n_lead += 1
    n_trail = 0
    while special_tokens_mask[len(input_ids) - 1 - n_trail]:
        n_trail += 1
    end = len(input_ids) - n_trail
    context_begin = n_lead
    while context_begin < end and offsets[context_begin][0] < context_start:
        context_begin += 1
    lead, head, body, trail = (input_ids[:n_lead], input_ids[n_lead:context_begin], input_ids[context_begin:end],
                               input_ids[end:])
    room = max_length - len(lead) - len(head) - len(trail)
    if room <= 0 or not body:
        return [list(input_ids[: max_length - n_trail]) + list(trail)]
    step = room - min(doc_stride, room - 1)
    windows, start = [], 0
    while True:
        windows.append(list(lead) + list(head) + list(body[start : start + room]) + list(trail))
        if start + room >= len(body):
            return windows
        start += step


def prepare_validation_features(examples, tokenizer, columns, max_seq_length, max_answer_length, doc_stride,
                                padding, ignore_pad_token_for_loss):
    """Evaluation/prediction features: one per window of the input (one window unless it is longer than
    max_seq_length), each with the example id and the example's labels.

    An input that fits gives exactly the upstream script's feature. A longer one is split by `split_into_windows`, so that
    every window sees the question (the upstream script cut the tokenized text into consecutive chunks, without the
    question after the first one, and ignored --doc_stride).
    """
    inputs, targets, context_starts = squad_inputs_and_targets(examples, columns)
    encoded = tokenizer(inputs, return_offsets_mapping=True, return_special_tokens_mask=True, verbose=False)
    labels = None
    if targets is not None:
        labels = tokenize_targets(targets, tokenizer, max_answer_length, padding, ignore_pad_token_for_loss)

    features = {"input_ids": [], "example_id": []}
    if labels is not None:
        features["labels"] = []
    for i, input_ids in enumerate(encoded["input_ids"]):
        windows = split_into_windows(input_ids, encoded["offset_mapping"][i], encoded["special_tokens_mask"][i],
                                     context_starts[i], max_seq_length, doc_stride)
        for window in windows:
            features["input_ids"].append(window)
            features["example_id"].append(examples[columns.id][i])
            if labels is not None:
                features["labels"].append(labels[i])
    features["attention_mask"] = [[1] * len(ids) for ids in features["input_ids"]]
    if padding == "max_length":
        for i, (ids, mask) in enumerate(zip(features["input_ids"], features["attention_mask"])):
            features["input_ids"][i], features["attention_mask"][i] = pad_to_length(ids, mask, tokenizer,
                                                                                   max_seq_length)
    return features


def pad_to_length(input_ids, attention_mask, tokenizer, length):
    """Pad as the tokenizer's padding="max_length" does, on its padding side."""
    n = length - len(input_ids)
    if tokenizer.padding_side == "left":
        return [tokenizer.pad_token_id] * n + input_ids, [0] * n + attention_mask
    return input_ids + [tokenizer.pad_token_id] * n, attention_mask + [0] * n


# Post-processing and metric -------------------------------------------------------------------------------------------


def select_window_answers(example_ids, feature_example_ids, texts, scores):
    """One answer per example from the answers generated for its windows (features).

    Rule: the window whose answer has the highest score (mean log-probability per generated token, or the beam
    score) wins; on a tie the earlier window. With one window per example this is simply its answer. An example
    without a feature (none, as the scripts build features: --max_eval_samples/--max_predict_samples cut questions and
    keep all their windows) gets no answer.
    Returns ({id: answer}, {id: [{"window", "text", "score"}, ...] best first}).
    """
    candidates = {}
    for feature_index, example_id in enumerate(feature_example_ids):
        window = len(candidates.setdefault(example_id, []))
        candidates[example_id].append(
            {"window": window, "text": texts[feature_index], "score": float(scores[feature_index])}
        )
    predictions, windows = {}, {}
    for example_id in example_ids:
        if example_id not in candidates:
            continue
        ranked = sorted(candidates[example_id], key=lambda c: -c["score"])  # stable: earlier window on ties
        predictions[example_id] = ranked[0]["text"]
        windows[example_id] = ranked
    return predictions, windows


def post_processing_function(examples, features, answers, stage="eval", *, version_2_with_negative, columns,
                             output_dir):
    """Generated answers (a trainer_qa.GeneratedAnswers, one per feature) as one answer per question: written to
    {stage}_predictions.json (and every window's answer and score to {stage}_nbest_predictions.json), formatted for
    the SQuAD metric, with references when the examples have answers."""
    example_ids = [str(i) for i in examples[columns.id]]
    predictions, windows = select_window_answers(
        example_ids, [str(i) for i in features["example_id"]], answers.texts, answers.scores
    )
    if len(predictions) < len(example_ids):
        logger.warning(
            f"{len(example_ids) - len(predictions)} of {len(example_ids)} {stage} questions have no feature "
            "(an edited prepare_validation_features made none for them): they are left out of the predictions and "
            "the score."
        )
    write_prediction_files(output_dir, stage, {"predictions": predictions, "nbest_predictions": windows})

    if version_2_with_negative:
        formatted_predictions = [
            {"id": k, "prediction_text": v, "no_answer_probability": 0.0} for k, v in predictions.items()
        ]
    else:
        formatted_predictions = [{"id": k, "prediction_text": v} for k, v in predictions.items()]
    references = None
    if columns.answer in examples.column_names:  # a test file may have no answers: nothing to score then
        references = [
            {"id": str(ex_id), "answers": answer}
            for ex_id, answer in zip(examples[columns.id], examples[columns.answer])
            if str(ex_id) in predictions
        ]
    return EvalPrediction(predictions=formatted_predictions, label_ids=references)


def build_all_features(examples, tokenizer, columns, max_seq_length, data_args, training_args) -> dict:
    """{stage: features}: training inputs with their target answer, evaluation/prediction windows with example ids."""
    feature_kwargs = {
        "tokenizer": tokenizer,
        "columns": columns,
        "max_seq_length": max_seq_length,
        "max_answer_length": data_args.max_answer_length,
        "padding": "max_length" if data_args.pad_to_max_length else False,
        "ignore_pad_token_for_loss": data_args.ignore_pad_token_for_loss,
    }
    window_kwargs = {**feature_kwargs, "doc_stride": data_args.doc_stride}
    return build_stage_features(examples, prepare_train_features, prepare_validation_features, feature_kwargs,
                                window_kwargs, data_args, training_args)


# Trainer --------------------------------------------------------------------------------------------------------------


def make_trainer(model, tokenizer, examples, features, columns, data_args, training_args, adapter_args, generate):
    label_pad_token_id = -100 if data_args.ignore_pad_token_for_loss else tokenizer.pad_token_id
    data_collator = DataCollatorForSeq2Seq(
        tokenizer,
        model=model,
        label_pad_token_id=label_pad_token_id,
        pad_to_multiple_of=8 if training_args.fp16 else None,
    )
    trainer_class = (
        QuestionAnsweringSeq2SeqAdapterTrainer if adapter_args.train_adapter else QuestionAnsweringSeq2SeqTrainer
    )
    num_beams = data_args.num_beams if data_args.num_beams is not None else training_args.generation_num_beams
    max_length = training_args.generation_max_length
    return trainer_class(
        model=model,
        args=training_args,
        train_dataset=features.get("train"),
        eval_dataset=features.get("eval"),
        eval_examples=examples.get("eval"),
        processing_class=tokenizer,
        data_collator=data_collator,
        compute_metrics=(
            partial(compute_squad_eval_metrics, version_2_with_negative=data_args.version_2_with_negative)
            if generate
            else None
        ),
        post_process_function=partial(
            post_processing_function,
            version_2_with_negative=data_args.version_2_with_negative,
            columns=columns,
            output_dir=training_args.output_dir,
        ),
        generation_kwargs={
            "max_length": max_length if max_length is not None else data_args.val_max_answer_length,
            "num_beams": num_beams,
        },
    )


# Train / evaluate / predict -------------------------------------------------------------------------------------------


def main(argv=None):
    start_cpu_process_group(argv)  # torchrun without a GPU: one gloo job (set before TrainingArguments reads it)
    # Arguments
    model_args, data_args, training_args, adapter_args = parse_args(
        (ModelArguments, DataTrainingArguments, Seq2SeqTrainingArguments, AdapterArguments), argv
    )
    generate = resolve_generation(training_args, argv)
    setup_logging(training_args, logger)
    log_generation_mode(generate, training_args)
    last_checkpoint = detect_last_checkpoint(training_args, adapter_args)  # prepare_output_dir cleans up later
    check_merge_flag(model_args, training_args, adapter_args, AutoModelForSeq2SeqLM)  # --merge_adapter_on_save
    checks_seq2seq.check_seq2seq_arguments(model_args, data_args, training_args, adapter_args)  # checks.py

    set_seed(training_args.seed)  # before the model is created, so the adapter weights are reproducible

    # Config and tokenizer (the model's weights load once every check has passed)
    config, tokenizer = load_config_and_tokenizer(model_args, use_fast=model_args.use_fast_tokenizer)
    max_seq_length = capped_length(data_args.max_seq_length, tokenizer, "max_seq_length")
    checks_seq2seq.check_seq2seq_model(config, data_args, training_args, adapter_args, max_seq_length)  # checks.py

    # Data: {"train"/"eval"/"predict": raw examples} for the stages asked for, cut to --max_*_samples
    examples, columns = load_qa_examples(data_args, model_args, training_args, answer_spans,
                                         one_example_per_question)
    checks.check_qa_data(examples, columns, data_args, training_args, answer_spans, ["loss"], generate)  # checks.py

    # Repair: answers into the SQuAD layout; training answers not where answer_start says realigned, or dropped
    examples = repair_qa_examples(examples, data_args, columns, answer_spans, training_args)

    # Model
    if training_args.do_eval or training_args.do_predict:
        require_fast_tokenizer(tokenizer, "its offsets split long contexts into windows")
    model = load_model(model_args, config, tokenizer, training_args.label_smoothing_factor)
    # The adapter is named after the task ("squad", or --dataset_name; the upstream script used "mlm").
    setup_adapters(model, adapter_args, adapter_name(data_args, "squad"))  # its errors: one line, nothing written

    # Preprocessing
    features = build_all_features(examples, tokenizer, columns, max_seq_length, data_args, training_args)

    # Trainer (created first: where it fails, e.g. on a --report_to integration that is not installed, the output
    # folder is as it was), then the first write
    trainer = make_trainer(model, tokenizer, examples, features, columns, data_args, training_args, adapter_args,
                           generate)
    prepare_output_dir(training_args, last_checkpoint)  # every check passed: clear what an earlier run left

    # Train / evaluate / predict
    train_evaluate_predict(trainer, last_checkpoint, data_args, features, examples.get("predict"))
    save_merged_model(trainer, model_args, AutoModelForSeq2SeqLM)  # --merge_adapter_on_save: OUTPUT_DIR/merged/
    if training_args.push_to_hub:
        save_model_card(trainer, model_args, data_args, "question-answering")
    release_output_dir(training_args)  # the lock on --output_dir (a process that ends lets go anyway)


if __name__ == "__main__":
    try:
        main()
    except UsageError as err:
        sys.exit(f"error: {err}")
    finally:
        end_process_group()  # a distributed run's, before the interpreter exits (which gloo's threads may abort)
