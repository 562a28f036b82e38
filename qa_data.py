"""SQuAD-style QA data: loading it (a Hub dataset, or local flattened/nested SQuAD JSON, JSON Lines or CSV files),
switching SQuAD v2.0 mode on for unanswerable questions, repairing training answers, tokenizing features. A copy of a
script adapted to another data format changes its --*_column flags and its `answer_spans` function, not this file."""
import collections
import hashlib
import json
import logging
import os
import re
from typing import Optional

from script_utils import UsageError, data_file_problem, innermost_error, select_samples

logger = logging.getLogger(__name__)


# Loading --------------------------------------------------------------------------------------------------------------
def _data_files(data_args) -> dict:
    """{split: its --{split}_file}, for the files given."""
    files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
    return {split: path for split, path in files.items() if path is not None}


def check_qa_data_files(data_args):
    """The upstream __post_init__ checks, with messages that say how to fix the command."""
    files = _data_files(data_args)
    if data_args.dataset_name is None and not files:
        raise UsageError("Need either a dataset name or a training/validation file/test_file.")
    for split, path in files.items():
        extension = path.split(".")[-1].lower()
        if extension not in ("json", "jsonl", "csv"):
            raise UsageError(f"--{split}_file {path}: unsupported extension '.{extension}'. Use a .json (flattened or "
                             "original nested SQuAD), .jsonl or .csv file.")


QA_FILE_EXTENSIONS = (".json", ".jsonl", ".csv")  # what load_qa_file reads (detect_qa_file_format: which layout)


def load_qa_raw_datasets(data_args, model_args):
    """Load the raw QA examples: local files split by split (--train_file/--validation_file/--test_file, or the files
    of a local --dataset_name folder, split by their names as datasets does: train*, dev*/valid*, test*), else a hub
    dataset. Local files go through one reader, load_qa_file."""
    import datasets
    if data_args.dataset_name is None:
        return load_qa_split_files({split: [path] for split, path in _data_files(data_args).items()},
                                   model_args.cache_dir)
    folder_files = _qa_files_of_folder(data_args.dataset_name)
    if folder_files:
        return load_qa_split_files(folder_files, model_args.cache_dir)
    try:
        return datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name,
                                     cache_dir=model_args.cache_dir, token=model_args.token,
                                     trust_remote_code=model_args.trust_remote_code)
    except (ConnectionError, FileNotFoundError, OSError) as err:
        raise UsageError(
            f"Could not load dataset '{data_args.dataset_name}' from the Hugging Face Hub ({type(err).__name__}). "
            "Without network access, pass local files instead: --train_file/--validation_file/--test_file "
            "(SQuAD JSON, JSON Lines or CSV).") from err


def _qa_files_of_folder(folder: str) -> Optional[dict]:
    """{split: [files]} of a local folder whose data files are all QA files load_qa_file reads, split by their names
    with datasets' own patterns (a flattened {"data": [...]} JSON file, given to datasets whole, is one row); else
    None (not a folder, or other formats: datasets loads it)."""
    if not os.path.isdir(folder):
        return None
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        files = DataFilesDict.from_patterns(get_data_patterns(folder), base_path=folder)
    except (FileNotFoundError, ValueError):  # no data files
        return None
    files = {str(split): sorted(paths) for split, paths in files.items()}
    if not files or not all(path.lower().endswith(QA_FILE_EXTENSIONS) for paths in files.values() for path in paths):
        return None
    return files


def load_qa_split_files(split_files: dict, cache_dir: Optional[str]):
    """{split: [paths]} as a DatasetDict: each file read by load_qa_file, a split's files one after the other."""
    import datasets
    raw_datasets = datasets.DatasetDict()
    for split, paths in split_files.items():
        parts = []
        for path in paths:
            try:
                parts.append(load_qa_file(path, cache_dir))
            except UsageError:
                raise
            except Exception as err:  # DatasetGenerationError, ArrowInvalid, ParserError, UnicodeDecodeError ...
                # The file itself names the line at fault where the loader's innermost error (a CSV line) does not.
                how = "read as CSV" if path.lower().endswith(".csv") else "loaded"
                raise UsageError(data_file_problem(path) or f"Data file {path} could not be {how}: "
                                 f"{innermost_error(err)}") from err
        raw_datasets[split] = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return raw_datasets


