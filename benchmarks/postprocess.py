#!/usr/bin/env python
"""Post-processing at SQuAD-v2-dev scale, the way run_qa.py runs it at every evaluation: utils_qa's
postprocess_qa_predictions against the upstream loop (toy/upstream.py), in one run, with a check that both give the
same files (predictions and null odds byte for byte; n-best lists: texts exactly, numbers to a relative 1e-6).

    python benchmarks/postprocess.py                     # ~11k questions, ~11.5k features of 384 tokens, v2
    python benchmarks/postprocess.py --examples 2000     # quicker

Four settings: model-like logits (low outside the context, peaks at an answer) and random logits (which keep more
candidates alive), each with the features memory-mapped from a cache file (as run_qa.py's come from the datasets
cache) and in memory. Each time is the median of alternating runs in one process. Per setting:

- compute: post-processing without files, ours against the upstream loop's (target: at least 5x);
- with files: post-processing with its three prediction files on disk, ours (json, the n-best lists on one line)
  against the upstream loop with its json.dump(indent=4) files (target: at least 4x);
- + metric: ours with its files and then the SQuAD v2 metric, what an evaluation waits for after the forward passes
  (the metric is the same function for both, so it is not part of the ratios).

Writes benchmarks/results/postprocess.json (or --output).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # the loop's progress bar would flood the output
sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from _common import Timer, machine, median, write_results  # noqa: E402

from qa_data import read_column  # noqa: E402
from squad_metric import compute_squad_v2  # noqa: E402
from toy.synthetic_squad import make_case  # noqa: E402
from toy.upstream import reference_postprocess_qa_predictions  # noqa: E402
from utils_qa import postprocess_qa_predictions  # noqa: E402

TARGETS = {"compute": 5.0, "with_files": 4.0}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=11000, help="questions (SQuAD v2 dev has 11873)")
    parser.add_argument("--width", type=int, default=384, help="max_seq_length of the features")
    parser.add_argument("--multi_window_rate", type=float, default=0.04,
                        help="share of contexts longer than one window (2-3 features each)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each variant per setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="results JSON (default benchmarks/results/postprocess.json)")
    return parser.parse_args(argv)


def metric(examples, answers):
    """What run_qa.py does next: the SQuAD v2 metric (no_answer_probability 0.0, as the script passes it)."""
    formatted = [{"id": k, "prediction_text": v, "no_answer_probability": 0.0} for k, v in answers.items()]
    ids, references = read_column(examples, "id"), read_column(examples, "answers")
    return compute_squad_v2(formatted, [{"id": i, "answers": a} for i, a in zip(ids, references)])


def timed_runs(examples, features, logits, work: Path, repeats: int) -> dict:
    """{variant: {"wall": [...], "cpu": [...]}}, the variants run in turn `repeats` times."""
    def files(name):
        return {"output_dir": str(work / name), "prefix": "eval"}

    variants = {
        "upstream_compute": lambda: reference_postprocess_qa_predictions(examples, features, logits, True),
        "ours_compute": lambda: postprocess_qa_predictions(examples, features, logits, True),
        "upstream_with_files": lambda: reference_postprocess_qa_predictions(
            examples, features, logits, True, **files("upstream_with_files")),
        "ours_with_files": lambda: postprocess_qa_predictions(examples, features, logits, True,
                                                              **files("ours_with_files")),
        "ours_with_files_and_metric": lambda: metric(examples, postprocess_qa_predictions(
            examples, features, logits, True, **files("ours_with_files_and_metric")).answers),
    }
    times = {name: {"wall": [], "cpu": []} for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            (work / name).mkdir(exist_ok=True)
            with Timer() as timer:
                run()
            times[name]["wall"].append(timer.wall)
            times[name]["cpu"].append(timer.cpu)
    return times


def same_files(upstream: Path, ours: Path) -> bool:
    """Predictions and null odds byte for byte; n-best lists with the same texts, numbers to a relative 1e-6."""
    names = ["eval_nbest_predictions.json", "eval_null_odds.json", "eval_predictions.json"]
    if sorted(os.listdir(upstream)) != names or sorted(os.listdir(ours)) != names:
        return False
    if any((upstream / n).read_bytes() != (ours / n).read_bytes() for n in names[1:]):
        return False
    theirs, mine = (json.loads((folder / names[0]).read_text()) for folder in (upstream, ours))
    if list(theirs) != list(mine):
        return False
    if any([e["text"] for e in theirs[k]] != [e["text"] for e in mine[k]] for k in theirs):
        return False
    numbers = [[e[key] for k in nbest for e in nbest[k] for key in ("start_logit", "end_logit", "probability")]
               for nbest in (theirs, mine)]
    return bool(np.allclose(numbers[1], numbers[0], rtol=1e-6, atol=0))


def run_setting(args, peaked: bool, memory_mapped: bool, work: Path) -> dict:
    examples, features, logits = make_case(args.examples, seed=args.seed, width=args.width, version_2=True,
                                           multi_window_rate=args.multi_window_rate, peaked=peaked)
    if memory_mapped:  # as run_qa.py's features are: written to a cache file in batches of 1,000, mapped back
        features = features.with_format("arrow").map(
            lambda batch: batch, batched=True, cache_file_name=str(work / "features.arrow")
        ).with_format(None)
    # else: make_case's features are an in-memory table already
    times = timed_runs(examples, features, logits, work, args.repeats)
    wall = {name: median(t["wall"]) for name, t in times.items()}
    setting = {
        "logits": "model-like" if peaked else "random", "features": "memory-mapped" if memory_mapped else "in memory",
        "examples": len(examples), "features_count": len(features),
        "median_wall_s": wall,
        "median_cpu_s": {name: median(t["cpu"]) for name, t in times.items()},
        "ratio_wall": {"compute": wall["upstream_compute"] / wall["ours_compute"],
                       "with_files": wall["upstream_with_files"] / wall["ours_with_files"]},
        "same_files": same_files(work / "upstream_with_files", work / "ours_with_files"),
        "runs": times,
    }
    ratio = setting["ratio_wall"]
    print(f"{setting['logits']:>10s} {setting['features']:>13s} | {wall['upstream_compute']:8.2f} "
          f"{wall['ours_compute']:6.2f} {ratio['compute']:5.1f}x | {wall['upstream_with_files']:8.2f} "
          f"{wall['ours_with_files']:6.2f} {ratio['with_files']:5.1f}x | {wall['ours_with_files_and_metric']:8.2f} | "
          f"{setting['same_files']}", flush=True)
    return setting


def main(argv=None):
    args = parse_args(argv)
    print(f"{args.examples} questions, v2, seconds (median of {args.repeats} runs, wall clock); "
          f"targets: compute >= {TARGETS['compute']}x, with files >= {TARGETS['with_files']}x\n")
    print(f"{'logits':>10s} {'features':>13s} | {'compute: upstream   ours ratio':>30s} | "
          f"{'with files: upstream   ours ratio':>33s} | {'+ metric':>8s} | same files")
    settings = []
    for peaked in (True, False):
        for memory_mapped in (True, False):
            work = Path(tempfile.mkdtemp(prefix="postprocess_bench_"))
            try:
                settings.append(run_setting(args, peaked, memory_mapped, work))
            finally:
                shutil.rmtree(work, ignore_errors=True)
    met = {kind: all(s["ratio_wall"][kind] >= target for s in settings) for kind, target in TARGETS.items()}
    results = {
        "benchmark": "post-processing (compute; with its files; with the metric) vs the upstream loop",
        "command": "python benchmarks/postprocess.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "repeats": args.repeats, "targets": TARGETS, "targets_met": met,
        "same_files": all(s["same_files"] for s in settings), "settings": settings, "machine": machine(),
    }
    print(f"\ntargets met: {met}; load average (1 min) {results['machine']['load_average_1min']:.1f}")
    write_results("postprocess", results, args.output)
    if not results["same_files"]:
        sys.exit("error: the prediction files differ from the upstream loop's")
    return results


if __name__ == "__main__":
    main()
