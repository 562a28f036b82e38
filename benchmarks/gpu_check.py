#!/usr/bin/env python
"""Mixed precision and multi-GPU training check for a GPU machine without network (called by gpu_check.sh).

Builds everything locally: a BERT-base-sized random model (12 layers x 768, the toy WordPiece tokenizer of
toy/models.py) and toy SQuAD-style data (toy/data.py). Then runs `run_qa.py` as users do, one subprocess per run:

- seq_bn adapter, LoRA adapter and full fine-tuning, each in fp32, with --fp16, and with --bf16 where
  torch.cuda.is_bf16_supported(), for --steps steps;
- with 2 or more GPUs (`nvidia-smi -L`): the fp16 seq_bn run again under `torchrun --nproc_per_node 2` (DDP) and,
  when deepspeed is importable, under DeepSpeed ZeRO-2 (configs/ds_zero2.json), at the same global batch size.

Checks: every logged loss is finite; eval_predictions.json is a JSON object with one text answer per evaluation
question; the evaluation F1 of each fp16/bf16/multi-GPU run is within --f1_tolerance points of the fp32 run of the
same setting. Records samples/s and model FLOPs utilisation: the Trainer's total_flos (its 6 x parameters x tokens
estimate, all processes) / train_runtime / (peak FLOPs x GPUs), the peak from a table of known GPUs (dense tensor-core
fp16/bf16 and plain fp32) or --peak_tflops / --peak_tflops_fp32. Adapter runs skip the weight gradients of the frozen
model, so for them that estimate overstates the work done (by up to 1.5x).

--cpu_smoke: the same steps on the CPU, fp32 only, a 2-layer tiny BERT, a handful of steps, no multi-GPU part: proves
the script works (well under 3 minutes).

Writes one JSON (--output; default $OUT/gpu_check.json when $OUT is set, else benchmarks/results/gpu_check.json) and
exits 1 if a check failed.
"""
import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
from _common import machine, write_results  # noqa: E402

SETTINGS = ("seq_bn", "lora", "full")
LEARNING_RATES = {"seq_bn": 1e-3, "lora": 1e-3, "full": 2e-4}
# Peak dense TFLOPS (fp16/bf16 tensor cores without sparsity, plain fp32), by a part of the torch device name. The
# first match wins, so the longer names come first ("H100 PCIe" before "H100", "A100" before "A10").
PEAK_TFLOPS = (
    ("H200", 989.0, 67.0), ("H100 PCIe", 756.0, 51.0), ("H100", 989.0, 67.0), ("A100", 312.0, 19.5),
    ("L40S", 362.0, 91.6), ("L4", 121.0, 30.3), ("A10", 125.0, 31.2), ("T4", 65.0, 8.1), ("V100", 125.0, 15.7),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu_smoke", action="store_true", help="tiny CPU run of every step (fp32, no multi-GPU)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default 200; smoke 4)")
    parser.add_argument("--batch_size", type=int, default=None, help="global batch (default 16; smoke 4)")
    parser.add_argument("--seq_len", type=int, default=None, help="max_seq_length (default 384; smoke 64)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated: seq_bn, lora, full")
    parser.add_argument("--f1_tolerance", type=float, default=5.0, help="allowed |F1 - fp32 F1| (points)")
    parser.add_argument("--peak_tflops", type=float, default=None, help="GPU peak fp16/bf16 TFLOPS (else table)")
    parser.add_argument("--peak_tflops_fp32", type=float, default=None, help="GPU peak fp32 TFLOPS (else table)")
    parser.add_argument("--work", default=None, help="folder for models, data, runs (default: temporary, removed)")
    parser.add_argument("--output", default=None, help="results JSON")
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke
    args.steps = args.steps or (4 if smoke else 200)
    args.batch_size = args.batch_size or (4 if smoke else 16)
    args.seq_len = args.seq_len or (64 if smoke else 384)
    if args.output is None:
        args.output = os.path.join(os.environ["OUT"], "gpu_check.json") if os.environ.get("OUT") else None
    return args


def gpu_info(args):
    """Device name, count (nvidia-smi -L, else torch), bf16 support and peak FLOPs; None without a usable GPU."""
    import torch

    if args.cpu_smoke or not torch.cuda.is_available():
        return None
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
        count = sum(line.startswith("GPU ") for line in listing.splitlines())
    except (OSError, subprocess.SubprocessError):
        count = 0
    name = torch.cuda.get_device_name(0)
    half, single = next(((h, s) for key, h, s in PEAK_TFLOPS if key in name), (None, None))
    return {
        "name": name, "count": count or torch.cuda.device_count(), "bf16": torch.cuda.is_bf16_supported(),
        "peak_tflops": {"fp16": args.peak_tflops or half, "bf16": args.peak_tflops or half,
                        "fp32": args.peak_tflops_fp32 or single},
    }


