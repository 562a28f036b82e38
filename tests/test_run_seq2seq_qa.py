"""run_seq2seq_qa.py: generative QA with tiny T5/BART, adapters or full fine-tuning, trained and scored in-process."""
import json
import logging
import os
import re
import subprocess
import sys

import pytest

from conftest import read_json, run_script
from transformers import AutoTokenizer
from transformers.generation import GenerationMixin

import run_seq2seq_qa
from qa_data import QAColumns
from run_seq2seq_qa import prepare_validation_features, select_window_answers, split_into_windows
from script_utils import UsageError
from toy import data as toy_data

COLUMNS = QAColumns(id="id", question="question", context="context", answer="answers")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Toy SQuAD files: v1 and v2, a long-context set, and the same questions in every file format."""
    folder = tmp_path_factory.mktemp("seq2seq_data")
    files = {
        "train": toy_data.make_templated_qa(24, seed=1),
        "dev": toy_data.make_templated_qa(10, seed=2),
        "train_v2": toy_data.make_templated_qa(24, seed=1, version_2=True),
        "dev_v2": toy_data.make_templated_qa(10, seed=2, version_2=True),
        "small": toy_data.make_templated_qa(12, seed=5),
        "long": toy_data.make_templated_qa(4, seed=3, version_2=True, long_context=True),
    }
    paths = {name: str(toy_data.write_qa_file(records, str(folder / f"{name}.json"), "flat"))
             for name, records in files.items()}
    for fmt, ext in (("nested", "json"), ("jsonl", "jsonl"), ("csv", "csv")):
        paths[fmt] = toy_data.write_qa_file(files["dev"], str(folder / f"dev_{fmt}.{ext}"), fmt)
    paths["records"] = files
    return paths


def run(out, *args):
    """run_seq2seq_qa.main in-process; returns the output folder."""
    run_seq2seq_qa.main([
        "--output_dir", str(out), "--overwrite_output_dir", "--report_to", "none", "--save_strategy", "no",
        "--max_seq_length", "96", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32",
        "--disable_tqdm", "True", "--log_level", "warning", *map(str, args),
    ])
    return out


def ids(records):
    return {r["id"] for r in records}


V1_KEYS = {"eval_exact_match", "eval_f1"}
V2_KEYS = {"eval_exact", "eval_f1", "eval_total", "eval_HasAns_exact", "eval_HasAns_f1", "eval_HasAns_total",
           "eval_NoAns_exact", "eval_NoAns_f1", "eval_NoAns_total", "eval_best_exact", "eval_best_exact_thresh",
           "eval_best_f1", "eval_best_f1_thresh"}
COMMON_EVAL_KEYS = {"eval_loss", "eval_runtime", "eval_samples", "eval_samples_per_second", "eval_steps_per_second"}


# Train + evaluate + predict: files and keys, for each kind of training ------------------------------------------------


@pytest.fixture(scope="module")
def t5_adapter_run(tiny_model, data, tmp_path_factory):
    """T5 + seq_bn adapter on v2 data, trained long enough for the adapter to change the answers."""
    out = tmp_path_factory.mktemp("t5_seq_bn") / "out"
    run(out, "--model_name_or_path", tiny_model("t5"), "--train_file", data["small"], "--validation_file",
        data["dev_v2"], "--test_file", data["dev_v2"], "--version_2_with_negative", "--do_train", "--do_eval",
        "--do_predict", "--train_adapter", "--adapter_config", "seq_bn[reduction_factor=2]", "--learning_rate", "1e-2",
        "--max_steps", "40", "--per_device_train_batch_size", "12", "--generation_max_length", "8")
    return out


def check_outputs(out, eval_records, version_2, adapter):
    results = read_json(out / "eval_results.json")
    assert (V2_KEYS if version_2 else V1_KEYS) | COMMON_EVAL_KEYS <= set(results)
    assert results["eval_samples"] == len(eval_records)  # one feature per (short) question
    assert ("eval_exact_match" in results) != version_2 and ("eval_HasAns_total" in results) == version_2
    predictions = read_json(out / "eval_predictions.json")
    assert set(predictions) == ids(eval_records) and all(isinstance(v, str) for v in predictions.values())
    windows = read_json(out / "eval_nbest_predictions.json")
    assert all(len(windows[i]) == 1 and windows[i][0]["text"] == predictions[i] for i in predictions)

    predict_results = read_json(out / "predict_results.json")
    prefix_keys = {k.replace("eval_", "test_") for k in (V2_KEYS if version_2 else V1_KEYS)}
    assert prefix_keys | {"test_loss", "predict_samples", "test_runtime"} <= set(predict_results)
    assert read_json(out / "predict_predictions.json") == predictions  # the same questions, the same model

    train_results = read_json(out / "train_results.json")
    assert {"train_loss", "train_samples", "train_runtime", "epoch"} <= set(train_results)
    assert set(read_json(out / "all_results.json")) == set(train_results) | set(results) | set(predict_results)
    if adapter:
        config = read_json(out / "squad" / "adapter_config.json")  # named after the task, not "mlm"
        assert config["name"] == "squad" and config["model_type"] in ("t5", "bart")
        assert adapter(config["config"])
        assert (out / "squad" / "pytorch_adapter.bin").is_file()
        assert not (out / "model.safetensors").exists() and not (out / "mlm").exists()
    else:
        assert {"config.json", "generation_config.json", "model.safetensors"} <= {p.name for p in out.iterdir()}
        assert not (out / "squad").exists()
    assert (out / "tokenizer_config.json").is_file()


def test_t5_seq_bn_v2_outputs(t5_adapter_run, data):
    check_outputs(t5_adapter_run, data["records"]["dev_v2"], version_2=True,
                  adapter=lambda config: config["reduction_factor"] == 2 and not config["mh_adapter"])


@pytest.mark.parametrize("arch, adapter_config, version_2", [
    ("bart", "lora", False),
    ("t5", None, False),
    ("bart", None, True),
], ids=["bart-lora-v1", "t5-full-v1", "bart-full-v2"])
def test_train_eval_predict_outputs(tiny_model, data, tmp_path, arch, adapter_config, version_2):
    suffix = "_v2" if version_2 else ""
    adapter_args = ["--train_adapter", "--adapter_config", adapter_config] if adapter_config else []
    out = run(tmp_path / "out", "--model_name_or_path", tiny_model(arch), "--train_file", data["train" + suffix],
              "--validation_file", data["dev" + suffix], "--test_file", data["dev" + suffix], "--do_train",
              "--do_eval", "--do_predict", "--max_steps", "3", "--generation_max_length", "6",
              *(["--version_2_with_negative"] if version_2 else []), *adapter_args)
    is_lora = (lambda config: config["architecture"] == "lora") if adapter_config else None
    check_outputs(out, data["records"]["dev" + suffix], version_2, adapter=is_lora)
    if adapter_config is None:
        # Full fine-tuning saved a complete model: loading it back gives the same answers.
        again = run(tmp_path / "again", "--model_name_or_path", out, "--validation_file", data["dev" + suffix],
                    "--do_eval", "--generation_max_length", "6", *(["--version_2_with_negative"] if version_2 else []))
        assert read_json(again / "eval_predictions.json") == read_json(out / "eval_predictions.json")


# Learning, saving and reloading ---------------------------------------------------------------------------------------


def test_training_lowers_loss_and_learns_the_toy_set(tiny_model, data, tmp_path):
    """Full fine-tuning of tiny T5 on 12 templated questions, scored on the same questions (as the reference CI
    does with sample.json). Pinned values, measured on this stack; tolerances cover other CPUs' float rounding."""
    common = ["--model_name_or_path", tiny_model("t5"), "--validation_file", data["small"], "--do_eval",
              "--generation_max_length", "6"]
    before = read_json(run(tmp_path / "before", *common) / "eval_results.json")
    after = read_json(run(tmp_path / "after", *common, "--train_file", data["small"], "--do_train",
                     "--num_train_epochs", "80", "--learning_rate", "1e-2", "--per_device_train_batch_size", "12")
                 / "eval_results.json")
    assert before["eval_exact_match"] == 0.0 and before["eval_loss"] == pytest.approx(7.958, abs=0.01)
    assert after["eval_loss"] == pytest.approx(1.129, rel=0.1)
    assert after["eval_exact_match"] == pytest.approx(33.33, abs=8.4)  # 4 of 12, give or take one question
    assert after["eval_f1"] >= after["eval_exact_match"]


