"""Copy-and-edit, as a user does it: a script and exactly the files the copy table of docs/customising.md ("What to
copy") lists for it, copied into an empty folder, train and evaluate there; and a copy of run_qa.py adapted to another
data layout by editing only that copy."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from toy import data as toy_data


COPY_TABLE = "docs/customising.md"  # the "What to copy" table: script | copy | optional | lines (with checks.py)


def copy_table_row(repo_root, script):
    page = (repo_root / COPY_TABLE).read_text()
    return next(line for line in page.splitlines() if line.startswith(f"| `{script}` |") and "`checks.py`" in line)


def copy_set(repo_root, script, with_checks=True):
    """The files the copy table lists for `script` (checks.py is optional there)."""
    row = copy_table_row(repo_root, script)
    files = re.findall(r"`([\w/]+\.py)`", row.split("|")[2])
    optional = re.findall(r"`([\w/]+\.py)`", row.split("|")[3])
    assert script in files and "checks.py" in optional, row
    return files + (optional if with_checks else [])


def copy_into(repo_root, folder, files):
    folder.mkdir()
    for name in files:
        shutil.copy(repo_root / name, folder / name)
    return folder


def run_copy(folder, script, *args):
    """The copied script through its command line, run from the copy folder (nothing else on the path)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=folder, capture_output=True, text=True,
                          timeout=600, env=env)


COMMON = ["--report_to", "none", "--seed", "42", "--max_steps", "4", "--per_device_train_batch_size", "8",
          "--train_adapter", "--adapter_config", "seq_bn", "--do_train", "--do_eval", "--disable_tqdm", "true"]


@pytest.mark.parametrize("with_checks", [True, False], ids=["with checks.py", "without checks.py"])
def test_run_qa_copy_set_is_complete(repo_root, tiny_model, tmp_path, with_checks):
    files = copy_set(repo_root, "run_qa.py", with_checks)
    folder = copy_into(repo_root, tmp_path / "copy", files)
    if not with_checks:  # the lines marked "# checks.py" go, as docs/customising.md says
        script = (folder / "run_qa.py").read_text()
        script, deleted = re.subn(r"^.*# checks\.py.*\n", "", script, flags=re.M)
        assert deleted == 5 and "import checks" not in script and "checks." not in script
        (folder / "run_qa.py").write_text(script)
        assert not (folder / "checks.py").exists()
    train = toy_data.write_qa_file(toy_data.make_templated_qa(24, seed=1), str(tmp_path / "train.json"), "flat")
    dev = toy_data.write_qa_file(toy_data.make_templated_qa(8, seed=2), str(tmp_path / "dev.json"), "flat")
    result = run_copy(folder, "run_qa.py", "--model_name_or_path", tiny_model("bert"), "--train_file", train,
                      "--validation_file", dev, "--output_dir", tmp_path / "out", "--max_seq_length", "64",
                      "--doc_stride", "16", *COMMON)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"eval_exact_match", "eval_f1"} <= set(json.loads((tmp_path / "out" / "eval_results.json").read_text()))
    assert len(json.loads((tmp_path / "out" / "eval_predictions.json").read_text())) == 8


def test_run_mlm_copy_set_is_complete(repo_root, tiny_model, tmp_path):
    folder = copy_into(repo_root, tmp_path / "copy", copy_set(repo_root, "run_mlm.py"))
    text = toy_data.write_lm_text(str(tmp_path / "train.txt"), n_lines=60, seed=0)
    result = run_copy(folder, "run_mlm.py", "--model_name_or_path", tiny_model("bert"), "--train_file", text,
                      "--validation_file", text, "--output_dir", tmp_path / "out", "--max_seq_length", "32", *COMMON)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "perplexity" in json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert (tmp_path / "out" / "mlm" / "pytorch_adapter.bin").is_file()


# Your own data format: another layout, adapted by editing only the copied script --------------------------------------
# Each layout of docs/customising.md ("Your data format"): its data written from the toy records, its edit of the copied
# script (replacements, at most 15 changed lines of `diff -u`) and its flags. A copy trains and evaluates in-process
# (imported from its folder); the features it builds and the references it scores against are recorded on the way.

MAX_CHANGED_LINES = 15
QA_ARGS = ["--max_seq_length", "128", "--doc_stride", "32", "--report_to", "none", "--seed", "42", "--max_steps", "2",
           "--per_device_train_batch_size", "8", "--train_adapter", "--adapter_config", "seq_bn", "--do_train",
           "--do_eval", "--disable_tqdm", "true"]


