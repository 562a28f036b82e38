"""The flags users try (issue 24): nothing in --output_dir is lost when a run fails, --torch_dtype with adapters,
--max_eval_samples/--max_predict_samples counting whole questions, --report_to/--push_to_hub checked before the model
loads, unanswerable questions in the test file, and the smaller points (an arguments file with more flags, best_f1 as
the metric for the best model, a header-only CSV, --bf16 on a CPU).

Most cases run main() in-process and stop before the model loads; the few that run the model use tiny ones."""
import importlib
import json
import math
from types import SimpleNamespace

import pytest
import torch

from conftest import read_json, snapshot
from script_utils import UsageError, parse_args
from test_bad_inputs import DROP, _argv, _earlier_run, env, model_loading_fails  # noqa: F401 (fixtures)
from toy import data as toy_data

CHECK_MODULES = {"run_qa": ["checks"], "run_qa_beam_search": ["checks"], "run_seq2seq_qa": ["checks", "checks_seq2seq"],
                 "run_mlm": ["checks_lm"], "run_clm": ["checks_lm"]}


def without_checks(monkeypatch, script):
    """Every check the script calls (checks*.check_*) does nothing, as in a copy that deleted the `# checks.py` lines."""
    for module in map(importlib.import_module, CHECK_MODULES[script]):
        for name in [name for name in vars(module) if name.startswith("check_")]:
            monkeypatch.setattr(module, name, lambda *args, **kwargs: None)


@pytest.fixture
def hub_offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# 1 and 7: --report_to an integration not installed, --push_to_hub offline ---------------------------------------------

HUB_CASES = [
    ("run_qa", {"--report_to": "tensorboard"}, ["--report_to tensorboard", "not installed", "--report_to none"]),
    ("run_qa_beam_search", {"--push_to_hub": None}, ["--push_to_hub", "HF_HUB_OFFLINE"]),
    ("run_seq2seq_qa", {"--report_to": "tensorboard"}, ["--report_to tensorboard", "not installed"]),
    ("run_mlm", {"--push_to_hub": None}, ["--push_to_hub", "offline"]),
    ("run_clm", {"--report_to": "tensorboard"}, ["--report_to tensorboard", "not installed"]),
]


@pytest.mark.parametrize("script, changes, keywords", HUB_CASES, ids=[c[0] for c in HUB_CASES])
def test_reporting_and_hub_are_one_line_before_the_model_loads(script, changes, keywords, env, tmp_path, hub_offline,
                                                               model_loading_fails):
    """7: one line before the model loads (the Trainer raised a traceback once the model had loaded); 1: the earlier
    run's results, predictions and checkpoints are all still there, --overwrite_output_dir notwithstanding."""
    out = _earlier_run(tmp_path / "out")
    before = snapshot(out)
    with pytest.raises(UsageError) as error:
        importlib.import_module(script).main(_argv(script, changes, env, str(out)))
    message = str(error.value)
    assert "\n" not in message
    for word in keywords:
        assert word in message, f"{word!r} not in {message!r}"
    assert snapshot(out) == before


def test_push_to_hub_without_a_token(env, tmp_path, monkeypatch, model_loading_fails):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(UsageError, match="--push_to_hub needs a Hugging Face token: log in"):
        importlib.import_module("run_qa").main(_argv("run_qa", {"--push_to_hub": None}, env, str(tmp_path / "out")))


@pytest.mark.parametrize("script, changes", [("run_qa", {"--report_to": "tensorboard"}),
                                             ("run_mlm", {"--push_to_hub": None})])
def test_without_checks_a_failing_trainer_leaves_the_output_folder_as_it_was(script, changes, env, tmp_path,
                                                                            monkeypatch, hub_offline):
    """1, in a copy without checks.py: the Trainer is created before prepare_output_dir removes anything, so its
    error (the library's own) leaves the earlier run's files in place."""
    without_checks(monkeypatch, script)
    out = _earlier_run(tmp_path / "out")
    before = snapshot(out)
    with pytest.raises(Exception) as error:
        importlib.import_module(script).main(_argv(script, changes, env, str(out)))
    assert "tensorboard" in str(error.value).lower() or "offline" in str(error.value).lower()
    assert snapshot(out) == before


# 2: --torch_dtype bfloat16 / float16 with adapters --------------------------------------------------------------------


