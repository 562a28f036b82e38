#!/usr/bin/env python
"""Post-processing speed at SQuAD-v2-dev scale: utils_qa.postprocess_qa_predictions (vectorised) against the
straightforward loop it replaced, in one run, with an identical-output check.

    python benchmarks/postprocess.py                     # ~11k questions, ~11.5k features of 384 tokens, v2
    python benchmarks/postprocess.py --examples 2000     # quicker

Data: synthetic SQuAD-like examples and features with the columns run_qa.py gives them (input_ids, token_type_ids,
attention_mask, offset_mapping with None outside the context, example_id; a few long contexts split into 2-3
windows), from toy.synthetic_squad.make_case, the features written to a cache file and memory-mapped like run_qa.py's.
Logits look like a trained model's by default (low outside the context, peaks at an answer; --random_logits for
noise). The loop is the verbatim upstream copy kept in toy/upstream.py (with its own file writing). Repetitions
alternate between the two implementations; medians of wall-clock and CPU time are reported (the machine may be
shared). Timed without writing files (both build the same n-best lists); one more run of each writes the three JSON
files, timed too, and all files and return values are compared byte for byte.

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
from toy.synthetic_squad import make_case  # noqa: E402
from toy.upstream import reference_postprocess_qa_predictions  # noqa: E402
from utils_qa import postprocess_qa_predictions  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=11000, help="questions (SQuAD v2 dev has 11873)")
    parser.add_argument("--width", type=int, default=384, help="max_seq_length of the features")
    parser.add_argument("--multi_window_rate", type=float, default=0.04,
                        help="share of contexts longer than one window (2-3 features each)")
    parser.add_argument("--version_1", action="store_true", help="SQuAD v1 post-processing (default: v2)")
    parser.add_argument("--random_logits", action="store_true", help="noise logits instead of model-like ones")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each implementation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="results JSON (default benchmarks/results/postprocess.json)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    v2 = not args.version_1
    print(f"building {args.examples} examples ...", flush=True)
    examples, features, logits = make_case(
        args.examples, seed=args.seed, width=args.width, version_2=v2, multi_window_rate=args.multi_window_rate,
        peaked=not args.random_logits,
    )
    # As run_qa.py's features are: written to the datasets cache in batches of 1,000 and memory-mapped back.
    work = tempfile.mkdtemp(prefix="postprocess_bench_")
    features = features.with_format("arrow").map(
        lambda batch: batch, batched=True, cache_file_name=os.path.join(work, "features.arrow")
    ).with_format(None)
    print(f"{len(examples)} examples, {len(features)} features of {args.width} tokens, "
          f"{'v2' if v2 else 'v1'}, {'random' if args.random_logits else 'model-like'} logits", flush=True)
    implementations = {"loop": reference_postprocess_qa_predictions, "vectorised": postprocess_qa_predictions}
    kwargs = {"version_2_with_negative": v2}

    # Warm-up on a small case (first-call costs), then alternate timed runs.
    warm = make_case(100, seed=args.seed + 1, width=args.width, version_2=v2, peaked=not args.random_logits)
    for function in implementations.values():
        function(*warm, **kwargs)
    times = {name: {"wall": [], "cpu": []} for name in implementations}
    for repeat in range(args.repeats):
        for name, function in implementations.items():
            with Timer() as timer:
                function(examples, features, logits, **kwargs)
            times[name]["wall"].append(timer.wall)
            times[name]["cpu"].append(timer.cpu)
            print(f"  run {repeat + 1}: {name:10s} wall {timer.wall:7.3f} s  cpu {timer.cpu:7.3f} s", flush=True)

    # With the prediction files, once each; outputs compared.
    with tempfile.TemporaryDirectory() as tmp:
        returned, with_files = {}, {}
        for name, function in implementations.items():
            out_dir = Path(tmp) / name
            out_dir.mkdir()
            with Timer() as timer:
                returned[name] = function(examples, features, logits, output_dir=str(out_dir), prefix="eval", **kwargs)
            with_files[name] = {"wall": timer.wall, "cpu": timer.cpu}
        names = sorted(p.name for p in (Path(tmp) / "loop").iterdir())
        same_files = names == sorted(p.name for p in (Path(tmp) / "vectorised").iterdir()) and all(
            filecmp.cmp(Path(tmp) / "loop" / n, Path(tmp) / "vectorised" / n, shallow=False) for n in names
        )
    identical = same_files and list(returned["loop"].items()) == list(returned["vectorised"].items())
    answers = list(returned["loop"].values())

    summary = {name: {kind: median(values) for kind, values in t.items()} for name, t in times.items()}
    ratio = {kind: summary["loop"][kind] / summary["vectorised"][kind] for kind in ("wall", "cpu")}
    ratio_files = {kind: with_files["loop"][kind] / with_files["vectorised"][kind] for kind in ("wall", "cpu")}
    print()
    print(f"{'':24s}{'loop':>10s}{'vectorised':>12s}{'ratio':>8s}")
    for kind in ("wall", "cpu"):
        print(f"{'median ' + kind + ' time (s)':24s}{summary['loop'][kind]:10.3f}{summary['vectorised'][kind]:12.3f}"
              f"{ratio[kind]:7.1f}x")
    for kind in ("wall", "cpu"):
        print(f"{'with files, ' + kind + ' (s)':24s}{with_files['loop'][kind]:10.3f}"
              f"{with_files['vectorised'][kind]:12.3f}{ratio_files[kind]:7.1f}x")
    print(f"identical predictions, n-best, null odds (files byte for byte): {identical}  ({names})")
    results = {
        "benchmark": "postprocess_qa_predictions: vectorised vs the loop",
        "command": "python benchmarks/postprocess.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "data": {
            "examples": len(examples), "features": len(features), "max_seq_length": args.width,
            "version_2_with_negative": v2, "logits": "random" if args.random_logits else "model-like",
            "null_answers": answers.count("") if v2 else None,
        },
        "repeats": args.repeats,
        "loop_s": summary["loop"], "vectorised_s": summary["vectorised"], "ratio": ratio,
        "runs": times,
        "with_files_s": with_files, "ratio_with_files": ratio_files,
        "identical_output": identical,
        "machine": machine(),
    }
    write_results("postprocess", results, args.output)
    shutil.rmtree(work, ignore_errors=True)
    if not identical:
        sys.exit("error: the vectorised post-processing differs from the loop")
    return results


if __name__ == "__main__":
    main()
