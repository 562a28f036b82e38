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

# The "Your own data format" edit of docs/customising.md: one answer object {"span", "char_offset"} instead of SQuAD's
# lists.
OWN_ANSWER_SPANS = '''def answer_spans(answers):
    """One example's answers as (texts, start character offsets in the context): here one answer object
    {"span": "Paris", "char_offset": 17}, or null when the question has no answer."""
    if answers is None:
        return [], []
    return [answers["span"]], [answers["char_offset"]]
'''


def own_layout(records):
    """The toy records as JSON Lines with fields qid / passage / query / answer: {span, char_offset}."""
    return [{"qid": f"own-{r['id']}", "passage": r["context"], "query": r["question"],
             "answer": {"span": r["answers"]["text"][0], "char_offset": r["answers"]["answer_start"][0]}}
            for r in records]


def write_jsonl(records, path):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_run_qa_adapted_to_another_layout_by_editing_only_the_copy(repo_root, tiny_model, tmp_path):
    folder = copy_into(repo_root, tmp_path / "copy", copy_set(repo_root, "run_qa.py"))
    script = (folder / "run_qa.py").read_text()
    script, edits = re.subn(r"def answer_spans\(answers\):\n.*?\n(?=\n\n)", OWN_ANSWER_SPANS.rstrip("\n"), script,
                            flags=re.S)
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
