#!/usr/bin/env python
"""Quickstart, offline: build a tiny BERT, write a small SQuAD-format set, train and evaluate a seq_bn adapter.

    python quickstart.py [--output_dir quickstart_output] [--epochs 8]

Everything is made locally (random-weight model, locally trained tokenizer, templated facts such as
"Alice lives in Paris." / "Where does Alice live?"), so it runs with no network and no downloads. It calls run_qa.py
exactly as a user would, then prints the scores before and after training and a few answers.
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # a 32-wide model: more threads only wait for each other (4x slower)

import run_qa  # noqa: E402  (after the offline switches)
from toy import data as toy_data  # noqa: E402
from toy import models as tiny_models  # noqa: E402


def run_qa_args(model_dir, train_file, dev_file, output_dir, epochs):
    return [
        "--model_name_or_path", model_dir,
        "--train_file", train_file,
        "--validation_file", dev_file,
        "--output_dir", output_dir,
        "--do_train", "--do_eval",
        "--train_adapter", "--adapter_config", "seq_bn[reduction_factor=2]",
        "--learning_rate", "1e-2", "--warmup_ratio", "0.1",
        "--num_train_epochs", str(epochs),
        "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "64",
        "--max_seq_length", "64", "--doc_stride", "16",
        "--save_strategy", "no", "--report_to", "none", "--overwrite_output_dir",
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="quickstart_output")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()

    model_dir = tiny_models.build_tiny_model("bert", os.path.join(args.output_dir, "tiny-bert"))
    train_file = toy_data.write_qa_file(
        toy_data.make_templated_qa(200, seed=1), os.path.join(args.output_dir, "train.json"), "flat")
    dev_file = toy_data.write_qa_file(
        toy_data.make_templated_qa(60, seed=2), os.path.join(args.output_dir, "dev.json"), "flat")

    untrained_dir = os.path.join(args.output_dir, "untrained")
    run_qa.main(["--model_name_or_path", model_dir, "--validation_file", dev_file, "--output_dir", untrained_dir,
                 "--do_eval", "--max_seq_length", "64", "--doc_stride", "16", "--report_to", "none",
                 "--overwrite_output_dir"])
    adapter_dir = os.path.join(args.output_dir, "adapter")
    run_qa.main(run_qa_args(model_dir, train_file, dev_file, adapter_dir, args.epochs))

    before = json.load(open(os.path.join(untrained_dir, "eval_results.json")))
    after = json.load(open(os.path.join(adapter_dir, "eval_results.json")))
    answers = json.load(open(os.path.join(adapter_dir, "eval_predictions.json")))
    dev = {r["id"]: r for r in json.load(open(dev_file))["data"]}
    print("\n=== quickstart results (held-out templated questions) ===")
    print(f"untrained head:  EM {before['eval_exact_match']:5.1f}  F1 {before['eval_f1']:5.1f}")
    print(f"seq_bn adapter:  EM {after['eval_exact_match']:5.1f}  F1 {after['eval_f1']:5.1f}")
    for qid in list(answers)[:5]:
        print(f"  Q: {dev[qid]['question']:<32} predicted: {answers[qid]!r:<12} gold: {dev[qid]['answers']['text'][0]!r}")
    print(f"adapter saved in {os.path.join(adapter_dir, 'squad')}; all files in {args.output_dir}/")


if __name__ == "__main__":
    main()
