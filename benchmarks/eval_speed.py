#!/usr/bin/env python
"""Evaluation speed of run_qa.py with padded features (--pad_to_max_length True, the default) and with dynamic padding
(--pad_to_max_length False): the time of the evaluation, the ratio, and whether the metrics are equal.

    python benchmarks/eval_speed.py                          # the shared SQuAD slice, a tiny BERT; ~3 minutes
    python benchmarks/eval_speed.py --model_name_or_path PATH --all_questions --rounds 5

Three ways to evaluate, alternating within each of --rounds rounds (medians reported; the machine may be shared):
  padded           every feature padded to --max_seq_length (the reference default)
  dynamic-ordered  --pad_to_max_length False with the features batched in dataset order (what the reference does
                   with that flag: each batch padded to its longest feature)
  dynamic          --pad_to_max_length False as run_qa.py does it now: features batched longest first, each batch
                   padded to its own length, predictions put back in dataset order
Each run is `run_qa.main([...])` in this process with --do_eval; tokenized features come from the datasets cache
after the first round. Times: the evaluation loop (eval_runtime: model forward passes) and the whole evaluate()
call (loop + post-processing + metric), wall-clock and CPU time of this process.

Data: the 705 answerable questions of ../shared/data/squad2_dev_partial.json (SQuAD 2.0 dev), scored with SQuAD
v1.1, so that every prediction is a span and equal metrics mean equal spans (--all_questions: all 1,407, v2
scoring). Model: a tiny BERT (toy/models.py, 2 layers x 32) first trained for --train_steps steps on toy questions
padded to --max_seq_length, so that, like any trained model, it scores padding positions low: an untrained model
gives padding positions logits as high as real tokens', and padded evaluation then spends some of its n-best slots
on them (dynamic padding has no such positions), which changes answers. --model_name_or_path evaluates that model
instead. Writes benchmarks/results/eval_speed.json (or --output).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from _common import machine, median, write_results  # noqa: E402

VARIANTS = {
    "padded": ["--pad_to_max_length", "True"],
    "dynamic-ordered": ["--pad_to_max_length", "False"],
    "dynamic": ["--pad_to_max_length", "False"],
}
METRIC_KEYS_SKIPPED = ("runtime", "per_second", "model_preparation_time")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "squad2_dev_partial.json"))
    parser.add_argument("--model_name_or_path", default=None, help="default: a tiny BERT trained on toy questions")
    parser.add_argument("--train_steps", type=int, default=40, help="training of the default tiny BERT (0: none)")
    parser.add_argument("--all_questions", action="store_true", help="all questions, SQuAD v2 scoring")
    parser.add_argument("--max_seq_length", type=int, default=384)
    parser.add_argument("--doc_stride", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 is steadier on a machine shared with other jobs")
    parser.add_argument("--output", default=None, help="results JSON (default benchmarks/results/eval_speed.json)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(args.data):
        sys.exit(f"error: {args.data} not found (the shared SQuAD slice; pass --data FILE)")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="eval_speed_"))
    model = args.model_name_or_path
    if model is None:
        model = _tiny_bert(args, work)
    runs = _run_rounds(args, _eval_flags(args, model, work), work)
    summary = _summary(runs)
    _print_summary(summary)
    results = {
        "benchmark": "run_qa.py evaluation: padded vs dynamic padding (dataset order, length-batched)",
        "command": "python benchmarks/eval_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "data": args.data, "questions": "all (SQuAD v2 scoring)" if args.all_questions else "answerable (SQuAD v1.1)",
        "model": args.model_name_or_path
        or f"tiny BERT (toy/models.py: 2 layers x 32) trained {args.train_steps} steps on toy questions",
        "eval_samples": runs["padded"][0]["metrics"].get("eval_samples"), "max_seq_length": args.max_seq_length,
        "doc_stride": args.doc_stride, "batch_size": args.batch_size, "rounds": args.rounds,
        "variants": summary,
        "machine": machine(),
    }
    write_results("eval_speed", results, args.output)
    return results


def _tiny_bert(args, work):
    """The default model: a tiny BERT, trained for --train_steps steps on toy questions padded to --max_seq_length
    (so that it scores padding positions low, as a trained model does)."""
    import run_qa
    from toy import data as toy_data
    from toy import models as tiny_models

    model = tiny_models.build_tiny_model("bert", str(work / "tiny-bert"))
    if args.train_steps:
        print(f"training the tiny BERT for {args.train_steps} steps ...", flush=True)
        train_file = toy_data.write_qa_file(toy_data.make_templated_qa(16 * args.train_steps, seed=0),
                                            str(work / "toy_train.json"), "flat")
        run_qa.main(["--model_name_or_path", model, "--train_file", train_file, "--do_train",
                     "--output_dir", str(work / "trained"), "--max_seq_length", str(args.max_seq_length),
                     "--per_device_train_batch_size", "16", "--learning_rate", "3e-3", "--num_train_epochs", "1",
                     "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
                     "--cache_dir", str(work / "cache")])
        model = str(work / "trained")
    return model


def _eval_flags(args, model, work):
    """run_qa.py's flags shared by every evaluation, with the evaluation data: the answerable questions only, written
    to a file of their own, unless --all_questions."""
    from qa_data import load_qa_file
    from toy import data as toy_data

    data = args.data
    if not args.all_questions:
        examples = load_qa_file(args.data, str(work / "cache"))
        answerable = [dict(e) for e in examples if e["answers"]["text"]]
        data = toy_data.write_qa_file(answerable, str(work / "answerable.json"), "flat")
    common = ["--model_name_or_path", model, "--validation_file", data, "--do_eval",
              "--max_seq_length", str(args.max_seq_length), "--doc_stride", str(args.doc_stride),
              "--per_device_eval_batch_size", str(args.batch_size), "--report_to", "none", "--disable_tqdm", "true",
              "--cache_dir", str(work / "cache"), "--overwrite_output_dir"]
    if args.all_questions:
        common.append("--version_2_with_negative")
    if args.max_eval_samples:
        common += ["--max_eval_samples", str(args.max_eval_samples)]
    return common


def _run_rounds(args, common, work):
    """{variant: one result per round}: each round evaluates every variant in turn, in this process, writing to
    work/<variant>. evaluate() is wrapped to time it, and for dynamic-ordered the length sort is replaced by the
    dataset order; both are restored afterwards."""
    import run_qa
    import trainer_qa

    length_sorted = trainer_qa.QuestionAnsweringTrainer._length_sorted
    evaluate = trainer_qa.QuestionAnsweringTrainer.evaluate
    timings = {}

    def timed_evaluate(self, *a, **kw):
        start, cpu = time.perf_counter(), time.process_time()
        metrics = evaluate(self, *a, **kw)
        timings["evaluate_s"], timings["evaluate_cpu_s"] = time.perf_counter() - start, time.process_time() - cpu
        return metrics

    trainer_qa.QuestionAnsweringTrainer.evaluate = timed_evaluate
    runs = {name: [] for name in VARIANTS}
    try:
        for round_index in range(args.rounds):
            for name, flags in VARIANTS.items():
                trainer_qa.QuestionAnsweringTrainer._length_sorted = (
                    (lambda self, dataset: (dataset, None)) if name == "dynamic-ordered" else length_sorted
                )
                out = work / name
                run_qa.main(common + flags + ["--output_dir", str(out)])
                metrics = json.loads((out / "eval_results.json").read_text())
                runs[name].append({"eval_loop_s": metrics["eval_runtime"], "evaluate_s": timings["evaluate_s"],
                                   "evaluate_cpu_s": timings["evaluate_cpu_s"], "metrics": metrics,
                                   "predictions": json.loads((out / "eval_predictions.json").read_text())})
                print(f"  round {round_index + 1}: {name:16s} loop {metrics['eval_runtime']:7.2f} s  evaluate "
                      f"{timings['evaluate_s']:7.2f} s (cpu {timings['evaluate_cpu_s']:7.2f} s)  "
                      f"f1 {metrics.get('eval_f1'):.4f}", flush=True)
    finally:
        trainer_qa.QuestionAnsweringTrainer._length_sorted = length_sorted
        trainer_qa.QuestionAnsweringTrainer.evaluate = evaluate
    return runs


def _summary(runs):
    """Per variant: medians over the rounds, its metrics (timings left out), whether they and its predictions equal
    the padded evaluation's (first round), and its speed-ups over padded."""
    summary = {}
    reference = runs["padded"][0]
    for name, results in runs.items():
        scores = {k: v for k, v in results[0]["metrics"].items() if not any(s in k for s in METRIC_KEYS_SKIPPED)}
        summary[name] = {
            "eval_loop_s": median([r["eval_loop_s"] for r in results]),
            "evaluate_s": median([r["evaluate_s"] for r in results]),
            "evaluate_cpu_s": median([r["evaluate_cpu_s"] for r in results]),
            "metrics": scores,
            "metrics_equal_to_padded": all(
                abs(scores[k] - reference["metrics"][k]) <= 1e-4 for k in scores if k in reference["metrics"]
            ),
            "predictions_equal_to_padded": results[0]["predictions"] == reference["predictions"],
            "runs": [{k: v for k, v in r.items() if k != "predictions"} for r in results],
        }
    for name in VARIANTS:
        summary[name]["loop_speedup_vs_padded"] = summary["padded"]["eval_loop_s"] / summary[name]["eval_loop_s"]
        summary[name]["evaluate_speedup_vs_padded"] = summary["padded"]["evaluate_s"] / summary[name]["evaluate_s"]
        summary[name]["evaluate_cpu_speedup_vs_padded"] = (
            summary["padded"]["evaluate_cpu_s"] / summary[name]["evaluate_cpu_s"]
        )
    return summary


def _print_summary(summary):
    print()
    print(f"{'':18s}{'loop (s)':>10s}{'speed-up':>10s}{'evaluate (s)':>14s}{'speed-up':>10s}{'cpu (s)':>10s}"
          f"{'speed-up':>10s}  metrics = padded")
    for name, row in summary.items():
        print(f"{name:18s}{row['eval_loop_s']:10.2f}{row['loop_speedup_vs_padded']:9.2f}x{row['evaluate_s']:14.2f}"
              f"{row['evaluate_speedup_vs_padded']:9.2f}x{row['evaluate_cpu_s']:10.2f}"
              f"{row['evaluate_cpu_speedup_vs_padded']:9.2f}x  {row['metrics_equal_to_padded']}"
              f" (predictions {'identical' if row['predictions_equal_to_padded'] else 'differ'})")


if __name__ == "__main__":
    main()
