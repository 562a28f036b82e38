"""run_qa.py end to end on tiny models: output files and keys, adapter save/reload, learning, resume, data formats."""
import os
import shutil
from pathlib import Path

import pytest

from conftest import read_json, run_script
import run_qa
from qa_data import load_qa_file, squad_answers
from toy import data as toy_data

FAST = ["--max_seq_length", "64", "--doc_stride", "16", "--report_to", "none", "--seed", "42",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16"]

TRAIN_KEYS = {"epoch", "total_flos", "train_loss", "train_runtime", "train_samples", "train_samples_per_second",
              "train_steps_per_second"}
SPEED_KEYS = {"runtime", "samples_per_second", "steps_per_second"}
V1_KEYS = {"exact_match", "f1"}
V2_KEYS = {"exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
           "NoAns_total", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"}


@pytest.fixture(scope="module")
def qa_files(tmp_path_factory):
    """Train/validation files for v1 and v2, and a test file without answers (JSON Lines)."""
    folder = tmp_path_factory.mktemp("qa-data")
    files = {}
    for v2 in (False, True):
        tag = "v2" if v2 else "v1"
        files[f"train_{tag}"] = toy_data.write_qa_file(
            toy_data.make_templated_qa(48, seed=1, version_2=v2), str(folder / f"train_{tag}.json"), "flat")
        files[f"dev_{tag}"] = toy_data.write_qa_file(
            toy_data.make_templated_qa(12, seed=2, version_2=v2), str(folder / f"dev_{tag}.json"), "flat")
    unanswered = [{k: r[k] for k in ("id", "title", "context", "question")}
                  for r in toy_data.make_templated_qa(5, seed=3)]
    files["test"] = toy_data.write_qa_file(unanswered, str(folder / "test.jsonl"), "jsonl")
    return files


def run(model, files, out, tag, *extra):
    run_qa.main(["--model_name_or_path", model, "--train_file", files[f"train_{tag}"],
                 "--validation_file", files[f"dev_{tag}"], "--test_file", files["test"],
                 "--output_dir", str(out), *FAST, *extra] + (["--version_2_with_negative"] if tag == "v2" else []))


@pytest.mark.parametrize("arch,adapter_config,tag", [
    ("bert", "seq_bn", "v2"), ("bert", "lora", "v1"), ("roberta", "lora", "v2"), ("roberta", "seq_bn", "v1"),
])
def test_adapter_train_eval_predict_files_keys_and_reload(tiny_model, qa_files, tmp_path, arch, adapter_config, tag):
    model = tiny_model(arch)
    out = tmp_path / "out"
    run(model, qa_files, out, tag, "--do_train", "--do_eval", "--do_predict", "--max_steps", "4",
        "--train_adapter", "--adapter_config", adapter_config)

    # Adapter folder named after the task, with its head; no full model weights.
    assert {p.name for p in (out / "squad").iterdir()} == {
        "adapter_config.json", "pytorch_adapter.bin", "head_config.json", "pytorch_model_head.bin"}
    assert not (out / "model.safetensors").exists()
    saved_config = read_json(out / "squad" / "adapter_config.json")["config"]
    assert ("r" if adapter_config == "lora" else "reduction_factor") in saved_config
    for name in ("trainer_state.json", "README.md", "training_args.bin", "tokenizer_config.json", "all_results.json"):
        assert (out / name).is_file(), name

    metric_keys = V2_KEYS if tag == "v2" else V1_KEYS
    assert set(read_json(out / "train_results.json")) == TRAIN_KEYS
    eval_results = read_json(out / "eval_results.json")
    assert set(eval_results) == {f"eval_{k}" for k in metric_keys | SPEED_KEYS} | {"epoch", "eval_samples"}
    # No references in the test file: predictions are written, nothing is scored.
    assert set(read_json(out / "predict_results.json")) == {f"test_{k}" for k in SPEED_KEYS} | {"predict_samples"}
    assert read_json(out / "all_results.json") == {**read_json(out / "train_results.json"), **eval_results,
                                               **read_json(out / "predict_results.json")}

    dev_ids = [r["id"] for r in read_json(Path(qa_files[f"dev_{tag}"]))["data"]]
    eval_predictions = read_json(out / "eval_predictions.json")
    assert list(eval_predictions) == dev_ids
    assert list(read_json(out / "eval_nbest_predictions.json")) == dev_ids
    assert (out / "eval_null_odds.json").exists() == (tag == "v2")
    assert len(read_json(out / "predict_predictions.json")) == 5
    assert (out / "predict_null_odds.json").exists() == (tag == "v2")

    # The saved adapter (with its QA head) reloads to exactly the same predictions and scores.
    reloaded = tmp_path / "reloaded"
    run(model, qa_files, reloaded, tag, "--do_eval", "--do_predict", "--train_adapter",
        "--load_adapter", str(out / "squad"))
    assert read_json(reloaded / "eval_predictions.json") == eval_predictions
    assert read_json(reloaded / "eval_nbest_predictions.json") == read_json(out / "eval_nbest_predictions.json")
    assert read_json(reloaded / "predict_predictions.json") == read_json(out / "predict_predictions.json")
    for key in metric_keys:
        assert read_json(reloaded / "eval_results.json")[f"eval_{key}"] == eval_results[f"eval_{key}"]


def test_full_fine_tuning_saves_the_whole_model(tiny_model, qa_files, tmp_path):
    out = tmp_path / "out"
    run(tiny_model("bert"), qa_files, out, "v1", "--do_train", "--do_eval", "--max_steps", "3")
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert not (out / "squad").exists()
    # The fine-tuned model evaluates to the same predictions when loaded as a plain model.
    again = tmp_path / "again"
    run(str(out), qa_files, again, "v1", "--do_eval")
    assert read_json(again / "eval_predictions.json") == read_json(out / "eval_predictions.json")


def test_training_raises_f1_on_templated_facts(tiny_model, tmp_path):
    """A tiny random BERT learns the templated facts: F1 from ~4 to ~24 in 52 steps (pinned for seed 42)."""
    train = toy_data.write_qa_file(toy_data.make_templated_qa(200, seed=1), str(tmp_path / "train.json"), "flat")
    dev = toy_data.write_qa_file(toy_data.make_templated_qa(60, seed=2), str(tmp_path / "dev.json"), "flat")
    common = ["--validation_file", dev, "--max_seq_length", "64", "--doc_stride", "16", "--report_to", "none",
              "--per_device_eval_batch_size", "64"]
    run_qa.main(["--model_name_or_path", tiny_model("bert"), "--output_dir", str(tmp_path / "before"),
                 "--do_eval", *common])
    run_qa.main(["--model_name_or_path", tiny_model("bert"), "--output_dir", str(tmp_path / "after"),
                 "--train_file", train, "--do_train", "--do_eval", "--num_train_epochs", "4",
                 "--per_device_train_batch_size", "16", "--learning_rate", "1e-2", "--warmup_ratio", "0.1",
                 "--save_strategy", "no", *common])
    before = read_json(tmp_path / "before" / "eval_results.json")["eval_f1"]
    after = read_json(tmp_path / "after" / "eval_results.json")["eval_f1"]
    assert before == pytest.approx(3.73, abs=1.0)
    assert after == pytest.approx(24.0, abs=5.0)
    assert after > before + 12


def test_resume_from_checkpoint_matches_uninterrupted_run(tiny_model, qa_files, tmp_path):
    args = ["--do_train", "--do_eval", "--max_steps", "6", "--save_steps", "3", "--train_adapter",
            "--adapter_config", "seq_bn"]
    uninterrupted = tmp_path / "uninterrupted"
    run(tiny_model("bert"), qa_files, uninterrupted, "v2", *args)
    # A run stopped right after its first checkpoint: its output folder holds just that checkpoint.
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    shutil.copytree(uninterrupted / "checkpoint-3", stopped / "checkpoint-3")
    run(tiny_model("bert"), qa_files, stopped, "v2", *args)  # same command: resumes from checkpoint-3
    state = read_json(stopped / "trainer_state.json")
    assert state["global_step"] == 6
    assert read_json(stopped / "eval_predictions.json") == read_json(uninterrupted / "eval_predictions.json")
    assert read_json(stopped / "eval_nbest_predictions.json") == read_json(uninterrupted / "eval_nbest_predictions.json")


def test_refuses_to_train_into_a_non_empty_output_dir(tiny_model, qa_files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results_of_last_week.json").write_text("{}")
    with pytest.raises(ValueError, match="overwrite_output_dir"):
        run(tiny_model("bert"), qa_files, out, "v1", "--do_train", "--max_steps", "1")
    assert [p.name for p in out.iterdir()] == ["results_of_last_week.json"]


def test_each_log_line_is_printed_once_and_adapter_set_up_does_not_warn(tiny_model, qa_files, tmp_path):
    """datasets' and transformers' lines go through their own handlers only (datasets' also reached the root logger's
    handler: every line twice; transformers' does with $CI set), our warnings once, and adapters' set-up does not warn
    "none are activated" about the adapter it activates."""
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "cache"), "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
           "CI": "true"}
    proc = run_script("run_qa.py", "--model_name_or_path", tiny_model("bert"), "--train_file", qa_files["train_v1"],
                      "--validation_file", qa_files["dev_v1"], "--do_train", "--do_eval", "--max_steps", "1",
                      "--train_adapter", "--max_seq_length", "1024", "--doc_stride", "16", "--report_to", "none",
                      "--output_dir", tmp_path / "out", env=env, check=True)
    output = proc.stdout + proc.stderr
    assert output.count("Generating data split\n") == 2  # datasets, INFO: once for each file (into a new cache)
    assert output.count("***** Running training *****") == 1  # transformers, INFO
    assert output.count("The max_seq_length passed (1024) is larger than the maximum length") == 1  # ours, WARNING
    assert "Adding adapter 'squad'" in output  # adapters' INFO lines are shown ...
    assert "none are activated" not in output  # ... but not this warning


@pytest.mark.parametrize("fmt", ["nested", "jsonl", "csv"])
def test_every_file_format_loads_to_the_same_examples_as_the_flattened_file(tmp_path, fmt):
    records = toy_data.make_templated_qa(30, seed=9, version_2=True)
    flat = load_qa_file(toy_data.write_qa_file(records, str(tmp_path / "flat.json"), "flat"))
    other = load_qa_file(toy_data.write_qa_file(records, str(tmp_path / f"data.{fmt}"), fmt))
    by_id = {r["id"]: r for r in flat}
    assert len(other) == len(flat) == 30
    for record in other:
        expected = by_id[record["id"]]
        for key in ("title", "context", "question"):
            assert record[key] == expected[key], (fmt, key)
        # As the default answer_spans reads them (a CSV cell holds the answers as JSON text, read as text)
        assert squad_answers(record["answers"]) == squad_answers(expected["answers"]), fmt


def test_nested_squad_v2_file_flattens_like_the_hub_dataset(shared_data):
    examples = load_qa_file(str(shared_data / "squad2_dev_partial.json"))
    assert len(examples) == 1407
    assert sum(1 for a in examples["answers"] if a["text"]) == 705
    for example in examples.select(range(0, 1407, 50)):
        for text, start in zip(example["answers"]["text"], example["answers"]["answer_start"]):
            assert example["context"][start : start + len(text)] == text


def test_reference_ci_command_on_the_shared_sample(tiny_model, shared_data, tmp_path):
    """The issue's acceptance command (the adapters test_run_squad_adapters arguments) through the real CLI."""
    sample = str(shared_data / "hf_squad_sample.json")
    out = tmp_path / "out"
    run_script("run_qa.py", "--model_name_or_path", tiny_model("bert"), "--version_2_with_negative",
               "--train_file", sample, "--validation_file", sample, "--output_dir", out, "--max_steps", "15",
               "--warmup_steps", "2", "--do_train", "--do_eval", "--learning_rate", "2e-3",
               "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "1", "--train_adapter",
               "--adapter_config", "double_seq_bn[reduction_factor=8]", "--report_to", "none", check=True)
    eval_results = read_json(out / "eval_results.json")
    assert set(eval_results) == {f"eval_{k}" for k in V2_KEYS | SPEED_KEYS} | {"epoch", "eval_samples"}
    assert eval_results["eval_total"] == 14 and eval_results["eval_NoAns_total"] == 6
    assert len(read_json(out / "eval_predictions.json")) == 14
    assert read_json(out / "squad" / "adapter_config.json")["config"]["reduction_factor"] == 8


def test_nested_squad_v2_dev_slice_evaluates_without_conversion(tiny_model, shared_data, tmp_path):
    out = tmp_path / "out"
    run_qa.main(["--model_name_or_path", tiny_model("bert"), "--validation_file",
                 str(shared_data / "squad2_dev_partial.json"), "--version_2_with_negative", "--do_eval",
                 "--max_eval_samples", "300", "--output_dir", str(out), "--per_device_eval_batch_size", "64",
                 "--report_to", "none"])
    eval_results = read_json(out / "eval_results.json")
    # --max_eval_samples counts questions: the first 300, each with all its windows, all answered and scored;
    # eval_samples counts the windows evaluated.
    answered = len(read_json(out / "eval_predictions.json"))
    assert answered == 300 and eval_results["eval_total"] == answered < eval_results["eval_samples"]
    assert eval_results["eval_HasAns_total"] + eval_results["eval_NoAns_total"] == answered
