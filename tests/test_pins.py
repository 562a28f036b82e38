"""Pins of what users see, taken before the files were reorganised and kept ever since: each script's flags and their
defaults, the files and metric keys (and metric values) of a fixed tiny run of each script, and the prediction files
of a fixed run_qa.py run, byte for byte.

The pinned values live in tests/pins/*.json. A flag may be added to a script (the pin then lists it as new), but
none may disappear or change its default. To re-record after a deliberate change: PIN_REGEN=1 pytest tests/test_pins.py
(and say in the commit message why the numbers moved).
"""
import hashlib
import importlib
import json
import os
from pathlib import Path

import pytest
from transformers import HfArgumentParser

from script_utils import LOCK_FILE
from toy import data as toy_data

PINS = Path(__file__).resolve().parent / "pins"
REGEN = os.environ.get("PIN_REGEN") == "1"
SCRIPTS = ("run_qa", "run_qa_beam_search", "run_seq2seq_qa", "run_mlm", "run_clm")
# Flags added after the pins were taken, per script (each documented in the README or docs/).
ADDED_FLAGS = {
    "run_qa": {"--id_column", "--question_column", "--context_column", "--answer_column", "--tune_null_threshold",
               "--merge_adapter_on_save"},
    "run_qa_beam_search": {"--id_column", "--question_column", "--context_column", "--answer_column",
                           "--tune_null_threshold", "--merge_adapter_on_save"},
    "run_seq2seq_qa": {"--id_column", "--merge_adapter_on_save"},
    "run_mlm": {"--merge_adapter_on_save", "--text_column"},
    "run_clm": {"--merge_adapter_on_save", "--text_column"},
}
TIMING = ("runtime", "per_second")


def pinned(name, value):
    """The pinned value of `name` (recorded from `value` with PIN_REGEN=1)."""
    path = PINS / f"{name}.json"
    if REGEN:
        PINS.mkdir(exist_ok=True)
        path.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")
    return json.loads(path.read_text())


class _Parsed(Exception):
    pass


def flags_and_defaults(script) -> dict:
    """{--flag: repr(default)} of the parser a script builds, read by stopping main() at parse time."""
    module = importlib.import_module(script)
    seen = {}

    def capture(parser, *args, **kwargs):
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":  # --a-b is an alias of --a_b
                    seen["--" + option[2:].replace("-", "_")] = repr(getattr(action.default, "value", action.default))
        raise _Parsed

    original = HfArgumentParser.parse_args_into_dataclasses
    HfArgumentParser.parse_args_into_dataclasses = capture
    try:
        with pytest.raises(_Parsed):
            module.main(["--output_dir", "unused"])
    finally:
        HfArgumentParser.parse_args_into_dataclasses = original
    return seen


@pytest.mark.parametrize("script", SCRIPTS)
def test_flags_and_defaults_unchanged(script):
    now = flags_and_defaults(script)
    before = pinned(f"flags_{script}", {k: v for k, v in now.items() if k not in ADDED_FLAGS[script]})
    assert {k: now.get(k) for k in before} == before
    assert set(now) - set(before) == ADDED_FLAGS[script]


# A fixed tiny run of each script --------------------------------------------------------------------------------------

