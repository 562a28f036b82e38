# coding=utf-8
"""Helpers shared by the question-answering (and language-modelling) scripts.

Sections, in the order a script uses them:
  1. Script plumbing: argument parsing, logging, checkpoint detection, user errors.
  2. QA data loading: local files in any of the formats users have (flattened HF JSON, the original nested SQuAD
     JSON, JSON Lines, CSV), detected from the content; hub datasets with a clear offline error.
  2b. Checks of the command line and the data before the model is loaded (one-line UsageErrors).
  3. Post-processing: mapping start/end logits back to answer spans in the original contexts.
  4. SQuAD metrics that need no network (values identical to the official v1.1 and v2.0 evaluation scripts).
  4b. Steps shared by the three QA scripts: building features, train / evaluate / predict and saving the results.
  5. Language-modelling helpers (run_mlm.py, run_clm.py): data loading, config overrides, blocks, offline accuracy.
"""
import collections
import hashlib
import itertools
import json
import logging
import math
import os
import re
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
    """Parse the command line into the given dataclasses. A single `.json` argument is read as an arguments file.

    The parser's own ValueErrors (unknown flags, inconsistent TrainingArguments such as --load_best_model_at_end with
    different eval/save strategies, --fp16 without a GPU) become one-line UsageErrors."""
    from transformers import HfArgumentParser

    argv = sys.argv[1:] if argv is None else list(argv)
    use_gloo_on_cpu_under_torchrun()
    parser = HfArgumentParser(dataclass_types)
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            if not os.path.isfile(argv[0]):
                raise UsageError(f"Arguments file {argv[0]} does not exist.")
            try:
                return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
            except json.JSONDecodeError as err:
                raise UsageError(
                    f"Arguments file {argv[0]} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}."
                ) from err
        return parser.parse_args_into_dataclasses(args=argv)
    except UsageError:
        raise
    except ValueError as err:
        raise UsageError(" ".join(str(err).split())) from err


def use_gloo_on_cpu_under_torchrun():
    """`torchrun --nproc_per_node N` on a machine without a GPU: make the N processes one distributed job (gloo).

    transformers only sets up CPU distributed training with --use_cpu; otherwise each process runs on its own as a
    single-process job, all writing the same files (and --ddp_backend gloo alone breaks evaluation). Must run before
    TrainingArguments is created (its device set-up reads ACCELERATE_USE_CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "ACCELERATE_USE_CPU" in os.environ:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "true"


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
# What an earlier run leaves next to its results: prediction files of the QA scripts.
PREDICTION_FILES = tuple(
    f"{stage}_{name}.json"
    for stage in ("eval", "predict")
    for name in ("predictions", "nbest_predictions", "null_odds", "generations")
)


def detect_last_checkpoint(training_args, remove_stale: bool = True) -> Optional[str]:
    """The reference rule: resume from the last checkpoint-N of a non-empty output_dir, refuse any other non-empty one.

    Only applies with --do_train and without --overwrite_output_dir. Only complete checkpoints count: one that a
    killed run left half-written is ignored (and removed by prepare_output_dir before training writes anything).
    An explicit --resume_from_checkpoint must be a complete checkpoint folder.

    remove_stale=True removes the results of an earlier run right away with --overwrite_output_dir (scripts that do
    not call prepare_output_dir); scripts that do pass False, so that a run stopped by a UsageError changes nothing.
    """
    check_resume_from_checkpoint(training_args)
    output_dir = training_args.output_dir
    if training_args.overwrite_output_dir and os.path.isdir(output_dir) and training_args.should_save:
        if remove_stale:
            remove_stale_outputs(training_args)
        return None
    if not (os.path.isdir(output_dir) and training_args.do_train):
        return None
    last_checkpoint = last_complete_checkpoint(output_dir)
    if last_checkpoint is None and _leftover_content(output_dir):
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
    """An explicit --resume_from_checkpoint wins over the automatically detected one ("True": the last complete
    checkpoint of --output_dir, "False": none)."""
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        return last_complete_checkpoint(training_args.output_dir) if resume.lower() == "true" else None
    if resume is not None:
        return resume
    return last_checkpoint


_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_problem(path: str) -> Optional[str]:
    """Why a checkpoint folder cannot be resumed from, or None when it is complete.

    transformers writes checkpoint-N/ file by file, trainer_state.json last (after the weights, optimizer, scheduler
    and RNG states), so a folder whose trainer_state.json is missing, cut short or from another step was left by a
    run killed while saving. The per-process RNG files of distributed runs are written concurrently with it, so
    they are checked too (a torch file is a zip archive: a cut one has no central directory)."""
    import zipfile

    state_file = os.path.join(path, "trainer_state.json")
    if not os.path.isfile(state_file):
        return "it has no trainer_state.json (the run was stopped while saving it)"
    try:
        with open(state_file, encoding="utf-8") as f:
            state = json.load(f)
    except (ValueError, OSError):
        return "its trainer_state.json is cut short (the run was stopped while saving it)"
    match = _CHECKPOINT_NAME.match(os.path.basename(os.path.normpath(path)))
    if match is not None and state.get("global_step") != int(match.group(1)):
        return f"its trainer_state.json is for step {state.get('global_step')}"
    for name in sorted(os.listdir(path)):
        if name.startswith("rng_state") and name.endswith(".pth"):
            try:
                with zipfile.ZipFile(os.path.join(path, name)) as archive:
                    if archive.testzip() is not None:
                        raise zipfile.BadZipFile(name)
            except (zipfile.BadZipFile, OSError, EOFError):
                return f"its {name} is cut short (the run was stopped while saving it)"
    return None


def _checkpoint_folders(output_dir: str) -> list:
    """checkpoint-N folders of output_dir, newest (largest N) first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_NAME.match(name)
        if match is not None and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return [path for _, path in sorted(found, reverse=True)]


def last_complete_checkpoint(output_dir: str) -> Optional[str]:
    """The newest checkpoint-N of output_dir that is complete (see checkpoint_problem); incomplete newer ones are
    skipped with a warning."""
    for path in _checkpoint_folders(output_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning(f"Ignoring the incomplete checkpoint {path}: {problem}.")
    return None


def _leftover_content(output_dir: str) -> list:
    """Names in output_dir other than incomplete checkpoints (which a killed run of this command left behind)."""
    return [
        name
        for name in os.listdir(output_dir)
        if not (_CHECKPOINT_NAME.match(name) and checkpoint_problem(os.path.join(output_dir, name)) is not None)
    ]


def check_resume_from_checkpoint(training_args):
    """--resume_from_checkpoint PATH must be a complete checkpoint folder (checked before anything is loaded)."""
    resume = training_args.resume_from_checkpoint
    if resume is None or (isinstance(resume, str) and resume.lower() in ("true", "false")):
        return
    if not os.path.isdir(resume):
        raise UsageError(
            f"--resume_from_checkpoint {resume} is not a folder. Pass a checkpoint-N folder written by an earlier "
            "run (or leave the flag out: training resumes from the last checkpoint of --output_dir by itself)."
        )
    problem = checkpoint_problem(resume)
    if problem is not None:
        raise UsageError(f"--resume_from_checkpoint {resume} cannot be resumed from: {problem}.")


def remove_stale_outputs(training_args, keep: Optional[str] = None):
    """--overwrite_output_dir: remove what an earlier run left in output_dir, so that it does not mix with this run's
    results: result and prediction files, and (when training) its checkpoint-N folders, which a later resume would
    otherwise pick up. `keep` (a checkpoint being resumed from) stays. Main process only."""
    import shutil

    output_dir = training_args.output_dir
    if not (training_args.should_save and os.path.isdir(output_dir)):
        return
    removed = []
    for name in RESULT_FILES + PREDICTION_FILES:
        path = os.path.join(output_dir, name)
        if os.path.isfile(path):
            os.remove(path)
            removed.append(name)
    if training_args.do_train:
        keep = os.path.realpath(keep) if keep else None
        for path in _checkpoint_folders(output_dir):
            if os.path.realpath(path) != keep:
                shutil.rmtree(path)
                removed.append(os.path.basename(path))
    if removed:
        logger.warning(f"--overwrite_output_dir: removed from {output_dir} what an earlier run left: {', '.join(removed)}.")


def prepare_output_dir(training_args, last_checkpoint: Optional[str] = None):
    """Call right before training/evaluation writes anything, after every check has passed (so that a run stopped by
    a UsageError leaves the output folder as it was). With --overwrite_output_dir: remove the earlier run's results
    and checkpoints (remove_stale_outputs). When resuming: remove the incomplete checkpoints a killed run left, so
    that the new ones are written into clean folders. Main process only."""
    output_dir = training_args.output_dir
    if not (training_args.should_save and os.path.isdir(output_dir)):
        return
    if training_args.overwrite_output_dir:
        resume = checkpoint_to_resume(training_args, last_checkpoint)
        remove_stale_outputs(training_args, keep=resume if isinstance(resume, str) else None)
    elif training_args.do_train:
        import shutil

        for path in _checkpoint_folders(output_dir):
            problem = checkpoint_problem(path)
            if problem is not None:
                logger.warning(f"Removing the incomplete checkpoint {path}: {problem}.")
                shutil.rmtree(path)


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
        {split: _load_qa_file_or_fail(path, model_args.cache_dir) for split, path in splits.items() if path is not None}
    )


def _load_qa_file_or_fail(path: str, cache_dir: Optional[str]):
    """load_qa_file, with the loaders' parse errors (datasets/pyarrow/pandas) turned into one line naming the file
    and, where it can be found, the line or record at fault."""
    try:
        return load_qa_file(path, cache_dir)
    except UsageError:
        raise
    except Exception as err:  # DatasetGenerationError, ArrowInvalid, ParserError, JSONDecodeError from a .map ...
        raise UsageError(_describe_load_failure(path, err)) from err


