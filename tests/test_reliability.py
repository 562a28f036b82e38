"""Reliability, second round: nothing is written outside --output_dir (the adapter's name), the libraries' errors
about adapters and data become one line before any training, SIGTERM/SIGINT during training leave a checkpoint that
the same command resumes from, and result files are written atomically."""
import json
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import fill_the_disk, record_resumes, run_script, snapshot
from adapter_setup import adapter_name
from script_utils import LOCK_FILE, UsageError, checkpoint_problem, save_metrics, write_text_atomically
from toy import data as toy_data

# Inputs ---------------------------------------------------------------------------------------------------------------


def _write_qa_folder(folder):
    """A dataset folder as `datasets.load_dataset(folder)` reads it: train.jsonl and validation.jsonl."""
    toy_data.write_qa_file(toy_data.make_templated_qa(16, seed=21), str(folder / "train.jsonl"), "jsonl")
    toy_data.write_qa_file(toy_data.make_templated_qa(6, seed=22), str(folder / "validation.jsonl"), "jsonl")
    return folder


def _qa_args(model, output_dir, *extra):
    return [
        "--model_name_or_path", model,
        "--max_seq_length", "64", "--doc_stride", "16",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--learning_rate", "5e-3",
        "--train_adapter", "--adapter_config", "seq_bn",
        "--output_dir", str(output_dir), "--report_to", "none", "--disable_tqdm", "true",
        *extra,
    ]


