"""Shared pytest fixtures and helpers: offline environment, tiny model factory, paths, one way to run a script, a JSON
reader, a snapshot of a folder, a full-disk stand-in and a record of resumes (test files import the helpers:
`from conftest import read_json`).

The env vars are set at import time (before any test imports transformers/datasets) so that no
test can reach the HF hub or a telemetry endpoint: the CI machine has no internet.
"""

import builtins
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

os.environ.update({
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_DISABLED": "true",
    # Tiny models run fastest on one thread (more only wait for each other); the CLI subprocesses inherit this.
    "OMP_NUM_THREADS": "1",
})

# Tests import the top-level modules (tiny_models, toy_data, run_*.py) from the repo root.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One thread for the whole session, so that pinned numbers do not depend on which tests ran before."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def repo_root():
    """The repository root (the folder holding run_qa.py etc.)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Factory get(arch) -> path of a tiny random model; each arch is built once per session."""
    from toy import models as tiny_models

    built = {}

    def get(arch):
        if arch not in built:
            built[arch] = tiny_models.build_tiny_model(arch, str(tmp_path_factory.mktemp(f"tiny-{arch}")))
        return built[arch]

    return get


@pytest.fixture(scope="session")
def shared_data():
    """Path of the team's read-only real data (../shared/data); skip where it is absent."""
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip("../shared/data not present (only in the team's checkout/CI)")
    return path


@pytest.fixture(scope="session")
def real_model_qa_benchmark():
    """benchmarks/real_model_qa.py as a module (benchmarks/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("real_model_qa", REPO_ROOT / "benchmarks" / "real_model_qa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_json(path, name=None):
    """A JSON file's content: path, or a folder and a file name in it."""
    with open(path if name is None else os.path.join(path, name)) as f:
        return json.load(f)


class FailingFile:
    """A file whose write gets through part of the text, then fails (a full disk)."""

    def __init__(self, real):
        self.real = real

    def write(self, data):
        self.real.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.real.__exit__(*exc)


def fill_the_disk(monkeypatch):
    """From now on every file opened for writing takes half of each write, then fails as a full disk does."""
    real_open = builtins.open

    def failing_open(file, mode="r", *args, **kwargs):
        opened = real_open(file, mode, *args, **kwargs)
        return FailingFile(opened) if set(mode) & set("wax+") else opened

    monkeypatch.setattr(builtins, "open", failing_open)


def snapshot(folder):
    """Every file and folder under `folder` with its content hash and modification time."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames:
            state[os.path.relpath(os.path.join(dirpath, name), folder)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                state[os.path.relpath(path, folder)] = (hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return state


def record_resumes(monkeypatch) -> list:
    """From now on each Trainer.train call appends its resume_from_checkpoint to the returned list."""
    import transformers

    resumed_from = []
    train = transformers.Trainer.train

    def recording_train(self, resume_from_checkpoint=None, **kwargs):
        resumed_from.append(resume_from_checkpoint)
        return train(self, resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "train", recording_train)
    return resumed_from


def run_script(script, *args, cwd=None, env=None, timeout=600, check=False):
    """A script of this repository through its command line, as a user runs it (from `cwd`, the repository by
    default): the CompletedProcess, with stdout and stderr as text."""
    return subprocess.run([sys.executable, str(REPO_ROOT / script), *map(str, args)], cwd=cwd or REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=check)
