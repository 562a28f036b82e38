#!/usr/bin/env python
"""Quickstart, offline: build a tiny BERT, write SQuAD-format templated facts, train and evaluate a LoRA adapter.

    python quickstart.py [--output_dir quickstart_output] [--epochs 5]

Everything is made locally (random-weight model, locally trained tokenizer, templated facts such as
"Alice lives in Paris." / "Where does Alice live?"), so it runs with no network and no downloads. It calls run_qa.py
exactly as a user would, then prints the held-out scores before and after training and a few answers.

What to expect: the base model is random, so the adapter and the QA head learn everything from scratch, in well under
a minute. Each context gives 3-5 people one fact each, each of a different kind (where someone lives -> a city, how
old -> an age, the colour someone likes vs the colour of their car...), so answering means reading which kind of fact
the question asks for and finding that sentence among the others; the held-out questions are about new contexts.
(Telling apart two facts of the same kind by the person's name is what a random-weight model does not learn in a
minute: toy.data's default contexts, which the tests use, have those.) The script prints the score of answering with
a random fact of the context as a reference.
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# One thread: a model this small gains little from a second one (about 10% on an idle 2-core machine) and loses a lot
# when another process is using the cores. Set OMP_NUM_THREADS=2 yourself on an idle machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import run_qa  # noqa: E402  (after the offline switches)
from transformers import AutoConfig  # noqa: E402
from toy import models as tiny_models  # noqa: E402
from toy import data as toy_data  # noqa: E402

# The tiny model: 64 wide with 4 heads learns these facts faster per second than the 32-wide default of
# toy/models.py (which tests use), in 2 layers; wider or deeper was slower for the same score.
MODEL_SIZE = {"hidden": 64, "layers": 2, "heads": 4, "ffn": 128}
# 4800 training questions x 5 epochs = 750 steps of 32. make_templated_qa is cheap, so new questions beat more passes
# over few; 150 steps per epoch keep `--epochs 1` (the test's smoke run) short.
TRAIN_QUESTIONS, DEV_QUESTIONS = 4800, 200  # dev uses another seed: held-out contexts and questions
# LoRA on query/key/value and both feed-forward layers of each encoder layer, rank 64 = full rank for a 64-wide
# model: on a random base the attention itself must be learned, which a seq_bn bottleneck placed after the
# feed-forward cannot do in the first layer (31.7 F1 against 43.3 for LoRA on the tests' harder toy data, 32-wide
# model, same steps).
ADAPTER = 'lora[r=64,alpha=64,attn_matrices=["q","k","v"],intermediate_lora=True,output_lora=True]'
# The longest question + context is 40 tokens: every example fits in one window, with little padding.
MAX_SEQ_LENGTH = "40"


def build_model(model_dir):
    """The tiny random BERT, with dropout off: on a tiny task with fresh examples it only slows learning."""
    tiny_models.build_tiny_model("bert", model_dir, **MODEL_SIZE)
    config = AutoConfig.from_pretrained(model_dir)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(model_dir)
    return model_dir


def run_qa_args(model_dir, train_file, dev_file, output_dir, epochs):
    return [
        "--model_name_or_path", model_dir,
        "--train_file", train_file,
        "--validation_file", dev_file,
        "--output_dir", output_dir,
        "--do_train", "--do_eval",
        "--train_adapter", "--adapter_config", ADAPTER,  # the QA head is trained along with the adapter
        # A high rate for a few hundred steps from random weights; warmup then linear decay (the default schedule).
        "--learning_rate", "5e-3", "--warmup_ratio", "0.1",
        "--num_train_epochs", str(epochs),
        "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64",
        "--max_seq_length", MAX_SEQ_LENGTH, "--doc_stride", "16",
        "--save_strategy", "no", "--report_to", "none", "--overwrite_output_dir",
    ]


def random_fact_score(records):
    """Expected exact match of answering with a random one of the context's facts (a reference line)."""
    return 100 * sum(1 / len(rec["context"].split(". ")) for rec in records) / len(records)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="quickstart_output")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    model_dir = build_model(os.path.join(args.output_dir, "tiny-bert"))
    train_file = toy_data.write_qa_file(
        toy_data.make_templated_qa(TRAIN_QUESTIONS, seed=1, one_fact_per_kind=True),
        os.path.join(args.output_dir, "train.json"), "flat")
    dev_records = toy_data.make_templated_qa(DEV_QUESTIONS, seed=2, one_fact_per_kind=True)
    dev_file = toy_data.write_qa_file(dev_records, os.path.join(args.output_dir, "dev.json"), "flat")

    untrained_dir = os.path.join(args.output_dir, "untrained")
    run_qa.main(["--model_name_or_path", model_dir, "--validation_file", dev_file, "--output_dir", untrained_dir,
                 "--do_eval", "--max_seq_length", MAX_SEQ_LENGTH, "--doc_stride", "16", "--report_to", "none",
                 "--overwrite_output_dir"])
    adapter_dir = os.path.join(args.output_dir, "adapter")
    run_qa.main(run_qa_args(model_dir, train_file, dev_file, adapter_dir, args.epochs))

    before = json.load(open(os.path.join(untrained_dir, "eval_results.json")))
    after = json.load(open(os.path.join(adapter_dir, "eval_results.json")))
    answers = json.load(open(os.path.join(adapter_dir, "eval_predictions.json")))
    dev = {r["id"]: r for r in dev_records}
    print(f"\n=== quickstart results ({len(dev)} held-out templated questions) ===")
    print(f"untrained head:   EM {before['eval_exact_match']:5.1f}  F1 {before['eval_f1']:5.1f}")
    print(f"LoRA adapter:     EM {after['eval_exact_match']:5.1f}  F1 {after['eval_f1']:5.1f}")
    print(f"reference:        EM {random_fact_score(dev_records):5.1f}  (a random fact of the context)")
    for qid in list(answers)[:5]:
        gold = dev[qid]["answers"]["text"][0]
        mark = "ok" if answers[qid] == gold else "--"
        print(f"  {mark} Q: {dev[qid]['question']:<32} predicted: {answers[qid]!r:<12} gold: {gold!r}")
    print(f"adapter saved in {os.path.join(adapter_dir, 'squad')}; all files in {args.output_dir}/")


if __name__ == "__main__":
    main()
