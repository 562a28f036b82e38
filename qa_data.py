"""SQuAD-style QA data: loading it (a Hub dataset, or local flattened/nested SQuAD JSON, JSON Lines, CSV or TSV
files), switching SQuAD v2.0 mode on for unanswerable questions, reading answers into the SQuAD layout and repairing
training answers, tokenizing features. A copy of a script adapted to another data format changes its --*_column flags
and its two data-format functions (`one_example_per_question` and `answer_spans`), not this file: records reach them
whole (every column, CSV/TSV cells as text), and answers given without a start are looked up in the context here."""
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
    """The upstream __post_init__ checks, with messages that say how to fix the command; a missing file is named
    with its flag."""
    files = _data_files(data_args)
    if data_args.dataset_name is None and not files:
        raise UsageError("Need either a dataset name or a training/validation file/test_file.")
    for split, path in files.items():
        extension = path.split(".")[-1].lower()
        if extension not in ("json", "jsonl", "csv", "tsv"):
            raise UsageError(f"--{split}_file {path}: unsupported extension '.{extension}'. Use a .json (flattened or "
                             "original nested SQuAD), .jsonl, .csv or .tsv file.")
        if not os.path.isfile(path):
            problem = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
            raise UsageError(f"--{split}_file {path} {problem}.")


QA_FILE_EXTENSIONS = (".json", ".jsonl", ".csv", ".tsv")  # what load_qa_file reads (detect_qa_file_format: how)


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
            "(SQuAD JSON, JSON Lines, CSV or TSV).") from err


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
                how = "read as CSV/TSV" if path.lower().endswith((".csv", ".tsv")) else "loaded"
                raise UsageError(data_file_problem(path) or f"Data file {path} could not be {how}: "
                                 f"{innermost_error(err)}") from err
        raw_datasets[split] = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return raw_datasets


def detect_qa_file_format(path: str) -> str:
    """Return "flat" ({"data": [records]}), "nested" (original SQuAD), "records" (a JSON list), "jsonl", "csv" or
    "tsv"."""
    if not os.path.isfile(path):
        raise UsageError(f"Data file {path} {'is a folder, not a file' if os.path.isdir(path) else 'does not exist'}.")
    if path.lower().endswith((".csv", ".tsv")):
        return path[-3:].lower()
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
    raise UsageError(f"Data file {path} is neither JSON nor JSON Lines (it starts with {head[:20]!r}); a CSV or TSV "
                     "file needs the .csv or .tsv extension.")


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


def _text_columns_options(path: str, fmt: str) -> dict:
    """datasets' csv options that read every column of a CSV or TSV file as the text written there: no type guessing
    ("007" stays "007", "NA" stays "NA", an empty cell is ""). Only the script's answer_spans() interprets a cell."""
    import csv

    import datasets
    separator = "\t" if fmt == "tsv" else ","
    with open(path, encoding="utf-8", newline="") as f:
        header = next(csv.reader(f, delimiter=separator), [])
    return {"sep": separator, "keep_default_na": False,
            "features": datasets.Features({name: datasets.Value("string") for name in header})}


def load_qa_file(path: str, cache_dir: Optional[str] = None):
    """One local QA file as a datasets.Dataset of flat records, loaded by datasets (so cached on disk, maps too)."""
    import datasets
    fmt = detect_qa_file_format(path)
    if fmt in ("csv", "tsv"):
        options = _text_columns_options(path, fmt)
        dataset = datasets.load_dataset("csv", data_files={"data": path}, cache_dir=cache_dir, **options)["data"]
    else:  # the flattened layout's records are its "data" field; a nested SQuAD file is read from a flattened copy
        options = {"field": "data"} if fmt == "flat" else {}
        data_file = _flattened_copy(path, cache_dir) if fmt == "nested" else path
        dataset = datasets.load_dataset("json", data_files={"data": data_file}, cache_dir=cache_dir, **options)["data"]
    if "id" in dataset.column_names and getattr(dataset.features["id"], "dtype", None) != "string":
        if isinstance(dataset.features["id"], datasets.Value):
            dataset = dataset.cast_column("id", datasets.Value("string"))
        else:  # numbers and strings mixed (datasets' Json feature)
            dataset = dataset.map(_id_as_text, desc=f"Reading ids of {os.path.basename(path)}")
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


class MissingColumn(KeyError):
    """The script's answer_spans() asked a record for a column the data does not have."""


class QARecord(dict):
    """One record as the script's answer_spans() sees it: every column by name. A column the data lacks raises
    MissingColumn, which tells data without answers (a test file) from answers the function cannot read."""

    def __missing__(self, key):
        raise MissingColumn(key)


