"""Resume anywhere (issue 22): what survives what.

- resumable_trainer.ResumableTrainerMixin, in every trainer class of the five scripts: the optimizer state of a
  multi-process CPU run loads (transformers passes torch.load a map_location torch refuses), run_mlm.py resumes
  bit-exact (the collator's masks), the ZeRO-3 adapter save;
- the checkpoint checks in script_utils: a checkpoint of another adapter configuration, --resume_from_checkpoint of a
  folder that is not a checkpoint-N, a finished job run again (no training, no checkpoint past the end);
- one run per --output_dir (.run.lock);
- a local --dataset_name folder of flattened or nested SQuAD JSON read as the records it holds, in the three QA
  scripts;
- two processes (torchrun, accelerate launch) preempted with SIGTERM and killed with SIGKILL resume to the
  predictions of an uninterrupted run.
"""
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from transformers import HfArgumentParser, Trainer

from conftest import read_json, snapshot
from script_utils import LOCK_FILE, UsageError, checkpoint_problem, detect_last_checkpoint, lock_output_dir
from toy import data as toy_data

SCRIPTS = ["run_qa", "run_qa_beam_search", "run_seq2seq_qa", "run_mlm", "run_clm"]
QUIET = ["--report_to", "none", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume_data")
    return {
        "train": toy_data.write_qa_file(toy_data.make_templated_qa(24, seed=21), str(folder / "train.json"), "flat"),
        "dev": toy_data.write_qa_file(toy_data.make_templated_qa(11, seed=22), str(folder / "dev.json"), "flat"),
        "lm_train": toy_data.write_lm_text(str(folder / "lm_train.txt"), 120, seed=1),
        "lm_dev": toy_data.write_lm_text(str(folder / "lm_dev.txt"), 40, seed=2),
    }


def losses(folder):
    return [h["loss"] for h in read_json(folder, "trainer_state.json")["log_history"] if "loss" in h]


def quality(folder, name="eval_results.json"):
    return {k: v for k, v in read_json(folder, name).items()
            if not k.endswith(("_runtime", "_per_second", "_preparation_time"))}


# The one mixin --------------------------------------------------------------------------------------------------------


def test_torch_load_refuses_the_numbered_cpu_transformers_passes_and_the_workaround_loads(tmp_path):
    """The transformers bug: Trainer._load_optimizer_and_scheduler loads with map_location=args.device when
    world_size > 1, which accelerate makes torch.device("cpu", 0) on a multi-process CPU run."""
    from resumable_trainer import torch_load_on_cpu

    path = tmp_path / "optimizer.pt"
    torch.save({"state": {0: {"exp_avg": torch.ones(2)}}}, path)
    with pytest.raises(RuntimeError, match="cpu:0"):
        torch.load(path, map_location=torch.device("cpu", 0), weights_only=True)
    with torch_load_on_cpu(torch.device("cpu", 0)):
        loaded = torch.load(path, map_location=torch.device("cpu", 0), weights_only=True)
    assert torch.equal(loaded["state"][0]["exp_avg"], torch.ones(2))


def trainer_classes():
    """Every Trainer subclass the five scripts (and the modules they build trainers with) can use."""
    found = set()
    for name in SCRIPTS + ["trainer_qa", "trainer_seq2seq_qa", "utils_lm"]:
        module = importlib.import_module(name)
        found.update(value for value in vars(module).values()
                     if isinstance(value, type) and issubclass(value, Trainer) and value.__module__ != "transformers"
                     and not value.__module__.startswith(("transformers.", "adapters")))
    return sorted(found, key=lambda c: c.__name__)


def test_every_trainer_of_the_five_scripts_uses_the_one_mixin():
    from resumable_trainer import ResumableTrainerMixin

    classes = trainer_classes()
    assert {c.__name__ for c in classes} >= {"QuestionAnsweringTrainer", "QuestionAnsweringAdapterTrainer",
                                             "QuestionAnsweringSeq2SeqTrainer", "QuestionAnsweringSeq2SeqAdapterTrainer",
                                             "LMTrainer", "LMAdapterTrainer"}
    for cls in classes:
        for method in ("save_model", "_load_optimizer_and_scheduler", "_load_rng_state", "_save_rng_state",
                       "get_batch_samples", "get_train_dataloader", "train"):
            assert getattr(cls, method) is getattr(ResumableTrainerMixin, method), (cls.__name__, method)
    # What the LM scripts build is one of them, with and without --train_adapter.
    import utils_lm

    assert {utils_lm.LMTrainer, utils_lm.LMAdapterTrainer} <= set(classes)


def test_run_mlm_resumes_bit_exact(tiny_model, data, tmp_path):
    """Same losses step for step and the same evaluation as a run never stopped (its masks are drawn by the collator,
    and accelerate's loader had made the batch the checkpoint resumes with before the checkpoint's last step)."""
    import run_mlm

    def args(out):
        return ["--model_name_or_path", tiny_model("bert"), "--train_file", data["lm_train"], "--validation_file",
                data["lm_dev"], "--max_seq_length", "32", "--do_train", "--do_eval", "--max_steps", "6",
                "--save_steps", "3", "--logging_steps", "1", "--per_device_train_batch_size", "4",
                "--learning_rate", "1e-2", "--train_adapter", "--adapter_config", "seq_bn", "--output_dir", str(out),
                *QUIET]

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run_mlm.main(args(reference))
    resumed.mkdir()
    shutil.copytree(reference / "checkpoint-3", resumed / "checkpoint-3")
    run_mlm.main(args(resumed))
    assert losses(resumed) == losses(reference) and len(losses(reference)) == 6
    assert quality(resumed) == quality(reference)


# The checkpoint checks ------------------------------------------------------------------------------------------------


class Args:
    def __init__(self, output_dir, resume_from_checkpoint=None, max_steps=-1, num_train_epochs=3.0):
        self.output_dir, self.resume_from_checkpoint = str(output_dir), resume_from_checkpoint
        self.do_train, self.overwrite_output_dir, self.should_save, self.world_size = True, False, True, 1
        self.max_steps, self.num_train_epochs = max_steps, num_train_epochs


class AdapterArgs:
    def __init__(self, adapter_config="seq_bn", train_adapter=True):
        self.train_adapter, self.adapter_config, self.load_adapter = train_adapter, adapter_config, None


def _checkpoint(folder, step, adapter_config="seq_bn", epoch=1.0):
    from adapters import AdapterConfig

    path = folder / f"checkpoint-{step}"
    (path / "squad").mkdir(parents=True)
    if adapter_config is not None:
        saved = {"config": AdapterConfig.load(adapter_config).to_dict(), "name": "squad"}
        (path / "squad" / "adapter_config.json").write_text(json.dumps(saved))
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "epoch": epoch, "log_history": []}))
    return str(path)