def alias(i):
    """A second accepted answer of question i, never in the context and not equal to the first after the metric's
    normalisation: only a reference that holds it lets a prediction of it score."""
    return f"alias number {i}"


def write_jsonl(records, path):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_rows(rows, path, separator):
    """Rows (dicts) as a CSV or TSV file: a header and one line per row (the csv module quotes where needed)."""
    import csv
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=separator)
        writer.writeheader()
        writer.writerows(rows)
    return path


def aliases_tsv(records, path):
    """(a) uid / document / question / answers: accepted texts joined by " || ", no offsets; every 10th question's
    answer is not in its document."""
    rows, accepted = [], {}
    for i, r in enumerate(records):
        texts = ["Atlantis" if i % 10 == 3 else r["answers"]["text"][0], alias(i)]
        rows.append({"uid": r["id"], "document": r["context"], "question": r["question"],
                     "answers": " || ".join(texts)})
        accepted[r["id"]] = texts
    return write_rows(rows, path, "\t"), accepted


def two_columns_csv(records, path):
    """(b) id / question / context / answer_text / answer_start: the answer and its start in two columns; ids that
    look like numbers ("007") stay text."""
    rows = [{"id": f"{i:03d}", "question": r["question"], "context": r["context"],
             "answer_text": r["answers"]["text"][0], "answer_start": r["answers"]["answer_start"][0]}
            for i, r in enumerate(records)]
    return write_rows(rows, path, ","), {row["id"]: [row["answer_text"]] for row in rows}


def questions_per_context_jsonl(records, path):
    """(c) one JSON line per context: {"context", "qas": [{"qid", "question", "answers": [texts]}]}."""
    contexts, accepted = {}, {}
    for i, r in enumerate(records):
        texts = [r["answers"]["text"][0], alias(i)]
        contexts.setdefault(r["context"], []).append({"qid": r["id"], "question": r["question"], "answers": texts})
        accepted[r["id"]] = texts
    assert len(contexts) < len(records)  # several questions per record
    return write_jsonl([{"context": c, "qas": qas} for c, qas in contexts.items()], path), accepted


def unanswerable_jsonl(records, path):
    """(d) {"id", "question", "context", "answers": [texts]}; [] marks an unanswerable question (SQuAD v2.0)."""
    rows = [{**{k: r[k] for k in ("id", "question", "context")},
             "answers": [r["answers"]["text"][0], alias(i)] if r["answers"]["text"] else []}
            for i, r in enumerate(records)]
    assert any(not row["answers"] for row in rows) and any(row["answers"] for row in rows)
    return write_jsonl(rows, path), {row["id"]: row["answers"] for row in rows}


def squad_json(records, path):
    """(e) SQuAD itself (flattened JSON); each answer gets a second one, the context's first word, with its start."""
    records = [{**r, "answers": {"text": r["answers"]["text"] + [r["context"].split()[0]],
                                 "answer_start": r["answers"]["answer_start"] + [0]}} for r in records]
    path.write_text(json.dumps({"version": "1.1", "data": records}))
    return path, {r["id"]: r["answers"]["text"] for r in records}


ALIASES_EDIT = [("    return squad_answers(example[columns.answer])", """\
    texts = [text.strip() for text in example[columns.answer].split(" || ") if text.strip()]
    return texts, [None] * len(texts)  # no offsets: each text is looked up in the context""")]
TWO_COLUMNS_EDIT = [("    return squad_answers(example[columns.answer])",
                     '    return [example[columns.answer]], [int(example["answer_start"])]')]
QUESTIONS_PER_CONTEXT_EDIT = [
    ("    return records\n", """\
    examples = {"id": [], "question": [], "context": [], "answers": []}
    for context, qas in zip(records["context"], records["qas"]):
        for qa in qas:
            examples["id"].append(qa["qid"])
            examples["question"].append(qa["question"])
            examples["context"].append(context)
            examples["answers"].append(qa["answers"])
    return examples
"""),
    ("    return squad_answers(example[columns.answer])",
     "    return example[columns.answer], [None] * len(example[columns.answer])"),
]
TEXT_LIST_EDIT = QUESTIONS_PER_CONTEXT_EDIT[1:]