def detect_qa_file_format(path: str) -> str:
    """Return "flat" ({"data": [records]}), "nested" (original SQuAD), "records" (a JSON list), "jsonl" or "csv"."""
    if not os.path.isfile(path):
        raise UsageError(f"Data file {path} {'is a folder, not a file' if os.path.isdir(path) else 'does not exist'}.")
    if path.lower().endswith(".csv"):
        return "csv"
    with open(path, encoding="utf-8") as f:  # not UTF-8: load_qa_raw_datasets says so (data_file_problem)
        head = f.read(4096).lstrip()
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
                raise UsageError(f"Data file {path}: record {i} is a {type(record).__name__}, not an object with "
                                 '"id", "question", "context" and "answers".')
        return "records"
    if head.startswith("{"):
        try:
            content = _read_json(path)
        except UsageError:
            if _first_line_is_json(path):
                return "jsonl"  # several JSON objects, one per line
            raise
        if "data" not in content:  # (a JSON text starting with "{" is an object)
            return "jsonl"  # a single record on a single line
        if not isinstance(content["data"], list):
            raise UsageError(f'Data file {path}: its "data" is a {type(content["data"]).__name__}, not a list of '
                             "records (or of SQuAD articles).")
        if not content["data"]:
            raise UsageError(f'Data file {path} has no examples: its "data" list is empty.')
        first = content["data"][0]
        return "nested" if isinstance(first, dict) and "paragraphs" in first else "flat"
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


def _answer_list_as_lists(answers: list) -> dict:
    """[{"text": t, "answer_start": s}, ...] (the original SQuAD layout) as {"text": [...], "answer_start": [...]}."""
    return {"text": [a["text"] for a in answers], "answer_start": [int(a["answer_start"]) for a in answers]}


def flatten_nested_squad(squad: dict, path: str = "") -> list:
    """The original SQuAD layout (data[].paragraphs[].qas[]) as flat records, in file order; where the file departs
    from it, a UsageError names the place. Unanswerable v2 questions (is_impossible) get empty answers, as in the hub's
    squad_v2: plausible_answers are not answers. (That contexts and questions are text is checked after loading.)"""
    records, where = [], "data"
    try:
        for a, article in enumerate(squad["data"]):
            where = f"data[{a}]"
            for p, paragraph in enumerate(article["paragraphs"]):
                where = f"data[{a}].paragraphs[{p}]"
                context = paragraph["context"]
                for q, qa in enumerate(paragraph["qas"]):
                    where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                    question, example_id = qa["question"], str(qa["id"])
                    where += f" (id {example_id!r}) answers"
                    answers = _answer_list_as_lists([] if qa.get("is_impossible", False) else qa.get("answers", []))
                    records.append({"id": example_id, "title": article.get("title", ""), "context": context,
                                    "question": question, "answers": answers})
    except KeyError as err:
        raise UsageError(f'Data file {path} is not in the SQuAD layout: {where} has no "{err.args[0]}".') from err
    except (TypeError, ValueError, AttributeError) as err:  # a list where an object belongs, a start that is no number
        raise UsageError(f"Data file {path} is not in the SQuAD layout at {where}: {type(err).__name__}: "
                         f"{err}.") from err
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
        records = flatten_nested_squad(_read_json(path), path)
        if not records:
            raise UsageError(f"Data file {path} has no questions (no qas in any paragraph).")
        tmp = f"{target}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        os.replace(tmp, target)  # atomic: a concurrent process never reads half a file
    return target


def _id_as_text(example):
    return {"id": None if example["id"] is None else str(example["id"])}


def _answers_as_lists(example):
    return {"answers": _answer_list_as_lists(example["answers"] or [])}