def test_a_checkpoint_of_another_adapter_configuration_is_refused_in_one_line(tmp_path):
    checkpoint = _checkpoint(tmp_path, 4, "seq_bn")
    assert detect_last_checkpoint(Args(tmp_path), AdapterArgs("seq_bn")) == checkpoint
    for other in (AdapterArgs("lora"), AdapterArgs("seq_bn[reduction_factor=2]"), AdapterArgs(train_adapter=False)):
        with pytest.raises(UsageError, match="another adapter configuration") as refused:
            detect_last_checkpoint(Args(tmp_path), other)
        assert "--overwrite_output_dir" in str(refused.value) and "\n" not in str(refused.value)
        with pytest.raises(UsageError, match="another adapter configuration"):
            detect_last_checkpoint(Args(tmp_path / "elsewhere", resume_from_checkpoint=checkpoint), other)


def test_resume_from_a_finished_runs_folder_is_refused(tmp_path):
    """--resume_from_checkpoint OUTPUT_DIR: trainer_state.json but no optimizer, scheduler or random state."""
    _checkpoint(tmp_path, 4)
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 4, "log_history": []}))
    with pytest.raises(UsageError, match="not a complete checkpoint"):
        detect_last_checkpoint(Args(tmp_path / "new", resume_from_checkpoint=str(tmp_path)), AdapterArgs())


