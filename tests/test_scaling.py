"""Scaling out, on CPU: several processes, several "machines", gradient checkpointing, --load_best_model_at_end,
DeepSpeed, and the GPU check script's CPU smoke run.

Every script is driven through its command line (`python run_qa.py ...` from the repository root), as users run it:

- `accelerate launch --multi_gpu --num_processes 2` (2 gloo processes on a CPU machine) trains an adapter that a
  single process reloads with `--load_adapter`; the single process's evaluation (metrics and prediction files) equals
  the 2-process one, for run_qa.py, run_qa_beam_search.py, run_seq2seq_qa.py and run_clm.py.
- Two `torchrun --nnodes 2 --nproc_per_node 1` agents on localhost (a stand-in for two machines, each with its own
  datasets cache) end a training run with the same losses, metrics and predictions as one `torchrun --nnodes 1
  --nproc_per_node 2`; each "machine" tokenizes once, the 2-process machine once in all.
- `--gradient_checkpointing` gives the same per-step losses and gradient norms as without, for seq_bn, LoRA and
  prefix tuning.
- `--load_best_model_at_end` leaves the best checkpoint's adapter and QA head in the output folder (not the last one).
- DeepSpeed ZeRO-2 on DeepSpeed's CPU accelerator saves the full adapter and head (only where deepspeed is
  installed); ZeRO-3 saves them whole too, in run_qa.py and the LM scripts (resumable_trainer.ResumableTrainerMixin
  gathers the shards).
- `benchmarks/gpu_check.sh --cpu_smoke` runs end to end.
"""
import importlib.util
import json
import math
import os
import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import read_json
import torch

from toy import data as toy_data

# Two processes on one GPU would fail in NCCL ("Duplicate GPU detected"): these tests are for CPU or >= 2 GPUs.
two_processes = pytest.mark.skipif(torch.cuda.device_count() == 1, reason="two processes cannot share one GPU")
TIMING_SUFFIXES = ("_runtime", "_per_second", "_preparation_time")
QA = ["--max_seq_length", "64", "--doc_stride", "16"]
COMMON = ["--report_to", "none", "--disable_tqdm", "true"]
TRAIN = ["--do_train", "--max_steps", "4", "--per_device_train_batch_size", "4", "--learning_rate", "1e-2",
         "--logging_steps", "1", "--save_strategy", "no"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Toy QA data (v1) and LM text, written once for the module."""
    folder = tmp_path_factory.mktemp("scaling_data")
    return {
        "train": toy_data.write_qa_file(toy_data.make_templated_qa(24, seed=21), str(folder / "train.json"), "flat"),
        # 11 questions: the distributed sampler repeats one to fill the last batch, and that repeat must not count.
        "dev": toy_data.write_qa_file(toy_data.make_templated_qa(11, seed=22), str(folder / "dev.json"), "flat"),
        "train48": toy_data.write_qa_file(toy_data.make_templated_qa(48, seed=21), str(folder / "t48.json"), "flat"),
        "dev24": toy_data.write_qa_file(toy_data.make_templated_qa(24, seed=22), str(folder / "d24.json"), "flat"),
        "lm_train": toy_data.write_lm_text(str(folder / "lm_train.txt"), 120, seed=1),
        "lm_dev": toy_data.write_lm_text(str(folder / "lm_dev.txt"), 40, seed=2),
    }


def child_env(**extra):
    """The test environment for a child process. ACCELERATE_USE_CPU is dropped: without a GPU the scripts set up
    gloo themselves (unless it is set), which is what users get."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    env.update(extra)
    return env


def failure_report(output):
    """The lines that say why a run failed (a worker's own error comes before torchrun's long summary), and the end."""
    reasons = [line for line in output.splitlines() if re.search(r"Error|error:|terminate called|what\(\)", line)]
    return "\n".join(reasons[-30:]) + "\n...\n" + output[-3000:]


def run(command, cwd, env=None, expect_ok=True, timeout=600):
    """Run a command; return its stdout and stderr together (asserting success unless expect_ok is False)."""
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env or child_env(), capture_output=True,
                            text=True, timeout=timeout)
    output = result.stdout + result.stderr
    if expect_ok:
        assert result.returncode == 0, " ".join(map(str, command)) + "\n" + failure_report(output)
    return output


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quality(folder, name="eval_results.json"):
    """A results file's metric values, without timings (and the epoch, which an evaluation-only run lacks)."""
    return {k: v for k, v in read_json(folder, name).items() if not k.endswith(TIMING_SUFFIXES) and k != "epoch"}


