# coding=utf-8
"""Helpers shared by the question-answering (and language-modelling) scripts.

Sections, in the order a script uses them:
  1. Script plumbing: argument parsing, logging, checkpoint detection, user errors.
  2. QA data loading: local files in any of the formats users have (flattened HF JSON, the original nested SQuAD
     JSON, JSON Lines, CSV), detected from the content; hub datasets with a clear offline error.
  3. Post-processing: mapping start/end logits back to answer spans in the original contexts.
  4. SQuAD metrics that need no network (values identical to the official v1.1 and v2.0 evaluation scripts).
  5. Language-modelling helpers (run_mlm.py, run_clm.py): data loading, config overrides, blocks, offline accuracy.
"""
import collections
import hashlib
import itertools
import json
import logging
import math
import os
import sys
from typing import Optional, Tuple

import numpy as np
from tqdm.auto import tqdm


logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# 1. Script plumbing
# ----------------------------------------------------------------------------------------------------------------------


class UsageError(ValueError):
    """A mistake in the user's command or data. The scripts print its message as one line and exit non-zero."""


def parse_args(dataclass_types, argv=None):
    """Parse the command line into the given dataclasses. A single `.json` argument is read as an arguments file."""
    from transformers import HfArgumentParser

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = HfArgumentParser(dataclass_types)
    if len(argv) == 1 and argv[0].endswith(".json"):
        if not os.path.isfile(argv[0]):
            raise UsageError(f"Arguments file {argv[0]} does not exist.")
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def setup_logging(training_args, script_logger):
    """Log to stdout like the reference scripts: INFO on the main process, the process log level everywhere else."""
    import datasets
    import transformers

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log:
        # The default of training_args.log_level is passive, so we set log level at info here to have that default.
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    script_logger.setLevel(log_level)
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    script_logger.warning(
        f"Process rank: {training_args.local_rank}, device: {training_args.device}, n_gpu: {training_args.n_gpu}, "
        + f"distributed training: {training_args.parallel_mode.value == 'distributed'}, "
        + f"16-bits training: {training_args.fp16}"
    )
    script_logger.info(f"Training/evaluation parameters {training_args}")
    return log_level


RESULT_FILES = ("all_results.json", "train_results.json", "eval_results.json", "predict_results.json")


def detect_last_checkpoint(training_args) -> Optional[str]:
    """The reference rule: resume from the last checkpoint-N of a non-empty output_dir, refuse any other non-empty one.

    Only applies with --do_train and without --overwrite_output_dir. With --overwrite_output_dir the result files of
    an earlier run are removed, so that all_results.json describes this run only (the reference merged into them).
    """
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = training_args.output_dir
    if training_args.overwrite_output_dir and os.path.isdir(output_dir) and training_args.should_save:
        for name in RESULT_FILES:
            path = os.path.join(output_dir, name)
            if os.path.isfile(path):
                os.remove(path)
        return None
    if not (os.path.isdir(output_dir) and training_args.do_train):
        return None
    last_checkpoint = get_last_checkpoint(output_dir)
    if last_checkpoint is None and len(os.listdir(output_dir)) > 0:
        raise UsageError(
            f"Output directory ({output_dir}) already exists and is not empty. "
            "Use --overwrite_output_dir to overcome."
        )
    if last_checkpoint is not None and training_args.resume_from_checkpoint is None:
        logger.info(
            f"Checkpoint detected, resuming training at {last_checkpoint}. To avoid this behavior, change "
            "the `--output_dir` or add `--overwrite_output_dir` to train from scratch."
        )
    return last_checkpoint


def checkpoint_to_resume(training_args, last_checkpoint):
    """An explicit --resume_from_checkpoint wins over the automatically detected one."""
    if training_args.resume_from_checkpoint is not None:
        return training_args.resume_from_checkpoint
    return last_checkpoint


def model_card_kwargs(model_args, data_args, task: str) -> dict:
    """Keyword arguments for Trainer.create_model_card / push_to_hub, as the reference builds them."""
    kwargs = {"finetuned_from": model_args.model_name_or_path, "tasks": task}
    if data_args.dataset_name is not None:
        kwargs["dataset_tags"] = data_args.dataset_name
        if data_args.dataset_config_name is not None:
            kwargs["dataset_args"] = data_args.dataset_config_name
            kwargs["dataset"] = f"{data_args.dataset_name} {data_args.dataset_config_name}"
        else:
            kwargs["dataset"] = data_args.dataset_name
    return kwargs


# ----------------------------------------------------------------------------------------------------------------------
# 2. QA data loading
# ----------------------------------------------------------------------------------------------------------------------

QA_FILE_EXTENSIONS = ("json", "jsonl", "csv")


def check_qa_data_files(data_args):
    """The reference __post_init__ checks, with messages that say how to fix the command."""
    files = [data_args.train_file, data_args.validation_file, data_args.test_file]
    if data_args.dataset_name is None and all(f is None for f in files):
        raise UsageError("Need either a dataset name or a training/validation file/test_file.")
    for flag, path in (("--train_file", files[0]), ("--validation_file", files[1]), ("--test_file", files[2])):
        if path is None:
            continue
        extension = path.split(".")[-1].lower()
        if extension not in QA_FILE_EXTENSIONS:
            raise UsageError(
                f"{flag} {path}: unsupported extension '.{extension}'. Use a .json (flattened or original nested "
                "SQuAD), .jsonl or .csv file."
            )