def test_a_finished_job_run_again_evaluates_without_training(tiny_model, data, tmp_path, monkeypatch):
    """No checkpoint past the end (transformers wrote checkpoint-5 of a 4-step job), the first run's training results
    and model kept, the same evaluation."""
    import run_clm

    out = tmp_path / "out"
    args = ["--model_name_or_path", tiny_model("gpt2"), "--train_file", data["lm_train"], "--validation_file",
            data["lm_dev"], "--block_size", "32", "--do_train", "--do_eval", "--max_steps", "4", "--save_steps", "2",
            "--per_device_train_batch_size", "4", "--learning_rate", "1e-2", "--train_adapter", "--adapter_config",
            "seq_bn", "--output_dir", str(out), *QUIET]
    run_clm.main(args)
    first = snapshot(out)
    first_eval = quality(out)
    trained = []
    monkeypatch.setattr(Trainer, "training_step", lambda *a, **k: trained.append(1))
    run_clm.main(args)
    assert trained == []
    assert sorted(n for n in os.listdir(out) if n.startswith("checkpoint-")) == ["checkpoint-2", "checkpoint-4"]
    kept = ["train_results.json", "trainer_state.json", "clm/pytorch_adapter.bin", "checkpoint-4/trainer_state.json"]
    assert {name: snapshot(out)[name] for name in kept} == {name: first[name] for name in kept}
    assert quality(out) == first_eval


# One run per output folder --------------------------------------------------------------------------------------------


def test_a_second_run_on_a_live_runs_folder_refuses_and_changes_nothing(tiny_model, data, tmp_path, repo_root):
    import run_qa

    out = tmp_path / "out"
    out.mkdir()
    half_written = out / "checkpoint-6"  # the live run's checkpoint being written: a second run would remove it
    half_written.mkdir()
    (out / "eval_results.json").write_text("{}")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]); import script_utils; "
         "script_utils._take_lock(sys.argv[1]); print('held', flush=True); time.sleep(600)", str(out), str(repo_root)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(out)
        args = ["--model_name_or_path", tiny_model("bert"), "--train_file", data["train"], "--do_train",
                "--max_steps", "2", "--max_seq_length", "64", "--doc_stride", "16", "--overwrite_output_dir",
                "--output_dir", str(out), *QUIET]
        with pytest.raises(UsageError) as refused:
            run_qa.main(args)
        message = str(refused.value)
        assert f"process {holder.pid} on " in message and LOCK_FILE in message and "\n" not in message
        assert snapshot(out) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # SIGKILL leaves no stale lock: the folder is free at once.
    lock_output_dir(Args(out))
    assert read_lock(out).startswith(f"{os.getpid()} on ")


def read_lock(folder):
    return (folder / LOCK_FILE).read_text()


# --dataset_name: a local folder of SQuAD JSON files -------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["flat", "nested"])
@pytest.mark.parametrize("script", ["run_qa", "run_qa_beam_search", "run_seq2seq_qa"])
def test_a_dataset_name_folder_of_squad_json_loads_its_records(script, layout, tmp_path):
    module = importlib.import_module(script)
    folder = tmp_path / "squad"
    folder.mkdir()
    train, dev = toy_data.make_templated_qa(9, seed=1), toy_data.make_templated_qa(5, seed=2)
    toy_data.write_qa_file(train, str(folder / "train.json"), layout)
    toy_data.write_qa_file(dev, str(folder / "dev.json"), layout)
    parser = HfArgumentParser((module.ModelArguments, module.DataTrainingArguments, getattr(module, "TrainingArguments", None) or module.Seq2SeqTrainingArguments,
                               module.AdapterArguments))
    model_args, data_args, training_args, _ = parser.parse_args_into_dataclasses(
        ["--model_name_or_path", "unused", "--dataset_name", str(folder), "--do_train", "--do_eval",
         "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache")])
    examples, _ = module.load_qa_examples(data_args, model_args, training_args, module.answer_spans,
                                          module.one_example_per_question)
    assert [e["id"] for e in examples["train"]] == [r["id"] for r in train]
    assert [e["question"] for e in examples["eval"]] == [r["question"] for r in dev]


# Two processes: preempted, killed, finished -- and run again ----------------------------------------------------------


def child_env():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    return env


