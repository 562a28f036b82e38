"""Crash safety: a training run killed with SIGKILL and started again with the same command continues from its last
complete checkpoint and ends with exactly the weights and predictions of a run that was never killed; a checkpoint
that a killed run left half-written is never resumed from."""
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch

from conftest import record_resumes
from script_utils import (
    LOCK_FILE,
    UsageError,
    checkpoint_problem,
    detect_last_checkpoint,
    last_complete_checkpoint,
    prepare_output_dir,
)
from toy import data as toy_data

# Which checkpoints count as complete ----------------------------------------------------------------------------------


def _checkpoint(folder, step, state=True, rng=True, cut=None):
    """A checkpoint folder as transformers writes it; `cut` names a file to leave half-written."""
    path = folder / f"checkpoint-{step}"
    (path / "squad").mkdir(parents=True)
    (path / "squad" / "pytorch_adapter.bin").write_bytes(b"weights")
    if rng:
        torch.save({"cpu": torch.random.get_rng_state()}, path / "rng_state.pth")
    if state:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    if cut is not None:
        data = (path / cut).read_bytes()
        (path / cut).write_bytes(data[: len(data) // 2])
    return str(path)


class Args:
    """The TrainingArguments fields the checkpoint helpers read."""

    def __init__(self, output_dir, do_train=True, overwrite_output_dir=False, resume_from_checkpoint=None):
        self.output_dir = str(output_dir)
        self.do_train = do_train
        self.overwrite_output_dir = overwrite_output_dir
        self.resume_from_checkpoint = resume_from_checkpoint
        self.should_save = True
        self.world_size = 1


def test_incomplete_checkpoints_are_skipped_and_removed(tmp_path):
    complete = _checkpoint(tmp_path, 4)
    no_state = _checkpoint(tmp_path, 6, state=False)
    cut_state = _checkpoint(tmp_path, 8, cut="trainer_state.json")
    cut_rng = _checkpoint(tmp_path, 10, cut="rng_state.pth")
    assert checkpoint_problem(complete) is None
    assert "trainer_state.json" in checkpoint_problem(no_state)
    assert "cut short" in checkpoint_problem(cut_state)
    assert "rng_state.pth" in checkpoint_problem(cut_rng)
    assert last_complete_checkpoint(str(tmp_path)) == complete
    assert detect_last_checkpoint(Args(tmp_path)) == complete

    prepare_output_dir(Args(tmp_path), complete)  # right before training: the half-written ones go
    assert sorted(os.listdir(tmp_path)) == [LOCK_FILE, "checkpoint-4"]


def test_only_half_written_checkpoints_means_start_afresh(tmp_path):
    """A run killed while writing its first checkpoint: the rerun starts from scratch instead of refusing a
    non-empty output folder (or, as transformers would, resuming from the broken folder)."""
    _checkpoint(tmp_path, 2, state=False)
    assert detect_last_checkpoint(Args(tmp_path)) is None
    (tmp_path / "notes.txt").write_text("someone else's file")
    with pytest.raises(UsageError, match="--overwrite_output_dir"):
        detect_last_checkpoint(Args(tmp_path))


def test_overwrite_removes_the_earlier_run_when_training(tmp_path):
    """--overwrite_output_dir: the earlier run's checkpoints and results go (a later resume would pick them up, and
    all_results.json would merge them), but only when prepare_output_dir is called, not at detection time."""
    _checkpoint(tmp_path, 40)
    (tmp_path / "all_results.json").write_text("{}")
    (tmp_path / "eval_predictions.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("kept")
    (tmp_path / "merged").mkdir()  # an earlier --merge_adapter_on_save model
    (tmp_path / "merged" / "config.json").write_text("{}")
    args = Args(tmp_path, overwrite_output_dir=True)
    assert detect_last_checkpoint(args) is None
    assert len(os.listdir(tmp_path)) == 5
    prepare_output_dir(args, None)
    assert sorted(os.listdir(tmp_path)) == [LOCK_FILE, "notes.txt"]


def test_resume_from_checkpoint_flag_is_checked(tmp_path):
    complete = _checkpoint(tmp_path, 4)
    broken = _checkpoint(tmp_path, 6, state=False)
    assert detect_last_checkpoint(Args(tmp_path, resume_from_checkpoint=complete)) == complete
    with pytest.raises(UsageError, match="cannot be resumed from"):
        detect_last_checkpoint(Args(tmp_path, resume_from_checkpoint=broken))


# SIGKILL and resume, end to end ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crash_data")
    return {
        "train": toy_data.write_qa_file(toy_data.make_templated_qa(24, seed=11), str(folder / "train.json"), "flat"),
        "dev": toy_data.write_qa_file(toy_data.make_templated_qa(8, seed=12), str(folder / "dev.json"), "flat"),
    }


def _command(model, data, output_dir):
    return [
        "--model_name_or_path", model,
        "--train_file", data["train"],
        "--validation_file", data["dev"],
        "--do_train", "--do_eval",
        "--max_seq_length", "64", "--doc_stride", "16",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
        "--num_train_epochs", "2", "--save_steps", "2", "--learning_rate", "5e-3",
        "--train_adapter", "--adapter_config", "seq_bn",
        "--output_dir", output_dir,
        "--report_to", "none", "--disable_tqdm", "true",
    ]


def _weights(output_dir):
    adapter = torch.load(os.path.join(output_dir, "squad", "pytorch_adapter.bin"), weights_only=True)
    head = torch.load(os.path.join(output_dir, "squad", "pytorch_model_head.bin"), weights_only=True)
    return {**adapter, **{f"head.{k}": v for k, v in head.items()}}


def _kill_after_second_checkpoint(command, output_dir, cwd):
    """Start the run, SIGKILL it the moment a second checkpoint folder appears (so the first is complete and the
    second most likely half-written)."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None:
            if os.path.isdir(output_dir) and sum(n.startswith("checkpoint-") for n in os.listdir(output_dir)) >= 2:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if process.poll() is None and time.time() >= deadline:
            process.kill()
        process.wait()
    return process.returncode


def test_killed_run_resumes_to_identical_results(tiny_model, qa_data, tmp_path, repo_root, monkeypatch):

    import run_qa

    model = tiny_model("bert")
    reference_dir, crashed_dir = str(tmp_path / "reference"), str(tmp_path / "crashed")

    returncode = _kill_after_second_checkpoint(
        [sys.executable, str(repo_root / "run_qa.py")] + _command(model, qa_data, crashed_dir), crashed_dir, tmp_path
    )
    assert returncode == -signal.SIGKILL, "the run finished before a second checkpoint appeared"
    complete = last_complete_checkpoint(crashed_dir)
    assert complete is not None
    # Whatever the kill left, add a half-written newer checkpoint: weights saved, trainer state not yet.
    half_written = os.path.join(crashed_dir, "checkpoint-9")
    os.makedirs(os.path.join(half_written, "squad"))
    with zipfile.ZipFile(os.path.join(half_written, "optimizer.pt"), "w") as f:
        f.writestr("data", b"\0" * 64)

    resumed_from = record_resumes(monkeypatch)
    run_qa.main(_command(model, qa_data, crashed_dir))  # the same command again
    run_qa.main(_command(model, qa_data, reference_dir))  # never killed

    assert resumed_from == [complete, None]
    assert not os.path.exists(half_written)
    with open(os.path.join(crashed_dir, "eval_predictions.json")) as a, open(
        os.path.join(reference_dir, "eval_predictions.json")
    ) as b:
        assert json.load(a) == json.load(b)
    resumed, reference = _weights(crashed_dir), _weights(reference_dir)
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    with open(os.path.join(crashed_dir, "trainer_state.json")) as f:
        assert json.load(f)["global_step"] == 16  # 2 epochs of 8 steps
