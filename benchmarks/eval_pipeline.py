#!/usr/bin/env python
"""Where an evaluation's time goes: `python run_qa.py --do_eval` on a SQuAD-v2-dev-sized set with a tiny model, each
stage timed, for the padded default and for --pad_to_max_length False.

    python benchmarks/eval_pipeline.py                    # 11,000 questions, max_seq_length 384
    python benchmarks/eval_pipeline.py --questions 2000   # quicker

run_qa.main() runs in this process with timers around its steps: feature building (tokenizing the examples into
windows, --overwrite_cache so that it is measured), the model's forward passes (the prediction loop), post-processing
with its prediction files written, and the SQuAD metric. "other" is the rest of main(): start-up, loading the data, the model and the tokenizer, the
checks, logging. The model is the tests' tiny BERT (2 layers x 32), so the forward passes are as cheap as they get and
everything else shows: that share is the figure to drive down. The data are the toy templated questions
(toy/data.py, a third unanswerable; one window each unless --long_contexts).
Writes benchmarks/results/eval_pipeline.json (or --output).
"""
import argparse
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # a 32-wide model: more threads only wait for each other
sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from _common import machine, write_results  # noqa: E402

import run_qa  # noqa: E402
import trainer_qa  # noqa: E402
from toy import data as toy_data  # noqa: E402
from toy import models as tiny_models  # noqa: E402

STAGES = ("features", "forward", "post-processing and files", "metric")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=11000, help="questions (SQuAD v2 dev has 11873)")
    parser.add_argument("--max_seq_length", type=int, default=384)
    parser.add_argument("--batch_size", type=int, default=64, help="--per_device_eval_batch_size")
    parser.add_argument("--long_contexts", action="store_true", help="contexts of several windows (slower)")
    parser.add_argument("--output", default=None, help="results JSON (default benchmarks/results/eval_pipeline.json)")
    return parser.parse_args(argv)


def timed(function, stage, clock):
    """function, adding its wall time to clock[stage]."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            clock[stage] += time.perf_counter() - start
    return wrapper


def run_once(model, dev_file, out, args, dynamic: bool) -> dict:
    """One `run_qa.py --do_eval`, with {stage: seconds} and the total."""
    clock = dict.fromkeys(STAGES, 0.0)
    patches = [(run_qa, "build_stage_features", "features"), (trainer_qa.QuestionAnsweringTrainer,
               "_prediction_loop", "forward"), (run_qa, "postprocess_qa_predictions", "post-processing and files"),
               (run_qa, "compute_squad_eval_metrics", "metric")]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, stage in patches:
        setattr(owner, name, timed(getattr(owner, name), stage, clock))
    argv = ["--model_name_or_path", model, "--validation_file", dev_file, "--do_eval", "--output_dir", str(out),
            "--overwrite_output_dir", "--overwrite_cache", "--max_seq_length", str(args.max_seq_length),
            "--doc_stride", "128", "--per_device_eval_batch_size", str(args.batch_size), "--report_to", "none",
            "--version_2_with_negative", "--disable_tqdm", "true", "--log_level", "warning"]
    if dynamic:
        argv += ["--pad_to_max_length", "False"]
    start = time.perf_counter()
    try:
        run_qa.main(argv)
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    total = time.perf_counter() - start
    clock["other"] = total - sum(clock.values())
    return {"total_s": total, "stages_s": clock,
            "not_forward_share": 1 - clock["forward"] / total}


def main(argv=None):
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="eval_pipeline_"))
    model = tiny_models.build_tiny_model("bert", str(work / "tiny-bert"))
    records = toy_data.make_templated_qa(args.questions, seed=7, version_2=True, long_context=args.long_contexts)
    dev_file = toy_data.write_qa_file(records, str(work / "dev.json"), "flat")
    modes = {}
    for name, dynamic in (("padded (default)", False), ("--pad_to_max_length False", True)):
        modes[name] = run_once(model, dev_file, work / name.split()[0].strip("-"), args, dynamic)
    print(f"\n{args.questions} questions, max_seq_length {args.max_seq_length}, tiny BERT\n")
    print(f"{'stage':26s}" + "".join(f"{name:>28s}" for name in modes))
    for stage in STAGES + ("other",):
        print(f"{stage:26s}" + "".join(f"{m['stages_s'][stage]:27.2f}s" for m in modes.values()))
    print(f"{'total':26s}" + "".join(f"{m['total_s']:27.2f}s" for m in modes.values()))
    print(f"{'not the forward pass':26s}" + "".join(f"{m['not_forward_share']:27.0%} " for m in modes.values()))
    results = {
        "benchmark": "run_qa.py --do_eval, stage by stage",
        "command": "python benchmarks/eval_pipeline.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "data": {"questions": args.questions, "max_seq_length": args.max_seq_length, "version_2_with_negative": True,
                 "model": "tiny BERT (toy/models.py: 2 layers x 32)"},
        "modes": modes, "machine": machine(),
    }
    write_results("eval_pipeline", results, args.output)
    return results


if __name__ == "__main__":
    main()