COMMON = ["--report_to", "none", "--seed", "42", "--disable_tqdm", "true", "--per_device_train_batch_size", "8",
          "--per_device_eval_batch_size", "16", "--max_steps", "4", "--save_steps", "2", "--train_adapter",
          "--adapter_config", "seq_bn", "--do_train", "--do_eval"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pin-data")
    test = [{k: r[k] for k in ("id", "title", "context", "question")} for r in toy_data.make_templated_qa(5, seed=3)]
    return {
        "train": toy_data.write_qa_file(toy_data.make_templated_qa(24, seed=1, version_2=True),
                                        str(folder / "train.json"), "flat"),
        "dev": toy_data.write_qa_file(toy_data.make_templated_qa(9, seed=2, version_2=True),
                                      str(folder / "dev.json"), "flat"),
        "test": toy_data.write_qa_file(test, str(folder / "test.jsonl"), "jsonl"),
        "lm_train": toy_data.write_lm_text(str(folder / "train.txt"), n_lines=80, seed=0),
        "lm_valid": toy_data.write_lm_text(str(folder / "valid.txt"), n_lines=30, seed=1),
    }


def script_args(script, model, data):
    qa = ["--train_file", data["train"], "--validation_file", data["dev"], "--test_file", data["test"],
          "--do_predict", "--version_2_with_negative", "--max_seq_length", "64", "--doc_stride", "16"]
    lm = ["--train_file", data["lm_train"], "--validation_file", data["lm_valid"]]
    return {
        "run_qa": (model("bert"), qa),
        "run_qa_beam_search": (model("bert"), qa),
        "run_seq2seq_qa": (model("t5"), qa[:-2] + ["--predict_with_generate"]),
        "run_mlm": (model("bert"), lm + ["--max_seq_length", "64"]),
        "run_clm": (model("gpt2"), lm + ["--block_size", "64"]),
    }[script]


def run_fixed(script, tiny_model, data, out):
    model, extra = script_args(script, tiny_model, data)
    importlib.import_module(script).main(["--model_name_or_path", model, "--output_dir", str(out), *COMMON, *extra])


def outcome(out: Path) -> dict:
    """The files of a run (relative paths) and, per *_results.json, its keys and non-timing values."""
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != LOCK_FILE)
    results = {}
    for name in ("train", "eval", "predict", "all"):
        path = out / f"{name}_results.json"
        if path.exists():
            metrics = json.loads(path.read_text())
            results[name] = {k: (round(v, 4) if isinstance(v, float) else v) if not any(t in k for t in TIMING)
                             else "timing" for k, v in metrics.items()}
    return {"files": files, "results": results}


@pytest.mark.parametrize("script", SCRIPTS)
def test_fixed_run_files_keys_and_numbers(script, tiny_model, data, tmp_path):
    out = tmp_path / "out"
    run_fixed(script, tiny_model, data, out)
    now = outcome(out)
    before = pinned(f"run_{script}", now)
    assert now["files"] == before["files"]
    assert now["results"] == before["results"]
    if script == "run_qa":
        check_prediction_files(out)


def check_prediction_files(out: Path):
    """run_qa's prediction files: the answers byte for byte; the n-best lists and null odds by content (texts exact,
    numbers to 1e-5: the tiny model's logits differ in their last bits between CPUs, e.g. AMD and Intel, so their
    bytes cannot be pinned across machines), each file in its layout (json.dumps, indent=4 but for the n-best lists).
    The content pin was recorded with the code before issue 20's rewrite; it holds for the new code unchanged."""
    names = sorted(p.name for p in out.glob("*.json") if p.name.endswith(("predictions.json", "null_odds.json")))
    digests = {name: hashlib.sha256((out / name).read_bytes()).hexdigest()
               for name in names if name.endswith("_predictions.json") and "nbest" not in name}
    assert digests == pinned("run_qa_prediction_files_sha256", digests)
    content = {name: json.loads((out / name).read_text()) for name in names}
    before = pinned("run_qa_prediction_files", content)
    assert list(content) == sorted(before)
    for name, value in content.items():
        assert (out / name).read_text() == json.dumps(value, indent=None if "nbest" in name else 4) + "\n", name
        assert list(value) == list(content[name.replace("null_odds", "predictions").replace("nbest_", "")])
        assert_same(value, before[name], name)


def assert_same(now, before, where):
    """Equal structures: strings and keys exactly, numbers to a relative 1e-5."""
    if isinstance(before, dict):
        assert isinstance(now, dict) and set(now) == set(before), where
        for key in before:
            assert_same(now[key], before[key], f"{where}[{key!r}]")
    elif isinstance(before, list):
        assert isinstance(now, list) and len(now) == len(before), where
        for i, (a, b) in enumerate(zip(now, before)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(before, float):
        assert now == pytest.approx(before, rel=1e-5, abs=1e-6), where
    else:
        assert now == before, where