def _parse_csv_answers(example, index, path):
    answers = example["answers"]
    if answers is None or (isinstance(answers, str) and not answers.strip()):  # an empty cell: no answer
        answers = {"text": [], "answer_start": []}
    elif isinstance(answers, str):
        try:
            answers = json.loads(answers)
        except json.JSONDecodeError:
            raise UsageError(f"Data file {path}: the answers of data row {index + 1} are not JSON ({answers[:60]!r}); "
                             'write them as {"text": [...], "answer_start": [...]}.') from None
    return {"answers": {"text": list(answers["text"]), "answer_start": [int(s) for s in answers["answer_start"]]}}


def load_qa_file(path: str, cache_dir: Optional[str] = None):
    """One local QA file as a datasets.Dataset of flat records, loaded by datasets (so cached on disk, maps too)."""
    import datasets
    fmt = detect_qa_file_format(path)
    if fmt == "csv":
        dataset = datasets.load_dataset("csv", data_files={"data": path}, cache_dir=cache_dir)["data"]
        if "answers" in dataset.column_names:
            dataset = dataset.map(_parse_csv_answers, with_indices=True, fn_kwargs={"path": path},
                                  desc=f"Parsing CSV answers of {os.path.basename(path)}")
    else:  # the flattened layout's records are its "data" field; a nested SQuAD file is read from a flattened copy
        options = {"field": "data"} if fmt == "flat" else {}
        data_file = _flattened_copy(path, cache_dir) if fmt == "nested" else path
        dataset = datasets.load_dataset("json", data_files={"data": data_file}, cache_dir=cache_dir, **options)["data"]
    if "id" in dataset.column_names and getattr(dataset.features["id"], "dtype", None) != "string":
        if isinstance(dataset.features["id"], datasets.Value):
            dataset = dataset.cast_column("id", datasets.Value("string"))
        else:  # numbers and strings mixed (datasets' Json feature)
            dataset = dataset.map(_id_as_text, desc=f"Reading ids of {os.path.basename(path)}")
    answers_feature = dataset.features.get("answers")
    if isinstance(answers_feature, datasets.List) and isinstance(answers_feature.feature, dict):
        dataset = dataset.map(_answers_as_lists, desc=f"Reading answers of {os.path.basename(path)}")
    return dataset


def read_column(dataset, name) -> list:
    """A whole column as a Python list, through Arrow for a datasets.Dataset (`dataset[i][name]` decodes whole rows)."""
    import datasets
    if isinstance(dataset, datasets.Dataset):
        return dataset.with_format("arrow")[name].to_pylist()
    return [row[name] for row in dataset]


# Stages, columns, answers ---------------------------------------------------------------------------------------------
QAColumns = collections.namedtuple("QAColumns", "id question context answer")
QA_STAGES = {"train": ("train", "--do_train"), "eval": ("validation", "--do_eval"), "predict": ("test", "--do_predict")}


def stage_source(data_args, stage: str) -> str:
    """How to name a stage's data in a message: the flag and file it came from, or the split of the hub dataset."""
    split = QA_STAGES[stage][0]
    path = _data_files(data_args).get(split)
    return f"the {split} split of {data_args.dataset_name}" if path is None else f"--{split}_file {path}"


def count_unanswerable(examples, columns, answer_spans) -> int:
    """Questions without an answer; 0 when answer_spans() cannot read some record's answers (checks.py says which)."""
    if examples is None or columns.answer not in examples.column_names:
        return 0
    answers = read_column(examples, columns.answer)
    try:
        return sum(not texts for texts, _ in map(answer_spans, answers))
    except (KeyError, TypeError, IndexError, ValueError, AttributeError):
        return 0


def _squad_answers(example, answer_column, answer_spans):
    texts, starts = answer_spans(example[answer_column])
    return {answer_column: {"text": list(texts), "answer_start": [int(s) for s in starts]}}