def test_saved_adapter_reloads_to_identical_answers(t5_adapter_run, tiny_model, data, tmp_path):
    common = ["--model_name_or_path", tiny_model("t5"), "--validation_file", data["dev_v2"], "--do_eval",
              "--version_2_with_negative", "--generation_max_length", "8"]
    reloaded = run(tmp_path / "reloaded", *common, "--train_adapter", "--load_adapter", t5_adapter_run / "squad")
    base = run(tmp_path / "base", *common)
    trained = read_json(t5_adapter_run / "eval_predictions.json")
    assert read_json(reloaded / "eval_predictions.json") == trained
    assert read_json(base / "eval_predictions.json") != trained  # the adapter does change the answers
    assert read_json(reloaded / "eval_results.json")["eval_loss"] == pytest.approx(
        read_json(t5_adapter_run / "eval_results.json")["eval_loss"], rel=1e-5)


# Long contexts: windows and the choice of one answer per question -----------------------------------------------------


def test_split_into_windows_constructed_case():
    # lead special 100, question part 1-3 (offsets < 20), context 10..19 (offsets >= 20), trailing special 101.
    input_ids = [100, 1, 2, 3] + list(range(10, 20)) + [101]
    offsets = [(0, 0), (0, 5), (6, 10), (11, 19)] + [(20 + 2 * k, 21 + 2 * k) for k in range(10)] + [(0, 0)]
    special = [1, 0, 0, 0] + [0] * 10 + [1]
    windows = split_into_windows(input_ids, offsets, special, 20, max_length=9, doc_stride=2)
    # room for 4 context tokens per window, consecutive windows share 2
    assert windows == [[100, 1, 2, 3, 10, 11, 12, 13, 101], [100, 1, 2, 3, 12, 13, 14, 15, 101],
                       [100, 1, 2, 3, 14, 15, 16, 17, 101], [100, 1, 2, 3, 16, 17, 18, 19, 101]]
    assert split_into_windows(input_ids, offsets, special, 20, max_length=15, doc_stride=2) == [input_ids]
    # a stride as large as the room shrinks to room - 1 instead of looping forever
    assert len(split_into_windows(input_ids, offsets, special, 20, max_length=9, doc_stride=50)) == 7
    # the question alone fills the window: truncated like a training input
    assert split_into_windows(input_ids, offsets, special, 20, max_length=4, doc_stride=1) == [[100, 1, 2, 101]]