def descendants(pid):
    """pid's child processes, their children, ... (torchrun starts its workers in sessions of their own)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(c) for c in children] + [d for c in children for d in descendants(int(c))]


def start_and(command, cwd, until, action):
    """Run command; when until(output so far, output_dir) holds, action(process); return (status, output)."""
    process = subprocess.Popen([str(c) for c in command], cwd=cwd, env=child_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            if until("".join(output)):
                action(process)
                break
        output.append(process.stdout.read())
        process.wait(timeout=300)
    finally:
        if process.poll() is None:
            for pid in [process.pid] + descendants(process.pid):
                os.kill(pid, signal.SIGKILL)
            process.wait()
    return process.returncode, "".join(output)


def sigkill_everything(process):
    """The whole job at once, as a lost machine: the launcher and every worker."""
    for pid in [process.pid] + descendants(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_ok(command, cwd):
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=child_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


def torchrun(script):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script]


def accelerate_launch(script):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port,
            script]


def test_two_process_run_preempted_then_killed_resumes_identical_and_a_rerun_only_evaluates(tiny_model, data,
                                                                                           tmp_path, repo_root):
    """torchrun, run_qa.py: SIGTERM to the launcher stops both processes after the same step with one complete
    checkpoint; the same command resumes; SIGKILL of the whole job, the same command resumes from the last complete
    checkpoint; the predictions are an uninterrupted run's; run once more, the finished job only evaluates."""
    def command(out):
        return torchrun("run_qa.py") + [
            "--model_name_or_path", tiny_model("bert"), "--train_file", data["train"], "--validation_file",
            data["dev"], "--do_train", "--do_eval", "--max_seq_length", "64", "--doc_stride", "16", "--max_steps",
            "12", "--save_steps", "4", "--logging_steps", "1", "--per_device_train_batch_size", "4",
            "--learning_rate", "1e-2", "--train_adapter", "--adapter_config", "seq_bn", "--output_dir", out, *QUIET]

    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    run_ok(command(reference), repo_root)

    status, output = start_and(command(stopped), repo_root, lambda text: text.count("'loss'") >= 3,
                               lambda process: process.send_signal(signal.SIGTERM))
    assert status == 1, output[-3000:]  # torchrun's own status after a signal; each process exits 143
    stops = [line.split(" at step ")[1].split(":")[0] for line in output.splitlines()
             if "Training stopped by SIGTERM at step" in line]
    assert len(stops) == 2 and stops[0] == stops[1], output[-3000:]
    checkpoints = sorted(n for n in os.listdir(stopped) if n.startswith("checkpoint-"))
    assert f"checkpoint-{stops[0]}" in checkpoints
    assert all(checkpoint_problem(str(stopped / name)) is None for name in checkpoints)
    assert 'run_qa.py", line' not in output  # no process's traceback (torchrun prints its own: SignalException)

    def checkpoint_8_written(text):
        return os.path.isfile(stopped / "checkpoint-8" / "trainer_state.json")

    status, output = start_and(command(stopped), repo_root, checkpoint_8_written, sigkill_everything)
    assert status == -signal.SIGKILL, output[-3000:]
    assert "resuming training at" in output or "Continuing training from checkpoint" in output

    run_ok(command(stopped), repo_root)  # the same command again
    assert (stopped / "eval_predictions.json").read_bytes() == (reference / "eval_predictions.json").read_bytes()
    assert quality(stopped) == quality(reference)
    assert losses(stopped) == losses(reference) and len(losses(reference)) == 12

    train_results = (stopped / "train_results.json").read_bytes()
    output = run_ok(command(stopped), repo_root)  # a finished job, run again
    assert "Training already finished at step 12" in output
    assert not os.path.exists(stopped / "checkpoint-13")
    assert (stopped / "train_results.json").read_bytes() == train_results
    assert quality(stopped) == quality(reference)


def test_accelerate_two_processes_killed_resume_identical(tiny_model, data, tmp_path, repo_root):
    """accelerate launch, run_clm.py: SIGKILL of the whole job after a checkpoint, the same command again ends with
    an uninterrupted run's losses and metrics."""
    def command(out):
        return accelerate_launch("run_clm.py") + [
            "--model_name_or_path", tiny_model("gpt2"), "--train_file", data["lm_train"], "--validation_file",
            data["lm_dev"], "--block_size", "32", "--do_train", "--do_eval", "--max_steps", "12", "--save_steps",
            "4", "--logging_steps", "1", "--per_device_train_batch_size", "2", "--learning_rate", "1e-2",
            "--train_adapter", "--adapter_config", "seq_bn", "--output_dir", out, *QUIET]

    reference, killed = tmp_path / "reference", tmp_path / "killed"
    run_ok(command(reference), repo_root)
    status, output = start_and(command(killed), repo_root,
                               lambda text: os.path.isfile(killed / "checkpoint-4" / "trainer_state.json"),
                               sigkill_everything)
    assert status == -signal.SIGKILL, output[-3000:]
    run_ok(command(killed), repo_root)
    assert losses(killed) == losses(reference) and len(losses(reference)) == 12
    assert quality(killed) == quality(reference)