def load_qa_raw_datasets(data_args, model_args):
    """Load the raw QA examples: a hub dataset, or local files split by split (train/validation/test)."""
    import datasets

    if data_args.dataset_name is not None:
        try:
            return datasets.load_dataset(
                data_args.dataset_name,
                data_args.dataset_config_name,
                cache_dir=model_args.cache_dir,
                token=model_args.token,
                trust_remote_code=model_args.trust_remote_code,
            )
        except (ConnectionError, FileNotFoundError, OSError) as err:
            raise UsageError(
                f"Could not load dataset '{data_args.dataset_name}' from the Hugging Face Hub ({type(err).__name__}). "
                "Without network access, pass local files instead: --train_file/--validation_file/--test_file "
                "(SQuAD JSON, JSON Lines or CSV)."
            ) from err
    splits = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
    return datasets.DatasetDict(
        {split: load_qa_file(path, model_args.cache_dir) for split, path in splits.items() if path is not None}
    )


def detect_qa_file_format(path: str) -> str:
    """Return "flat" ({"data": [records]}), "nested" (original SQuAD), "records" (a JSON list), "jsonl" or "csv"."""
    if not os.path.isfile(path):
        raise UsageError(f"Data file {path} does not exist.")
    if path.lower().endswith(".csv"):
        return "csv"
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if not head:
        raise UsageError(f"Data file {path} is empty.")
    if head.startswith("["):
        return "records"
    if head.startswith("{"):
        try:
            content = _read_json(path)
        except UsageError:
            if _first_line_is_json(path):
                return "jsonl"  # several JSON objects, one per line
            raise
        if isinstance(content, dict) and isinstance(content.get("data"), list):
            first = content["data"][0] if content["data"] else {}
            return "nested" if isinstance(first, dict) and "paragraphs" in first else "flat"
        return "jsonl"  # a single record on a single line
    raise UsageError(f"Data file {path} is neither JSON, JSON Lines nor CSV (it starts with {head[:20]!r}).")


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise UsageError(f"Data file {path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}.")


def _first_line_is_json(path) -> bool:
    with open(path, encoding="utf-8") as f:
        try:
            return isinstance(json.loads(f.readline()), dict)
        except json.JSONDecodeError:
            return False


def flatten_nested_squad(squad: dict) -> list:
    """The original SQuAD v1.1/v2.0 layout (data[].paragraphs[].qas[]) as flat records, in file order.

    Unanswerable v2 questions (is_impossible) get empty answers, as in the hub's squad_v2 dataset: their
    plausible_answers are not answers.
    """
    records = []
    for article in squad["data"]:
        title = article.get("title", "")
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible", False) else qa.get("answers", [])
                records.append(
                    {
                        "id": str(qa["id"]),
                        "title": title,
                        "context": paragraph["context"],
                        "question": qa["question"],
                        "answers": {
                            "text": [a["text"] for a in answers],
                            "answer_start": [int(a["answer_start"]) for a in answers],
                        },
                    }
                )
    return records


def _flattened_copy(path: str, cache_dir: Optional[str]) -> str:
    """Write the nested SQuAD file as JSON Lines in the datasets cache, named by the content hash (never stale)."""
    import datasets

    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:20]
    folder = os.path.join(cache_dir or datasets.config.HF_DATASETS_CACHE, "flattened_squad")
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, f"{digest}.jsonl")
    if not os.path.isfile(target):
        tmp = f"{target}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for record in flatten_nested_squad(_read_json(path)):
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, target)  # atomic: a concurrent process never reads half a file
    return target


def _parse_csv_answers(example):
    answers = example["answers"]
    if isinstance(answers, str):
        answers = json.loads(answers) if answers.strip() else {"text": [], "answer_start": []}
    return {"answers": {"text": list(answers["text"]), "answer_start": [int(s) for s in answers["answer_start"]]}}


def load_qa_file(path: str, cache_dir: Optional[str] = None):
    """One local QA file as a datasets.Dataset of flat records, whatever its format.

    Loading goes through datasets' json/csv builders so that the result lives in the datasets cache and later
    `.map` calls are cached on disk too.
    """
    import datasets

    fmt = detect_qa_file_format(path)
    if fmt == "flat":
        dataset = datasets.load_dataset("json", data_files={"data": path}, field="data", cache_dir=cache_dir)["data"]
    elif fmt == "nested":
        flat_path = _flattened_copy(path, cache_dir)
        dataset = datasets.load_dataset("json", data_files={"data": flat_path}, cache_dir=cache_dir)["data"]
    elif fmt in ("jsonl", "records"):
        dataset = datasets.load_dataset("json", data_files={"data": path}, cache_dir=cache_dir)["data"]
    else:
        dataset = datasets.load_dataset("csv", data_files={"data": path}, cache_dir=cache_dir)["data"]
        if "answers" in dataset.column_names:
            dataset = dataset.map(_parse_csv_answers, desc=f"Parsing CSV answers of {os.path.basename(path)}")
    if "id" in dataset.column_names and dataset.features["id"].dtype != "string":
        dataset = dataset.cast_column("id", datasets.Value("string"))
    return dataset


# ----------------------------------------------------------------------------------------------------------------------
# 3. Post-processing
# ----------------------------------------------------------------------------------------------------------------------