def _describe_load_failure(path: str, err: Exception) -> str:
    """One line on why a data file could not be read: what _file_problem finds in it, or the loader's innermost
    error (pandas names the CSV line, pyarrow the JSON position)."""
    problem = _file_problem(path)
    if problem is not None:
        return problem
    how = "read as CSV" if path.lower().endswith(".csv") else "loaded"
    return f"Data file {path} could not be {how}: {_innermost_error(err)}"


def describe_data_load_failure(paths, err: Exception) -> str:
    """_describe_load_failure over several local files (e.g. --train_file and --validation_file of the LM scripts):
    the first file with a problem found in it, else the loader's error naming all of them."""
    for path in paths:
        problem = _file_problem(path) if path and os.path.isfile(path) else None
        if problem is not None:
            return problem
    return f"Could not load {' and '.join(p for p in paths if p)}: {_innermost_error(err)}"


def _innermost_error(err: Exception) -> str:
    innermost = err
    while innermost.__cause__ is not None or innermost.__context__ is not None:
        innermost = innermost.__cause__ or innermost.__context__
    return " ".join(str(innermost).split())[:300] or type(innermost).__name__


def _file_problem(path: str) -> Optional[str]:
    """What makes a data file unreadable, found by reading it: not UTF-8, a JSON Lines line that is not JSON, a CSV row
    whose answers are not JSON. None when nothing is found."""
    extension = path.lower().rsplit(".", 1)[-1]
    try:
        if extension == "csv":
            import csv

            with open(path, encoding="utf-8", newline="") as f:
                try:
                    for row_number, row in enumerate(csv.DictReader(f), start=1):
                        answers = row.get("answers")
                        if isinstance(answers, str) and answers.strip():
                            try:
                                json.loads(answers)
                            except json.JSONDecodeError:
                                return (
                                    f"Data file {path}: the answers of data row {row_number} are not JSON "
                                    f'({answers[:60]!r}); write them as {{"text": [...], "answer_start": [...]}}.'
                                )
                except csv.Error:
                    return None
        elif extension in ("json", "jsonl"):
            with open(path, encoding="utf-8") as f:
                if f.read(4096).lstrip().startswith("["):
                    return None
                f.seek(0)
                for line_number, line in enumerate(f, start=1):
                    if line.strip():
                        try:
                            json.loads(line)
                        except json.JSONDecodeError as line_err:
                            if line_number == 1 and line.lstrip().startswith("{") and not line.rstrip().endswith("}"):
                                return None  # a JSON document over several lines, not JSON Lines
                            return f"Data file {path}: line {line_number} is not valid JSON ({line_err.msg})."
        else:
            with open(path, encoding="utf-8") as f:
                while f.read(1 << 20):
                    pass
    except UnicodeDecodeError as decode_err:
        return f"Data file {path} is not UTF-8 text (byte offset {decode_err.start}); save it as UTF-8."
    return None


def detect_qa_file_format(path: str) -> str:
    """Return "flat" ({"data": [records]}), "nested" (original SQuAD), "records" (a JSON list), "jsonl" or "csv"."""
    if not os.path.isfile(path):
        raise UsageError(f"Data file {path} {'is a folder, not a file' if os.path.isdir(path) else 'does not exist'}.")
    if path.lower().endswith(".csv"):
        return "csv"
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096).lstrip()
    except UnicodeDecodeError as err:
        raise UsageError(f"Data file {path} is not UTF-8 text (byte offset {err.start}); save it as UTF-8.") from err
    if not head:
        raise UsageError(f"Data file {path} is empty.")
    if head.startswith("\ufeff"):
        raise UsageError(f"Data file {path} starts with a byte-order mark (BOM): save it as UTF-8 without BOM.")
    if head.startswith("["):
        content = _read_json(path)
        if not content:
            raise UsageError(f"Data file {path} has no examples: it is an empty JSON list.")
        for i, record in enumerate(content):
            if not isinstance(record, dict):
                raise UsageError(
                    f"Data file {path}: record {i} is a {type(record).__name__}, not an object with "
                    '"id", "question", "context" and "answers".'
                )
        return "records"
    if head.startswith("{"):
        try:
            content = _read_json(path)
        except UsageError:
            if _first_line_is_json(path):
                return "jsonl"  # several JSON objects, one per line
            raise
        if isinstance(content, dict) and isinstance(content.get("data"), list):
            if not content["data"]:
                raise UsageError(f'Data file {path} has no examples: its "data" list is empty.')
            first = content["data"][0]
            return "nested" if isinstance(first, dict) and "paragraphs" in first else "flat"
        if isinstance(content, dict) and "data" in content:
            raise UsageError(
                f'Data file {path}: its "data" is a {type(content["data"]).__name__}, not a list of records (or of '
                "SQuAD articles)."
            )
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
        squad = _read_json(path)
        problem = _nested_squad_problem(squad)
        if problem is not None:
            raise UsageError(f"Data file {path} is not in the SQuAD layout: {problem}.")
        records = flatten_nested_squad(squad)
        if not records:
            raise UsageError(f"Data file {path} has no questions (no qas in any paragraph).")
        tmp = f"{target}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, target)  # atomic: a concurrent process never reads half a file
    return target


