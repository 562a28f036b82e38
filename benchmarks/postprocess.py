#!/usr/bin/env python
"""Post-processing at SQuAD-v2-dev scale, the way run_qa.py runs it at every evaluation: utils_qa's
postprocess_qa_predictions with its three prediction files, against the upstream loop with its json.dump files, in one
run, with a byte-for-byte check of the files.

    python benchmarks/postprocess.py                     # ~11k questions, ~11.5k features of 384 tokens, v2
    python benchmarks/postprocess.py --examples 2000     # quicker

Four settings: model-like logits (low outside the context, peaks at an answer) and random logits (which keep more
candidates alive), each with the features memory-mapped from a cache file (as run_qa.py's come from the datasets
cache) and in memory. Each time is the median of alternating runs in one process. Per setting:

- upstream: the verbatim upstream loop (toy/upstream.py) writing its files with json.dump(indent=4);
- ours, as run_qa.py waits for it: post-processing returns once the files are handed to a background writer
  (prediction_files.py); the files reach the disk while the run goes on (the metric, the next training steps);
- ours, files on disk: the same until the background writer has finished;
- ours, files written in place (no background process), and compute only (no files);
- ours with the metric: as run_qa.py waits for it, then the SQuAD v2 metric (the upstream loop's metric is the same
  function, so it is not part of the ratios).

Writes benchmarks/results/postprocess.json (or --output).
"""
import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the loop's progress bar would flood the output
sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from _common import Timer, machine, median, write_results  # noqa: E402

from prediction_files import wait_for_prediction_files  # noqa: E402
from qa_data import read_column  # noqa: E402
from squad_metric import compute_squad_v2  # noqa: E402
from toy.synthetic_squad import make_case  # noqa: E402
from toy.upstream import reference_postprocess_qa_predictions  # noqa: E402
from utils_qa import postprocess_qa_predictions  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=11000, help="questions (SQuAD v2 dev has 11873)")
    parser.add_argument("--width", type=int, default=384, help="max_seq_length of the features")
    parser.add_argument("--multi_window_rate", type=float, default=0.04,
                        help="share of contexts longer than one window (2-3 features each)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each implementation per setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="results JSON (default benchmarks/results/postprocess.json)")
    return parser.parse_args(argv)


def metric(examples, predictions):
    """What run_qa.py does next: the SQuAD v2 metric (no_answer_probability 0.0, as the script passes it)."""
    formatted = [{"id": k, "prediction_text": v, "no_answer_probability": 0.0} for k, v in predictions.items()]
    ids, answers = read_column(examples, "id"), read_column(examples, "answers")
    references = [{"id": i, "answers": a} for i, a in zip(ids, answers)]
    return compute_squad_v2(formatted, references)


def timed_runs(examples, features, logits, work: Path, repeats: int) -> dict:
    """{variant: {"wall": [...], "cpu": [...]}}, the variants run in turn `repeats` times."""
    def upstream(out):
        reference_postprocess_qa_predictions(examples, features, logits, True, output_dir=str(out), prefix="eval")

    def ours_as_run_qa_waits(out):
        postprocess_qa_predictions(examples, features, logits, True, output_dir=str(out), prefix="eval",
                                   background_files=True)

    def ours_files_on_disk(out):
        ours_as_run_qa_waits(out)
        wait_for_prediction_files()

    def ours_files_in_place(out):
        postprocess_qa_predictions(examples, features, logits, True, output_dir=str(out), prefix="eval")

    def ours_compute_only(out):
        postprocess_qa_predictions(examples, features, logits, True)

    def ours_with_the_metric(out):
        metric(examples, postprocess_qa_predictions(examples, features, logits, True, output_dir=str(out),
                                                    prefix="eval", background_files=True))

    variants = {"upstream": upstream, "ours_as_run_qa_waits": ours_as_run_qa_waits,
                "ours_files_on_disk": ours_files_on_disk, "ours_files_in_place": ours_files_in_place,
                "ours_compute_only": ours_compute_only, "ours_with_the_metric": ours_with_the_metric}
    times = {name: {"wall": [], "cpu": []} for name in variants}
    for repeat in range(repeats):
        for name, run in variants.items():
            out = work / name
            out.mkdir(exist_ok=True)
            with Timer() as timer:
                run(out)
            wait_for_prediction_files()  # a background write never spills into the next timing
            times[name]["wall"].append(timer.wall)
            times[name]["cpu"].append(timer.cpu)
    return times


def identical_files(work: Path) -> bool:
    names = sorted(p.name for p in (work / "upstream").iterdir())
    return len(names) == 3 and all(
        sorted(p.name for p in (work / other).iterdir()) == names
        and all(filecmp.cmp(work / "upstream" / n, work / other / n, shallow=False) for n in names)
        for other in ("ours_as_run_qa_waits", "ours_files_on_disk", "ours_files_in_place", "ours_with_the_metric")
    )


def run_setting(args, peaked: bool, memory_mapped: bool, work: Path) -> dict:
    examples, features, logits = make_case(args.examples, seed=args.seed, width=args.width, version_2=True,
                                           multi_window_rate=args.multi_window_rate, peaked=peaked)
    if memory_mapped:  # as run_qa.py's features are: written to a cache file in batches of 1,000, mapped back
        features = features.with_format("arrow").map(
            lambda batch: batch, batched=True, cache_file_name=str(work / "features.arrow")
        ).with_format(None)
    # else: make_case's features are an in-memory table already
    times = timed_runs(examples, features, logits, work, args.repeats)
    summary = {name: {kind: median(values) for kind, values in t.items()} for name, t in times.items()}
    upstream = summary["upstream"]["wall"]
    setting = {
        "logits": "model-like" if peaked else "random", "features": "memory-mapped" if memory_mapped else "in memory",
        "examples": len(examples), "features_count": len(features),
        "median_wall_s": {name: s["wall"] for name, s in summary.items()},
        "median_cpu_s": {name: s["cpu"] for name, s in summary.items()},
        "ratio_wall": {name: upstream / s["wall"] for name, s in summary.items() if name != "upstream"},
        "identical_files": identical_files(work),
        "runs": times,
    }
    print(f"{setting['logits']:>10s} logits, {setting['features']:>13s}: upstream {upstream:6.2f} s | "
          + " | ".join(f"{name[5:]} {summary[name]['wall']:5.2f} s ({setting['ratio_wall'][name]:4.1f}x)"
                       for name in setting["ratio_wall"])
          + f" | files identical: {setting['identical_files']}", flush=True)
    return setting


def main(argv=None):
    args = parse_args(argv)
    print(f"{args.examples} questions, v2, post-processing with its prediction files (median of {args.repeats})")
    settings = []
    for peaked in (True, False):
        for memory_mapped in (True, False):
            work = Path(tempfile.mkdtemp(prefix="postprocess_bench_"))
            try:
                settings.append(run_setting(args, peaked, memory_mapped, work))
            finally:
                shutil.rmtree(work, ignore_errors=True)
    headline = {s["logits"] + ", " + s["features"]: s["ratio_wall"]["ours_as_run_qa_waits"] for s in settings}
    results = {
        "benchmark": "post-processing with its prediction files and the metric, as run_qa.py runs it, vs upstream",
        "command": "python benchmarks/postprocess.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "repeats": args.repeats, "headline_ratio_as_run_qa_waits": headline,
        "identical_files": all(s["identical_files"] for s in settings),
        "settings": settings, "machine": machine(),
    }
    write_results("postprocess", results, args.output)
    if not results["identical_files"]:
        sys.exit("error: the prediction files differ from the upstream loop's")
    return results


if __name__ == "__main__":
    main()