def postprocess_qa_predictions(
    examples,
    features,
    predictions: Tuple[np.ndarray, np.ndarray],
    version_2_with_negative: bool = False,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    null_score_diff_threshold: float = 0.0,
    output_dir: Optional[str] = None,
    prefix: Optional[str] = None,
    log_level: Optional[int] = logging.WARNING,
):
    """
    Post-processes the predictions of a question-answering model to convert them to answers that are substrings of the
    original contexts. This is the base postprocessing functions for models that only return start and end logits.

    Args:
        examples: The non-preprocessed dataset (see the main script for more information).
        features: The processed dataset (see the main script for more information).
        predictions (:obj:`Tuple[np.ndarray, np.ndarray]`):
            The predictions of the model: two arrays containing the start logits and the end logits respectively. Its
            first dimension must match the number of elements of :obj:`features`.
        version_2_with_negative (:obj:`bool`, `optional`, defaults to :obj:`False`):
            Whether or not the underlying dataset contains examples with no answers.
        n_best_size (:obj:`int`, `optional`, defaults to 20):
            The total number of n-best predictions to generate when looking for an answer.
        max_answer_length (:obj:`int`, `optional`, defaults to 30):
            The maximum length of an answer that can be generated. This is needed because the start and end predictions
            are not conditioned on one another.
        null_score_diff_threshold (:obj:`float`, `optional`, defaults to 0):
            The threshold used to select the null answer: if the best answer has a score that is less than the score of
            the null answer minus this threshold, the null answer is selected for this example (note that the score of
            the null answer for an example giving several features is the minimum of the scores for the null answer on
            each feature: all features must be aligned on the fact they `want` to predict a null answer).

            Only useful when :obj:`version_2_with_negative` is :obj:`True`.
        output_dir (:obj:`str`, `optional`):
            If provided, the dictionaries of predictions, n_best predictions (with their scores and logits) and, if
            :obj:`version_2_with_negative=True`, the dictionary of the scores differences between best and null
            answers, are saved in `output_dir`.
        prefix (:obj:`str`, `optional`):
            If provided, the dictionaries mentioned above are saved with `prefix` added to their names.
        log_level (:obj:`int`, `optional`, defaults to ``logging.WARNING``):
            ``logging`` log level (e.g., ``logging.WARNING``)
    """
    if len(predictions) != 2:
        raise ValueError("`predictions` should be a tuple with two elements (start_logits, end_logits).")
    all_start_logits, all_end_logits = predictions

    if len(predictions[0]) != len(features):
        raise ValueError(f"Got {len(predictions[0])} predictions and {len(features)} features.")

    # Build a map example to its corresponding features.
    example_id_to_index = {k: i for i, k in enumerate(examples["id"])}
    features_per_example = collections.defaultdict(list)
    for i, feature in enumerate(features):
        features_per_example[example_id_to_index[feature["example_id"]]].append(i)

    # The dictionaries we have to fill.
    all_predictions = collections.OrderedDict()
    all_nbest_json = collections.OrderedDict()
    if version_2_with_negative:
        scores_diff_json = collections.OrderedDict()

    # Logging.
    logger.setLevel(log_level)
    logger.info(f"Post-processing {len(examples)} example predictions split into {len(features)} features.")

    # Let's loop over all the examples!
    for example_index, example in enumerate(tqdm(examples)):
        # Those are the indices of the features associated to the current example.
        feature_indices = features_per_example[example_index]

        min_null_prediction = None
        prelim_predictions = []

        # Looping through all the features associated to the current example.
        for feature_index in feature_indices:
            # We grab the predictions of the model for this feature.
            start_logits = all_start_logits[feature_index]
            end_logits = all_end_logits[feature_index]
            # This is what will allow us to map some the positions in our logits to span of texts in the original
            # context.
            offset_mapping = features[feature_index]["offset_mapping"]
            # Optional `token_is_max_context`, if provided we will remove answers that do not have the maximum context
            # available in the current feature.
            token_is_max_context = features[feature_index].get("token_is_max_context", None)

            # Update minimum null prediction.
            feature_null_score = start_logits[0] + end_logits[0]
            if min_null_prediction is None or min_null_prediction["score"] > feature_null_score:
                min_null_prediction = {
                    "offsets": (0, 0),
                    "score": feature_null_score,
                    "start_logit": start_logits[0],
                    "end_logit": end_logits[0],
                }

            # Go through all possibilities for the `n_best_size` greater start and end logits.
            start_indexes = np.argsort(start_logits)[-1 : -n_best_size - 1 : -1].tolist()
            end_indexes = np.argsort(end_logits)[-1 : -n_best_size - 1 : -1].tolist()
            for start_index in start_indexes:
                for end_index in end_indexes:
                    # Don't consider out-of-scope answers, either because the indices are out of bounds or correspond
                    # to part of the input_ids that are not in the context.
                    if (
                        start_index >= len(offset_mapping)
                        or end_index >= len(offset_mapping)
                        or offset_mapping[start_index] is None
                        or len(offset_mapping[start_index]) < 2
                        or offset_mapping[end_index] is None
                        or len(offset_mapping[end_index]) < 2
                    ):
                        continue
                    # Don't consider answers with a length that is either < 0 or > max_answer_length.
                    if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                        continue
                    # Don't consider answer that don't have the maximum context available (if such information is
                    # provided).
                    if token_is_max_context is not None and not token_is_max_context.get(str(start_index), False):
                        continue

                    prelim_predictions.append(
                        {
                            "offsets": (offset_mapping[start_index][0], offset_mapping[end_index][1]),
                            "score": start_logits[start_index] + end_logits[end_index],
                            "start_logit": start_logits[start_index],
                            "end_logit": end_logits[end_index],
                        }
                    )
        if version_2_with_negative and min_null_prediction is not None:
            # Add the minimum null prediction
            prelim_predictions.append(min_null_prediction)
            null_score = min_null_prediction["score"]

        # Only keep the best `n_best_size` predictions.
        predictions = sorted(prelim_predictions, key=lambda x: x["score"], reverse=True)[:n_best_size]

        # Add back the minimum null prediction if it was removed because of its low score.
        if (
            version_2_with_negative
            and min_null_prediction is not None
            and not any(p["offsets"] == (0, 0) for p in predictions)
        ):
            predictions.append(min_null_prediction)

        # Use the offsets to gather the answer text in the original context.
        context = example["context"]
        for pred in predictions:
            offsets = pred.pop("offsets")
            pred["text"] = context[offsets[0] : offsets[1]]

        # In the very rare edge case we have not a single non-null prediction, we create a fake prediction to avoid
        # failure.
        if len(predictions) == 0 or (len(predictions) == 1 and predictions[0]["text"] == ""):
            predictions.insert(0, {"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "score": 0.0})

        # Compute the softmax of all scores (we do it with numpy to stay independent from torch/tf in this file, using
        # the LogSumExp trick).
        scores = np.array([pred.pop("score") for pred in predictions])
        exp_scores = np.exp(scores - np.max(scores))
        probs = exp_scores / exp_scores.sum()

        # Include the probabilities in our predictions.
        for prob, pred in zip(probs, predictions):
            pred["probability"] = prob

        # Pick the best prediction. If the null answer is not possible, this is easy.
        if not version_2_with_negative:
            all_predictions[example["id"]] = predictions[0]["text"]
        else:
            # Otherwise we first need to find the best non-empty prediction.
            i = 0
            while predictions[i]["text"] == "":
                i += 1
            best_non_null_pred = predictions[i]

            # Then we compare to the null prediction using the threshold.
            score_diff = null_score - best_non_null_pred["start_logit"] - best_non_null_pred["end_logit"]
            scores_diff_json[example["id"]] = float(score_diff)  # To be JSON-serializable.
            if score_diff > null_score_diff_threshold:
                all_predictions[example["id"]] = ""
            else:
                all_predictions[example["id"]] = best_non_null_pred["text"]

        # Make `predictions` JSON-serializable by casting np.float back to float.
        all_nbest_json[example["id"]] = [
            {k: (float(v) if isinstance(v, (np.float16, np.float32, np.float64)) else v) for k, v in pred.items()}
            for pred in predictions
        ]

    write_prediction_files(
        output_dir, prefix, all_predictions, all_nbest_json, scores_diff_json if version_2_with_negative else None
    )
    return all_predictions


def postprocess_qa_predictions_with_beam_search(
    examples,
    features,
    predictions: Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    version_2_with_negative: bool = False,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    start_n_top: int = 5,
    end_n_top: int = 5,
    output_dir: Optional[str] = None,
    prefix: Optional[str] = None,
    log_level: Optional[int] = logging.WARNING,
):
    """
    Post-processes the predictions of a question-answering model with beam search (XLNet, XLM, or an adapter model
    with the same head) into answers that are substrings of the original contexts.

    Args:
        examples: The non-preprocessed dataset (with `id` and `context`).
        features: The processed dataset (with `example_id`, `offset_mapping` and optionally `token_is_max_context`).
        predictions (:obj:`Tuple[np.ndarray, ...]`):
            The five outputs of the model at inference: `start_top_log_probs` and `start_top_index` (features x
            start_n_top), `end_top_log_probs` and `end_top_index` (features x start_n_top*end_n_top; the ends of the
            i-th start are at i*end_n_top .. i*end_n_top+end_n_top-1) and `cls_logits` (features). Their first
            dimension must match the number of elements of :obj:`features`.
        version_2_with_negative (:obj:`bool`, `optional`, defaults to :obj:`False`):
            Whether or not the underlying dataset contains examples with no answers: then the minimum `cls_logits` over
            the features of each example is returned (and written) as its null odds.
        n_best_size (:obj:`int`, `optional`, defaults to 20):
            The total number of n-best predictions to generate when looking for an answer.
        max_answer_length (:obj:`int`, `optional`, defaults to 30):
            The maximum length of an answer that can be generated, in tokens.
        start_n_top (:obj:`int`, `optional`, defaults to 5):
            The number of top start logits to keep when searching for the :obj:`n_best_size` predictions.
        end_n_top (:obj:`int`, `optional`, defaults to 5):
            The number of top end logits (per start) to keep when searching for the :obj:`n_best_size` predictions.
        output_dir (:obj:`str`, `optional`):
            If provided, the dictionaries of predictions, n_best predictions (with their scores and logits) and, if
            :obj:`version_2_with_negative=True`, the null odds are saved in `output_dir`.
        prefix (:obj:`str`, `optional`):
            If provided, the dictionaries mentioned above are saved with `prefix` added to their names.
        log_level (:obj:`int`, `optional`, defaults to ``logging.WARNING``):
            ``logging`` log level (e.g., ``logging.WARNING``)

    Returns:
        ``(all_predictions, scores_diff_json)``: ``{id: answer text}`` (always the best candidate, which may be ""
        only when there is none) and ``{id: min cls logit}`` for v2 (None for v1).
    """
    if len(predictions) != 5:
        raise ValueError("`predictions` should be a tuple with five elements.")
    start_top_log_probs, start_top_index, end_top_log_probs, end_top_index, cls_logits = predictions

    if len(predictions[0]) != len(features):
        raise ValueError(f"Got {len(predictions[0])} predictions and {len(features)} features.")

    # Build a map example to its corresponding features.
    example_id_to_index = {k: i for i, k in enumerate(examples["id"])}
    features_per_example = collections.defaultdict(list)
    for i, example_id in enumerate(_feature_column(features, "example_id")):
        features_per_example[example_id_to_index[example_id]].append(i)
    all_offset_mappings = _feature_column(features, "offset_mapping")
    all_token_is_max_context = _feature_column(features, "token_is_max_context")

    # The dictionaries we have to fill.
    all_predictions = collections.OrderedDict()
    all_nbest_json = collections.OrderedDict()
    scores_diff_json = collections.OrderedDict() if version_2_with_negative else None

    # Logging.
    logger.setLevel(log_level)
    logger.info(f"Post-processing {len(examples)} example predictions split into {len(features)} features.")

    # Let's loop over all the examples!
    for example_index, (example_id, context) in enumerate(tqdm(zip(examples["id"], examples["context"]),
                                                               total=len(examples))):
        # Those are the indices of the features associated to the current example.
        feature_indices = features_per_example[example_index]

        min_null_score = None
        prelim_predictions = []

        # Looping through all the features associated to the current example.
        for feature_index in feature_indices:
            # We grab the predictions of the model for this feature.
            start_log_prob = start_top_log_probs[feature_index]
            start_indexes = start_top_index[feature_index]
            end_log_prob = end_top_log_probs[feature_index]
            end_indexes = end_top_index[feature_index]
            feature_null_score = cls_logits[feature_index]
            # This is what will allow us to map some the positions in our logits to span of texts in the original
            # context.
            offset_mapping = all_offset_mappings[feature_index]
            # Optional `token_is_max_context`, if provided we will remove answers that do not have the maximum context
            # available in the current feature.
            token_is_max_context = all_token_is_max_context[feature_index]

            # Update minimum null prediction
            if min_null_score is None or feature_null_score < min_null_score:
                min_null_score = feature_null_score

            # Go through all possibilities for the `n_start_top`/`n_end_top` greater start and end logits.
            for i in range(start_n_top):
                for j in range(end_n_top):
                    start_index = int(start_indexes[i])
                    j_index = i * end_n_top + j
                    end_index = int(end_indexes[j_index])
                    # Don't consider out-of-scope answers (last part of the test should be unnecessary because of the
                    # p_mask but let's not take any risk)
                    if (
                        start_index >= len(offset_mapping)
                        or end_index >= len(offset_mapping)
                        or offset_mapping[start_index] is None
                        or len(offset_mapping[start_index]) < 2
                        or offset_mapping[end_index] is None
                        or len(offset_mapping[end_index]) < 2
                    ):
                        continue

                    # Don't consider answers with a length negative or > max_answer_length.
                    if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                        continue
                    # Don't consider answer that don't have the maximum context available (if such information is
                    # provided).
                    if token_is_max_context is not None and not token_is_max_context.get(str(start_index), False):
                        continue
                    prelim_predictions.append(
                        {
                            "offsets": (offset_mapping[start_index][0], offset_mapping[end_index][1]),
                            "score": start_log_prob[i] + end_log_prob[j_index],
                            "start_log_prob": start_log_prob[i],
                            "end_log_prob": end_log_prob[j_index],
                        }
                    )

        # Only keep the best `n_best_size` predictions.
        predictions = sorted(prelim_predictions, key=lambda x: x["score"], reverse=True)[:n_best_size]

        # Use the offsets to gather the answer text in the original context.
        for pred in predictions:
            offsets = pred.pop("offsets")
            pred["text"] = context[offsets[0] : offsets[1]]

        # In the very rare edge case we have not a single non-null prediction, we create a fake prediction to avoid
        # failure.
        if len(predictions) == 0:
            # Without predictions min_null_score is going to be None and None will cause an exception later
            min_null_score = -2e-6
            predictions.insert(0, {"text": "", "start_logit": -1e-6, "end_logit": -1e-6, "score": min_null_score})

        # Compute the softmax of all scores (we do it with numpy to stay independent from torch/tf in this file, using
        # the LogSumExp trick).
        scores = np.array([pred.pop("score") for pred in predictions])
        exp_scores = np.exp(scores - np.max(scores))
        probs = exp_scores / exp_scores.sum()

        # Include the probabilities in our predictions.
        for prob, pred in zip(probs, predictions):
            pred["probability"] = prob

        # Pick the best prediction and set the probability for the null answer.
        all_predictions[example_id] = predictions[0]["text"]
        if version_2_with_negative:
            scores_diff_json[example_id] = float(min_null_score)

        # Make `predictions` JSON-serializable by casting np.float back to float.
        all_nbest_json[example_id] = [
            {k: (float(v) if isinstance(v, (np.float16, np.float32, np.float64)) else v) for k, v in pred.items()}
            for pred in predictions
        ]

    write_prediction_files(output_dir, prefix, all_predictions, all_nbest_json, scores_diff_json)
    return all_predictions, scores_diff_json


def _feature_column(features, name):
    """One column of the features, read at once (reading `features[i]` decodes the whole row every time): from a
    datasets.Dataset, or from a list of dicts. A missing column reads as None for every feature."""
    if hasattr(features, "column_names"):
        return features[name] if name in features.column_names else [None] * len(features)
    return [feature.get(name) for feature in features]


def write_prediction_files(output_dir, prefix, predictions, nbest, null_odds=None):
    """Write {prefix}_predictions.json, {prefix}_nbest_predictions.json and, for v2, {prefix}_null_odds.json."""
    if output_dir is None:
        return
    if not os.path.isdir(output_dir):
        raise EnvironmentError(f"{output_dir} is not a directory.")
    named = [("predictions", predictions), ("nbest_predictions", nbest)]
    if null_odds is not None:
        named.append(("null_odds", null_odds))
    for name, content in named:
        path = os.path.join(output_dir, f"{name}.json" if prefix is None else f"{prefix}_{name}.json")
        logger.info(f"Saving {name.replace('_', ' ')} to {path}.")
        with open(path, "w") as writer:
            writer.write(json.dumps(content, indent=4) + "\n")


# ----------------------------------------------------------------------------------------------------------------------
# 4. SQuAD metrics, offline
# ----------------------------------------------------------------------------------------------------------------------
# The reference scripts call evaluate.load("squad"/"squad_v2"), which needs the Hugging Face Hub. These functions give
# the same keys and values with no network: v2.0 is assembled from transformers' copy of the official v2.0 script
# (transformers.data.metrics.squad_metrics); v1.1 differs from it only in its F1 for two empty strings (0, not 1), so
# its F1 is the official v1.1 function.


def squad_v1_f1(prediction: str, ground_truth: str) -> float:
    """F1 of the official SQuAD v1.1 evaluation script (0 when nothing is shared, even for two empty answers)."""
    from transformers.data.metrics.squad_metrics import normalize_answer

    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def compute_squad_v1(predictions, references) -> dict:
    """`evaluate.load("squad").compute(...)`: {"exact_match", "f1"} in percent over all references."""
    from transformers.data.metrics.squad_metrics import normalize_answer

    predicted = {p["id"]: p["prediction_text"] for p in predictions}
    exact_match = f1 = 0.0
    for ref in references:
        if ref["id"] not in predicted:
            logger.warning(f"Unanswered question {ref['id']} will receive score 0.")
            continue
        golds = list(ref["answers"]["text"])
        if not golds:
            raise UsageError(
                f"Question {ref['id']} has no answer, which SQuAD v1.1 scoring cannot handle: this looks like "
                "SQuAD v2.0 data. Add --version_2_with_negative."
            )
        prediction = predicted[ref["id"]]
        exact_match += max(float(normalize_answer(prediction) == normalize_answer(g)) for g in golds)
        f1 += max(squad_v1_f1(prediction, g) for g in golds)
    total = len(references)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def compute_squad_v2(predictions, references, no_answer_threshold: float = 1.0) -> dict:
    """`evaluate.load("squad_v2").compute(...)`: exact, f1, total, HasAns_*, NoAns_*, best_* (percent)."""
    from transformers.data.metrics import squad_metrics as official

    na_probs = {p["id"]: p["no_answer_probability"] for p in predictions}
    predicted = {p["id"]: p["prediction_text"] for p in predictions}
    has_answer = {ref["id"]: bool(ref["answers"]["text"]) for ref in references}

    exact_raw, f1_raw = {}, {}
    for ref in references:
        qid = ref["id"]
        golds = [text for text in ref["answers"]["text"] if official.normalize_answer(text)] or [""]
        if qid not in predicted:
            logger.warning(f"Missing prediction for {qid}")
            continue
        exact_raw[qid] = max(official.compute_exact(g, predicted[qid]) for g in golds)
        f1_raw[qid] = max(official.compute_f1(g, predicted[qid]) for g in golds)

    exact = official.apply_no_ans_threshold(exact_raw, na_probs, has_answer, no_answer_threshold)
    f1 = official.apply_no_ans_threshold(f1_raw, na_probs, has_answer, no_answer_threshold)
    result = official.make_eval_dict(exact, f1)
    has_ans_qids = [qid for qid, has in has_answer.items() if has]
    no_ans_qids = [qid for qid, has in has_answer.items() if not has]
    if has_ans_qids:
        official.merge_eval(result, official.make_eval_dict(exact, f1, qid_list=has_ans_qids), "HasAns")
    if no_ans_qids:
        official.merge_eval(result, official.make_eval_dict(exact, f1, qid_list=no_ans_qids), "NoAns")
    official.find_all_best_thresh(result, predicted, exact_raw, f1_raw, na_probs, has_answer)
    return dict(result)


def compute_squad_metrics(predictions, references, version_2_with_negative: bool) -> dict:
    """The SQuAD metric the reference loads with evaluate, computed offline."""
    if version_2_with_negative:
        return compute_squad_v2(predictions, references)
    return compute_squad_v1(predictions, references)


# ----------------------------------------------------------------------------------------------------------------------
# 5. Language-modelling helpers (run_mlm.py, run_clm.py)
# ----------------------------------------------------------------------------------------------------------------------
# Data loading with the reference's validation carving, config overrides, the position-embedding check, grouping
# into blocks, offline accuracy and perplexity. Default behaviour is the reference's; the checks only turn its crashes
# (or silent nonsense) into one-line errors.

LM_FILE_BUILDERS = {"txt": "text", "csv": "csv", "json": "json", "jsonl": "json"}


def check_adapter_arguments(adapter_args):
    """--adapter_config must parse (checked before anything is loaded); adapters load only in adapter mode."""
    import adapters
    from adapters import AdapterConfig

    if adapter_args.train_adapter:
        try:
            AdapterConfig.load(adapter_args.adapter_config)
        except (ValueError, TypeError, SyntaxError) as err:
            valid = ", ".join(sorted(adapters.ADAPTER_CONFIG_MAP))
            raise UsageError(
                f"--adapter_config {adapter_args.adapter_config!r} is not a valid adapter configuration ({err}). "
                f"Use one of: {valid}; a JSON file; or a config string such as 'seq_bn[reduction_factor=8]' "
                "(string values quoted: 'seq_bn[non_linearity=\"gelu\"]')."
            ) from err
    elif adapter_args.load_adapter or adapter_args.load_lang_adapter:
        raise UsageError("--load_adapter/--load_lang_adapter need --train_adapter (adapters load in adapter mode).")


def lm_file_builder(path: str) -> str:
    """The `datasets` builder for a local LM data file: text, csv or json (JSON Lines or a list of records)."""
    return LM_FILE_BUILDERS[path.split(".")[-1].lower()]


def check_lm_data_args(data_args):
    """The reference __post_init__ checks (plus .jsonl, existing files, one format for both files)."""
    files = {"--train_file": data_args.train_file, "--validation_file": data_args.validation_file}
    if data_args.dataset_name is None and all(path is None for path in files.values()):
        raise UsageError("Need either a dataset name or a training/validation file.")
    for flag, path in files.items():
        if path is None:
            continue
        extension = path.split(".")[-1].lower()
        if extension not in LM_FILE_BUILDERS:
            raise UsageError(f"{flag} {path}: unsupported extension '.{extension}'. Use a .txt, .csv, .json or .jsonl file.")
        if "*" not in path and "://" not in path and not os.path.isfile(path):
            raise UsageError(f"{flag} {path} does not exist.")
    if data_args.train_file is not None and data_args.validation_file is not None:
        if lm_file_builder(data_args.train_file) != lm_file_builder(data_args.validation_file):
            raise UsageError(
                f"--train_file {data_args.train_file} and --validation_file {data_args.validation_file} have different "
                "formats; both are read with one loader, so give them the same format (.txt, .csv or .json/.jsonl)."
            )
    pct = data_args.validation_split_percentage
    if pct is not None and not 0 <= pct < 100:
        raise UsageError(f"--validation_split_percentage {pct} must be between 0 and 99.")


def check_lm_streaming(data_args, training_args):
    """A stream has no length: training needs --max_steps, and a validation split cannot be carved by percentage."""
    if not data_args.streaming:
        return
    if training_args.do_train and training_args.max_steps <= 0:
        raise UsageError(
            "--streaming reads the training data as a stream of unknown length, so the number of epochs cannot be "
            "turned into steps: pass --max_steps N (the number of optimizer steps to train for)."
        )
    has_validation = data_args.validation_file is not None or data_args.dataset_name is not None
    if training_args.do_eval and not has_validation:
        raise UsageError(
            "--streaming with --do_eval needs a validation split: a percentage of a stream of unknown length "
            "(--validation_split_percentage) cannot be carved out. Pass --validation_file."
        )


def _load_lm_dataset(path, name=None, **kwargs):
    import datasets

    try:
        return datasets.load_dataset(path, name, **kwargs)
    except ConnectionError as err:
        raise UsageError(
            f"Could not load dataset '{path}' from the Hugging Face Hub ({type(err).__name__}). Without network "
            "access, pass local files instead: --train_file/--validation_file (.txt, .csv, .json or .jsonl)."
        ) from err


def load_lm_raw_datasets(data_args, model_args, text_builder_kwargs=None):
    """Raw LM data as in the reference: a hub dataset or local files; with no validation split, the first
    validation_split_percentage % of train becomes validation and the rest train (even without --do_eval).

    Returns (raw_datasets, carved) where carved says the validation split was cut from train. With --streaming the
    data is streamed (local files too) and nothing is carved (check_lm_streaming has ruled out --do_eval then)."""
    common = {"cache_dir": model_args.cache_dir, "token": model_args.token}
    if data_args.streaming:
        common["streaming"] = True
    if data_args.dataset_name is not None:
        path, name = data_args.dataset_name, data_args.dataset_config_name
        common["trust_remote_code"] = model_args.trust_remote_code
    else:
        data_files = {}
        if data_args.train_file is not None:
            data_files["train"] = data_args.train_file
        if data_args.validation_file is not None:
            data_files["validation"] = data_args.validation_file
        path, name = lm_file_builder(data_args.validation_file or data_args.train_file), None
        common["data_files"] = data_files
        if path == "text":
            common.update(text_builder_kwargs or {})
    try:
        raw_datasets = _load_lm_dataset(path, name, **common)
        carved = "validation" not in raw_datasets and "train" in raw_datasets and not data_args.streaming
        if carved:
            pct = data_args.validation_split_percentage
            empty = raw_datasets["train"].select([])
            raw_datasets["validation"] = _load_split_or_empty(path, name, f"train[:{pct}%]", empty, common)
            raw_datasets["train"] = _load_split_or_empty(path, name, f"train[{pct}%:]", empty, common)
    except (FileNotFoundError, ValueError) as err:
        if isinstance(err, UsageError):
            raise
        raise UsageError(f"Could not load the language-modelling data ({type(err).__name__}: {err}).") from err
    return raw_datasets, carved


def _load_split_or_empty(path, name, split, empty, common):
    """A percentage slice of a split; datasets raises when the slice has no rows (reported later, if it matters)."""
    try:
        return _load_lm_dataset(path, name, split=split, **common)
    except ValueError as err:
        if "corresponds to no data" not in str(err):
            raise
        return empty


def check_raw_lm_splits(raw_datasets, carved, data_args, training_args):
    """Fail before the model is loaded when a split that is needed is missing or has no rows."""
    if training_args.do_train and "train" not in raw_datasets:
        raise UsageError("--do_train requires a train dataset: pass --train_file (or a --dataset_name with a train split).")
    if training_args.do_eval and "validation" not in raw_datasets:
        raise UsageError("--do_eval requires a validation dataset: pass --validation_file.")
    if data_args.streaming:
        return
    if training_args.do_train and len(raw_datasets["train"]) == 0:
        raise UsageError("The training data has no rows: check --train_file (or --validation_split_percentage).")
    if training_args.do_eval and len(raw_datasets["validation"]) == 0:
        if carved:
            total = len(raw_datasets["train"])
            raise UsageError(
                f"The validation split is empty: {data_args.validation_split_percentage}% of the {total} rows of the "
                "training data rounds to 0 rows. Pass --validation_file, or raise --validation_split_percentage."
            )
        raise UsageError("The validation data has no rows: check --validation_file.")


def lm_column_names(dataset) -> list:
    """Column names of a Dataset or IterableDataset (a stream of JSON may not know them before the first row)."""
    names = dataset.column_names
    if names is None:
        first = next(iter(dataset), None)
        names = list(first.keys()) if first is not None else []
    return list(names)


def apply_config_overrides(config, overrides: str):
    """config.update_from_string with errors that name the bad key and the valid ones.

    Accepts spaces around keys and values, and sets keys whose current value is None (e.g. gpt2's n_inner), which
    update_from_string refuses; everything else is update_from_string's parsing (int, float, true/false, string)."""
    import difflib

    pairs = []
    for item in overrides.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise UsageError(
                f"--config_overrides {overrides!r}: {item.strip()!r} is not key=value. "
                "Example: --config_overrides n_embd=10,resid_pdrop=0.2,scale_attn_weights=false"
            )
        pairs.append((key, value))
    valid = sorted(set(config.to_dict()) | set(getattr(config, "attribute_map", {})))
    unknown = [key for key, _ in pairs if not hasattr(config, key)]
    if unknown:
        hints = [f"{k} (did you mean {', '.join(difflib.get_close_matches(k, valid, n=3))}?)" if difflib.get_close_matches(k, valid) else k for k in unknown]
        raise UsageError(
            f"--config_overrides: unknown key(s) for a {config.model_type} config: {', '.join(hints)}. "
            f"Valid keys: {', '.join(valid)}."
        )
    settable = []
    for key, value in pairs:
        if getattr(config, key) is None:
            setattr(config, key, _parse_override_value(value))
        else:
            settable.append(f"{key}={value}")
    if settable:
        try:
            config.update_from_string(",".join(settable))
        except ValueError as err:
            raise UsageError(f"--config_overrides {overrides!r}: {err}.") from err


def _parse_override_value(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def from_pretrained_or_fail(loader, name, what, **kwargs):
    """loader(name, **kwargs); an OSError (no network, not a model folder, ...) becomes a one-line UsageError."""
    try:
        return loader(name, **kwargs)
    except OSError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"Could not load the {what} '{name}': {first_line} Without network access, pass a local directory "
            "(or fill the Hugging Face cache beforehand)."
        ) from err


# Model types whose learned (or fixed-size) absolute position table makes longer inputs fail with an index error.
# RoBERTa-style models start positions at pad_token_id + 1, so they can use pad_token_id + 1 fewer positions.
_OFFSET_POSITION_TYPES = frozenset({
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "xmod", "data2vec-text", "longformer",
    "roberta-prelayernorm", "ibert", "mpnet",
})
_ABSOLUTE_POSITION_TYPES = _OFFSET_POSITION_TYPES | frozenset({
    "bert", "distilbert", "albert", "electra", "megatron-bert", "mobilebert", "big_bird", "ernie", "layoutlm",
    "squeezebert", "bert-generation", "gpt2", "gpt_neo", "gpt_bigcode", "biogpt", "opt", "bart", "mbart", "plbart",
    "xlm",
})


def max_input_positions(config) -> Optional[int]:
    """How many tokens the model's absolute position embeddings can take; None when unknown or not limited
    (relative or rotary positions: longer inputs run, so the reference's behaviour is kept)."""
    if config.model_type not in _ABSOLUTE_POSITION_TYPES:
        return None
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    if config.model_type in _OFFSET_POSITION_TYPES:
        positions -= (config.pad_token_id or 0) + 1
    return positions


def check_fits_positions(length: int, config, flag: str, source: str = ""):
    """A block longer than the model's position table crashes in the first forward pass: say so up front."""
    limit = max_input_positions(config)
    if limit is not None and length > limit:
        raise UsageError(
            f"{flag} {length}{source} is larger than the {limit} positions of the model "
            f"({config.model_type} config: max_position_embeddings/n_positions). Pass {flag} {limit} or less, "
            "or use a config with more positions."
        )


def group_texts(examples, block_size: int, add_labels: bool = False):
    """Concatenate the tokenized texts of one map batch and cut them into block_size chunks; the remainder (and a
    batch shorter than one block) is dropped. add_labels copies input_ids to labels (causal LM)."""
    concatenated_examples = {k: list(itertools.chain(*examples[k])) for k in examples.keys()}
    total_length = len(concatenated_examples[list(examples.keys())[0]])
    total_length = (total_length // block_size) * block_size
    result = {
        k: [t[i : i + block_size] for i in range(0, total_length, block_size)]
        for k, t in concatenated_examples.items()
    }
    if add_labels:
        result["labels"] = result["input_ids"].copy()
    return result


def argmax_logits(logits, labels):
    """preprocess_logits_for_metrics: keep the argmax only (logits may be a tuple with past_key_values after them)."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def lm_accuracy(predictions, references, ignore_index: Optional[int] = None) -> dict:
    """`evaluate.load("accuracy")` offline: the fraction of equal positions (sklearn's accuracy_score), optionally
    skipping positions whose reference is ignore_index. nan when nothing is left to score."""
    predictions = np.asarray(predictions).reshape(-1)
    references = np.asarray(references).reshape(-1)
    if ignore_index is not None:
        keep = references != ignore_index
        predictions, references = predictions[keep], references[keep]
    if references.size == 0:
        return {"accuracy": float("nan")}
    return {"accuracy": float(np.average(predictions == references))}


def perplexity(eval_loss: float) -> float:
    """exp(eval_loss), inf on overflow, as the reference reports it."""
    try:
        return math.exp(eval_loss)
    except OverflowError:
        return float("inf")


def select_samples(dataset, max_samples: Optional[int]):
    """The first max_samples rows (all when None). A stream is cut by a generator rather than take(): the Trainer
    starts a new epoch when a stream runs out, and datasets refuses to re-iterate a take() in a later epoch."""
    if max_samples is None:
        return dataset
    if not hasattr(dataset, "__len__"):
        import datasets

        return datasets.IterableDataset.from_generator(
            _first_rows, gen_kwargs={"dataset": dataset, "n": max_samples}, features=dataset.features
        )
    return dataset.select(range(min(len(dataset), max_samples)))


def _first_rows(dataset, n):
    yield from itertools.islice(dataset, n)


def count_rows(dataset) -> int:
    """len(dataset), or the number of rows a stream yields (reads it once)."""
    if hasattr(dataset, "__len__"):
        return len(dataset)
    return sum(1 for _ in dataset)