# layout: (writer, file extension, edit, flags, SQuAD v2.0)
LAYOUTS = {
    "a aliases in a TSV": (aliases_tsv, "tsv", ALIASES_EDIT, ["--id_column", "uid", "--context_column", "document"],
                           False),
    "b text and start in two CSV columns": (two_columns_csv, "csv", TWO_COLUMNS_EDIT,
                                            ["--answer_column", "answer_text"], False),
    "c questions per context": (questions_per_context_jsonl, "jsonl", QUESTIONS_PER_CONTEXT_EDIT, [], False),
    "d unanswerable as empty lists": (unanswerable_jsonl, "jsonl", TEXT_LIST_EDIT, ["--version_2_with_negative"],
                                      True),
    "e SQuAD unchanged": (squad_json, "json", [], [], False),
}


def changed_lines(original, copy):
    """The + and - lines of `diff -u original copy`."""
    diff = subprocess.run(["diff", "-u", str(original), str(copy)], capture_output=True, text=True).stdout
    return [line for line in diff.splitlines()[2:] if line[:1] in "+-"]


def adapted_copy(repo_root, folder, script, edits):
    """The copy set of `script` in `folder`, the script edited by `edits` ((old, new) replacements), imported from
    there as a module; asserts at most MAX_CHANGED_LINES changed lines."""
    import importlib.util
    copy_into(repo_root, folder, copy_set(repo_root, script))
    text = (folder / script).read_text()
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (folder / script).write_text(text)
    assert len(changed_lines(repo_root / script, folder / script)) <= MAX_CHANGED_LINES
    name = f"adapted_{folder.parent.name}_{script[:-3]}"
    spec = importlib.util.spec_from_file_location(name, folder / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_recording(module, argv, monkeypatch):
    """module.main(argv), recording the examples and features it builds and the metric's references."""
    seen = {}

    def build_all_features(examples, tokenizer, columns, *args, **kwargs):
        seen.update(examples=examples, tokenizer=tokenizer, columns=columns)
        seen["features"] = features(examples, tokenizer, columns, *args, **kwargs)
        return seen["features"]

    def compute_squad_eval_metrics(p, **kwargs):
        seen.update(predictions=p.predictions, references=p.label_ids)
        return metric(p, **kwargs)

    features, metric = module.build_all_features, module.compute_squad_eval_metrics
    monkeypatch.setattr(module, "build_all_features", build_all_features)
    monkeypatch.setattr(module, "compute_squad_eval_metrics", compute_squad_eval_metrics)
    module.main([str(a) for a in argv])
    return seen


def assert_labels_are_answers(seen, module, accepted):
    """Every training question left has a window labelled with exactly its first answer found in the context, one of
    the texts the data accepts for it (run_qa: the labelled tokens' characters; run_seq2seq_qa: the decoded target)."""
    examples, features, tokenizer = seen["examples"]["train"], seen["features"]["train"], seen["tokenizer"]
    columns = seen["columns"]
    assert len(examples) > 0
    labelled = {}
    if "labels" in features.column_names:  # run_seq2seq_qa: one input per question, the answer as target
        assert len(features) == len(examples)
        for example, labels in zip(examples, features["labels"]):
            labelled[example[columns.id]] = tokenizer.decode([t for t in labels if t != -100],
                                                             skip_special_tokens=True)
    else:
        windows = module.tokenize_windows(examples[:], tokenizer, columns, 128, 32, True)
        assert len(windows["input_ids"]) == len(features)
        for i, (start, end) in enumerate(zip(features["start_positions"], features["end_positions"])):
            if start != 0:
                example = examples[windows["overflow_to_sample_mapping"][i]]
                offsets = windows["offset_mapping"][i]
                labelled[example[columns.id]] = example[columns.context][offsets[start][0]: offsets[end][1]]
    for example in examples:
        answers, context = example[columns.answer], example[columns.context]
        if not answers["text"]:  # unanswerable (SQuAD v2.0): every window labelled with the CLS token
            assert example[columns.id] not in labelled
            continue
        first = answers["text"][0]
        assert labelled[example[columns.id]] == first in accepted[example[columns.id]]
        assert context[answers["answer_start"][0]:].startswith(first)
    return labelled


def assert_references_hold_every_text(seen, accepted, version_2):
    """The references the copied script scored against hold every accepted text of every question, so a prediction
    equal to the second one scores exact match 100 (an empty prediction for an unanswerable question)."""
    from squad_metric import compute_squad_v1, compute_squad_v2
    references = seen["references"]
    assert len(references) == len(seen["predictions"]) > 0
    for reference in references:
        assert reference["answers"]["text"] == accepted[reference["id"]]
    predictions = [{"id": r["id"], "prediction_text": (r["answers"]["text"] or [""])[-1]} for r in references]
    if version_2:
        predictions = [{**p, "no_answer_probability": 0.0} for p in predictions]
    metrics = (compute_squad_v2 if version_2 else compute_squad_v1)(predictions, references)
    assert metrics["exact" if version_2 else "exact_match"] == 100.0


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_run_qa_adapted_to_a_layout_by_editing_only_the_copy(layout, repo_root, tiny_model, tmp_path, monkeypatch,
                                                             caplog):
    writer, extension, edits, flags, version_2 = LAYOUTS[layout]
    train, train_accepted = writer(toy_data.make_templated_qa(24, seed=1, version_2=version_2),
                                   tmp_path / f"train.{extension}")
    dev, dev_accepted = writer(toy_data.make_templated_qa(8, seed=2, version_2=version_2),
                               tmp_path / f"dev.{extension}")
    module = adapted_copy(repo_root, tmp_path / "copy", "run_qa.py", edits)
    with caplog.at_level("INFO"):
        seen = run_recording(module, ["--model_name_or_path", tiny_model("bert"), "--train_file", train,
                                      "--validation_file", dev, "--output_dir", tmp_path / "out", *flags, *QA_ARGS],
                             monkeypatch)
    assert_labels_are_answers(seen, module, train_accepted)
    assert_references_hold_every_text(seen, dev_accepted, version_2)
    assert set(json.loads((tmp_path / "out" / "eval_predictions.json").read_text())) == set(dev_accepted)
    assert f"{len(dev_accepted)} questions, {len(dev_accepted)} windows (model inputs) for --do_eval" in caplog.text
    if layout.startswith("a"):  # questions 3, 13 and 23 have no accepted text in their document: dropped, one warning
        assert len(seen["examples"]["train"]) == 21
        assert "3 example(s) skipped for having no answer left" in caplog.text
    if layout.startswith("b"):
        assert sorted(dev_accepted) == [f"{i:03d}" for i in range(8)]


def test_run_seq2seq_qa_adapted_to_aliases_by_editing_only_the_copy(repo_root, tiny_model, tmp_path, monkeypatch):
    train, train_accepted = aliases_tsv(toy_data.make_templated_qa(16, seed=1), tmp_path / "train.tsv")
    dev, dev_accepted = aliases_tsv(toy_data.make_templated_qa(6, seed=2), tmp_path / "dev.tsv")
    module = adapted_copy(repo_root, tmp_path / "copy", "run_seq2seq_qa.py", ALIASES_EDIT)
    seen = run_recording(module, ["--model_name_or_path", tiny_model("t5"), "--train_file", train,
                                  "--validation_file", dev, "--output_dir", tmp_path / "out", "--id_column", "uid",
                                  "--context_column", "document", "--generation_max_length", "4", *QA_ARGS],
                         monkeypatch)
    labelled = assert_labels_are_answers(seen, module, train_accepted)
    assert len(labelled) == 14  # questions 3 and 13 dropped
    assert_references_hold_every_text(seen, dev_accepted, False)


# The "Your own data format" edit of docs/customising.md: one answer object {"span", "char_offset"} instead of SQuAD's
# lists.
OWN_ANSWER_SPANS = '''def answer_spans(example, columns):
    """One example's answers as (texts, start character offsets in the context): here one answer object
    {"span": "Paris", "char_offset": 17}, or null when the question has no answer."""
    answer = example[columns.answer]
    if answer is None:
        return [], []
    return [answer["span"]], [answer["char_offset"]]
'''


def own_layout(records):
    """The toy records as JSON Lines with fields qid / passage / query / answer: {span, char_offset}."""
    return [{"qid": f"own-{r['id']}", "passage": r["context"], "query": r["question"],
             "answer": {"span": r["answers"]["text"][0], "char_offset": r["answers"]["answer_start"][0]}}
            for r in records]


def test_run_qa_adapted_to_another_layout_by_editing_only_the_copy(repo_root, tiny_model, tmp_path):
    folder = copy_into(repo_root, tmp_path / "copy", copy_set(repo_root, "run_qa.py"))
    script = (folder / "run_qa.py").read_text()
    script, edits = re.subn(r"def answer_spans\(example, columns\):\n.*?\n(?=\n\n)", OWN_ANSWER_SPANS.rstrip("\n"),
                            script, flags=re.S)
    assert edits == 1
    (folder / "run_qa.py").write_text(script)
    train = write_jsonl(own_layout(toy_data.make_templated_qa(24, seed=1)), tmp_path / "train.jsonl")
    dev_records = own_layout(toy_data.make_templated_qa(8, seed=2))
    dev = write_jsonl(dev_records, tmp_path / "dev.jsonl")
    columns = ["--id_column", "qid", "--question_column", "query", "--context_column", "passage",
               "--answer_column", "answer"]
    base = ["--model_name_or_path", tiny_model("bert"), "--train_file", train, "--validation_file", dev,
            "--max_seq_length", "64", "--doc_stride", "16", *COMMON]

    result = run_copy(folder, "run_qa.py", *base, *columns, "--output_dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    assert set(json.loads((out / "eval_predictions.json").read_text())) == {r["qid"] for r in dev_records}
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_samples"] >= 8 and 0 <= results["eval_f1"] <= 100

    # Forgetting one flag: the missing column is named before the model loads and before anything is written.
    result = run_copy(folder, "run_qa.py", *base, *columns[2:], "--output_dir", tmp_path / "out2")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "the id column 'id' is missing" in result.stderr and "qid" in result.stderr
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("script", ["run_qa.py", "run_qa_beam_search.py", "run_seq2seq_qa.py", "run_mlm.py",
                                    "run_clm.py"])
def test_copy_table_is_current(repo_root, script):
    """The copy table's line counts are those of the files, and every file of this repository that the copy set imports
    at module level is in it (a function-level import serves code the script does not run, e.g. checks.py's QA checks in
    a copy of run_mlm.py; the runs above prove the sets complete)."""
    row = copy_table_row(repo_root, script)
    required = copy_set(repo_root, script, with_checks=False)
    optional = copy_set(repo_root, script)[len(required):]
    lines = {name: len((repo_root / name).read_text().splitlines()) for name in required + optional}
    without, with_checks = (int(n.replace(",", "")) for n in re.findall(r"[\d,]+", row.split("|")[4]))
    assert (without, with_checks) == (sum(lines[n] for n in required), sum(lines.values()))
    local = {p.stem for p in repo_root.glob("*.py")}
    for name in required + optional:
        imported = set(re.findall(r"^(?:from|import) (\w+)", (repo_root / name).read_text(), flags=re.M))
        assert imported & local <= {n[:-3] for n in required + optional}, (name, imported & local)


# The language-modelling scripts' text column --------------------------------------------------------------------------


@pytest.fixture
def doc_corpus(tmp_path):
    """A JSON Lines corpus {"doc_id": 7, "body": "..."}: its first column holds numbers, not text."""
    lines = open(toy_data.write_lm_text(str(tmp_path / "lines.txt"), n_lines=60, seed=0)).read().splitlines()
    return write_jsonl([{"doc_id": i, "body": line} for i, line in enumerate(lines)], tmp_path / "corpus.jsonl")


@pytest.mark.parametrize("script, length_flag", [("run_mlm", "--max_seq_length"), ("run_clm", "--block_size")])
def test_lm_scripts_read_the_text_column_named_by_the_flag(script, length_flag, doc_corpus, tiny_model, tmp_path,
                                                           monkeypatch):
    import importlib

    from transformers import modeling_utils

    from script_utils import UsageError
    main = importlib.import_module(script).main
    argv = ["--model_name_or_path", tiny_model("bert"), "--train_file", str(doc_corpus), "--validation_file",
            str(doc_corpus), length_flag, "32", "--max_steps", "2", "--per_device_train_batch_size", "4",
            "--do_train", "--do_eval", "--report_to", "none", "--disable_tqdm", "true"]
    trainer = main([*argv, "--text_column", "body", "--output_dir", str(tmp_path / "out")])
    assert trainer.state.global_step == 2
    assert "perplexity" in json.loads((tmp_path / "out" / "eval_results.json").read_text())

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the missing --text_column was reported")

    monkeypatch.setattr(modeling_utils.PreTrainedModel, "from_pretrained", classmethod(loaded))
    with pytest.raises(UsageError) as error:
        main([*argv, "--output_dir", str(tmp_path / "out2")])
    message = str(error.value)
    assert "\n" not in message and "--text_column" in message and "doc_id (int64), body (string)" in message
    with pytest.raises(UsageError, match=r"--text_column doc_id holds int64, not text"):
        main([*argv, "--text_column", "doc_id", "--output_dir", str(tmp_path / "out3")])
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()