def _adapter_files(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


ADAPTER_FILES = ["adapter_config.json", "head_config.json", "pytorch_adapter.bin", "pytorch_model_head.bin"]


@pytest.fixture(scope="module")
def qa_folder(tmp_path_factory):
    return _write_qa_folder(tmp_path_factory.mktemp("datasets") / "my_squad")


# The adapter's name: nothing is written outside --output_dir ----------------------------------------------------------


@pytest.mark.parametrize("dataset_name, name", [
    (None, "squad"),
    ("squad_v2", "squad_v2"),
    ("rajpurkar/squad_v2", "squad_v2"),
    ("/data/my_squad", "my_squad"),
    ("/data/my_squad/", "my_squad"),
    ("../data/my squad", "my_squad"),
    ("data\\my_squad", "my_squad"),
    ("squad_v1.1", "squad_v1_1"),  # adapters refuses "." in adapter names
    (".", "squad"),
    ("/", "squad"),
    ("data/checkpoint-3", "squad"),  # would pass for a checkpoint folder
])
def test_adapter_name_is_a_safe_folder_name(dataset_name, name):
    assert adapter_name(SimpleNamespace(dataset_name=dataset_name), "squad") == name


@pytest.mark.parametrize("kind", ["absolute folder", "relative folder", "folder named like a hub id"])
def test_dataset_folder_is_left_alone_and_the_adapter_is_saved_in_the_output(kind, tiny_model, tmp_path, repo_root):
    """`--dataset_name FOLDER` (upstream: the adapter, named after it, was saved into FOLDER itself)."""
    work = tmp_path / "work"
    relative = {"absolute folder": None, "relative folder": "data/my_squad",
                "folder named like a hub id": "rajpurkar/squad_v2"}[kind]
    folder = _write_qa_folder((work / (relative or "abs/my_squad")))
    dataset_name = str(folder) if relative is None else relative
    expected = {"absolute folder": "my_squad", "relative folder": "my_squad",
                "folder named like a hub id": "squad_v2"}[kind]
    before = snapshot(folder)
    out = tmp_path / "out"
    result = run_script("run_qa.py", *_qa_args(tiny_model("bert"), out, "--dataset_name", dataset_name, "--do_train",
                                               "--max_steps", "2", "--save_steps", "1"), cwd=work, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert snapshot(folder) == before  # byte for byte, no file added
    assert _adapter_files(out / expected) == ADAPTER_FILES
    for step in (1, 2):
        assert _adapter_files(out / f"checkpoint-{step}" / expected) == ADAPTER_FILES
    assert json.loads((out / expected / "adapter_config.json").read_text())["name"] == expected


# Preemption: SIGTERM / SIGINT during training -------------------------------------------------------------------------


def _start_and_signal(command, cwd, after_steps=3, signum=signal.SIGTERM):
    """Run the command, send `signum` once it has logged `after_steps` training steps; (return code, output)."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, steps = [], 0
    try:
        for line in process.stdout:
            output.append(line)
            steps += "'loss'" in line
            if steps == after_steps:
                process.send_signal(signum)
                break
        output.append(process.stdout.read())
        process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, "".join(output)


def test_sigterm_checkpoints_the_current_step_and_the_same_command_resumes(tiny_model, qa_folder, tmp_path,
                                                                          repo_root, monkeypatch):

    import run_qa

    before = snapshot(qa_folder)
    preempted, reference = tmp_path / "preempted", tmp_path / "reference"

    def args(output_dir):
        return _qa_args(tiny_model("bert"), output_dir, "--dataset_name", str(qa_folder), "--do_train", "--do_eval",
                        "--max_steps", "60", "--save_steps", "1000", "--logging_steps", "1")

    returncode, output = _start_and_signal([sys.executable, str(repo_root / "run_qa.py")] + args(preempted), tmp_path)
    assert returncode == 128 + signal.SIGTERM, output[-3000:]
    checkpoints = [name for name in os.listdir(preempted) if name.startswith("checkpoint-")]
    assert len(checkpoints) == 1, checkpoints
    checkpoint = preempted / checkpoints[0]
    step = int(checkpoints[0].split("-")[1])
    assert 3 <= step < 60  # the step under way when the signal came, not a save_steps multiple
    assert checkpoint_problem(str(checkpoint)) is None
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == step
    assert _adapter_files(checkpoint / "my_squad") == ADAPTER_FILES
    stopped = [line for line in output.splitlines() if "Training stopped by SIGTERM" in line]
    assert len(stopped) == 1 and f"step {step}" in stopped[0] and str(checkpoint) in stopped[0]
    assert "Traceback" not in output
    # Nothing but the checkpoint: no final model, no metrics, no evaluation.
    assert sorted(os.listdir(preempted)) == [LOCK_FILE, checkpoints[0]]

    resumed_from = record_resumes(monkeypatch)
    run_qa.main(args(preempted))  # the same command again
    run_qa.main(args(reference))  # never interrupted
    assert resumed_from == [str(checkpoint), None]
    assert (preempted / "eval_predictions.json").read_bytes() == (reference / "eval_predictions.json").read_bytes()
    assert json.loads((preempted / "trainer_state.json").read_text())["global_step"] == 60
    assert snapshot(qa_folder) == before


@pytest.mark.parametrize("first, second", [(signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGTERM)],
                         ids=["SIGTERM, then SIGINT and SIGTERM", "SIGINT, then SIGTERM and SIGINT"])
def test_signals_while_the_checkpoint_is_saved_wait_for_it(first, second, tiny_model, qa_folder, tmp_path,
                                                          monkeypatch):
    """The first signal arrives during step 3, more arrive while its checkpoint is being written (after the weights,
    before the trainer state): the checkpoint is completed, then the run exits with the first signal's status."""
    import transformers

    import run_qa

    training_step, save_rng_state = transformers.Trainer.training_step, transformers.Trainer._save_rng_state

    def signalling_step(self, *args, **kwargs):
        if self.state.global_step == 2:
            os.kill(os.getpid(), first)
        return training_step(self, *args, **kwargs)

    def interrupted_save(self, output_dir):
        os.kill(os.getpid(), second)
        os.kill(os.getpid(), first)
        return save_rng_state(self, output_dir)

    monkeypatch.setattr(transformers.Trainer, "training_step", signalling_step)
    monkeypatch.setattr(transformers.Trainer, "_save_rng_state", interrupted_save)
    out = tmp_path / "out"
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(SystemExit) as stop:
        run_qa.main(_qa_args(tiny_model("bert"), out, "--dataset_name", str(qa_folder), "--do_train", "--do_eval",
                             "--max_steps", "20", "--save_steps", "1000"))
    assert stop.value.code == 128 + first
    assert sorted(os.listdir(out)) == [LOCK_FILE, "checkpoint-3"]
    assert checkpoint_problem(str(out / "checkpoint-3")) is None
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers  # put back after training


# The libraries' errors as one line, before any training, the output folder unchanged ----------------------------------


def _save_adapter(model, folder, name, config="seq_bn"):
    import adapters

    adapters.init(model)
    model.add_adapter(name, config=config)
    model.train_adapter(name)
    model.save_adapter(str(folder), name)
    return str(folder)


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model):
    """Data, and adapter folders that do not fit the tiny BERT (another size, another model type, another task's
    head, broken JSON) or that fit another script's task."""
    import shutil

    import torch
    from transformers import (
        AutoConfig,
        BertForMaskedLM,
        BertForQuestionAnswering,
        GPT2Config,
        GPT2LMHeadModel,
    )

    root = tmp_path_factory.mktemp("reliability")
    data = _write_qa_folder(root / "data")
    toy_data.write_lm_text(str(data / "lm.txt"), n_lines=40)
    (data / "blank.txt").write_text("\n\n   \n\t\n\n")
    (data / "broken_config.json").write_text('{"architecture": "bottleneck", ')
    bert = tiny_model("bert")
    config = AutoConfig.from_pretrained(bert)
    torch.manual_seed(0)
    adapters = root / "adapters"
    adapters.mkdir()
    wider = AutoConfig.from_pretrained(bert, hidden_size=64, intermediate_size=128)
    _save_adapter(BertForQuestionAnswering(wider), adapters / "wider_qa", "squad")
    _save_adapter(GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64)),
                  adapters / "gpt2_clm", "clm")
    _save_adapter(BertForMaskedLM(config), adapters / "bert_mlm", "mlm")
    _save_adapter(BertForQuestionAnswering(config), adapters / "bert_qa", "squad")
    shutil.copytree(adapters / "bert_qa", adapters / "broken_json")
    (adapters / "broken_json" / "adapter_config.json").write_text('{"config": {"reduction_factor": 16,\n')
    return {"data": str(data), "adapters": str(adapters), "bert": bert, "t5": tiny_model("t5")}