def with_squad_answers(examples: dict, columns, answer_spans, training_args) -> dict:
    """Each stage's answers in the SQuAD layout {"text": [...], "answer_start": [...]}, read through the script's
    answer_spans(): every later step reads that one layout. Data already in it, read as is, is passed through."""
    probe = {"text": ["probe"], "answer_start": [7]}
    try:
        reads_as_is = tuple(answer_spans(probe)) == (probe["text"], probe["answer_start"])
    except Exception:
        reads_as_is = False
    converted = {}
    for stage, dataset in examples.items():
        feature = dataset.features[columns.answer] if columns.answer in dataset.column_names else None
        if feature is None or (reads_as_is and isinstance(feature, dict) and set(feature) == {"text", "answer_start"}):
            converted[stage] = dataset
            continue
        with training_args.main_process_first(desc=f"{stage} answers"):
            converted[stage] = dataset.map(_squad_answers, desc=f"Reading the {stage} answers",
                                           fn_kwargs={"answer_column": columns.answer, "answer_spans": answer_spans})
    return converted


def realign_train_answers(train_examples, source: str, columns):
    """Training answers not at their answer_start (a shifted offset, a doubled or non-breaking space) realigned to the
    text found nearby, else dropped (examples left with none skipped). Eval answers stay: the metric compares texts."""
    answers, contexts = read_column(train_examples, columns.answer), read_column(train_examples, columns.context)
    fixes, skipped, counts = {}, set(), collections.Counter()
    for i, (answer, context) in enumerate(zip(answers, contexts)):
        texts, starts = [], []
        for text, start in zip(answer["text"], answer["answer_start"]):
            if start < 0 or context[start: start + len(text)] != text:
                counts["mismatched"] += 1
                text, start = _realign_answer(context, text, start) or (None, None)
                counts["dropped" if text is None else "realigned"] += 1
            if text is not None:
                texts.append(text)
                starts.append(start)
        if texts != answer["text"] or starts != answer["answer_start"]:
            if texts:
                fixes[str(i)] = {"text": texts, "answer_start": starts}
            else:
                skipped.add(i)
    if not counts:
        return train_examples
    logger.warning(f"{source}: {counts['mismatched']} answer(s) did not match the context at their answer_start: "
                   f"{counts['realigned']} realigned (text found nearby), {counts['dropped']} dropped (not found); "
                   f"{len(skipped)} example(s) skipped for having no answer left.")
    if fixes:
        train_examples = train_examples.map(_fixed_answers, with_indices=True, desc="Realigning answers",
                                            fn_kwargs={"answer_column": columns.answer, "fixes": fixes})
    if skipped:
        train_examples = train_examples.select([i for i in range(len(train_examples)) if i not in skipped])
        if len(train_examples) == 0:
            raise UsageError(f"{source}: no example is left after skipping those whose answer is not in the context.")
    return train_examples


def _fixed_answers(example, index, answer_column, fixes):
    return {answer_column: fixes[str(index)]} if str(index) in fixes else {}


def _realign_answer(context: str, text: str, start: int, window: int = 100):
    """(text, start) of the answer in the context near `start`, or None: the exact text nearest to start (within
    `window` characters), else the same words with any whitespace between them, taken verbatim from the context."""
    if not text or not text.strip():
        return None
    positions = []
    position = context.find(text, max(0, start - window))
    while position != -1 and position <= start + window:
        positions.append(position)
        position = context.find(text, position + 1)
    if positions:
        return text, min(positions, key=lambda p: abs(p - start))
    pattern = re.compile(r"\s+".join(re.escape(word) for word in text.split()))
    matches = pattern.finditer(context, max(0, start - window), start + window + len(text) * 2)
    match = min(matches, key=lambda m: abs(m.start() - start), default=None)
    return None if match is None else (match.group(), match.start())