def _nested_squad_problem(squad) -> Optional[str]:
    """Where an original-layout SQuAD file departs from data[].paragraphs[].qas[] (for the error message)."""
    for a, article in enumerate(squad["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            return f'data[{a}] has no "paragraphs" list'
        for p, paragraph in enumerate(article["paragraphs"]):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                return f'{where} has no "context" text'
            if not isinstance(paragraph.get("qas"), list):
                return f'{where} has no "qas" list'
            for q, qa in enumerate(paragraph["qas"]):
                if not isinstance(qa, dict) or "id" not in qa or not isinstance(qa.get("question"), str):
                    return f'{where}.qas[{q}] needs an "id" and a "question"'
                answers = [] if qa.get("is_impossible", False) else qa.get("answers", [])
                if not isinstance(answers, list) or not all(
                    isinstance(x, dict) and isinstance(x.get("text"), str) and "answer_start" in x for x in answers
                ):
                    return f'{where}.qas[{q}] (id {qa["id"]!r}): answers must be a list of {{"text", "answer_start"}}'
                for x in answers:
                    try:
                        int(x["answer_start"])
                    except (TypeError, ValueError):
                        return f'{where}.qas[{q}] (id {qa["id"]!r}): answer_start {x["answer_start"]!r} is not a number'
    return None


def _id_as_text(example):
    return {"id": None if example["id"] is None else str(example["id"])}


def _answers_as_lists(example, answer_column):
    """[{"text": t, "answer_start": s}, ...] (one dict per answer, as in the original SQuAD layout) as
    {"text": [...], "answer_start": [...]}."""
    answers = example[answer_column] or []
    return {
        answer_column: {"text": [a["text"] for a in answers], "answer_start": [int(a["answer_start"]) for a in answers]}
    }


def _parse_csv_answers(example):
    answers = example["answers"]
    if answers is None:  # an empty cell: no answer
        answers = {"text": [], "answer_start": []}
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
    if "id" in dataset.column_names and getattr(dataset.features["id"], "dtype", None) != "string":
        if isinstance(dataset.features["id"], datasets.Value):
            dataset = dataset.cast_column("id", datasets.Value("string"))
        else:  # numbers and strings mixed (datasets' Json feature)
            dataset = dataset.map(_id_as_text, desc=f"Reading ids of {os.path.basename(path)}")
    if len(dataset.column_names) < 2:
        raise UsageError(
            f"Data file {path} has no QA records: found the columns {dataset.column_names}; expected "
            '"id", "question", "context" and "answers".'
        )
    answers_feature = dataset.features.get("answers")
    if isinstance(answers_feature, datasets.List) and isinstance(answers_feature.feature, dict):
        dataset = dataset.map(
            _answers_as_lists, fn_kwargs={"answer_column": "answers"}, desc=f"Reading answers of {os.path.basename(path)}"
        )
    return dataset


# ----------------------------------------------------------------------------------------------------------------------
# 2b. Checks of the command line and of the data, before the model is loaded
# ----------------------------------------------------------------------------------------------------------------------
# Each check raises a UsageError that says what is wrong and how to fix it, before anything expensive runs. They read
# the data once in Python and use no random number generator, so a run on valid input is unchanged by them.


def check_numeric_args(positive=(), non_negative=()):
    """(flag, value) pairs: `positive` values must be >= 1 when set, `non_negative` ones >= 0."""
    for flag, value in positive:
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value} must be a positive number.")
    for flag, value in non_negative:
        if value is not None and value < 0:
            raise UsageError(f"{flag} {value} must not be negative.")


def _looks_like_local_path(name: str) -> bool:
    """A path, not a Hub id ("org/name"): absolute, relative with ./ or ../, home-relative, or several levels deep."""
    return name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or "\\" in name or name.count("/") >= 2


def _adapter_folders_inside(folder: str, depth: int = 2) -> list:
    """Sub-folders (up to `depth` levels down) that hold an adapter_config.json, relative to folder."""
    found = []
    for root, dirs, files in os.walk(folder):
        level = os.path.relpath(root, folder).count(os.sep) + (root != folder)
        if root != folder and "adapter_config.json" in files:
            found.append(os.path.relpath(root, folder))
        if level >= depth:
            dirs[:] = []
    return sorted(found)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json")


def check_model_source(name: Optional[str], flag: str, required_file=("config.json",)):
    """A local --model_name_or_path/--config_name/--tokenizer_name must exist and be a model folder (holding one of
    `required_file`). Hub ids are left to from_pretrained (which fails with its own message offline)."""
    if name is None:
        return
    if isinstance(required_file, str):
        required_file = (required_file,)
    if os.path.isdir(name):
        if required_file and not any(os.path.isfile(os.path.join(name, f)) for f in required_file):
            required_file = " or ".join(required_file)
            adapters_inside = _adapter_folders_inside(name)
            hint = (
                f" It holds adapters ({', '.join(adapters_inside)}): pass the base model as {flag} and the adapter "
                f"folder as --load_adapter (with --train_adapter)."
                if adapters_inside
                else " Pass a folder saved with save_pretrained() or a Hugging Face Hub model id."
            )
            raise UsageError(f"{flag} {name} is not a model folder: it has no {required_file}.{hint}")
    elif os.path.isfile(name) and required_file:
        raise UsageError(f"{flag} {name} is a file; pass the folder that holds {required_file[0]} (or a Hub model id).")
    elif _looks_like_local_path(name):
        raise UsageError(f"{flag} {name} does not exist. Pass an existing model folder or a Hugging Face Hub model id.")


def check_adapter_sources(adapter_args):
    """--load_adapter/--load_lang_adapter given as a local path must be a folder written by save_adapter (with
    adapter_config.json); the common mistake of passing the run's output or checkpoint folder names the adapter
    folders inside it."""
    for flag, source in (
        ("--load_adapter", getattr(adapter_args, "load_adapter", None)),
        ("--load_lang_adapter", getattr(adapter_args, "load_lang_adapter", None)),
    ):
        if not source:
            continue
        if os.path.isdir(source):
            if os.path.isfile(os.path.join(source, "adapter_config.json")):
                continue
            inside = _adapter_folders_inside(source)
            hint = (
                f" It contains adapter folders: {', '.join(os.path.join(source, a) for a in inside)}; pass one of them."
                if inside
                else " Pass a folder written by --train_adapter (it holds adapter_config.json and pytorch_adapter.bin)."
            )
            raise UsageError(f"{flag} {source} is not an adapter folder: it has no adapter_config.json.{hint}")
        if os.path.isfile(source) or _looks_like_local_path(source):
            raise UsageError(
                f"{flag} {source} is not an adapter folder ({'a file' if os.path.isfile(source) else 'it does not exist'}). "
                "Pass a folder written by --train_adapter (it holds adapter_config.json), or an AdapterHub / "
                "Hugging Face Hub adapter id."
            )


def adapters_supported_model_types() -> list:
    """Model types that adapters.init() knows (adapters' model packages and its built-in interfaces)."""
    import pkgutil

    import adapters.models

    types = {m.name for m in pkgutil.iter_modules(adapters.models.__path__) if m.ispkg and m.name != "auto"}
    try:
        from adapters.wrappers.interfaces import CUSTOM_INTERFACES

        types |= set(CUSTOM_INTERFACES)
    except ImportError:
        pass
    return sorted(types)


def check_adapters_support(config, name: str, hint: str = ""):
    """adapters.init() raises "Model x not pre-supported" deep in model loading: say it before the model is loaded."""
    try:
        from adapters.wrappers.interfaces import get_adapter_interface
        from adapters.wrappers.model import get_module_name
    except ImportError:
        return
    model_type = config.model_type
    supported = adapters_supported_model_types()
    if get_adapter_interface(model_type) is not None or get_module_name(model_type) in supported:
        return
    raise UsageError(
        f"{name} is a '{model_type}' model, which the adapters library (installed version) does not support. "
        f"Supported model types: {', '.join(supported)}.{(' ' + hint) if hint else ''}"
    )


def check_task_head(config, head_names: dict, task: str, name: str, also_supported=None):
    """The model type has a head for the task (head_names: transformers' MODEL_FOR_<TASK>_MAPPING_NAMES).
    also_supported (e.g. the adapters-supported types) narrows the list of alternatives that the message names."""
    if config.model_type in head_names:
        return
    if also_supported:
        supported = {name.replace("-", "_") for name in also_supported}
        alternatives = sorted(t for t in head_names if t.replace("-", "_") in supported)
    else:
        alternatives = sorted(head_names)
    raise UsageError(
        f"{name} is a '{config.model_type}' model, which has no {task} head in transformers. "
        f"Use a model of one of these types: {', '.join(alternatives)}."
    )


def check_model_architecture(config, name: str, head_names: dict, task: str, hint: str = ""):
    """Before the model is loaded: transformers has a head for the task for this model type (head_names: its
    MODEL_FOR_<TASK>_MAPPING_NAMES), and adapters.init() (which every adapters script runs) knows the type."""
    check_task_head(config, head_names, task, name, also_supported=adapters_supported_model_types())
    check_adapters_support(config, name, hint=hint)


def qa_split_source(data_args, split: str) -> str:
    """How to name a split in a message: the flag and file it came from, or the hub dataset."""
    flag, path = {
        "train": ("--train_file", data_args.train_file),
        "validation": ("--validation_file", data_args.validation_file),
        "test": ("--test_file", data_args.test_file),
    }[split]
    if path is not None:
        return f"{flag} {path}"
    return f"the {split} split of {data_args.dataset_name}"


_TEXT_DTYPES = ("string", "large_string")
_INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def _feature_kind(feature) -> str:
    """A column's type for messages: its dtype, "struct" for a dict of fields, else the feature's class name."""
    if getattr(feature, "dtype", None) is not None:
        return feature.dtype
    return "struct" if isinstance(feature, dict) else type(feature).__name__


def _is_string_feature(feature) -> bool:
    return getattr(feature, "dtype", None) in ("string", "large_string")


def _answer_fields(feature) -> Optional[set]:
    """The sub-fields of a struct answers column ({"text": [...], "answer_start": [...]}), else None."""
    if isinstance(feature, dict):
        return set(feature)
    return None


def _realign_answer(context: str, text: str, start: int, window: int = 100):
    """(text, start) of the answer as it appears in the context near `start`, or None.

    First the exact text nearest to start (within `window` characters); then the same words with any whitespace
    between them (a non-breaking or doubled space in the context, spaces around the answer), taken verbatim from the
    context."""
    if not text or not text.strip():
        return None
    best = None
    position = context.find(text, max(0, start - window))
    while position != -1 and position <= start + window:
        if best is None or abs(position - start) < abs(best - start):
            best = position
        position = context.find(text, position + 1)
    if best is not None:
        return text, best
    pattern = re.compile(r"\s+".join(re.escape(word) for word in text.split()))
    region_start = max(0, start - window)
    matches = [m for m in pattern.finditer(context, region_start, start + window + len(text) * 2)]
    if not matches:
        return None
    match = min(matches, key=lambda m: abs(m.start() - start))
    return context[match.start() : match.end()], match.start()


def _apply_answer_fixes(example, index, answer_column, fixes):
    fix = fixes.get(str(index))
    if fix is None:
        return {}
    return {answer_column: {"text": fix[0], "answer_start": fix[1]}}


def check_qa_examples(
    examples,
    source: str,
    columns,
    *,
    stage: str,
    version_2_with_negative: bool,
    max_samples: Optional[int] = None,
):
    """Check (and for training, repair) the raw QA examples of one split before the model is loaded.

    columns: (question, context, answers) column names (answers may be None: a test file without answers).
    stage: "train", "eval" or "predict". Returns the examples to use: the first max_samples of them (as the scripts
    select anyway), with training answers realigned or skipped.

    - no examples (also after --max_*_samples) → error;
    - question/context columns missing, not text, or empty (null) in some record → error naming the record;
    - eval/predict: an "id" column with no repeated id (answers are matched to questions by id);
    - answers: {"text": [...], "answer_start": [...]} with as many starts as texts; training needs them;
    - unanswerable questions (empty answers) in train/eval data without --version_2_with_negative → error: this is
      SQuAD v2.0 data, and scoring it as v1.1 is wrong (see README "Errors and reliability");
    - training answers must be at answer_start in the context: realigned when the text is found nearby (exactly, or
      up to whitespace), else the answer is dropped (the example is skipped when none is left); counts are logged.
      Evaluation only compares answer texts, so eval answers are left as they are (mismatches are counted).
    """
    question_column, context_column, answer_column = columns
    if max_samples is not None:
        examples = examples.select(range(min(len(examples), max_samples)))
    if len(examples) == 0:
        raise UsageError(f"{source} has no examples. Check the file (or --max_{stage}_samples).")
    found = examples.column_names
    found_text = ", ".join(f"{name} ({_feature_kind(examples.features[name])})" for name in found)
    for role, column in (("question", question_column), ("context", context_column)):
        if column not in found or not _is_string_feature(examples.features[column]):
            raise UsageError(
                f"{source}: the {role} column '{column}' is missing or not text. Found columns: {found_text}. "
                "QA data needs text columns 'question' and 'context' (and 'answers', 'id')."
            )
    named = [name for name in ("question", "context") if name in found]
    if len(named) == 1 or question_column == context_column or {question_column, context_column} & {"id", "title"}:
        raise UsageError(
            f"{source} has no 'question' and 'context' columns (found: {found_text}); the columns taken by "
            f"position ('{question_column}', '{context_column}') are not question and context. Rename the columns "
            "to 'question', 'context' and 'answers'."
        )
    # Whole columns through Arrow, once: row-by-row access costs seconds at SQuAD scale.
    questions, contexts = _qa_column(examples, question_column), _qa_column(examples, context_column)
    for role, column, values in (("question", question_column, questions), ("context", context_column, contexts)):
        if None in values:
            raise UsageError(f"{source}: record {values.index(None)} has no {role} (column '{column}' is empty there).")
    ids = _qa_column(examples, "id") if "id" in found else None
    if stage != "train":
        if "id" not in found:
            raise UsageError(
                f"{source} has no 'id' column (found: {found_text}). Evaluation and prediction match answers to "
                "questions by id: give every record a unique id."
            )
        seen = set()
        for i, example_id in enumerate(ids):
            if example_id is None:
                raise UsageError(f"{source}: record {i} has no id.")
            if example_id in seen:
                raise UsageError(
                    f"{source}: id {example_id!r} appears more than once (again at record {i}). Predictions are "
                    "stored per id, so every question needs its own id."
                )
            seen.add(example_id)

    if answer_column is None or answer_column not in found:
        if stage == "train":
            raise UsageError(
                f"{source} has no 'answers' column (found: {found_text}); training needs answers as "
                '{"text": ["..."], "answer_start": [character offset in the context]}.'
            )
        return examples
    fields = _answer_fields(examples.features[answer_column])
    if fields is None or not {"text", "answer_start"} <= fields:
        raise UsageError(
            f"{source}: the answers column '{answer_column}' is {examples.features[answer_column]}, not "
            '{"text": [...], "answer_start": [...]}. Write answers in the SQuAD layout, e.g. '
            '"answers": {"text": ["Paris"], "answer_start": [17]} (empty lists for an unanswerable question).'
        )

    for key, kinds, example in (("text", _TEXT_DTYPES, '["Paris"]'), ("answer_start", _INT_DTYPES, "[17]")):
        inner = getattr(examples.features[answer_column][key], "feature", None)  # the item type of a list
        dtype = getattr(inner, "dtype", None)
        if dtype not in kinds + ("null",):
            found_type = examples.features[answer_column][key]
            raise UsageError(
                f'{source}: answers "{key}" must be a list of {"texts" if key == "text" else "integer character offsets"}'
                f" (e.g. {example}), found {found_type}."
            )
    answers = _qa_column(examples, answer_column)
    unanswerable, first_unanswerable = 0, None
    mismatched = []  # (row, answer index)
    for i, (answer, context) in enumerate(zip(answers, contexts)):
        texts, starts = answer["text"], answer["answer_start"]
        if texts is None or starts is None or len(texts) != len(starts):
            raise UsageError(
                f"{source}: record {i} has {len(texts or [])} answer texts but {len(starts or [])} answer_start "
                "values; give one start (a character offset in the context) per answer text."
            )
        if len(texts) == 0:
            unanswerable += 1
            first_unanswerable = i if first_unanswerable is None else first_unanswerable
            continue
        for k, (text, start) in enumerate(zip(texts, starts)):
            if text is None or start is None:
                raise UsageError(f"{source}: record {i} has an answer without text or answer_start.")
            if context[start : start + len(text)] != text or start < 0:
                mismatched.append((i, k))

    if unanswerable and stage in ("train", "eval") and not version_2_with_negative:
        example_id = ids[first_unanswerable] if ids is not None else first_unanswerable
        everything = (
            " If the file has no answers at all, pass it as --test_file with --do_predict instead."
            if unanswerable == len(examples) and stage == "eval"
            else ""
        )
        raise UsageError(
            f"{source}: {unanswerable} of {len(examples)} questions have no answer (e.g. {example_id!r}): this is "
            "SQuAD v2.0-style data. Pass --version_2_with_negative to train and score unanswerable questions "
            f"(SQuAD v1.1 scoring would count them wrongly).{everything}"
        )

    if not mismatched:
        return examples
    if stage != "train":
        logger.warning(
            f"{source}: {len(mismatched)} answer(s) are not found at their answer_start in the context (first: record "
            f"{mismatched[0][0]}). Evaluation compares answer texts only, so they are kept as they are."
        )
        return examples

    fixes, skipped, realigned, dropped = {}, [], 0, 0
    for i, _ in mismatched:
        if str(i) in fixes or i in skipped:
            continue
        answer, context = answers[i], contexts[i]
        texts, starts = [], []
        for text, start in zip(answer["text"], answer["answer_start"]):
            if start >= 0 and context[start : start + len(text)] == text:
                texts.append(text)
                starts.append(start)
                continue
            new = _realign_answer(context, text, start)
            if new is None:
                dropped += 1
                continue
            realigned += 1
            texts.append(new[0])
            starts.append(new[1])
        if texts:
            fixes[str(i)] = (texts, starts)
        else:
            skipped.append(i)
    logger.warning(
        f"{source}: {len(mismatched)} answer(s) did not match the context at their answer_start: {realigned} "
        f"realigned (text found nearby), {dropped} dropped (not found); {len(skipped)} example(s) skipped for having "
        "no answer left."
    )
    if fixes:
        examples = examples.map(
            _apply_answer_fixes,
            with_indices=True,
            fn_kwargs={"answer_column": answer_column, "fixes": fixes},
            desc="Realigning answers",
        )
    if skipped:
        skip = set(skipped)
        examples = examples.select([i for i in range(len(examples)) if i not in skip])
        if len(examples) == 0:
            raise UsageError(f"{source}: no example is left after skipping those whose answer is not in the context.")
    return examples


def check_windows_fit(examples, source: str, tokenizer, columns, max_seq_length: int, doc_stride: int):
    """Every question must leave room in a window for more than doc_stride context tokens, or the fast tokenizer
    stops the preprocessing with a Rust panic ("`stride` must be strictly less than `max_len`").

    The tokenizer (pair encoding, truncating the context) fails exactly when doc_stride > max_seq_length - the special
    tokens of one sequence, or when question + context + special tokens exceed max_seq_length while the context room
    (max_seq_length - question - special tokens of a pair) is <= doc_stride. Questions are bounded by their UTF-8
    size first (a token is at least one byte, plus at most one word-start marker per byte), so only the few long
    questions are tokenized."""
    single = tokenizer.num_special_tokens_to_add(pair=False)
    pair = tokenizer.num_special_tokens_to_add(pair=True)
    if doc_stride > max_seq_length - single:
        raise UsageError(
            f"--doc_stride ({doc_stride}) must be smaller than --max_seq_length ({max_seq_length}) minus the {single} "
            "special tokens the tokenizer adds."
        )
    question_column, context_column, _ = columns
    # The room for context is max_seq_length - pair - question tokens; trouble needs question tokens >= threshold.
    threshold = max_seq_length - pair - doc_stride
    questions = _qa_column(examples, question_column)
    candidates = [i for i, q in enumerate(questions) if 2 * len(q.lstrip().encode("utf-8")) + 1 >= threshold]
    if not candidates:
        return
    question_tokens = tokenizer([questions[i].lstrip() for i in candidates], add_special_tokens=False)["input_ids"]
    long_questions = [(i, len(ids)) for i, ids in zip(candidates, question_tokens) if len(ids) >= threshold]
    if not long_questions:
        return
    contexts = _qa_column(examples.select([i for i, _ in long_questions]), context_column)
    context_tokens = tokenizer(contexts, add_special_tokens=False)["input_ids"]
    for (i, n_question), context_ids in zip(long_questions, context_tokens):
        if n_question + len(context_ids) + pair <= max_seq_length:
            continue  # fits in one window: nothing is truncated
        room = max_seq_length - pair - n_question
        example_id = examples[i]["id"] if "id" in examples.column_names else i
        raise UsageError(
            f"{source}: question {example_id!r} (record {i}) is {n_question} tokens long, so a window of "
            f"--max_seq_length {max_seq_length} keeps only {max(room, 0)} context tokens, which must be more than "
            f"--doc_stride {doc_stride}. Use a larger --max_seq_length, a --doc_stride below {max(room, 0)} or "
            "a shorter question."
        )


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


def check_script_arguments(model_args, training_args, adapter_args=None, *, best_model_metrics=None,
                           require_action=True):
    """The checks of the command line every script runs before loading anything: model/config/tokenizer folders,
    --load_adapter sources, --load_best_model_at_end's metric (when the script knows its metrics), and that there is
    something to do."""
    check_model_source(getattr(model_args, "model_name_or_path", None), "--model_name_or_path")
    check_model_source(getattr(model_args, "config_name", None), "--config_name")
    check_model_source(getattr(model_args, "tokenizer_name", None), "--tokenizer_name", required_file=TOKENIZER_FILES)
    if training_args.output_dir and os.path.exists(training_args.output_dir) and not os.path.isdir(
        training_args.output_dir
    ):
        raise UsageError(f"--output_dir {training_args.output_dir} is a file; pass a folder (it is created if needed).")
    check_numeric_args(
        positive=[
            ("--per_device_train_batch_size", training_args.per_device_train_batch_size),
            ("--per_device_eval_batch_size", training_args.per_device_eval_batch_size),
            ("--gradient_accumulation_steps", training_args.gradient_accumulation_steps),
        ],
        non_negative=[("--num_train_epochs", training_args.num_train_epochs)],
    )
    if adapter_args is not None:
        check_adapter_sources(adapter_args)
    if best_model_metrics is not None:
        check_best_model_metric(training_args, best_model_metrics)
    if require_action and not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise UsageError("Nothing to do: pass --do_train, --do_eval and/or --do_predict.")


def check_qa_numeric_args(data_args):
    """Lengths, sizes and counts of the QA scripts' data arguments (those a script has)."""
    positive = (
        "max_seq_length", "n_best_size", "max_answer_length", "val_max_answer_length", "num_beams",
        "max_train_samples", "max_eval_samples", "max_predict_samples", "preprocessing_num_workers",
    )
    check_numeric_args(
        positive=[(f"--{name}", getattr(data_args, name, None)) for name in positive],
        non_negative=[("--doc_stride", getattr(data_args, "doc_stride", None))],
    )


QA_STAGES = (("train", "train", "max_train_samples"), ("eval", "validation", "max_eval_samples"),
             ("predict", "test", "max_predict_samples"))
SQUAD_V1_METRICS = ("exact_match", "f1")
SQUAD_V2_METRICS = ("exact", "f1", "HasAns_exact", "HasAns_f1")


def count_unanswerable(examples, answer_column) -> int:
    """Questions whose answers list is empty (SQuAD v2.0's unanswerable questions)."""
    if examples is None or answer_column is None or answer_column not in examples.column_names:
        return 0
    if _answer_fields(examples.features[answer_column]) is None:
        return 0  # not the SQuAD layout: check_qa_examples says so
    return sum(1 for answer in _qa_column(examples, answer_column) if answer is not None and not answer.get("text"))


def use_v2_for_unanswerable_data(data_args, columns, training_args=None, **examples_by_stage):
    """Unanswerable questions in the training or validation data without --version_2_with_negative: switch SQuAD
    v2.0 mode on, with a warning (the seed's `run_qa.py --dataset_name squad_v2` command has no flag).

    Training features do not depend on the flag (a question without an answer is labelled with the CLS token either
    way); it picks the post-processing (null answers allowed, *_null_odds.json) and the metric. v1.1 scoring cannot
    score an empty gold answer (the reference crashed there, after training), so v2.0 is the only meaningful choice.
    The test split is not looked at: test files usually have no answers at all. Returns True when it switched."""
    if data_args.version_2_with_negative:
        return False
    for stage in ("train", "eval"):
        examples = examples_by_stage.get(stage)
        unanswerable = count_unanswerable(examples, columns[2])
        if unanswerable:
            split = "train" if stage == "train" else "validation"
            logger.warning(
                f"{qa_split_source(data_args, split)}: {unanswerable} of {len(examples)} questions have no answer, so "
                "this is SQuAD v2.0-style data: running as with --version_2_with_negative (null answers, SQuAD v2.0 "
                "metrics eval_exact/eval_f1/eval_HasAns_*). Pass the flag to say so explicitly."
            )
            data_args.version_2_with_negative = True
            if training_args is not None:
                check_best_model_metric(
                    training_args, SQUAD_V2_METRICS, reason="(SQuAD v2.0 metrics: the data has unanswerable questions)"
                )
            return True
    return False


def check_qa_splits(data_args, columns, training_args=None, **examples_by_stage):
    """check_qa_examples for each split in use: train=..., eval=..., predict=... (None when not used), after
    switching SQuAD v2.0 mode on for data with unanswerable questions (use_v2_for_unanswerable_data).
    Returns {stage: (checked examples, source)} for the stages given."""
    use_v2_for_unanswerable_data(data_args, columns, training_args, **examples_by_stage)
    checked = {}
    for stage, split, max_samples in QA_STAGES:
        examples = examples_by_stage.get(stage)
        if examples is None:
            continue
        source = qa_split_source(data_args, split)
        examples = check_qa_examples(
            examples, source, columns, stage=stage, version_2_with_negative=data_args.version_2_with_negative,
            max_samples=getattr(data_args, max_samples, None),
        )
        checked[stage] = (examples, source)
    return checked


def check_best_model_metric(training_args, valid_metrics, reason: str = ""):
    """--load_best_model_at_end compares eval metrics; the QA scripts report no eval_loss, so the default ("loss") or a
    metric the script does not report would fail with a KeyError at the first evaluation, after training."""
    if not training_args.load_best_model_at_end:
        return
    metric = training_args.metric_for_best_model
    name = metric[len("eval_"):] if metric and metric.startswith("eval_") else metric
    if name not in valid_metrics:
        raise UsageError(
            f"--load_best_model_at_end needs --metric_for_best_model set to a metric this script reports"
            f"{' ' + reason if reason else ''}: {', '.join(valid_metrics)} (got {metric!r})."
        )


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

    The candidate search runs over all features at once (columns read once, offsets as arrays, the top indices of all
    features with one numpy argsort, candidate pairs as numpy masks) and gives exactly the output of the
    straightforward loop over features, ties included: tests/test_postprocess_equivalence.py keeps that loop and
    compares; benchmarks/postprocess.py measures the speed-up.

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

    import datasets

    if isinstance(examples, datasets.Dataset):
        examples = examples.with_format("arrow")  # whole columns, read once (formatting each row is slow)
    if isinstance(features, datasets.Dataset):
        features = features.with_format("arrow")
    # Map each feature to its example (the last example with that id, as the loop's dict does).
    example_ids = _qa_column(examples, "id")
    example_id_to_index = {k: i for i, k in enumerate(example_ids)}
    feature_example = np.array(
        [example_id_to_index[example_id] for example_id in _qa_column(features, "example_id")], dtype=np.int64
    )

    # Logging.
    logger.setLevel(log_level)
    logger.info(f"Post-processing {len(examples)} example predictions split into {len(features)} features.")

    # Hundreds of thousands of small acyclic objects are built below: the cyclic garbage collector would only slow
    # that down.
    import gc

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        all_predictions, all_nbest_json, scores_diff_json = _predictions_and_nbest(
            examples, features, example_ids, feature_example, all_start_logits, all_end_logits,
            version_2_with_negative, n_best_size, max_answer_length, null_score_diff_threshold,
        )
    finally:
        if gc_was_enabled:
            gc.enable()
    write_prediction_files(output_dir, prefix, all_predictions, all_nbest_json, scores_diff_json)
    return all_predictions


def _predictions_and_nbest(examples, features, example_ids, feature_example, all_start_logits, all_end_logits,
                           version_2_with_negative, n_best_size, max_answer_length, null_score_diff_threshold):
    """The loop's three dictionaries: {id: answer}, {id: n-best entries} and, for v2, {id: null score difference}."""
    # Every (start, end) pair that passes the filters, for all features at once; then the n-best lists of all
    # examples (null prediction included in v2) with their softmax.
    cand = _span_candidates(features, all_start_logits, all_end_logits, n_best_size, max_answer_length)
    table = _nbest_table(cand, feature_example, len(example_ids), version_2_with_negative, n_best_size)
    contexts = _qa_column(examples, "context")
    # The n-best entries as the JSON holds them (the null prediction's offsets are (0, 0): its text is "").
    texts = [contexts[e][a:b] for e, a, b in zip(table.example, table.offset_start, table.offset_end)]
    entries = [
        {"start_logit": start_logit, "end_logit": end_logit, "text": text, "probability": probability}
        for start_logit, end_logit, text, probability in zip(
            table.start_logit_json, table.end_logit_json, texts, table.probability
        )
    ]
    bounds = table.bounds
    all_nbest = [entries[low:high] for low, high in zip(bounds[:-1], bounds[1:])]
    counts = np.diff(bounds)
    has_text = np.fromiter(map(bool, texts), dtype=bool, count=len(texts))
    first_text_empty = (counts > 0) & ~np.append(has_text, True)[np.minimum(bounds[:-1], len(texts))]

    # The null score each example compares with: its own; for an example without features, the previous example's
    # (a variable the loop does not reset).
    if version_2_with_negative:
        has_features = np.array(table.null_feature) >= 0
        latest = np.maximum.accumulate(np.where(has_features, np.arange(len(has_features)), -1))
        null_score = np.asarray(cand.null_score)[np.array(table.null_feature)[np.maximum(latest, 0)]]
        if len(latest) and latest[0] < 0:
            raise UnboundLocalError("cannot access local variable 'null_score' where it is not associated with a value")

    # Examples sorted with Python's sorted() (NaN scores) and the "empty" fallback go through the loop's steps one by
    # one; all the others at once.
    irregular = table.slow | set(np.flatnonzero((counts == 0) | ((counts == 1) & first_text_empty)).tolist())
    answers = [texts[low] if high > low else None for low, high in zip(bounds[:-1], bounds[1:])]
    null_odds = [None] * len(example_ids)
    if version_2_with_negative:
        # The best non-null prediction of each example: its first entry with a text.
        regular = np.ones(len(example_ids), dtype=bool)
        regular[sorted(irregular)] = False
        regular = np.flatnonzero(regular)
        with_text = np.flatnonzero(has_text)
        position = np.searchsorted(with_text, np.asarray(bounds[:-1])[regular])
        if (position >= len(with_text)).any() or (with_text[np.minimum(position, len(with_text) - 1)]
                                                   >= np.asarray(bounds[1:])[regular]).any():
            raise IndexError("list index out of range")  # every kept prediction is empty: the loop runs past its end
        best = with_text[position]
        # Then we compare to the null prediction using the threshold (numpy values, as in the loop).
        score_diffs = null_score[regular] - table.start_logit[best] - table.end_logit[best]
        for e, score_diff, b in zip(regular.tolist(), score_diffs, best.tolist()):
            null_odds[e] = float(score_diff)  # To be JSON-serializable.
            answers[e] = "" if score_diff > null_score_diff_threshold else texts[b]
    for example_index in sorted(irregular):
        if example_index in table.slow:
            nbest, scores, logits = _nbest_slow(cand, table, contexts, example_index, version_2_with_negative,
                                                n_best_size)
        else:
            low, high = bounds[example_index], bounds[example_index + 1]
            nbest, scores = all_nbest[example_index], table.score[low:high]
            logits = list(zip(table.start_logit[low:high], table.end_logit[low:high]))
        # In the very rare edge case we have not a single non-null prediction, we create a fake prediction to avoid
        # failure; the softmax then includes its score 0.0 (in float64, as the loop's np.array makes it).
        if len(nbest) == 0 or (len(nbest) == 1 and nbest[0]["text"] == ""):
            scores = np.array([0.0] + list(scores))
            exp_scores = np.exp(scores - np.max(scores))
            probs = (exp_scores / exp_scores.sum()).tolist()
            nbest = [{"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "probability": probs[0]}] + [
                dict(entry, probability=prob) for entry, prob in zip(nbest, probs[1:])
            ]
            logits = [(0.0, 0.0)] + logits
        all_nbest[example_index] = nbest
        if not version_2_with_negative:
            answers[example_index] = nbest[0]["text"]
        else:
            i = 0
            while nbest[i]["text"] == "":
                i += 1
            score_diff = null_score[example_index] - logits[i][0] - logits[i][1]
            null_odds[example_index] = float(score_diff)
            answers[example_index] = "" if score_diff > null_score_diff_threshold else nbest[i]["text"]

    # The dictionaries to return and write (a repeated id keeps its first position and its last value, as in the
    # loop).
    all_predictions = collections.OrderedDict(zip(example_ids, answers))
    all_nbest_json = collections.OrderedDict(zip(example_ids, all_nbest))
    scores_diff_json = collections.OrderedDict(zip(example_ids, null_odds)) if version_2_with_negative else None
    return all_predictions, all_nbest_json, scores_diff_json


def _qa_column(dataset, name) -> list:
    """A whole column as a Python list, read once: through Arrow for a datasets.Dataset (indices mapping applied),
    row by row for anything else. Reading `dataset[i][name]` instead decodes the whole row every time."""
    import datasets

    if isinstance(dataset, datasets.Dataset):
        if dataset.format["type"] != "arrow":
            dataset = dataset.with_format("arrow")
        return dataset[name].to_pylist()
    return [row[name] for row in dataset]


class _SpanCandidates(
    collections.namedtuple(
        "_SpanCandidates",
        "feature score start_logit end_logit offset_start offset_end null_score null_start_logit null_end_logit",
    )
):
    """Answer spans of all features in the loop's order (feature, start rank, end rank), and each feature's null
    (CLS) score and logits. Logit values are numpy arrays of the logits' dtype: indexing them gives the same numpy
    scalars (and the same float arithmetic downstream) as indexing one feature's logits in the loop."""


def _top_indices(logits, n_best_size):
    """For every feature, `np.argsort(row)[-1 : -n_best_size - 1 : -1]` (the loop's best start or end indices), their
    logits, and a mask of the ranks that exist (rows of a ragged list of logits may be shorter than n_best_size)."""
    try:
        array = np.asarray(logits)
    except ValueError:  # rows of different lengths
        array = None
    if array is not None and array.ndim == 2 and array.dtype != object:
        index, values = _argsort_top(array, n_best_size)
        return array, index, values, np.ones(index.shape, dtype=bool)
    rows = [np.asarray(row) for row in logits]
    tops = [np.argsort(row)[-1 : -n_best_size - 1 : -1] for row in rows]
    width = max((len(top) for top in tops), default=0)
    index = np.zeros((len(rows), width), dtype=np.int64)
    values = np.zeros((len(rows), width), dtype=np.result_type(*rows) if rows else np.float32)
    present = np.zeros((len(rows), width), dtype=bool)
    for i, (row, top) in enumerate(zip(rows, tops)):
        index[i, : len(top)], values[i, : len(top)], present[i, : len(top)] = top, row[top], True
    return rows, index, values, present


def _argsort_top(array, n_best_size):
    """`np.argsort(array, axis=-1)[:, -1 : -n_best_size - 1 : -1]`, exactly, ties included, and those values.

    numpy's default argsort (not stable) of a 2-D array sorts each row as it sorts that row alone, so equal logits
    come out in the loop's order; a stable sort would order them differently and pick other candidates. Rows whose
    k+1 largest values are all distinct have a single possible answer, found with argpartition and a sort of those
    k+1 values; the other rows (ties, NaN) get the full argsort."""
    width = array.shape[1]
    k = len(range(width)[-1 : -n_best_size - 1 : -1])  # the slice always takes the k largest, largest first
    if not 0 < k < width - 1:
        top = np.argsort(array, axis=-1)[:, -1 : -n_best_size - 1 : -1]
        return top, np.take_along_axis(array, top, axis=-1)
    rows = np.arange(len(array))[:, None]
    largest = np.argpartition(array, width - k - 1, axis=-1)[:, width - k - 1 :]
    values = array[rows, largest]
    order = np.argsort(values, axis=-1)
    largest, values = largest[rows, order], values[rows, order]
    top, top_values = largest[:, :0:-1], values[:, :0:-1]
    ambiguous = np.flatnonzero(~(values[:, 1:] > values[:, :-1]).all(axis=-1))
    if len(ambiguous):
        top[ambiguous] = np.argsort(array[ambiguous], axis=-1)[:, -1 : -n_best_size - 1 : -1]
        top_values[ambiguous] = np.take_along_axis(array[ambiguous], top[ambiguous], axis=-1)
    return top, top_values


def _offset_lookup(features):
    """A function (index, present) -> (usable, first, second) over arrays of token indices, one row per feature:
    `usable` where the loop accepts the token (index < len(offset_mapping), offset not None and of length >= 2),
    `first`/`second` its offset[0]/offset[1] (0 elsewhere).

    A datasets.Dataset column of int lists is read as Arrow buffers, without Python objects; anything else (a list
    of dicts, other column types) is read once into Python lists and the values kept as they are."""
    import datasets
    import pyarrow as pa

    if isinstance(features, datasets.Dataset):
        column = (features if features.format["type"] == "arrow" else features.with_format("arrow"))["offset_mapping"]
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        is_list = (pa.types.is_list, pa.types.is_large_list)
        if (
            any(check(column.type) for check in is_list)
            and any(check(column.type.value_type) for check in is_list)
            and pa.types.is_integer(column.type.value_type.value_type)
            and all(chunk.null_count == 0 and chunk.values.values.null_count == 0 for chunk in chunks)
        ):
            # Chunk by chunk (a cached dataset has one per 1,000 features), without copying the token arrays.
            readers, first_row = [], 0
            for chunk in chunks:
                readers.append((first_row, first_row + len(chunk), _offset_chunk_reader(chunk)))
                first_row += len(chunk)

            def lookup(index, present):
                usable = np.zeros(index.shape, dtype=bool)
                first, second = np.zeros(index.shape, dtype=np.int64), np.zeros(index.shape, dtype=np.int64)
                for low, high, read in readers:
                    if high > low:
                        usable[low:high], first[low:high], second[low:high] = read(index[low:high], present[low:high])
                return usable, first, second

            return lookup
        rows = _qa_column(features, "offset_mapping")
    else:
        rows = [features[i]["offset_mapping"] for i in range(len(features))]
    n_tokens = np.array([len(row) for row in rows], dtype=np.int64)
    row_start = np.cumsum(n_tokens) - n_tokens
    flat_offsets = [offset for row in rows for offset in row]
    flat_usable = np.array([o is not None and len(o) >= 2 for o in flat_offsets] + [False], dtype=bool)
    flat_first, flat_second = np.zeros(len(flat_offsets) + 1, dtype=object), np.zeros(len(flat_offsets) + 1, object)
    flat_first[:-1] = [o[0] if ok else 0 for o, ok in zip(flat_offsets, flat_usable)]
    flat_second[:-1] = [o[1] if ok else 0 for o, ok in zip(flat_offsets, flat_usable)]

    def lookup(index, present):
        inside = present & (index < n_tokens[:, None])
        flat = np.where(inside, row_start[:, None] + index, len(flat_offsets))
        return flat_usable[flat], flat_first[flat], flat_second[flat]

    return lookup


def _offset_chunk_reader(outer):
    """_offset_lookup's function for one Arrow chunk of the offset_mapping column (lists of int lists, the outer ones
    never null): token k of row f is entry offsets[f] + k of the child array, and its offset, unless null, is a slice
    of the grandchild. numpy views of the Arrow buffers; only the looked-up entries are read."""
    row_offsets = outer.offsets.to_numpy()
    tokens = outer.values
    token_offsets = tokens.offsets.to_numpy()
    token_valid = tokens.is_valid().to_numpy(zero_copy_only=False) if tokens.null_count else None
    values = tokens.values.to_numpy(zero_copy_only=False)
    row_start, n_tokens = row_offsets[:-1], np.diff(row_offsets)

    def read(index, present):
        inside = present & (index < n_tokens[:, None])
        if len(values) < 2:  # no offset of length 2 anywhere
            nothing = np.zeros(index.shape, dtype=np.int64)
            return nothing.astype(bool), nothing, nothing
        flat = np.where(inside, row_start[:, None] + index, 0)
        begin = token_offsets[flat]
        usable = inside & (token_offsets[flat + 1] - begin >= 2)
        if token_valid is not None:
            usable &= token_valid[flat]
        begin = np.where(usable, begin, 0)
        return usable, np.where(usable, values[begin], 0), np.where(usable, values[begin + 1], 0)

    return read


def _max_context_filter(features, start_index):
    """The loop's `token_is_max_context` rule for each top start index (None when no feature has that dict): a start
    is kept when the feature has no dict or `token_is_max_context.get(str(start_index), False)` is true."""
    import datasets

    if isinstance(features, datasets.Dataset):
        if "token_is_max_context" not in features.column_names:
            return None
        dicts = _qa_column(features, "token_is_max_context")
    else:
        dicts = [features[i].get("token_is_max_context", None) for i in range(len(features))]
    if all(d is None for d in dicts):
        return None
    keep = np.ones(start_index.shape, dtype=bool)
    for f, token_is_max_context in enumerate(dicts):
        if token_is_max_context is not None:
            keep[f] = [bool(token_is_max_context.get(str(s), False)) for s in start_index[f].tolist()]
    return keep


def _span_candidates(features, all_start_logits, all_end_logits, n_best_size, max_answer_length, chunk=1 << 16):
    """The (start, end) pairs the loop keeps, for all features at once and in the loop's order.

    Pairs that cannot reach their example's n-best list are dropped early: when a feature has at least n_best_size
    pairs scoring strictly higher than a pair, that pair is beyond rank n_best_size in any stable descending sort of
    the example's candidates (only done when every logit is finite: NaN has no order)."""
    start_rows, start_index, start_value, start_present = _top_indices(all_start_logits, n_best_size)
    end_rows, end_index, end_value, end_present = _top_indices(all_end_logits, n_best_size)
    lookup = _offset_lookup(features)
    start_ok, start_first, _ = lookup(start_index, start_present)
    end_ok, _, end_second = lookup(end_index, end_present)
    max_context = _max_context_filter(features, start_index)
    if max_context is not None:
        start_ok = start_ok & max_context

    # Null (CLS) score of each feature, start_logits[0] + end_logits[0], in the logits' dtype.
    if isinstance(start_rows, np.ndarray) and isinstance(end_rows, np.ndarray):
        null_start, null_end = start_rows[:, 0], end_rows[:, 0]
        null_score = null_start + null_end
    else:
        null_start, null_end = [row[0] for row in start_rows], [row[0] for row in end_rows]
        null_score = [s + e for s, e in zip(null_start, null_end)]

    n_pairs = start_index.shape[1] * end_index.shape[1]
    prune = (
        0 < n_best_size < n_pairs
        and all(np.issubdtype(v.dtype, np.floating) for v in (start_value, end_value))
        and np.isfinite(start_value).all()
        and np.isfinite(end_value).all()
        and np.isfinite(np.asarray(null_score, dtype=float)).all()
    )
    # Lengths end - start + 1 in [1, max_answer_length], as one unsigned comparison for an int limit.
    whole = isinstance(max_answer_length, (int, np.integer)) and not isinstance(max_answer_length, bool)
    small = start_index.astype(np.int32), end_index.astype(np.int32)
    pieces = []
    step = max(1, chunk // max(1, n_pairs))
    for low in range(0, len(start_index), step):
        rows = slice(low, low + step)
        if whole:
            keep = (small[1][rows][:, None, :] - small[0][rows][:, :, None]).view(np.uint32) < max(max_answer_length, 0)
        else:
            s, e = start_index[rows][:, :, None], end_index[rows][:, None, :]
            keep = ~(e < s) & ~(e - s + 1 > max_answer_length)
        keep &= start_ok[rows][:, :, None]
        keep &= end_ok[rows][:, None, :]
        if prune:
            score = start_value[rows][:, :, None] + end_value[rows][:, None, :]
            valid_scores = np.where(keep, score, -np.inf).reshape(len(score), n_pairs)
            nth_best = np.partition(valid_scores, n_pairs - n_best_size, axis=1)[:, n_pairs - n_best_size]
            keep &= score >= nth_best[:, None, None]
        f, a, b = np.nonzero(keep)  # row-major: feature, then start rank, then end rank, as the loop goes
        f += low
        pieces.append((f, start_value[f, a], end_value[f, b], start_first[f, a], end_second[f, b]))
    if not pieces:  # no features
        pieces.append((np.zeros(0, dtype=np.int64), start_value.reshape(-1)[:0], end_value.reshape(-1)[:0],
                       start_first.reshape(-1)[:0], end_second.reshape(-1)[:0]))
    feature, start_logit, end_logit, offset_start, offset_end = (np.concatenate(p) for p in zip(*pieces))
    return _SpanCandidates(
        feature, start_logit + end_logit, start_logit, end_logit, offset_start, offset_end,
        null_score, null_start, null_end,
    )


class _NBestTable(
    collections.namedtuple(
        "_NBestTable",
        "null_feature bounds example offset_start offset_end start_logit end_logit start_logit_json end_logit_json "
        "score probability slow by_example by_bounds",
    )
):
    """The n-best lists of all examples, concatenated: example e owns entries bounds[e]:bounds[e + 1], each with its
    example, character offsets ((0, 0) for the null prediction), logits (numpy arrays, and as floats for the JSON),
    score and softmax probability. null_feature[e] is the example's feature with the minimum null score (-1 when it
    has no feature). Examples in `slow` (NaN scores, negative n_best_size) have no entries: _nbest_slow sorts their
    candidates, found in the loop's order at by_example[by_bounds[e]:by_bounds[e + 1]]."""


def _nbest_table(cand, feature_example, n_examples, version_2_with_negative, n_best_size) -> _NBestTable:
    """The loop's n-best lists of all examples at once.

    The loop sorts each example's candidates (features in order, start rank, end rank; the minimum null prediction
    last in v2) with Python's stable sort by descending score, keeps the first n_best_size, appends the null
    prediction again if no kept one has offsets (0, 0), and takes a softmax. Here: one lexsort, the null prediction's
    rank from a count, and the softmax of all lists of the same length as one 2-D array (numpy reduces each row of a
    contiguous 2-D array exactly as it reduces that row alone; the equivalence tests check the probabilities bit for
    bit)."""
    n_features = len(feature_example)
    null_score = np.asarray(cand.null_score)
    null_start, null_end = np.asarray(cand.null_start_logit), np.asarray(cand.null_end_logit)

    # Minimum null prediction: the first feature of the example with the lowest null score.
    null_feature = np.full(n_examples, -1, dtype=np.int64)
    by_feature = np.lexsort((np.arange(n_features), null_score, feature_example))
    first = np.ones(n_features, dtype=bool)
    first[1:] = feature_example[by_feature][1:] != feature_example[by_feature][:-1]
    null_feature[feature_example[by_feature][first]] = by_feature[first]

    cand_example = feature_example[cand.feature]
    # By example, then by descending score, ties in the loop's order: a stable sort by score, then the unique key
    # (example, rank by score) sorted (faster than np.lexsort).
    by_score = np.argsort(-cand.score, kind="stable")
    score_rank = np.empty(len(by_score), dtype=np.int64)
    score_rank[by_score] = np.arange(len(by_score))
    ranked = np.argsort(cand_example * max(len(by_score), 1) + score_rank)
    ranked_example = cand_example[ranked]
    ranked_score = cand.score[ranked]
    by_bounds = np.searchsorted(ranked_example, np.arange(n_examples + 1))

    slow = np.zeros(n_examples, dtype=bool)
    if np.issubdtype(cand.score.dtype, np.floating):  # NaN has no order: Python's sorted(), as in the loop
        slow[cand_example[np.isnan(cand.score)]] = True
        slow[feature_example[np.isnan(null_score)]] = True
    if n_best_size < 0:
        slow[:] = True
    by_example = None
    if slow.any():
        by_example = np.argsort(cand_example, kind="stable").tolist()  # the loop's order within each example
        features_order = np.argsort(feature_example, kind="stable")
        feature_bounds = np.searchsorted(feature_example[features_order], np.arange(n_examples + 1))
        for e in np.flatnonzero(slow).tolist():  # the loop's rule for the minimum, NaN included
            best = None
            for f in features_order[feature_bounds[e] : feature_bounds[e + 1]].tolist():
                if best is None or null_score[best] > null_score[f]:
                    best = f
            null_feature[e] = -1 if best is None else best

    # Rank of each candidate in its example's sorted list; in v2 the null prediction comes after every candidate
    # whose score is not lower than its own.
    fast = ~slow
    has_null = (null_feature >= 0) & fast & version_2_with_negative
    example_null = np.maximum(null_feature, 0)
    rank = np.arange(len(ranked)) - by_bounds[ranked_example]
    null_rank = np.zeros(n_examples, dtype=np.int64)
    if version_2_with_negative and len(ranked):
        ahead = ranked_score >= null_score[example_null][ranked_example]
        null_rank = np.bincount(ranked_example[ahead], minlength=n_examples)
        rank = rank + (has_null[ranked_example] & (rank >= null_rank[ranked_example]))
    keep = (rank < n_best_size) & fast[ranked_example]
    null_kept = has_null & (null_rank < n_best_size)
    # "Add back the minimum null prediction if it was removed": unless a kept candidate has offsets (0, 0) too.
    zero_offsets = (cand.offset_start[ranked] == 0) & (cand.offset_end[ranked] == 0)
    n_kept = np.bincount(ranked_example[keep], minlength=n_examples)
    zero_kept = np.bincount(ranked_example[keep & zero_offsets], minlength=n_examples) > 0

    # The entries, example by example in rank order: kept candidates and null predictions.
    null_entry = null_kept | (has_null & ~zero_kept)
    counts = n_kept + null_entry
    bounds = np.concatenate([[0], np.cumsum(counts)])
    entry_candidate = np.full(bounds[-1], -1, dtype=np.int64)  # -1: the null prediction
    entry_candidate[bounds[ranked_example[keep]] + rank[keep]] = ranked[keep]
    entry_example = np.repeat(np.arange(n_examples), counts)
    is_null = entry_candidate < 0
    entry_null = example_null[entry_example]

    real, nulls = np.flatnonzero(~is_null), np.flatnonzero(is_null)

    def gather(values, null_values=None):  # the null prediction's: from its feature, or 0 (its offsets (0, 0))
        entries = np.zeros(len(entry_candidate), dtype=values.dtype)
        entries[real] = values[entry_candidate[real]]
        if null_values is not None and len(nulls):
            entries[nulls] = null_values[entry_null[nulls]]
        return entries

    start_logit = gather(cand.start_logit, null_start)
    end_logit = gather(cand.end_logit, null_end)
    score = gather(cand.score, null_score)
    offset_start, offset_end = gather(cand.offset_start), gather(cand.offset_end)

    # Softmax of each list (max-subtracted exp), all lists of the same length at once.
    probability = np.zeros(len(score), dtype=score.dtype)
    lengths = counts
    for length in np.unique(lengths[lengths > 0]).tolist():
        rows = bounds[:-1][lengths == length][:, None] + np.arange(length)
        exp_scores = np.exp(score[rows] - score[rows].max(axis=1, keepdims=True))
        probability[rows] = exp_scores / exp_scores.sum(axis=1, keepdims=True)
    return _NBestTable(
        null_feature.tolist(), bounds.tolist(), entry_example.tolist(), offset_start.tolist(), offset_end.tolist(),
        start_logit, end_logit, start_logit.tolist(), end_logit.tolist(), score, probability.tolist(),
        set(np.flatnonzero(slow).tolist()), by_example, by_bounds.tolist(),
    )


def _json_number(value):
    """The loop's cast of n-best values for the JSON: numpy floats to float, anything else as it is."""
    return float(value) if isinstance(value, (np.float16, np.float32, np.float64)) else value


def _nbest_slow(cand, table, contexts, example_index, version_2_with_negative, n_best_size):
    """One example's n-best entries exactly as the loop makes them, with Python's sorted() (NaN scores, negative
    n_best_size). Returns the entries, their scores and (start, end) logits as numpy scalars; the probabilities are
    left to the caller when the "empty" prediction must be added."""
    null_feature = table.null_feature[example_index]
    with_null = version_2_with_negative and null_feature >= 0
    null_score = cand.null_score[null_feature] if with_null else None
    order = table.by_example[table.by_bounds[example_index] : table.by_bounds[example_index + 1]]
    order = sorted(order + ([-1] if with_null else []), key=lambda c: null_score if c < 0 else cand.score[c],
                   reverse=True)[:n_best_size]
    if with_null and not any(c < 0 or (cand.offset_start[c] == 0 and cand.offset_end[c] == 0) for c in order):
        order.append(-1)
    context = contexts[example_index]
    texts = ["" if c < 0 else context[cand.offset_start[c] : cand.offset_end[c]] for c in order]
    scores = [null_score if c < 0 else cand.score[c] for c in order]
    logits = [
        (cand.null_start_logit[null_feature], cand.null_end_logit[null_feature]) if c < 0
        else (cand.start_logit[c], cand.end_logit[c])
        for c in order
    ]
    probs = [None] * len(order)
    if order and not (len(order) == 1 and texts[0] == ""):
        array = np.array(scores)
        exp_scores = np.exp(array - np.max(array))
        probs = exp_scores / exp_scores.sum()
    nbest = [
        {"start_logit": _json_number(s), "end_logit": _json_number(e), "text": t, "probability": _json_number(p)}
        for (s, e), t, p in zip(logits, texts, probs)
    ]
    return nbest, scores, logits


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
# 4b. QA script steps shared by run_qa.py, run_qa_beam_search.py and run_seq2seq_qa.py
# ----------------------------------------------------------------------------------------------------------------------


def check_extractive_qa_arguments(model_args, data_args, training_args, adapter_args):
    """Cheap checks of run_qa.py's and run_qa_beam_search.py's command line, before any data or model is loaded."""
    check_adapter_arguments(adapter_args)
    # The reference only warned on a wrong --metric_for_best_model, then failed with a KeyError at the first
    # evaluation, after training.
    valid = SQUAD_V2_METRICS if data_args.version_2_with_negative else SQUAD_V1_METRICS
    check_script_arguments(model_args, training_args, adapter_args, best_model_metrics=valid)
    check_qa_numeric_args(data_args)


def capped_max_seq_length(data_args, tokenizer) -> int:
    """--max_seq_length, capped at the tokenizer's maximum with a warning (as the reference)."""
    if data_args.max_seq_length > tokenizer.model_max_length:
        logger.warning(
            f"The max_seq_length passed ({data_args.max_seq_length}) is larger than the maximum length for the "
            f"model ({tokenizer.model_max_length}). Using max_seq_length={tokenizer.model_max_length}."
        )
    return min(data_args.max_seq_length, tokenizer.model_max_length)


def check_doc_stride(doc_stride: int, max_seq_length: int):
    if doc_stride >= max_seq_length:
        raise UsageError(
            f"--doc_stride ({doc_stride}) must be smaller than --max_seq_length ({max_seq_length}): "
            "the stride is the overlap between consecutive windows of a long context."
        )


def qa_column_names(raw_datasets, training_args):
    """(question, context, answers) column names; the reference falls back to positions 0/1/2."""
    if training_args.do_train:
        column_names = raw_datasets["train"].column_names
    elif training_args.do_eval:
        column_names = raw_datasets["validation"].column_names
    else:
        column_names = raw_datasets["test"].column_names
    question = "question" if "question" in column_names else column_names[0]
    context = "context" if "context" in column_names else column_names[1]
    if "answers" in column_names:
        answers = "answers"
    elif question == "question" and context == "context":
        answers = None  # a test file without answers: predictions are written, nothing is scored
    else:
        answers = column_names[2]
    return question, context, answers


def split_or_fail(raw_datasets, split, flag):
    if split not in raw_datasets:
        raise UsageError(f"{flag} requires a {split} dataset: pass --{split}_file (or a --dataset_name that has it).")
    return raw_datasets[split]


def build_features(examples, prepare_function, feature_kwargs, data_args, training_args, max_samples, desc):
    """Tokenize examples into features (cached by datasets; once per node in distributed runs). max_samples caps
    the examples before tokenization and the features after, as in the reference."""
    if max_samples is not None:
        examples = examples.select(range(min(len(examples), max_samples)))
    with training_args.main_process_first(desc=desc):
        features = examples.map(
            prepare_function,
            fn_kwargs=feature_kwargs,
            batched=True,
            num_proc=data_args.preprocessing_num_workers,
            remove_columns=examples.column_names,
            load_from_cache_file=not data_args.overwrite_cache,
            desc=f"Running tokenizer on {desc}",
        )
    if max_samples is not None:
        features = features.select(range(min(len(features), max_samples)))
    return examples, features


def compute_squad_eval_metrics(p, version_2_with_negative: bool):
    """`compute_metrics` for the QA trainers: p.predictions are formatted answers, p.label_ids the references."""
    return compute_squad_metrics(p.predictions, p.label_ids, version_2_with_negative)


def train_and_save(trainer, training_args, data_args, train_dataset, last_checkpoint):
    train_result = trainer.train(resume_from_checkpoint=checkpoint_to_resume(training_args, last_checkpoint))
    trainer.save_model()  # Saves the tokenizer too for easy upload (adapter mode: the adapter and its head)
    metrics = train_result.metrics
    max_train_samples = data_args.max_train_samples if data_args.max_train_samples is not None else len(train_dataset)
    metrics["train_samples"] = min(max_train_samples, len(train_dataset))
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()


def evaluate_and_save(trainer, data_args, eval_dataset):
    logger.info("*** Evaluate ***")
    metrics = trainer.evaluate()
    max_eval_samples = data_args.max_eval_samples if data_args.max_eval_samples is not None else len(eval_dataset)
    metrics["eval_samples"] = min(max_eval_samples, len(eval_dataset))
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)


def predict_and_save(trainer, data_args, predict_dataset, predict_examples):
    logger.info("*** Predict ***")
    results = trainer.predict(predict_dataset, predict_examples)
    metrics = results.metrics
    max_predict_samples = (
        data_args.max_predict_samples if data_args.max_predict_samples is not None else len(predict_dataset)
    )
    metrics["predict_samples"] = min(max_predict_samples, len(predict_dataset))
    trainer.log_metrics("predict", metrics)
    trainer.save_metrics("predict", metrics)


# ----------------------------------------------------------------------------------------------------------------------
# 5. Language-modelling helpers (run_mlm.py, run_clm.py)
# ----------------------------------------------------------------------------------------------------------------------
# Data loading with the reference's validation carving, config overrides, the position-embedding check, grouping
# into blocks, offline accuracy and perplexity. Default behaviour is the reference's; the checks only turn its crashes
# (or silent nonsense) into one-line errors.

LM_FILE_BUILDERS = {"txt": "text", "csv": "csv", "json": "json", "jsonl": "json"}


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
            raise UsageError(
                f"{flag} {path}: unsupported extension '.{extension}'. Use a .txt, .csv, .json or .jsonl file."
            )
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
    except UsageError:
        raise
    except Exception as err:  # parse errors arrive as DatasetGenerationError (pyarrow/pandas inside)
        if data_args.dataset_name is not None:
            raise UsageError(f"Could not load the language-modelling data ({type(err).__name__}: {err}).") from err
        raise UsageError(describe_data_load_failure([data_args.train_file, data_args.validation_file], err)) from err
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
        raise UsageError(
            "--do_train requires a train dataset: pass --train_file (or a --dataset_name with a train split)."
        )
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
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, valid, n=3)
            hints.append(f"{key} (did you mean {', '.join(close)}?)" if close else key)
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


def lm_train_samples(trainer, training_args, max_train_samples, train_dataset) -> int:
    """metrics["train_samples"]: the reference's min(max_train_samples or len, len). A stream has no length: then it
    is the number of examples the optimizer steps consumed (at most max_train_samples distinct ones)."""
    if hasattr(train_dataset, "__len__"):
        return min(max_train_samples if max_train_samples is not None else len(train_dataset), len(train_dataset))
    consumed = (trainer.state.global_step * training_args.train_batch_size
                * training_args.gradient_accumulation_steps * training_args.world_size)
    return consumed if max_train_samples is None else min(consumed, max_train_samples)


def count_rows(dataset) -> int:
    """len(dataset), or the number of rows a stream yields (reads it once)."""
    if hasattr(dataset, "__len__"):
        return len(dataset)
    return sum(1 for _ in dataset)