QA = ["--train_file", "{data}/train.jsonl", "--validation_file", "{data}/validation.jsonl", "--do_train", "--do_eval",
      "--max_seq_length", "64", "--doc_stride", "16"]
LM = ["--train_file", "{data}/lm.txt", "--validation_file", "{data}/lm.txt", "--do_train", "--do_eval"]
BASES = {"run_qa": QA, "run_qa_beam_search": QA, "run_seq2seq_qa": QA[:-2], "run_mlm": LM + ["--max_seq_length", "32"],
         "run_clm": LM + ["--block_size", "32"]}
CHECK_MODULES = {"run_qa": ["checks"], "run_qa_beam_search": ["checks"], "run_seq2seq_qa": ["checks", "checks_seq2seq"],
                 "run_mlm": ["checks_lm"], "run_clm": ["checks_lm"]}

# (script, id, extra flags, key words of the message)
LIBRARY_CASES = [
    ("run_qa", "adapter of a wider model", ["--load_adapter", "{adapters}/wider_qa"],
     ["--load_adapter", "wider_qa", "64", "32", "another size|hidden size"]),
    ("run_qa", "language adapter of a wider model",
     ["--load_lang_adapter", "{adapters}/wider_qa", "--lang_adapter_config", "seq_bn"],
     ["--load_lang_adapter", "64", "32"]),
    ("run_qa", "adapter of another model type", ["--load_adapter", "{adapters}/gpt2_clm"], ["gpt2", "bert"]),
    ("run_qa", "language adapter of another model type",
     ["--load_lang_adapter", "{adapters}/gpt2_clm", "--lang_adapter_config", "seq_bn"],
     ["--load_lang_adapter", "gpt2", "does not fit this bert model"]),
    ("run_qa", "adapter with a masked-LM head", ["--load_adapter", "{adapters}/bert_mlm"],
     ["BertForMaskedLM", "BertForQuestionAnswering", "--load_lang_adapter"]),
    ("run_mlm", "adapter with a QA head", ["--load_adapter", "{adapters}/bert_qa"],
     ["BertForQuestionAnswering", "BertForMaskedLM"]),
    ("run_qa_beam_search", "adapter with a plain QA head", ["--load_adapter", "{adapters}/bert_qa"],
     ["BertForQuestionAnswering", "BeamSearchQuestionAnsweringModel"]),
    ("run_qa", "adapter folder with broken JSON", ["--load_adapter", "{adapters}/broken_json"],
     ["adapter_config.json", "not valid JSON", "line 2"]),
    ("run_clm", "adapter config file with broken JSON", ["--adapter_config", "{data}/broken_config.json"],
     ["--adapter_config", "broken_config.json", "not a valid adapter configuration"]),
    ("run_qa", "language adapter config name unknown",
     ["--load_lang_adapter", "{adapters}/bert_mlm", "--lang_adapter_config", "seq_bnn"],
     ["--lang_adapter_config", "seq_bnn", "not a valid adapter configuration", "seq_bn"]),
    ("run_qa", "adapter config name unknown", ["--adapter_config", "seq_bnn"],
     ["--adapter_config", "seq_bnn", "not a valid adapter configuration", "seq_bn"]),
    ("run_seq2seq_qa", "compacter on a T5 too small for phm_dim", ["--adapter_config", "compacter"],
     ["phm_dim", "bottleneck", "compacter[reduction_factor=8]"]),
    ("run_qa", "compacter on a model too small for phm_dim", ["--adapter_config", "compacter"],
     ["phm_dim", "(4)", "bottleneck", "reduction_factor 1, 2, 4, 8", "compacter[reduction_factor=8]"]),
    ("run_mlm", "compacter++ with phm_dim 3", ["--adapter_config", "compacter++[phm_dim=3]"],
     ["phm_dim", "(3)", "phm_dim 1"]),
    ("run_clm", "LoRA of rank 0", ["--adapter_config", "lora[r=0]"], ["r=0", "positive"]),
    ("run_mlm", "--line_by_line on blank lines", ["--line_by_line", "--train_file", "{data}/blank.txt"],
     ["train", "non-empty line"]),
]