@pytest.mark.parametrize("config", ["seq_bn", "lora", "prefix_tuning", "ia3", "double_seq_bn", "unipelt"])
def test_adapters_run_in_the_models_dtype(config, tiny_model):
    """adapters creates its weights in float32: a bfloat16 model failed at the first forward pass ("mat1 and mat2
    must have the same dtype"). Now the adapter's weights are in the model's dtype, and forward and backward run."""
    import adapters
    from transformers import AutoModelForMaskedLM

    from adapter_setup import setup_adapters

    model = AutoModelForMaskedLM.from_pretrained(tiny_model("bert"), dtype=torch.bfloat16)
    adapters.init(model)
    adapter_args = SimpleNamespace(train_adapter=True, adapter_config=config, load_adapter=None,
                                   load_lang_adapter=None, lang_adapter_config=None)
    setup_adapters(model, adapter_args, "mlm")
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = torch.randint(5, 90, (2, 12))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert math.isfinite(loss.item()) and all(p.grad is not None for p in trained)


def _lm_args(env, out, *extra):
    return ["--model_name_or_path", env["model"], "--validation_file", f"{env['data']}/lm.txt", "--output_dir", str(out),
            "--report_to", "none", "--torch_dtype", "bfloat16", "--train_adapter", *extra]


def test_bfloat16_model_trains_an_adapter_and_evaluates_a_loaded_one(env, tmp_path):
    """run_clm trains a seq_bn adapter on a bfloat16 model; run_mlm evaluates a LoRA adapter loaded onto one."""
    import run_clm
    import run_mlm

    clm = tmp_path / "clm"
    run_clm.main(_lm_args(env, clm, "--train_file", f"{env['data']}/lm.txt", "--do_train", "--do_eval", "--max_steps",
                          "2", "--block_size", "32", "--adapter_config", "seq_bn"))
    assert math.isfinite(read_json(clm, "train_results.json")["train_loss"])
    assert math.isfinite(read_json(clm, "eval_results.json")["eval_loss"])

    import adapters
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(env["model"])
    adapters.init(model)
    model.add_adapter("mlm", config="lora")
    model.save_adapter(str(tmp_path / "lora"), "mlm")
    mlm = tmp_path / "mlm"
    run_mlm.main(_lm_args(env, mlm, "--do_eval", "--max_seq_length", "32", "--adapter_config", "lora",
                          "--load_adapter", str(tmp_path / "lora")))
    assert math.isfinite(read_json(mlm, "eval_results.json")["eval_loss"])


# 3 and 4: --max_eval_samples / --max_predict_samples count whole questions ---------------------------------------------

QA_FLAGS = {
    "run_qa": ["--max_seq_length", "64", "--doc_stride", "16"],
    "run_qa_beam_search": ["--max_seq_length", "64", "--doc_stride", "16", "--train_adapter"],
    "run_seq2seq_qa": ["--max_seq_length", "64", "--doc_stride", "16", "--generation_max_length", "3",
                       "--max_answer_length", "12"],
}


@pytest.fixture(scope="module")
def long_contexts(tmp_path_factory):
    """SQuAD v2.0-style data whose contexts take several windows of 64 tokens, and its first 5 questions alone."""
    folder = tmp_path_factory.mktemp("long_contexts")
    records = toy_data.make_templated_qa(8, seed=5, version_2=True, long_context=True)
    for name, subset in (("all.json", records), ("first5.json", records[:5])):
        (folder / name).write_text(json.dumps({"version": "2.0", "data": subset}))
    return folder


@pytest.mark.parametrize("script, stage", [("run_qa", "eval"), ("run_qa", "predict"), ("run_qa_beam_search", "eval"),
                                           ("run_seq2seq_qa", "eval")])
def test_max_samples_keeps_the_first_questions_with_all_their_windows(script, stage, long_contexts, tiny_model,
                                                                      tmp_path):
    """--max_{stage}_samples 5 gives the predictions and metrics of a file holding only the first 5 questions. The cap
    counted windows: 5 windows covered 1 or 2 questions, and the others got an empty answer and were scored (run_qa,
    beam search), or were dropped with a warning (seq2seq). {stage}_samples counts the windows evaluated."""
    main = importlib.import_module(script).main
    model = tiny_model("t5" if script == "run_seq2seq_qa" else "bert")
    flag, split = {"eval": ("--do_eval", "--validation_file"), "predict": ("--do_predict", "--test_file")}[stage]

    def run(out, data_file, *extra):
        main(["--model_name_or_path", model, flag, split, str(long_contexts / data_file), "--output_dir", str(out),
              "--report_to", "none", "--per_device_eval_batch_size", "16", *QA_FLAGS[script], *extra])
        results = read_json(out, f"{stage}_results.json")
        timings = ("runtime", "per_second", "preparation_time")
        return (read_json(out, f"{stage}_predictions.json"),
                {k: v for k, v in results.items() if not any(t in k for t in timings)})

    capped = run(tmp_path / "capped", "all.json", f"--max_{stage}_samples", "5")
    first5 = run(tmp_path / "first5", "first5.json")
    assert capped == first5
    predictions, results = capped
    assert len(predictions) == 5 and results[f"{stage}_samples"] > 5  # long contexts: several windows per question