def build(work, smoke):
    """The model (tiny for the smoke run, BERT-base-sized otherwise) and the data; returns their paths."""
    from toy import data as toy_data
    from toy import models as toy_models

    if smoke:
        model = toy_models.build_tiny_model("bert", str(work / "tiny-bert"))
        n_train, n_dev = 32, 16
    else:
        model = str(work / "bert-base-random")
        os.makedirs(model, exist_ok=True)
        tokenizer = toy_models.make_tokenizer("bert", model)
        import torch
        from transformers import BertConfig, BertForQuestionAnswering

        torch.manual_seed(0)
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
        BertForQuestionAnswering(config).save_pretrained(model)
        n_train, n_dev = 4000, 300
    train = toy_data.write_qa_file(toy_data.make_templated_qa(n_train, seed=1), str(work / "train.json"), "flat")
    dev_records = toy_data.make_templated_qa(n_dev, seed=2)
    dev = toy_data.write_qa_file(dev_records, str(work / "dev.json"), "flat")
    return model, train, dev, [r["id"] for r in dev_records]


def command(args, model, train, dev, out_dir, precision, setting, processes=1):
    """The run_qa.py command line for one run (the global batch is split over the processes)."""
    flags = [
        str(REPO / "run_qa.py"), "--model_name_or_path", model, "--train_file", train, "--validation_file", dev,
        "--do_train", "--do_eval", "--output_dir", out_dir, "--overwrite_output_dir",
        "--max_seq_length", str(args.seq_len), "--doc_stride", str(args.seq_len // 4),
        "--per_device_train_batch_size", str(args.batch_size // processes), "--per_device_eval_batch_size", "32",
        "--max_steps", str(args.steps), "--learning_rate", str(LEARNING_RATES[setting]), "--warmup_ratio", "0.1",
        "--logging_steps", str(max(1, args.steps // 20)), "--save_strategy", "no", "--seed", "42",
        "--report_to", "none", "--disable_tqdm", "true",
    ]
    if setting != "full":
        flags += ["--train_adapter", "--adapter_config", setting]
    if precision != "fp32":
        flags.append(f"--{precision}")
    if args.cpu_smoke:
        flags.append("--use_cpu")  # the smoke run stays on the CPU even on a GPU machine
    if processes == 1:
        return [sys.executable] + flags
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] + flags


def run_one(args, paths, work, name, precision, setting, launch=None, processes=1):
    """One run; returns its record (numbers read from the files run_qa.py wrote) or raises RuntimeError."""
    model, train, dev, dev_ids = paths
    out_dir = work / name
    cmd = command(args, model, train, dev, str(out_dir), precision, setting, processes) + (launch or [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    with open(work / f"{name}.log", "w") as log:
        returncode = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                    timeout=1800).returncode
    if returncode != 0:
        with open(work / f"{name}.log") as log:
            raise RuntimeError(f"{name} exited with {returncode}:\n{log.read()[-3000:]}")
    with open(out_dir / "trainer_state.json") as f:
        state = json.load(f)
    with open(out_dir / "train_results.json") as f:
        train_results = json.load(f)
    with open(out_dir / "eval_results.json") as f:
        eval_results = json.load(f)
    return {
        "name": name, "model": "tiny" if args.cpu_smoke else "bert-base-random", "precision": precision,
        "setting": setting, "processes": processes, "steps": state["global_step"],
        "losses": [h["loss"] for h in state["log_history"] if "loss" in h],
        "train_runtime_s": train_results["train_runtime"],
        "samples_per_second": train_results["train_samples_per_second"], "total_flos": state["total_flos"],
        "eval_f1": eval_results["eval_f1"], "eval_exact_match": eval_results["eval_exact_match"],
        "predictions_valid": predictions_valid(out_dir / "eval_predictions.json", dev_ids),
    }


def predictions_valid(path, ids):
    """eval_predictions.json is a JSON object with one text answer per evaluation question."""
    try:
        with open(path) as f:
            predictions = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(predictions, dict) and sorted(predictions) == sorted(ids) and all(
        isinstance(v, str) for v in predictions.values())


def add_mfu(record, gpu):
    """Model FLOPs utilisation from the Trainer's total_flos, when the GPU's peak is known."""
    peak = gpu and gpu["peak_tflops"].get(record["precision"])
    achieved = record["total_flos"] / record["train_runtime_s"]
    record["achieved_tflops"] = achieved / 1e12
    record["mfu"] = achieved / (peak * 1e12 * record["processes"]) if peak else None
    return record


def plan(args, gpu):
    """(name, precision, setting, extra launcher flags, processes) of every run, fp32 first in each setting."""
    precisions = ["fp32"] if gpu is None else ["fp32", "fp16"] + (["bf16"] if gpu["bf16"] else [])
    runs = [(f"{s}-{p}", p, s, None, 1) for s in args.settings.split(",") for p in precisions]
    if gpu is not None and gpu["count"] >= 2 and "seq_bn" in args.settings.split(","):
        runs.append(("seq_bn-fp16-ddp2", "fp16", "seq_bn", None, 2))
        if importlib.util.find_spec("deepspeed") is not None:
            zero2 = ["--deepspeed", str(REPO / "configs" / "ds_zero2.json")]
            runs.append(("seq_bn-fp16-zero2", "fp16", "seq_bn", zero2, 2))
    return runs


def checks_for(records, failures, tolerance):
    """Pass/fail lines: each run finished with finite losses and valid predictions, F1 close to fp32's."""
    checks = [{"name": f"{name} finished", "ok": False, "detail": error} for name, error in failures]
    fp32 = {r["setting"]: r for r in records if r["precision"] == "fp32" and r["processes"] == 1}
    for r in records:
        finite = bool(r["losses"]) and all(math.isfinite(x) for x in r["losses"])
        checks.append({"name": f"{r['name']} losses finite", "ok": finite, "detail": r["losses"][-3:]})
        checks.append({"name": f"{r['name']} predictions valid", "ok": r["predictions_valid"], "detail": None})
        reference = fp32.get(r["setting"])
        if reference is not None and reference is not r:
            gap = abs(r["eval_f1"] - reference["eval_f1"])
            checks.append({"name": f"{r['name']} F1 within {tolerance} of fp32", "ok": gap <= tolerance,
                           "detail": {"f1": r["eval_f1"], "fp32_f1": reference["eval_f1"], "gap": gap}})
    return checks


def main(argv=None):
    args = parse_args(argv)
    gpu = gpu_info(args)
    if gpu is None and not args.cpu_smoke:
        sys.exit("error: no CUDA GPU visible; use --cpu_smoke for the CPU run")
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    paths = build(work, args.cpu_smoke)
    records, failures, skipped = [], [], []
    if gpu is None or gpu["count"] < 2:
        skipped.append("DDP and ZeRO-2: fewer than 2 GPUs")
    elif importlib.util.find_spec("deepspeed") is None:
        skipped.append("ZeRO-2: deepspeed is not installed")
    for name, precision, setting, launch, processes in plan(args, gpu):
        try:
            records.append(add_mfu(run_one(args, paths, work, name, precision, setting, launch, processes), gpu))
        except (RuntimeError, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as err:
            failures.append((name, str(err)))
            print(f"  {name:20s} FAILED: {str(err)[:300]}", flush=True)
            continue
        r = records[-1]
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"  {name:20s} F1 {r['eval_f1']:6.2f}  {r['samples_per_second']:8.1f} samples/s  MFU {mfu}  "
              f"last loss {r['losses'][-1] if r['losses'] else float('nan'):.4f}", flush=True)
    checks = checks_for(records, failures, args.f1_tolerance)
    ok = all(c["ok"] for c in checks) and not failures
    import torch  # noqa: F401  (for the machine description)

    results = {
        "benchmark": "run_qa.py fp32/fp16/bf16 and multi-GPU training check",
        "mode": "cpu_smoke" if args.cpu_smoke else "gpu", "command": " ".join(sys.argv),
        "steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len, "gpu": gpu,
        "mfu_note": "total_flos is the Trainer's 6 x parameters x tokens estimate; adapter runs do less work",
        "runs": records, "skipped": skipped, "checks": checks, "ok": ok, "machine": machine(),
    }
    write_results("gpu_check", results, args.output)
    print(f"{sum(c['ok'] for c in checks)}/{len(checks)} checks passed" + ("" if ok else " - FAILED"))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
