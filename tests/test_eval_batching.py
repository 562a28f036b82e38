"""Length-batched evaluation (--pad_to_max_length False): features run longest first, predictions back in dataset
order, the same answers as padded evaluation; fp32 logits for the JSON files."""

import numpy as np
import pytest

from conftest import read_json
import torch
from datasets import Dataset
from transformers import (
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    TrainingArguments,
)
from transformers.trainer_utils import EvalLoopOutput

import run_qa
from qa_data import QAColumns
from toy import data as toy_data
from trainer_qa import QuestionAnsweringTrainer, in_dataset_order
from trainer_seq2seq_qa import GeneratedAnswers

COLUMNS = QAColumns(id="id", question="question", context="context", answer="answers")


def test_length_batched_predictions_come_back_in_dataset_order(tiny_model, tmp_path):
    """Every feature's logits equal those of the model run on that feature alone; batches were formed longest first,
    each padded to its own longest feature, with less padding than batches in dataset order."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model("bert"))
    records = toy_data.make_templated_qa(30, seed=5, long_context=True)
    examples = Dataset.from_list(records)
    features = examples.map(
        run_qa.prepare_validation_features, batched=True, remove_columns=examples.column_names,
        fn_kwargs={"tokenizer": tokenizer, "columns": COLUMNS, "max_seq_length": 64, "doc_stride": 16,
                   "pad_to_max_length": False},
    )
    lengths = [len(ids) for ids in features["input_ids"]]
    assert len(set(lengths)) > 5 and lengths != sorted(lengths, reverse=True)
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_model("bert")).eval()
    batch_shapes = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: batch_shapes.append(tuple(kw["input_ids"].shape)),
                                           with_kwargs=True)
    received = {}

    def post_process(examples, features, predictions, stage="eval"):
        received["features"], received["predictions"] = features, predictions
        return EvalPrediction(predictions=[], label_ids=None)

    batch_size = 4
    trainer = QuestionAnsweringTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=batch_size, report_to="none",
                               use_cpu=True, disable_tqdm=True),
        eval_dataset=features, eval_examples=examples, processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer), post_process_function=post_process,
        compute_metrics=lambda p: {},
    )
    metrics = trainer.evaluate()
    hook.remove()
    assert metrics["eval_samples_per_second"] > 0 and received["features"] is features
    start, end = received["predictions"]
    assert start.dtype == np.float32 and start.shape == (len(features), max(lengths))

    by_length = sorted(lengths, reverse=True)
    expected = [(len(by_length[i : i + batch_size]), by_length[i]) for i in range(0, len(by_length), batch_size)]
    assert batch_shapes == expected
    in_order = sum(len(lengths[i : i + batch_size]) * max(lengths[i : i + batch_size])
                   for i in range(0, len(lengths), batch_size))
    assert sum(n * width for n, width in expected) < in_order

    # Feature i ran in the batch of rank position // batch_size of the longest-first order; beyond that batch's
    # width its logits are the loop's padding value.
    position = np.empty(len(lengths), dtype=int)
    position[np.argsort(-np.array(lengths), kind="stable")] = np.arange(len(lengths))
    with torch.no_grad():
        for i, feature in enumerate(features):
            inputs = {k: torch.tensor([feature[k]]) for k in ("input_ids", "token_type_ids", "attention_mask")}
            alone = model(**inputs)
            n, width = lengths[i], expected[position[i] // batch_size][1]
            np.testing.assert_allclose(start[i, :n], alone.start_logits[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(end[i, :n], alone.end_logits[0].numpy(), atol=1e-5)
            assert (start[i, width:] == -100).all() and (end[i, width:] == -100).all()


def test_in_dataset_order_restores_every_kind_of_prediction():
    order = np.array([2, 0, 3, 1])
    rows = np.array([[20], [0], [30], [10]])  # row j is feature order[j]

    output = EvalLoopOutput(predictions=(rows, rows[:, 0] * 2), label_ids=None, metrics={}, num_samples=4)
    restored = in_dataset_order(output, order)
    assert restored.predictions[0][:, 0].tolist() == [0, 10, 20, 30]
    assert restored.predictions[1].tolist() == [0, 20, 40, 60]
    generated = EvalLoopOutput(predictions=GeneratedAnswers(["c", "a", "d", "b"], [3.0, 1.0, 4.0, 2.0]),
                               label_ids=None, metrics={}, num_samples=4)
    restored = in_dataset_order(generated, order).predictions
    assert isinstance(restored, GeneratedAnswers) and restored.texts == ["a", "b", "c", "d"]
    assert restored.scores == [1.0, 2.0, 3.0, 4.0]
    assert in_dataset_order(output, None) is output


@pytest.fixture(scope="module")
def dev_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "dev.json"
    toy_data.write_qa_file(toy_data.make_templated_qa(40, seed=8, long_context=True), str(path), "flat")
    return str(path)


def test_dynamic_padding_gives_the_answers_of_padded_evaluation(tiny_model, dev_file, tmp_path):
    """run_qa.py with --pad_to_max_length False (length-batched, also with --group_by_length) writes the predictions
    of padded evaluation, and the same metrics to 1e-4.

    --n_best_size covers every position: the loop takes its top starts and ends over all positions of the logits,
    padding included, so with a model that has not learnt to score padding low (a random one) padded evaluation
    would otherwise spend some of its n-best slots on padding positions that dynamic padding does not have."""
    common = ["--model_name_or_path", tiny_model("bert"), "--validation_file", dev_file, "--do_eval",
              "--max_seq_length", "64", "--doc_stride", "16", "--n_best_size", "64", "--per_device_eval_batch_size",
              "8", "--report_to", "none", "--disable_tqdm", "true", "--cache_dir", str(tmp_path / "cache")]
    runs = {"padded": [], "dynamic": ["--pad_to_max_length", "False"],
            "grouped": ["--pad_to_max_length", "False", "--group_by_length"]}
    results, predictions = {}, {}
    for name, extra in runs.items():
        run_qa.main(common + ["--output_dir", str(tmp_path / name)] + extra)
        results[name] = read_json(tmp_path / name / "eval_results.json")
        predictions[name] = read_json(tmp_path / name / "eval_predictions.json")
    answers = list(predictions["padded"].values())
    assert len(set(answers)) > 10 and "empty" not in answers  # real spans, different per question
    for name in ("dynamic", "grouped"):
        assert predictions[name] == predictions["padded"], name
        for key in ("eval_exact_match", "eval_f1", "eval_samples"):
            assert results[name][key] == pytest.approx(results["padded"][key], abs=1e-4)


def test_half_precision_evaluation_post_processes_float32_logits(tiny_model, dev_file, tmp_path, monkeypatch):
    """--fp16_full_eval (the model in half precision, on CPU too): the logits reach post-processing as float32, and
    the prediction files and metrics are written as usual."""
    dtypes = []
    postprocess = run_qa.postprocess_qa_predictions

    def spy(*args, **kwargs):
        dtypes.extend(p.dtype for p in kwargs["predictions"])
        return postprocess(*args, **kwargs)

    monkeypatch.setattr(run_qa, "postprocess_qa_predictions", spy)
    run_qa.main(["--model_name_or_path", tiny_model("bert"), "--validation_file", dev_file, "--do_eval",
                 "--output_dir", str(tmp_path), "--max_seq_length", "64", "--doc_stride", "16", "--fp16_full_eval",
                 "--pad_to_max_length", "False", "--report_to", "none", "--disable_tqdm", "true"])
    assert dtypes == [np.float32, np.float32]
    nbest = read_json(tmp_path / "eval_nbest_predictions.json")
    logits = [c["start_logit"] for candidates in nbest.values() for c in candidates]
    assert logits and all(np.float16(v) == v for v in logits)  # half-precision values, written as plain floats
    assert read_json(tmp_path / "eval_results.json")["eval_f1"] >= 0