def test_window_rule_picks_the_highest_score_not_the_last_window():
    feature_ids = ["a", "a", "a", "b", "c", "c"]
    texts = ["Paris", "London", "Rome", "Oslo", "x", "y"]
    scores = [-2.0, -0.5, -1.0, -3.0, -1.0, -1.0]
    predictions, windows = select_window_answers(["a", "b", "c", "d"], feature_ids, texts, scores)
    assert predictions == {"a": "London", "b": "Oslo", "c": "x"}  # ties: the earlier window; "d" has no feature
    assert [w["window"] for w in windows["a"]] == [1, 2, 0] and windows["a"][0]["score"] == -0.5


@pytest.mark.parametrize("arch", ["t5", "bart"])
def test_long_context_windows_all_see_the_question(tiny_model, data, arch):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model(arch))
    records = data["records"]["long"]
    batch = {key: [r[key] for r in records] for key in records[0]}
    features = prepare_validation_features(batch, tokenizer, COLUMNS, 96, 30, 24, "max_length", True)
    assert len(features["input_ids"]) > 4 * len(records)  # every context is split
    for input_ids, mask, example_id in zip(features["input_ids"], features["attention_mask"], features["example_id"]):
        record = next(r for r in records if r["id"] == example_id)
        text = tokenizer.decode(input_ids, skip_special_tokens=True)
        assert len(input_ids) == 96 and sum(mask) <= 96
        assert text.startswith(f"question: {record['question']} context:")
        assert " ".join(text.split("context:", 1)[1].split()[1:-1]) in record["context"]
    # consecutive windows of one question overlap by doc_stride context tokens
    first, second = [ids for ids, ex in zip(features["input_ids"], features["example_id"])
                     if ex == records[0]["id"]][:2]
    question = tokenizer(f"question: {records[0]['question']} context:", add_special_tokens=False)["input_ids"]
    content = [t for t in first if t not in tokenizer.all_special_ids]
    following = [t for t in second if t not in tokenizer.all_special_ids]
    assert content[: len(question)] == following[: len(question)] == question
    assert content[-24:] == following[len(question) : len(question) + 24]