def _argv(script, extra, env, out):
    flags = BASES[script] + ["--model_name_or_path", "{model}", "--train_adapter", "--output_dir", "{out}",
                             "--overwrite_output_dir", "--report_to", "none", "--max_steps", "2"] + extra
    model = env["t5"] if script == "run_seq2seq_qa" else env["bert"]
    return [flag.format(**env, model=model, out=out) for flag in flags]


def _earlier_run(folder):
    """An output folder holding an earlier run's results, which --overwrite_output_dir would remove."""
    (folder / "checkpoint-7" / "squad").mkdir(parents=True)
    (folder / "all_results.json").write_text(json.dumps({"eval_f1": 12.5}))
    (folder / "eval_predictions.json").write_text(json.dumps({"q1": "Paris"}))
    return folder


@pytest.mark.parametrize("with_checks", [True, False], ids=["with checks.py", "core path only"])
@pytest.mark.parametrize("script, case_id, extra, keywords", LIBRARY_CASES,
                         ids=[f"{case[0]}: {case[1]}" for case in LIBRARY_CASES])
def test_library_error_is_one_line_before_training(script, case_id, extra, keywords, with_checks, env, tmp_path,
                                                   monkeypatch):
    """With the pre-flight checks, or without them (a copy that deleted the lines marked "# checks.py": the script's own
    adapter set-up and data preparation report the same mistakes), before training and before the output folder
    changes."""
    import importlib

    import transformers

    def trained(*args, **kwargs):
        raise AssertionError("training started before the mistake was reported")

    monkeypatch.setattr(transformers.Trainer, "train", trained)
    if not with_checks:  # every check the script calls (checks*.check_*) does nothing, as if its line were deleted
        for module in map(importlib.import_module, CHECK_MODULES[script]):
            for name in [name for name in vars(module) if name.startswith("check_")]:
                monkeypatch.setattr(module, name, lambda *args, **kwargs: None)
    main = importlib.import_module(script).main
    out = _earlier_run(tmp_path / "out")
    before = snapshot(out)
    argv = _argv(script, extra, env, str(out))
    if "--train_file" in extra:  # the case's own training file replaces the base one
        first = argv.index("--train_file")
        del argv[first:first + 2]
    with pytest.raises(UsageError) as error:
        main(argv)
    message = str(error.value)
    assert "\n" not in message
    for word in keywords:
        assert any(w in message for w in word.split("|")), f"{word!r} not in {message!r}"
    assert snapshot(out) == before