def read_records(dataset) -> list:
    """Every record of a dataset as a QARecord, read column by column (fast)."""
    names = dataset.column_names
    return [QARecord(zip(names, values)) for values in zip(*(read_column(dataset, name) for name in names))]


def squad_answers(answers):
    """(texts, starts) of answers in the SQuAD layout {"text": [...], "answer_start": [...]}, also when written as a
    list of {"text", "answer_start"} objects, or as JSON text in a CSV/TSV cell (an empty cell: no answer)."""
    if isinstance(answers, str):
        answers = json.loads(answers) if answers.strip() else []
    if isinstance(answers, list):
        return [answer["text"] for answer in answers], [answer["answer_start"] for answer in answers]
    return answers["text"], answers["answer_start"]


def missing_answer_column(dataset, columns, answer_spans) -> Optional[str]:
    """The column that answer_spans() reads and the data lacks (data without answers, e.g. a test file), else None.
    Answers the function cannot read count as answers here: the checks say what is wrong with them."""
    if len(dataset) == 0:
        return columns.answer
    try:
        answer_spans(QARecord(dataset[0]), columns)
    except MissingColumn as err:
        return err.args[0]
    except Exception:  # noqa: BLE001 (the user's function on the user's data: checks.py reports it)
        pass
    return None


def count_unanswerable(examples, columns, answer_spans) -> int:
    """Questions without an answer; 0 when answer_spans() cannot read some record's answers (checks.py says which)."""
    if examples is None or missing_answer_column(examples, columns, answer_spans) is not None:
        return 0
    try:
        return sum(not answer_spans(record, columns)[0] for record in read_records(examples))
    except Exception:  # noqa: BLE001 (as above)
        return 0


def _squad_answers(example, columns, answer_spans):
    """The record's answers in the SQuAD layout; an answer without a start gets the first place its text occurs in
    the context (-1 when it does not: training repairs or drops it, evaluation compares texts only)."""
    texts, starts = answer_spans(QARecord(example), columns)
    context = example[columns.context]
    starts = [context.find(text) if start is None else start for text, start in zip(texts, starts)]
    return {columns.answer: {"text": list(texts), "answer_start": starts}}


def with_squad_answers(examples: dict, columns, answer_spans, training_args) -> dict:
    """Each stage's answers in the SQuAD layout {"text": [...], "answer_start": [...]} in the --answer_column column,
    read through the script's answer_spans() from the whole record: every later step (labels, references) reads that
    one layout. Data already in it, read as is, is passed through; a stage without answers has no such column."""
    import datasets
    probe = QARecord({columns.answer: {"text": ["probe"], "answer_start": [7]}})
    try:
        reads_as_is = tuple(answer_spans(probe, columns)) == (["probe"], [7])
    except Exception:  # noqa: BLE001 (reads other columns)
        reads_as_is = False
    converted = {}
    for stage, dataset in examples.items():
        if missing_answer_column(dataset, columns, answer_spans) is not None:  # e.g. a test file
            has_column = columns.answer in dataset.column_names
            converted[stage] = dataset.remove_columns(columns.answer) if has_column else dataset
            continue
        feature = dataset.features.get(columns.answer)
        if reads_as_is and isinstance(feature, dict) and set(feature) == {"text", "answer_start"}:
            converted[stage] = dataset
            continue
        features = datasets.Features({**dataset.features, columns.answer: {
            "text": datasets.Sequence(datasets.Value("string")),
            "answer_start": datasets.Sequence(datasets.Value("int64"))}})
        with training_args.main_process_first(desc=f"{stage} answers"):
            converted[stage] = dataset.map(_squad_answers, features=features, desc=f"Reading the {stage} answers",
                                           fn_kwargs={"columns": columns, "answer_spans": answer_spans})
    return converted


def realign_train_answers(train_examples, source: str, columns):
    """Training answers not at their answer_start (a shifted offset, a doubled or non-breaking space, no start given
    and no exact occurrence) realigned to the text found in the context nearest that start, else dropped (examples
    left with none skipped), counted in one warning. Eval answers stay: the metric compares texts."""
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
    logger.warning(f"{source}: {counts['mismatched']} answer(s) did not match the context at their start (or had "
                   f"no start and no exact occurrence): {counts['realigned']} realigned (text found in the context), "
                   f"{counts['dropped']} dropped (not in the context); {len(skipped)} example(s) skipped for having no "
                   "answer left.")
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


