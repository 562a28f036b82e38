#!/usr/bin/env python
"""Peak memory of adapter training with and without --gradient_checkpointing, measured on run_qa.py itself.

Model: a BERT of --layers x --hidden (default 6 x 384, 6 heads, random weights) with the toy WordPiece tokenizer
(toy/models.py), built here, so nothing is downloaded. Data: toy long-context SQuAD-style examples (toy/data.py), so
every window is a full --seq_len tokens. Settings: seq_bn and LoRA adapters, each trained for --steps steps of
--batch_size windows, once without and once with --gradient_checkpointing.

Each run is `python run_qa.py ...` started from a fresh helper process (`--measure`), which reports the peak resident
memory of that one run (getrusage(RUSAGE_CHILDREN).ru_maxrss: the helper has no other child, so the number is this
run's own). That is the whole process: weights, data, activations, gradients, optimiser state. The per-step losses of
the two runs are compared too: checkpointing recomputes activations, it must not change the numbers.

    python benchmarks/memory_savers.py                    # ~4 minutes on 2 CPU cores
    python benchmarks/memory_savers.py --layers 12 --hidden 768 --steps 2 --settings seq_bn

Writes benchmarks/results/memory_savers.json (or --output).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
from _common import machine, write_results  # noqa: E402

SETTINGS = ("seq_bn", "lora")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384, help="hidden size (heads: hidden / 64)")
    parser.add_argument("--seq_len", type=int, default=384)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated adapter configs")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs (default: inherited)")
    parser.add_argument("--work", default=None, help="folder for model, data and runs (default: a temporary one)")
    parser.add_argument("--output", default=None, help="results JSON (default benchmarks/results/memory_savers.json)")
    return parser.parse_args(argv)


def measure(command):
    """Helper-process mode: run command, print its exit code and peak resident memory (MB) as one JSON line."""
    returncode = subprocess.run(command).returncode
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
    print(json.dumps({"returncode": returncode, "peak_rss_mb": peak_mb}))
    return returncode


def build_model(folder, layers, hidden, seq_len):
    """A random BertForQuestionAnswering of the given size, saved with the toy tokenizer."""
    from transformers import BertConfig, BertForQuestionAnswering

    from toy import models as toy_models

    os.makedirs(folder, exist_ok=True)
    tokenizer = toy_models.make_tokenizer("bert", folder)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                        max_position_embeddings=max(512, seq_len), pad_token_id=tokenizer.pad_token_id)
    import torch

    torch.manual_seed(0)
    model = BertForQuestionAnswering(config)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def write_data(path, windows_needed):
    """Long-context toy examples: each one gives ~10+ windows of 384 tokens, so a few examples fill the steps."""
    from toy import data as toy_data

    return toy_data.write_qa_file(toy_data.make_templated_qa(max(8, windows_needed // 4), seed=3, long_context=True),
                                  path, "flat")


def run_qa(args, model, train_file, out_dir, setting, checkpointing):
    """One measured run_qa.py training run; returns peak memory, run time and per-step losses."""
    command = [
        sys.executable, str(REPO / "run_qa.py"), "--model_name_or_path", model, "--train_file", train_file,
        "--do_train", "--output_dir", out_dir, "--overwrite_output_dir", "--train_adapter", "--adapter_config", setting,
        "--max_seq_length", str(args.seq_len), "--doc_stride", str(args.seq_len // 3),
        "--per_device_train_batch_size", str(args.batch_size), "--max_steps", str(args.steps),
        "--learning_rate", "1e-3", "--logging_steps", "1", "--save_strategy", "no",
        "--report_to", "none", "--disable_tqdm", "true", "--log_level", "warning",
    ] + (["--gradient_checkpointing"] if checkpointing else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    result = subprocess.run([sys.executable, __file__, "--measure", *command], capture_output=True, text=True,
                            env=env, cwd=REPO)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if report["returncode"] != 0:
        sys.exit(f"error: {setting} (checkpointing {checkpointing}) failed:\n{result.stderr[-3000:]}")
    with open(os.path.join(out_dir, "trainer_state.json")) as f:
        history = json.load(f)["log_history"]
    with open(os.path.join(out_dir, "train_results.json")) as f:
        runtime = json.load(f)["train_runtime"]
    return {"peak_rss_mb": report["peak_rss_mb"], "train_runtime_s": runtime,
            "losses": [h["loss"] for h in history if "loss" in h]}


def compare(setting, plain, checkpointed):
    """One row of the table: memory ratio, time ratio, and whether the losses agree."""
    same = len(plain["losses"]) == len(checkpointed["losses"]) and all(
        abs(a - b) <= 1e-4 * max(1.0, abs(a)) for a, b in zip(plain["losses"], checkpointed["losses"]))
    return {
        "setting": setting, "without": plain, "with": checkpointed,
        "peak_ratio": checkpointed["peak_rss_mb"] / plain["peak_rss_mb"],
        "saved_mb": plain["peak_rss_mb"] - checkpointed["peak_rss_mb"],
        "time_ratio": checkpointed["train_runtime_s"] / plain["train_runtime_s"],
        "same_losses": same,
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--measure":
        return measure(argv[1:])
    args = parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="memory_savers-"))
    model = str(work / "model")
    parameters = build_model(model, args.layers, args.hidden, args.seq_len)
    train_file = write_data(str(work / "train.json"), args.batch_size * args.steps)
    print(f"BERT {args.layers} x {args.hidden} ({parameters / 1e6:.1f}M parameters), batch {args.batch_size} x "
          f"{args.seq_len} tokens, {args.steps} steps", flush=True)
    table = []
    for setting in args.settings.split(","):
        runs = {}
        for checkpointing in (False, True):
            runs[checkpointing] = run_qa(args, model, train_file, str(work / f"{setting}-{checkpointing}"),
                                         setting, checkpointing)
            print(f"  {setting:7s} gradient checkpointing {str(checkpointing):5s}: peak "
                  f"{runs[checkpointing]['peak_rss_mb']:7.0f} MB, {runs[checkpointing]['train_runtime_s']:6.1f} s",
                  flush=True)
        table.append(compare(setting, runs[False], runs[True]))
    print(f"\n{'setting':8s}{'without (MB)':>14s}{'with (MB)':>11s}{'ratio':>7s}{'time ratio':>12s}  same losses")
    for row in table:
        print(f"{row['setting']:8s}{row['without']['peak_rss_mb']:14.0f}{row['with']['peak_rss_mb']:11.0f}"
              f"{row['peak_ratio']:7.2f}{row['time_ratio']:12.2f}  {row['same_losses']}")
    import torch  # noqa: F401  (for the machine description)

    results = {
        "benchmark": "run_qa.py adapter training: peak memory with vs without --gradient_checkpointing",
        "command": "python benchmarks/memory_savers.py " + " ".join(argv),
        "model": {"layers": args.layers, "hidden": args.hidden, "parameters": parameters},
        "batch_size": args.batch_size, "seq_len": args.seq_len, "steps": args.steps,
        "memory_measure": "peak resident memory of the whole run_qa.py process (ru_maxrss), one process per run",
        "table": table,
        "machine": machine(),
    }
    write_results("memory_savers", results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