def test_cli_library_error_exits_1_with_one_line(env, tmp_path, repo_root):
    """A mistake only the loaded model shows (an adapter whose head is for another task): exit code 1, one line."""
    out = _earlier_run(tmp_path / "out")
    before = snapshot(out)
    result = run_script("run_qa.py", *_argv("run_qa", ["--load_adapter", "{adapters}/bert_mlm"], env, str(out)),
                        cwd=tmp_path, timeout=300)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: --load_adapter") and "BertForMaskedLM" in last_line
    assert "Traceback" not in result.stderr
    assert snapshot(out) == before


@pytest.mark.parametrize("arch, config", [("bert", "seq_bn"), ("bert", "lora"), ("bert", "prompt_tuning"),
                                          ("t5", "mam")])
def test_a_loaded_adapter_keeps_every_weight_under_the_runs_name(arch, config, tiny_model, tmp_path):
    """--load_adapter renames the adapter to the run's name; adapters' renaming misses prompt tuning's embedding (it
    stayed untrained, silently) and one of the two keys of T5's shared prefix-tuning pool: every weight of the file
    must be in the model, under the new name, and nothing is reported as not fitting."""
    import re

    import adapters
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoModelForSeq2SeqLM

    from adapter_setup import setup_adapters

    auto = AutoModelForSeq2SeqLM if arch == "t5" else AutoModelForQuestionAnswering
    folder = _save_adapter(auto.from_pretrained(tiny_model(arch)), tmp_path / "saved", "my_squad", config)
    saved = torch.load(os.path.join(folder, "pytorch_adapter.bin"), weights_only=True)
    model = auto.from_pretrained(tiny_model(arch))
    adapters.init(model)
    args = SimpleNamespace(train_adapter=True, adapter_config="seq_bn", load_adapter=folder, load_lang_adapter=None,
                           lang_adapter_config=None)
    assert setup_adapters(model, args, "squad") == ("squad", None)
    state = model.state_dict()
    for key, tensor in saved.items():
        assert torch.equal(state[re.sub(r"(?<![^.])my_squad(?=\.)", "squad", key)], tensor), key


def test_language_adapter_keeps_its_name_apart_from_the_task_adapter(env, tmp_path, monkeypatch):
    """A language adapter saved under the task adapter's own name ("squad") would replace it (adapters overwrites an
    adapter of the same name): it is loaded as "squad_lang", without its head, under the new task adapter."""
    import adapter_setup
    import run_qa

    names = []

    def recording_setup(model, adapter_args, name):
        names.append(adapter_setup.setup_adapters(model, adapter_args, name))
        return names[-1]

    monkeypatch.setattr(run_qa, "setup_adapters", recording_setup)
    out = tmp_path / "out"
    run_qa.main(_argv("run_qa", ["--load_lang_adapter", "{adapters}/bert_qa"], env, str(out)))
    assert names == [("squad", "squad_lang")]
    assert _adapter_files(out / "squad") == ADAPTER_FILES and _adapter_files(out / "squad_lang") == ADAPTER_FILES


# Result files are written atomically ----------------------------------------------------------------------------------