# The steps the scripts call ------------------------------------------------------------------------------------------
def load_qa_examples(data_args, model_args, training_args, answer_spans):
    """({stage: raw examples} for the stages this run does ("train", "eval", "predict"), each cut to its --max_*_samples
    (the first questions, as upstream); the column names of the --*_column flags). Unanswerable questions in any
    stage's data switch SQuAD v2.0 mode on, with a warning: v1.1 scoring cannot score an empty gold answer (upstream
    crashed there, after training or prediction). Test data without answers has none to count."""
    columns = QAColumns(data_args.id_column, data_args.question_column, data_args.context_column,
                        data_args.answer_column)
    raw_datasets, examples = load_qa_raw_datasets(data_args, model_args), {}
    for stage, (split, flag) in QA_STAGES.items():
        if getattr(training_args, f"do_{stage}"):
            if split not in raw_datasets:
                raise UsageError(f"{flag} requires a {split} dataset: pass --{split}_file (or a --dataset_name that "
                                 "has it).")
            examples[stage] = raw_datasets[split]
    for stage in () if data_args.version_2_with_negative else ("train", "eval", "predict"):
        if unanswerable := count_unanswerable(examples.get(stage), columns, answer_spans):
            logger.warning(
                f"{stage_source(data_args, stage)}: {unanswerable} of {len(examples[stage])} questions have no answer, "
                "so this is SQuAD v2.0-style data: running as with --version_2_with_negative (null answers, SQuAD v2.0 "
                "metrics eval_exact/eval_f1/eval_HasAns_*). Pass the flag to say so explicitly.")
            data_args.version_2_with_negative = True
            break
    return {stage: select_samples(data, getattr(data_args, f"max_{stage}_samples"))
            for stage, data in examples.items()}, columns


def repair_qa_examples(examples: dict, data_args, columns, answer_spans, training_args) -> dict:
    """Answers in the SQuAD layout (with_squad_answers); misplaced training answers repaired (realign_train_answers)."""
    examples = with_squad_answers(examples, columns, answer_spans, training_args)
    if "train" in examples:
        examples["train"] = realign_train_answers(examples["train"], stage_source(data_args, "train"), columns)
    return examples


def squad_references(examples, columns) -> list:
    """The metric's references, [{"id", "answers"}] in example order, read column by column (fast)."""
    ids, answers = read_column(examples, columns.id), read_column(examples, columns.answer)
    return [{"id": str(example_id), "answers": answer} for example_id, answer in zip(ids, answers)]


def build_stage_features(examples: dict, prepare_train, prepare_eval, train_kwargs, eval_kwargs, data_args,
                         training_args) -> dict:
    """{stage: features}: prepare_train(batch, **train_kwargs) for training, prepare_eval(batch, **eval_kwargs) else.
    The examples are cut to --max_*_samples already (load_qa_examples); training features are cut to
    --max_train_samples again, as upstream. Evaluation and prediction keep every window of the questions kept: upstream
    cut those windows too, so the questions left without one got an empty answer and were scored all the same."""
    names = {"train": "train dataset", "eval": "validation dataset", "predict": "prediction dataset"}
    return {stage: build_features(stage_examples, prepare_train if stage == "train" else prepare_eval,
                                  train_kwargs if stage == "train" else eval_kwargs, data_args, training_args,
                                  max_samples=data_args.max_train_samples if stage == "train" else None,
                                  desc=names[stage])
            for stage, stage_examples in examples.items()}


def padding_collator(tokenizer, data_args, training_args):
    """Stacks features padded to max_seq_length (--pad_to_max_length, the default), else pads each batch."""
    from transformers import DataCollatorWithPadding, default_data_collator
    if data_args.pad_to_max_length:
        return default_data_collator
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if training_args.fp16 else None)


def build_features(examples, prepare_function, feature_kwargs, data_args, training_args, max_samples, desc):
    """Tokenize examples into features cut to max_samples, as upstream. Cached by datasets: in distributed runs each
    node's main process tokenizes first and the others read its cache."""
    with training_args.main_process_first(desc=desc):
        features = examples.map(prepare_function, fn_kwargs=feature_kwargs, batched=True,
                                num_proc=data_args.preprocessing_num_workers, remove_columns=examples.column_names,
                                load_from_cache_file=not data_args.overwrite_cache, desc=f"Running tokenizer on {desc}")
    return select_samples(features, max_samples)