# 8: unanswerable questions in the test file ---------------------------------------------------------------------------


def test_unanswerable_test_questions_switch_v2_mode_on(env, tmp_path, caplog):
    """--do_predict on a test file with unanswerable questions, without --version_2_with_negative: SQuAD v2.0 mode,
    with the warning the training and evaluation data give, before the model loads (the run used to end in the v1.1
    metric, after writing the predictions, with exit status 1)."""
    import run_qa

    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        run_qa.main(_argv("run_qa", {"--do_train": DROP, "--do_eval": DROP, "--train_file": DROP,
                                     "--validation_file": DROP, "--do_predict": None,
                                     "--test_file": "{data}/v2_dev.json", "--overwrite_output_dir": DROP},
                          env, str(out)))
    assert "--test_file" in caplog.text and "3 of 9 questions have no answer" in caplog.text
    results = read_json(out, "predict_results.json")
    assert results["test_total"] == 9 and results["test_HasAns_total"] == 6 and results["test_NoAns_total"] == 3
    assert (out / "predict_null_odds.json").is_file()


# The smaller points ---------------------------------------------------------------------------------------------------


def test_an_arguments_file_must_be_the_only_argument(tmp_path):
    from transformers import TrainingArguments

    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"output_dir": str(tmp_path / "out")}))
    with pytest.raises(UsageError, match=r"^An arguments file \(.*args.json\) must be the only argument: put "
                                         r"--do_train and the other flags in the file"):
        parse_args((TrainingArguments,), [str(args_file), "--do_train"])
    assert parse_args((TrainingArguments,), [str(args_file)])[0].output_dir == str(tmp_path / "out")


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a machine without a GPU")
def test_bf16_on_a_cpu_names_use_cpu(tmp_path, monkeypatch):
    from transformers import TrainingArguments

    # TrainingArguments(bf16=True) sets ACCELERATE_MIXED_PRECISION=bf16 in the environment, and every later
    # TrainingArguments of this process keeps it (bfloat16 autocast in the other tests): restored after this test.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")

    with pytest.raises(UsageError, match="--bf16 needs a GPU .* add --use_cpu"):
        parse_args((TrainingArguments,), ["--output_dir", str(tmp_path), "--bf16"])
    assert parse_args((TrainingArguments,), ["--output_dir", str(tmp_path), "--bf16", "--use_cpu"])[0].bf16


@pytest.mark.parametrize("metric", ["best_f1", "eval_best_exact"])
def test_best_threshold_metrics_may_pick_the_best_model_in_v2_mode(metric):
    import checks

    data_args = SimpleNamespace(version_2_with_negative=True, tune_null_threshold=False)
    training_args = SimpleNamespace(load_best_model_at_end=True, metric_for_best_model=metric)
    checks.check_qa_data({}, None, data_args, training_args, answer_spans=None)  # accepted
    with pytest.raises(UsageError, match="exact_match, f1"):  # v1.1 reports no best_*
        checks.check_qa_data({}, None, SimpleNamespace(version_2_with_negative=False, tune_null_threshold=False),
                             training_args, answer_spans=None)


@pytest.mark.parametrize("script, flag, header", [("run_qa", "--train_file", "id,title,context,question,answers"),
                                                  ("run_clm", "--train_file", "text")])
def test_a_header_only_csv_is_one_line_naming_the_file(script, flag, header, env, tmp_path, model_loading_fails):
    data_file = tmp_path / "header_only.csv"
    data_file.write_text(header + "\n")
    out = _earlier_run(tmp_path / "out")
    before = snapshot(out)
    changes = {flag: str(data_file), "--validation_file": DROP, "--do_eval": DROP}
    with pytest.raises(UsageError) as error:
        importlib.import_module(script).main(_argv(script, changes, env, str(out)))
    assert str(error.value) == (f"Data file {data_file} has a header line but no data rows: add one row per example "
                                "below the header.")
    assert snapshot(out) == before