def _fake_trainer(output_dir):
    return SimpleNamespace(args=SimpleNamespace(output_dir=str(output_dir)), is_world_process_zero=lambda: True)


METRICS = {"eval_f1": 61.25, "eval_exact_match": 50.0, "eval_samples": 8, "eval_runtime": 0.1234, "epoch": 2.0}


def test_save_metrics_writes_what_transformers_writes(tmp_path):
    from transformers.trainer_pt_utils import save_metrics as transformers_save_metrics

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for folder in (ours, theirs):
        folder.mkdir()
        (folder / "all_results.json").write_text(json.dumps({"train_loss": 3.5, "eval_f1": 1.0}))
    for split, metrics in (("train", {"train_loss": 2.25, "train_samples": 16}), ("eval", METRICS)):
        save_metrics(_fake_trainer(ours), split, metrics)
        transformers_save_metrics(_fake_trainer(theirs), split, metrics)
    for name in ("train_results.json", "eval_results.json", "all_results.json"):
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    assert sorted(os.listdir(ours)) == ["all_results.json", "eval_results.json", "train_results.json"]


@pytest.mark.parametrize("crash", ["disk full mid-file", "Ctrl-C before the rename"])
def test_a_write_interrupted_mid_file_leaves_the_old_results(crash, tmp_path, monkeypatch):

    (tmp_path / "eval_results.json").write_text('{\n    "eval_f1": 12.5\n}')
    (tmp_path / "all_results.json").write_text('{\n    "eval_f1": 12.5\n}')
    before = snapshot(tmp_path)
    if crash == "disk full mid-file":
        fill_the_disk(monkeypatch)
    else:
        def interrupted(fd):
            raise KeyboardInterrupt

        monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises((OSError, KeyboardInterrupt)):
        save_metrics(_fake_trainer(tmp_path), "eval", METRICS)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before  # the old files, and no temporary one


def test_a_killed_writer_leaves_no_partial_json(tmp_path):
    """SIGKILL in the middle of writing a large result file: the file is the old one, complete."""
    path = tmp_path / "all_results.json"
    path.write_text('{\n    "eval_f1": 12.5\n}')
    old = path.read_bytes()
    writer = (
        "import os, sys, time\n"
        "import script_utils\n"
        "real_fsync = os.fsync\n"
        "def slow_fsync(fd):\n"
        "    print('writing', flush=True); time.sleep(60)\n"
        "os.fsync = slow_fsync\n"
        f"script_utils.write_text_atomically({str(path)!r}, '{{' + ' ' * 5_000_000 + '}}')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", writer], cwd=os.path.dirname(os.path.dirname(__file__)),
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "writing"  # the new text is in the temporary file, not yet renamed
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert path.read_bytes() == old
    assert json.loads(old) == {"eval_f1": 12.5}
    leftovers = [name for name in os.listdir(tmp_path) if name != path.name]
    assert all(name.startswith("all_results.json.tmp-") for name in leftovers)  # never picked up as a result


def test_write_text_atomically_replaces_the_file(tmp_path):
    path = tmp_path / "predict_results.json"
    path.write_text("an older, longer text " * 50)
    write_text_atomically(str(path), '{\n    "predict_samples": 3\n}')
    assert path.read_text() == '{\n    "predict_samples": 3\n}'
    assert os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize("should_save", [True, False])
def test_overwrite_output_dir_means_no_resume_on_every_process(tmp_path, should_save):
    """With --overwrite_output_dir, a non-main process (should_save False) must not resume from, or refuse, the
    earlier run's folder while the main process starts afresh: every process returns no checkpoint."""
    from script_utils import detect_last_checkpoint

    (tmp_path / "eval_results.json").write_text("{}")
    args = SimpleNamespace(resume_from_checkpoint=None, output_dir=str(tmp_path), overwrite_output_dir=True,
                           should_save=should_save, do_train=True)
    assert detect_last_checkpoint(args) is None
    assert (tmp_path / "eval_results.json").exists()  # removal waits for prepare_output_dir, on the main process