def test_short_inputs_give_exactly_the_reference_features(tiny_model, data):
    """Inputs that fit are tokenized exactly as the reference did (one feature each)."""
    records = data["records"]["dev_v2"]
    batch = {key: [r[key] for r in records] for key in records[0]}
    for arch in ("t5", "bart"):
        tokenizer = AutoTokenizer.from_pretrained(tiny_model(arch))
        for padding in ("max_length", False):
            ours = prepare_validation_features(batch, tokenizer, COLUMNS, 128, 30, 128 // 2, padding, True)
            inputs = [f"question: {q.lstrip()} context: {c.lstrip()}" for q, c in zip(batch["question"],
                                                                                      batch["context"])]
            reference = tokenizer(inputs, max_length=128, padding=padding, truncation=True,
                                  return_overflowing_tokens=True, return_offsets_mapping=True)
            targets = [a["text"][0] if a["text"] else "" for a in batch["answers"]]
            labels = tokenizer(text_target=targets, max_length=30, padding=padding, truncation=True)["input_ids"]
            if padding:
                labels = [[t if t != tokenizer.pad_token_id else -100 for t in label] for label in labels]
            assert ours["input_ids"] == reference["input_ids"]
            assert ours["attention_mask"] == reference["attention_mask"]
            assert ours["labels"] == labels and ours["example_id"] == batch["id"]


@pytest.mark.parametrize("arch, padding", [("bart", []), ("t5", ["--pad_to_max_length", "False"])])
def test_long_context_run_writes_the_best_window_answer(tiny_model, data, tmp_path, arch, padding):
    """Training truncates long inputs; evaluation splits them with --doc_stride and keeps, per question, the answer
    of its highest-scoring window. Labels far longer than the generated answers must not break anything."""
    out = run(tmp_path / "out", "--model_name_or_path", tiny_model(arch), "--train_file", data["long"],
              "--validation_file", data["long"], "--version_2_with_negative", "--do_train", "--do_eval",
              "--max_steps", "2", "--doc_stride", "32", "--max_seq_length", "128", "--generation_max_length", "3",
              "--max_answer_length", "12", *padding)
    records = data["records"]["long"]
    results = read_json(out / "eval_results.json")
    assert results["eval_samples"] > 4 * len(records) and results["eval_total"] == len(records)
    predictions, windows = read_json(out / "eval_predictions.json"), read_json(out / "eval_nbest_predictions.json")
    assert set(predictions) == ids(records)
    for example_id, candidates in windows.items():
        assert len(candidates) > 4
        best = max(candidates, key=lambda c: (c["score"], -c["window"]))
        assert predictions[example_id] == best["text"] == candidates[0]["text"]
        assert sorted(c["window"] for c in candidates) == list(range(len(candidates)))


# Generation settings, and generation switched off ---------------------------------------------------------------------


def test_eval_and_predict_honour_generation_flags(tiny_model, data, tmp_path, monkeypatch):
    calls = []
    generate = GenerationMixin.generate

    def spy(self, *args, **kwargs):
        calls.append({k: kwargs.get(k) for k in ("max_length", "num_beams")})
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    out = run(tmp_path / "out", "--model_name_or_path", tiny_model("bart"), "--validation_file", data["dev"],
              "--test_file", data["dev"], "--do_eval", "--do_predict", "--val_max_answer_length", "7",
              "--generation_max_length", "4", "--num_beams", "2", "--per_device_eval_batch_size", "5")
    assert calls == [{"max_length": 4, "num_beams": 2}] * 4  # 2 batches for eval, 2 for predict
    tokenizer = AutoTokenizer.from_pretrained(tiny_model("bart"))
    for answer in read_json(out / "predict_predictions.json").values():  # max_length 4 counts the decoder start token
        assert len(tokenizer(answer, add_special_tokens=False)["input_ids"]) <= 3
    scores = [c[0]["score"] for c in read_json(out / "predict_nbest_predictions.json").values()]
    assert all(s < 0 for s in scores)  # beam scores are log-probabilities

    calls.clear()
    run(tmp_path / "val", "--model_name_or_path", tiny_model("bart"), "--test_file", data["dev"], "--do_predict",
        "--val_max_answer_length", "5")
    assert calls == [{"max_length": 5, "num_beams": None}]


def test_predict_with_generate_false_reports_loss_only(tiny_model, data, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="run_seq2seq_qa"):
        out = run(tmp_path / "out", "--model_name_or_path", tiny_model("t5"), "--validation_file", data["dev"],
                  "--test_file", data["dev"], "--do_eval", "--do_predict", "--predict_with_generate", "False")
    assert "--predict_with_generate False: no answers are generated" in caplog.text
    assert set(read_json(out / "eval_results.json")) == COMMON_EVAL_KEYS | {"eval_model_preparation_time"}
    assert "test_loss" in read_json(out / "predict_results.json")
    assert not (out / "eval_predictions.json").exists() and not (out / "predict_predictions.json").exists()


# Data formats and bad input -------------------------------------------------------------------------------------------


def test_every_data_format_and_a_test_file_without_answers(tiny_model, data, tmp_path):
    no_answers = tmp_path / "test.jsonl"
    with open(no_answers, "w") as f:
        for record in data["records"]["dev"]:
            f.write(json.dumps({k: v for k, v in record.items() if k != "answers"}) + "\n")
    out = run(tmp_path / "out", "--model_name_or_path", tiny_model("t5"), "--train_file", data["csv"],
              "--validation_file", data["nested"], "--test_file", no_answers, "--do_train", "--do_eval",
              "--do_predict", "--max_steps", "1", "--generation_max_length", "4")
    expected = ids(data["records"]["dev"])
    assert set(read_json(out / "eval_predictions.json")) == expected and "eval_f1" in read_json(out / "eval_results.json")
    assert set(read_json(out / "predict_predictions.json")) == expected  # written, though there is nothing to score
    assert not {"test_f1", "test_loss"} & set(read_json(out / "predict_results.json"))
    # The same questions as JSON Lines, with the model just saved: the same answers and scores.
    jsonl = run(tmp_path / "jsonl", "--model_name_or_path", out, "--validation_file", data["jsonl"], "--do_eval",
                "--generation_max_length", "4")
    assert read_json(jsonl / "eval_predictions.json") == read_json(out / "eval_predictions.json")
    assert read_json(jsonl / "eval_results.json")["eval_f1"] == read_json(out / "eval_results.json")["eval_f1"]


@pytest.mark.parametrize("args, message", [
    (["--question_column", "query"], "the question column 'query' is missing"),
    (["--train_adapter", "--adapter_config", "seq_bnn"], "not a valid adapter configuration"),
    (["--load_adapter", "somewhere"], "need --train_adapter"),
    (["--load_best_model_at_end", "--eval_strategy", "steps", "--save_strategy", "steps", "--metric_for_best_model",
      "exact"],
     "--metric_for_best_model set to a metric this script reports: loss, exact_match, f1"),
])
def test_usage_errors(tiny_model, data, tmp_path, args, message):
    args = [arg.format(**data) for arg in args]
    with pytest.raises(UsageError, match=re.escape(message)):
        run(tmp_path / "out", "--model_name_or_path", tiny_model("t5"), "--validation_file", data["dev"], "--do_eval",
            *args)
    assert not (tmp_path / "out").exists()  # nothing written


def test_unanswerable_questions_without_the_v2_flag_are_scored_as_v2(tiny_model, data, tmp_path, caplog):
    """A T5 run trained on squad_v2 without --version_2_with_negative: it runs, scored as SQuAD v2.0."""
    with caplog.at_level(logging.WARNING, logger="run_seq2seq_qa"):
        out = run(tmp_path / "out", "--model_name_or_path", tiny_model("t5"), "--train_file", data["train_v2"],
                  "--validation_file", data["dev_v2"], "--do_train", "--do_eval", "--max_steps", "1",
                  "--generation_max_length", "4")
    assert "8 of 24 questions have no answer" in caplog.text
    assert V2_KEYS <= set(read_json(out / "eval_results.json"))


def test_cli_rejects_an_encoder_only_model_in_one_line(tiny_model, data, tmp_path, repo_root):
    result = run_script("run_seq2seq_qa.py", "--model_name_or_path", tiny_model("bert"), "--validation_file",
                        data["dev"], "--do_eval", "--output_dir", tmp_path / "out", "--report_to", "none", timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "not an encoder-decoder" in result.stderr and "run_qa.py" in result.stderr
    assert "Traceback" not in result.stderr


# The reference CI command, on the real sample file --------------------------------------------------------------------


@pytest.mark.parametrize("arch, adapter_config", [("t5", "seq_bn"), ("bart", "lora")])
def test_reference_ci_command_on_the_squad_sample(tiny_model, shared_data, tmp_path, arch, adapter_config):
    sample = str(shared_data / "hf_squad_sample.json")
    run_seq2seq_qa.main([
        "--model_name_or_path", tiny_model(arch), "--context_column", "context", "--question_column", "question",
        "--answer_column", "answers", "--version_2_with_negative", "--train_file", sample, "--validation_file", sample,
        "--max_steps", "10", "--warmup_steps", "2", "--learning_rate", "2e-4", "--per_device_train_batch_size", "2",
        "--per_device_eval_batch_size", "14", "--do_train", "--do_eval", "--predict_with_generate",
        "--train_adapter", "--adapter_config", adapter_config, "--output_dir", str(tmp_path / "out"),
        "--overwrite_output_dir", "--report_to", "none", "--disable_tqdm", "True",
    ])
    results = read_json(tmp_path / "out" / "eval_results.json")
    assert {"eval_exact", "eval_f1", "eval_loss"} <= set(results) and results["eval_total"] == 14
    predictions = read_json(tmp_path / "out" / "eval_predictions.json")
    assert len(predictions) == 14 and set(predictions) == set(read_json(tmp_path / "out" / "eval_nbest_predictions.json"))


def test_padding_is_masked_for_adapters_t5(tiny_model, data, tmp_path):
    """adapters' T5 wrapper hides forward()'s attention_mask from the Trainer, which would then drop it: padded
    inputs would change the loss. With it kept, padding to --max_seq_length or not gives the same results."""
    common = ["--model_name_or_path", tiny_model("t5"), "--validation_file", data["dev"], "--do_eval",
              "--generation_max_length", "4", "--per_device_eval_batch_size", "4"]
    padded = read_json(run(tmp_path / "padded", *common) / "eval_results.json")
    dynamic = read_json(run(tmp_path / "dynamic", *common, "--pad_to_max_length", "False") / "eval_results.json")
    assert padded["eval_loss"] == pytest.approx(dynamic["eval_loss"], rel=1e-5)
    assert read_json(tmp_path / "padded" / "eval_predictions.json") == read_json(tmp_path / "dynamic" / "eval_predictions.json")


def test_two_processes_give_the_answers_of_one(tiny_model, data, tmp_path, repo_root):
    """`torchrun --nproc_per_node 2` on CPU: each process decodes its own batches; the answers gathered from both
    (without the features the sampler repeats to even out the last batch) are those of a single process."""
    common = ["--model_name_or_path", tiny_model("t5"), "--validation_file", data["dev_v2"], "--test_file",
              data["long"], "--do_eval", "--do_predict", "--version_2_with_negative", "--max_seq_length", "64",
              "--doc_stride", "16", "--per_device_eval_batch_size", "3", "--generation_max_length", "4",
              "--report_to", "none", "--disable_tqdm", "true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(repo_root / "run_seq2seq_qa.py"), *common, "--output_dir", str(tmp_path / "ddp")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "distributed training: True" in result.stdout + result.stderr
    single = run(tmp_path / "single", *common)
    for name in ("eval_predictions.json", "predict_predictions.json"):
        assert read_json(tmp_path / "ddp" / name) == read_json(single / name)
    for name in ("eval_nbest_predictions.json", "predict_nbest_predictions.json"):
        ddp, one = read_json(tmp_path / "ddp" / name), read_json(single / name)
        assert set(ddp) == set(one)
        for example_id, windows in one.items():  # scores agree up to float rounding of other batch shapes
            assert [(w["window"], w["text"]) for w in ddp[example_id]] == [(w["window"], w["text"]) for w in windows]
            assert [w["score"] for w in ddp[example_id]] == pytest.approx([w["score"] for w in windows], abs=1e-5)
    assert read_json(tmp_path / "ddp" / "predict_results.json")["predict_samples"] > 4 * 4  # long contexts: many windows