def _realign_answer(context: str, text: str, start: int):
    """(text, start) of the answer in the context nearest to `start` (a hint: -1 when there was none), or None: the
    exact text, else the same words with any whitespace between them, taken verbatim from the context."""
    if not text or not text.strip():
        return None
    positions = []
    position = context.find(text)
    while position != -1:
        positions.append(position)
        position = context.find(text, position + 1)
    if positions:
        return text, min(positions, key=lambda p: abs(p - start))
    pattern = re.compile(r"\s+".join(re.escape(word) for word in text.split()))
    match = min(pattern.finditer(context), key=lambda m: abs(m.start() - start), default=None)
    return None if match is None else (match.group(), match.start())


# The steps the scripts call ------------------------------------------------------------------------------------------
def _examples_per_question(records, one_example_per_question):
    return dict(one_example_per_question(records))  # a new dict: map drops the columns of a batch returned as is


def one_example_per_question_of(dataset, one_example_per_question, source: str, training_args):
    """The records as one example per question, through the script's one_example_per_question (a batched map)."""
    with training_args.main_process_first(desc=f"examples of {source}"):
        examples = dataset.map(_examples_per_question, batched=True, remove_columns=dataset.column_names,
                               fn_kwargs={"one_example_per_question": one_example_per_question},
                               desc=f"One example per question ({source})")
    if len(examples) != len(dataset):
        logger.info(f"{source}: {len(dataset)} records hold {len(examples)} questions.")
    return examples


def load_qa_examples(data_args, model_args, training_args, answer_spans, one_example_per_question):
    """({stage: raw examples} for the stages this run does ("train", "eval", "predict"), one per question (the script's
    one_example_per_question), each cut to its --max_*_samples (the first ones, as upstream); the column names of the
    --*_column flags). Unanswerable questions in any stage's data switch SQuAD v2.0 mode
    on, with a warning: v1.1 scoring cannot score an empty gold answer (upstream crashed there, after training or
    prediction). Test data without answers has none to count."""
    columns = QAColumns(data_args.id_column, data_args.question_column, data_args.context_column,
                        data_args.answer_column)
    raw_datasets, examples = load_qa_raw_datasets(data_args, model_args), {}
    for stage, (split, flag) in QA_STAGES.items():
        if getattr(training_args, f"do_{stage}"):
            if split not in raw_datasets:
                raise UsageError(f"{flag} requires a {split} dataset: pass --{split}_file (or a --dataset_name that "
                                 "has it).")
            examples[stage] = one_example_per_question_of(raw_datasets[split], one_example_per_question,
                                                          stage_source(data_args, stage), training_args)
    for stage in () if data_args.version_2_with_negative else ("train", "eval", "predict"):
        if unanswerable := count_unanswerable(examples.get(stage), columns, answer_spans):
            logger.warning(
                f"{stage_source(data_args, stage)}: {unanswerable} of {len(examples[stage])} questions have no answer, "
                "so this is SQuAD v2.0-style data: running as with --version_2_with_negative (null answers, SQuAD v2.0 "
                "metrics eval_exact/eval_f1/eval_HasAns_*). Pass the flag to say so explicitly.")
            data_args.version_2_with_negative = True
            break
    examples = {stage: select_samples(data, getattr(data_args, f"max_{stage}_samples"))
                for stage, data in examples.items()}
    for stage, data in examples.items():
        logger.info(f"{stage_source(data_args, stage)}: {len(data)} questions for {QA_STAGES[stage][1]}.")
    return examples, columns


def repair_qa_examples(examples: dict, data_args, columns, answer_spans, training_args) -> dict:
    """Answers in the SQuAD layout (with_squad_answers); misplaced training answers repaired (realign_train_answers)."""
    examples = with_squad_answers(examples, columns, answer_spans, training_args)
    if "train" in examples:
        source = stage_source(data_args, "train")
        examples["train"] = realign_train_answers(examples["train"], source, columns)
        logger.info(f"{source}: {len(examples['train'])} questions with an answer to train on.")
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
    features = {}
    for stage, stage_examples in examples.items():
        features[stage] = build_features(stage_examples, prepare_train if stage == "train" else prepare_eval,
                                         train_kwargs if stage == "train" else eval_kwargs, data_args, training_args,
                                         max_samples=data_args.max_train_samples if stage == "train" else None,
                                         desc=names[stage])
        # The results' {stage}_samples count these windows (model inputs), not questions: the log tells them apart.
        logger.info(f"{stage_source(data_args, stage)}: {len(stage_examples)} questions, {len(features[stage])} "
                    f"windows (model inputs) for {QA_STAGES[stage][1]}.")
    return features


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