def prediction_files(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".json") and ("predictions" in n or "null_odds" in n))


def log_history(folder, key):
    return [h[key] for h in read_json(folder, "trainer_state.json")["log_history"] if key in h]


def same_bytes(path_a, path_b):
    with open(path_a, "rb") as a, open(path_b, "rb") as b:
        return a.read() == b.read()


def same_weights(path_a, path_b):
    """Byte-identical files, or (if the serialisation differs) the same tensors under the same names."""
    if same_bytes(path_a, path_b):
        return True
    a, b = (torch.load(p, map_location="cpu", weights_only=True) for p in (path_a, path_b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# accelerate launch: 2 processes, then the saved adapter reloaded by one process ---------------------------------------

# script -> (tiny model, adapter folder name, data keys, extra flags)
LAUNCHED = {
    "run_qa.py": ("bert", "squad", ("train", "dev"), QA + ["--per_device_eval_batch_size", "3"]),
    "run_qa_beam_search.py": ("bert", "squad", ("train", "dev"), QA + ["--per_device_eval_batch_size", "3"]),
    # eval_loss is the mean of per-batch mean token losses, so it depends on which questions share a batch: one
    # question a batch makes it the same for any number of processes.
    "run_seq2seq_qa.py": ("t5", "squad", ("train", "dev"), ["--max_seq_length", "64", "--generation_max_length", "6",
                                                          "--per_device_eval_batch_size", "1"]),
    "run_clm.py": ("gpt2", "clm", ("lm_train", "lm_dev"), ["--block_size", "32", "--per_device_eval_batch_size", "3"]),
}


def accelerate_launch(port, script, args):
    """`accelerate launch` with 2 local processes. --multi_gpu (not --cpu, which starts ONE process unless mpirun is
    set up) goes through torchrun; without a GPU the scripts then switch the processes to one gloo job."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", port, script, *args]


@two_processes
@pytest.mark.parametrize("script", list(LAUNCHED))
def test_accelerate_two_processes_train_save_reload_and_evaluate_as_one(script, files, tiny_model, tmp_path,
                                                                        repo_root):
    arch, adapter_name, (train, dev), extra = LAUNCHED[script]
    common = ["--model_name_or_path", tiny_model(arch), "--validation_file", files[dev], "--do_eval",
              "--train_adapter", "--adapter_config", "seq_bn", *extra, *COMMON]
    launched, single = tmp_path / "launched", tmp_path / "single"
    training = common + TRAIN + ["--train_file", files[train], "--output_dir", launched]
    output = run(accelerate_launch(free_port(), script, training), repo_root)
    assert "Process rank: 1" in output and "distributed training: True" in output
    assert read_json(launched, "trainer_state.json")["global_step"] == 4
    assert os.path.isfile(launched / adapter_name / "adapter_config.json")

    run([sys.executable, script, *common, "--load_adapter", launched / adapter_name, "--output_dir", single],
        repo_root)
    assert quality(single) == quality(launched)
    names = prediction_files(launched)
    assert names == prediction_files(single)
    assert bool(names) == (script != "run_clm.py")
    for name in names:
        assert same_bytes(launched / name, single / name), name


# Two "machines" (torchrun agents on localhost) against one machine with two processes ---------------------------------

TOKENIZER_STARTS = re.compile(r"Running tokenizer on train dataset:\s+0%")


def torchrun(nnodes, nproc, port, node_rank=None):
    """torchrun with the c10d rendezvous at localhost:port. On one host every agent matches the endpoint's host name,
    so is_host says which agent serves the rendezvous store (on real machines, the one named in the endpoint does)."""
    node = [] if node_rank is None else ["--node_rank", str(node_rank), "--rdzv_conf", f"is_host={int(node_rank == 0)}"]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc_per_node", str(nproc),
            "--rdzv_backend", "c10d", "--rdzv_endpoint", f"localhost:{port}", *node]


@two_processes
def test_two_nodes_end_like_one_node_with_two_processes(files, tiny_model, tmp_path, repo_root):
    args = ["run_qa.py", "--model_name_or_path", tiny_model("bert"), "--train_file", files["train"],
            "--validation_file", files["dev"], "--do_eval", "--per_device_eval_batch_size", "3",
            "--train_adapter", "--adapter_config", "seq_bn", *QA, *TRAIN, *COMMON]
    one, two = tmp_path / "one_node", tmp_path / "two_nodes"
    # Each run gets empty datasets caches, so that the tokenizer progress bars count who tokenized.
    one_log = run(torchrun(1, 2, free_port()) + args + ["--output_dir", one], repo_root,
                  child_env(HF_DATASETS_CACHE=str(tmp_path / "cache_one")))

    # Same command on both "machines", each with its own datasets cache (machines do not share a disk; the output
    # folder stands for shared storage, which --load_best_model_at_end and resuming need).
    port, logs, agents = free_port(), [], []
    for node in (0, 1):
        logs.append(open(tmp_path / f"node{node}.log", "w+"))
        agents.append(subprocess.Popen(
            [str(c) for c in torchrun(2, 1, port, node) + args + ["--output_dir", two]], cwd=repo_root,
            env=child_env(HF_DATASETS_CACHE=str(tmp_path / f"cache_node{node}")), stdout=logs[-1],
            stderr=subprocess.STDOUT, text=True))
    node_logs = []
    for agent, log in zip(agents, logs):
        returncode = agent.wait(timeout=600)
        log.seek(0)
        node_logs.append(log.read())
        log.close()
        assert returncode == 0, failure_report(node_logs[-1])

    assert all("distributed training: True" in log for log in node_logs)
    assert log_history(two, "loss") == log_history(one, "loss") and len(log_history(one, "loss")) == 4
    assert quality(two) == quality(one)
    assert prediction_files(one) == prediction_files(two) == ["eval_nbest_predictions.json", "eval_predictions.json"]
    for name in prediction_files(one):
        assert same_bytes(one / name, two / name), name
    # main_process_first works per machine: the machine with 2 processes tokenized once (its second process read the
    # cache), and each 1-process machine tokenized for itself.
    assert len(TOKENIZER_STARTS.findall(one_log)) == 1
    assert [len(TOKENIZER_STARTS.findall(log)) for log in node_logs] == [1, 1]


# Gradient checkpointing with adapters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("adapter_config", ["seq_bn", "lora", "prefix_tuning"])
def test_gradient_checkpointing_gives_the_same_losses(adapter_config, files, tiny_model, tmp_path, repo_root):
    args = [sys.executable, "run_qa.py", "--model_name_or_path", tiny_model("bert"), "--train_file", files["train"],
            "--train_adapter", "--adapter_config", adapter_config, *QA, *TRAIN, *COMMON]
    # The two single-threaded runs are independent: run them side by side (2 cores).
    with ThreadPoolExecutor(2) as pool:
        plain = pool.submit(run, args + ["--output_dir", tmp_path / "plain"], repo_root)
        checkpointed = pool.submit(run, args + ["--output_dir", tmp_path / "checkpointed", "--gradient_checkpointing"],
                                   repo_root)
        plain.result()
        assert "gradient_checkpointing=True" in checkpointed.result()

    losses = log_history(tmp_path / "plain", "loss")
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    # Losses are logged rounded to 4 decimals; the gradient norms are not, and they cover every trainable weight.
    assert log_history(tmp_path / "checkpointed", "loss") == pytest.approx(losses, rel=1e-5)
    assert log_history(tmp_path / "checkpointed", "grad_norm") == pytest.approx(
        log_history(tmp_path / "plain", "grad_norm"), rel=1e-5)


def test_gradient_checkpointing_reaches_the_adapters_implementation(files, tiny_model, tmp_path, repo_root):
    """adapters replaces transformers' gradient_checkpointing_enable (it carries the adapter forward context into
    the recomputation, which prefix tuning needs) and refuses reentrant checkpointing: asking for it fails, which
    shows the flag takes the adapters path."""
    output = run([sys.executable, "run_qa.py", "--model_name_or_path", tiny_model("bert"), "--train_file",
                  files["train"], "--train_adapter", "--adapter_config", "seq_bn", *QA, *TRAIN, *COMMON,
                  "--gradient_checkpointing", "--gradient_checkpointing_kwargs", '{"use_reentrant": true}',
                  "--output_dir", tmp_path / "out"], repo_root, expect_ok=False)
    assert "use_reentrant=True is not supported" in output


# --load_best_model_at_end with adapters -------------------------------------------------------------------------------


def test_load_best_model_at_end_restores_the_best_adapter_and_head(files, tiny_model, tmp_path, repo_root):
    out = tmp_path / "out"
    # A learning rate this high improves F1 for a few steps, then ruins it: the best checkpoint is an early one.
    run([sys.executable, "run_qa.py", "--model_name_or_path", tiny_model("bert"), "--train_file", files["train48"],
         "--validation_file", files["dev24"], "--do_train", "--do_eval", "--train_adapter", "--adapter_config",
         "seq_bn", *QA, "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16",
         "--max_steps", "8", "--learning_rate", "5e-2", "--eval_strategy", "steps", "--save_strategy", "steps",
         "--eval_steps", "2", "--save_steps", "2", "--load_best_model_at_end", "--metric_for_best_model", "f1",
         "--output_dir", out, *COMMON], repo_root)

    state = read_json(out, "trainer_state.json")
    evaluations = [(h["step"], h["eval_f1"]) for h in state["log_history"] if "eval_f1" in h]
    assert [step for step, _ in evaluations] == [2, 4, 6, 8]
    best_f1 = max(f1 for _, f1 in evaluations)
    best_step = next(step for step, f1 in evaluations if f1 == best_f1)  # the Trainer keeps the first of equals
    assert best_step != 8, f"the setup no longer makes an early checkpoint best: {evaluations}"
    assert os.path.basename(state["best_model_checkpoint"]) == f"checkpoint-{best_step}"
    assert state["best_metric"] == best_f1

    for name in ("pytorch_adapter.bin", "pytorch_model_head.bin"):
        saved = out / "squad" / name
        assert same_weights(saved, out / f"checkpoint-{best_step}" / "squad" / name), name
        assert not same_weights(saved, out / "checkpoint-8" / "squad" / name), name
    # The final evaluation ran on the restored weights.
    assert quality(out)["eval_f1"] == best_f1


# DeepSpeed (only where it is installed: it is not in requirements.txt) ------------------------------------------------

needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                     reason="deepspeed is not installed (pip install deepspeed)")


def deepspeed_run(config, model, files, out, repo_root, extra=(), script="run_qa.py", args=None):
    """A script (run_qa.py) under DeepSpeed in ONE process (torchrun sets LOCAL_RANK, which accelerate needs to start
    DeepSpeed). On a CPU machine: DeepSpeed's CPU accelerator, and ACCELERATE_USE_CPU=false, or accelerate drops
    DeepSpeed."""
    env = child_env() if torch.cuda.is_available() else child_env(DS_ACCELERATOR="cpu", ACCELERATE_USE_CPU="false")
    args = deepspeed_args(model, files) if args is None else args
    return run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                script, *args, "--deepspeed", config, "--output_dir", out, *extra], repo_root, env)


def deepspeed_args(model, files):
    return ["--model_name_or_path", model, "--train_file", files["train"], "--validation_file", files["dev"],
            "--do_eval", "--per_device_eval_batch_size", "3", "--train_adapter", "--adapter_config", "seq_bn",
            *QA, *TRAIN, *COMMON]


def assert_full_adapter_files(folder, reference, adapter="squad"):
    """Every tensor of the adapter and head files has the shape of the reference run's (ZeRO-3 leaves them (0,))."""
    for name in ("pytorch_adapter.bin", "pytorch_model_head.bin"):
        saved, expected = (torch.load(f / adapter / name, weights_only=True) for f in (folder, reference))
        assert saved.keys() == expected.keys()
        assert {k: tuple(v.shape) for k, v in saved.items()} == {k: tuple(v.shape) for k, v in expected.items()}


@needs_deepspeed
def test_deepspeed_zero2_saves_the_full_adapter_and_reloads(files, tiny_model, tmp_path, repo_root):
    model = tiny_model("bert")
    plain, zero2, reloaded = tmp_path / "plain", tmp_path / "zero2", tmp_path / "reloaded"
    run([sys.executable, "run_qa.py", *deepspeed_args(model, files), "--output_dir", plain], repo_root)
    deepspeed_run(repo_root / "configs" / "ds_zero2.json", model, files, zero2, repo_root,
                  ["--save_strategy", "steps", "--save_steps", "4"])
    # DeepSpeed really ran: its engine wrote the checkpoint's model and optimizer states (silently ignoring
    # --deepspeed would leave optimizer.pt instead).
    assert os.path.isdir(zero2 / "checkpoint-4" / "global_step4")
    assert_full_adapter_files(zero2, plain)
    # One process, no ZeRO partitioning: the same training as without DeepSpeed.
    assert log_history(zero2, "loss") == pytest.approx(log_history(plain, "loss"), rel=1e-4)
    run([sys.executable, "run_qa.py", "--model_name_or_path", model, "--validation_file", files["dev"], "--do_eval",
         "--per_device_eval_batch_size", "3", "--train_adapter", "--load_adapter", zero2 / "squad", *QA, *COMMON,
         "--output_dir", reloaded], repo_root)
    assert quality(reloaded) == quality(zero2)
    assert same_bytes(zero2 / "eval_predictions.json", reloaded / "eval_predictions.json")


def zero3_config(repo_root, tmp_path):
    """configs/ds_zero3.json partitioning every parameter, as ZeRO-3 does with the adapter weights of a real model
    (the default threshold keeps parameters under 10 x hidden size whole: all of a tiny model's adapter weights)."""
    config = read_json(repo_root / "configs", "ds_zero3.json")
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    with open(tmp_path / "zero3.json", "w") as f:
        json.dump(config, f)
    return tmp_path / "zero3.json"


@needs_deepspeed
def test_deepspeed_zero3_saves_the_full_adapter(files, tiny_model, tmp_path, repo_root):
    model = tiny_model("bert")
    config = zero3_config(repo_root, tmp_path)
    run([sys.executable, "run_qa.py", *deepspeed_args(model, files), "--output_dir", tmp_path / "plain"], repo_root)
    deepspeed_run(config, model, files, tmp_path / "zero3", repo_root)
    assert_full_adapter_files(tmp_path / "zero3", tmp_path / "plain")


# script -> (tiny model, adapter folder name, flags)
LM_SCRIPTS = {"run_clm.py": ("gpt2", "clm", ["--block_size", "32"]),
              "run_mlm.py": ("bert", "mlm", ["--max_seq_length", "32"])}


@needs_deepspeed
@pytest.mark.parametrize("script", list(LM_SCRIPTS))
def test_deepspeed_zero3_saves_the_full_adapter_of_the_lm_scripts(script, files, tiny_model, tmp_path, repo_root):
    """The LM scripts' trainers save through the same ResumableTrainerMixin.save_model as the QA ones."""
    arch, adapter, extra = LM_SCRIPTS[script]
    args = ["--model_name_or_path", tiny_model(arch), "--train_file", files["lm_train"], "--validation_file",
            files["lm_dev"], "--do_eval", "--per_device_eval_batch_size", "3", "--train_adapter", "--adapter_config",
            "seq_bn", *extra, *TRAIN, *COMMON]
    run([sys.executable, script, *args, "--output_dir", tmp_path / "plain"], repo_root)
    deepspeed_run(zero3_config(repo_root, tmp_path), None, files, tmp_path / "zero3", repo_root, script=script,
                  args=args)
    assert_full_adapter_files(tmp_path / "zero3", tmp_path / "plain", adapter)


# The GPU check script, CPU smoke run ----------------------------------------------------------------------------------


def test_gpu_check_cpu_smoke_run(tmp_path, repo_root):
    result_file = tmp_path / "gpu_check.json"
    run(["bash", "benchmarks/gpu_check.sh", "--cpu_smoke", "--output", result_file, "--work", tmp_path / "work"],
        repo_root, timeout=300)
    with open(result_file) as f:
        results = json.load(f)
    assert results["ok"] is True, results["checks"]
    runs = {(r["model"], r["precision"], r["setting"]) for r in results["runs"]}
    assert runs == {("tiny", "fp32", s) for s in ("seq_bn", "lora", "full")}
    for r in results["runs"]:
        assert r["losses"] and all(math.isfinite(x) for x in r["losses"])
        assert 0 <= r["eval_f1"] <= 100 and r["samples_per_second"] > 0
    assert {c["name"] for c in results["checks"] if not c["ok"]} == set()
