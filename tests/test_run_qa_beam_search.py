"""run_qa_beam_search.py: beam-search post-processing, reference preprocessing, XLNet full fine-tuning, adapters with
the beam-search head (train, save, reload), and the fast failure of --train_adapter on XLNet."""
import json
import os

import numpy as np
import pytest

from conftest import read_json
from datasets import Dataset
from transformers import AutoTokenizer

import run_qa_beam_search
from qa_data import QAColumns
from script_utils import UsageError
from toy import data as toy_data
from toy.upstream import reference_features
from utils_qa_beam_search import postprocess_qa_predictions_with_beam_search

COLUMNS = QAColumns(id="id", question="question", context="context", answer="answers")

# Post-processing against a brute-force version of the upstream beam-search post-processing rules ----------------------

SEQ_LEN, QUESTION_TOKENS = 24, 4


def random_beam_outputs(n_examples, seed, start_n_top, end_n_top, with_max_context=False, empty_example=None):
    """Examples with numbered-word contexts, 0-3 windows each (the first tokens are question tokens, offsets None),
    and random top-k model outputs whose indices also point at question tokens and past the window."""
    rng = np.random.default_rng(seed)
    examples, features = [], []
    for e in range(n_examples):
        words = [f"w{e}_{k}" for k in range(40)]
        context = " ".join(words)
        starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
        examples.append({"id": f"q{e}", "context": context})
        for window in range(0 if e == 9 else int(rng.integers(1, 4))):  # example 9 has no window at all
            first = window * 10
            offsets = [None] * QUESTION_TOKENS + [
                [int(starts[k]), int(starts[k] + len(words[k]))] for k in range(first, first + SEQ_LEN - 5)
            ] + [None]
            if e == empty_example:
                offsets = [None] * len(offsets)  # no valid span at all
            feature = {"example_id": f"q{e}", "offset_mapping": offsets}
            if with_max_context:
                feature["token_is_max_context"] = {str(k): bool(rng.integers(0, 2)) for k in range(SEQ_LEN)}
            features.append(feature)
    n = len(features)
    predictions = (
        np.log(rng.uniform(0.01, 1, (n, start_n_top))).astype(np.float32),
        rng.integers(0, SEQ_LEN + 2, (n, start_n_top)),
        np.log(rng.uniform(0.01, 1, (n, start_n_top * end_n_top))).astype(np.float32),
        rng.integers(0, SEQ_LEN + 2, (n, start_n_top * end_n_top)),
        rng.normal(0, 3, n).astype(np.float32),
    )
    return Dataset.from_list(examples), Dataset.from_list(features), predictions


def brute_force(examples, features, predictions, v2, n_best, max_len, start_n_top, end_n_top):
    """Every (i-th start, j-th end of that start) pair of every window of an example, kept if both tokens are inside
    the context, in order, not too long and (if given) the start has its maximum context; the answer is the best
    pair; the null odds are the minimum cls logit over the windows, -2e-6 when there is no pair."""
    start_lp, start_idx, end_lp, end_idx, cls_logits = predictions
    expected = {}
    for example in examples:
        candidates, null = [], None
        if example["id"] not in features["example_id"]:
            continue  # an example without features gets no answer
        for f, feature in enumerate(features):
            if feature["example_id"] != example["id"]:
                continue
            null = cls_logits[f] if null is None else min(null, cls_logits[f])
            offsets, max_context = feature["offset_mapping"], feature.get("token_is_max_context")
            for i in range(start_n_top):
                for j in range(end_n_top):
                    a, b = int(start_idx[f, i]), int(end_idx[f, i * end_n_top + j])
                    if a >= len(offsets) or b >= len(offsets) or offsets[a] is None or offsets[b] is None:
                        continue
                    if b < a or b - a + 1 > max_len or (max_context is not None and not max_context[str(a)]):
                        continue
                    score = float(start_lp[f, i]) + float(end_lp[f, i * end_n_top + j])
                    candidates.append((score, example["context"][offsets[a][0] : offsets[b][1]]))
        candidates = sorted(candidates, key=lambda c: -c[0])[:n_best]
        if not candidates:
            candidates, null = [(-2e-6, "")], -2e-6
        scores = np.array([c[0] for c in candidates])
        probs = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        expected[example["id"]] = {
            "text": candidates[0][1],
            "nbest": [(c[1], p) for c, p in zip(candidates, probs)],
            "null": float(null) if v2 else None,
        }
    return expected


@pytest.mark.parametrize(
    "v2, n_best, max_len, start_n_top, end_n_top, with_max_context",
    [(False, 20, 30, 5, 5, False), (True, 20, 30, 5, 5, False), (True, 3, 4, 4, 3, True), (False, 7, 2, 3, 6, True)],
)
def test_postprocessing_matches_brute_force_on_random_top_k(tmp_path, v2, n_best, max_len, start_n_top, end_n_top,
                                                             with_max_context):
    examples, features, predictions = random_beam_outputs(
        30, seed=n_best, start_n_top=start_n_top, end_n_top=end_n_top, with_max_context=with_max_context,
        empty_example=7,
    )
    answers, null_odds = postprocess_qa_predictions_with_beam_search(
        examples, features, predictions, version_2_with_negative=v2, n_best_size=n_best, max_answer_length=max_len,
        start_n_top=start_n_top, end_n_top=end_n_top, output_dir=str(tmp_path), prefix="eval",
    )
    expected = brute_force(examples, features, predictions, v2, n_best, max_len, start_n_top, end_n_top)

    assert answers == {qid: e["text"] for qid, e in expected.items()}
    assert list(answers) == [qid for qid in examples["id"] if qid != "q9"]  # q9 has no window: no answer
    if v2:
        assert null_odds == pytest.approx({qid: e["null"] for qid, e in expected.items()})
    else:
        assert null_odds is None
    # The files are exactly what was returned; n-best entries keep the reference's key names and order.
    assert json.loads((tmp_path / "eval_predictions.json").read_text()) == answers
    assert (tmp_path / "eval_null_odds.json").exists() == v2
    nbest = json.loads((tmp_path / "eval_nbest_predictions.json").read_text())
    for qid, e in expected.items():
        assert [(p["text"], p["probability"]) for p in nbest[qid]] == [
            (text, pytest.approx(prob, rel=1e-5)) for text, prob in e["nbest"]
        ]
        assert len(nbest[qid]) <= n_best
    # The empty case: an example whose windows have no valid span.
    empty_ids = [qid for qid, e in expected.items() if e["nbest"] == [("", 1.0)]]
    assert "q7" in empty_ids and "q9" not in nbest
    for qid in empty_ids:
        assert nbest[qid] == [{"text": "", "start_logit": -1e-6, "end_logit": -1e-6, "probability": 1.0}]
        if v2:
            assert null_odds[qid] == -2e-6
    normal = next(qid for qid, e in expected.items() if len(e["nbest"]) > 1)
    assert list(nbest[normal][0]) == ["start_log_prob", "end_log_prob", "text", "probability"]


def test_postprocessing_rejects_wrong_prediction_shapes():
    examples, features, predictions = random_beam_outputs(3, seed=0, start_n_top=5, end_n_top=5)
    with pytest.raises(ValueError, match="five elements"):
        postprocess_qa_predictions_with_beam_search(examples, features, predictions[:2])
    with pytest.raises(ValueError, match="predictions and"):
        postprocess_qa_predictions_with_beam_search(examples, features, tuple(p[:1] for p in predictions))


# Preprocessing --------------------------------------------------------------------------------------------------------


def as_batch(records):
    return {key: [r[key] for r in records] for key in records[0]}


@pytest.mark.parametrize("train", [True, False])
def test_xlnet_features_equal_the_reference(tiny_model, train):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model("xlnet"))
    records = toy_data.make_templated_qa(24, seed=5, version_2=True, long_context=True)
    records[0]["question"] = "   " + records[0]["question"]  # leading spaces are stripped
    prepare = run_qa_beam_search.prepare_train_features if train else run_qa_beam_search.prepare_validation_features
    ours = prepare(as_batch(records), tokenizer, COLUMNS, 128, 32, special_token_segment=3)
    expected = reference_features(as_batch(records), tokenizer, 128, 32, train)

    assert len(expected["input_ids"]) > 2 * len(records)  # long contexts: several windows per example
    assert set(ours.keys()) == set(expected.keys())
    for key in expected.keys():
        assert ours[key] == expected[key], key
    if train:
        assert 0 < sum(ours["is_impossible"]) < len(ours["is_impossible"])


@pytest.mark.parametrize("arch", ["xlnet", "bert"])
def test_answer_on_the_last_context_token_of_a_window_is_labelled_there(tiny_model, arch):
    """The one deliberate difference from the reference (shared with run_qa.py): its start walk ran past the window."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model(arch))
    record = toy_data.make_templated_qa(1, seed=4, long_context=True)[0]
    windows = run_qa_beam_search.tokenize_windows(as_batch([record]), tokenizer, COLUMNS, 128, 32)
    context_index = 1 if tokenizer.padding_side == "right" else 0
    last = max(k for k, s in enumerate(windows.sequence_ids(0)) if s == context_index)
    start_char, end_char = windows["offset_mapping"][0][last]
    record["answers"] = {"text": [record["context"][start_char:end_char]], "answer_start": [start_char]}
    segment = 3 if arch == "xlnet" else None
    ours = run_qa_beam_search.prepare_train_features(as_batch([record]), tokenizer, COLUMNS, 128, 32, segment)
    reference = reference_features(as_batch([record]), tokenizer, 128, 32, train=True)

    assert (ours["start_positions"][0], ours["end_positions"][0], ours["is_impossible"][0]) == (last, last, 0.0)
    assert reference["start_positions"][0] > last  # walked into the special/question/padding tokens
    # Every other window is labelled as in the reference (BERT keeps its 0/1 segments: the reference's in-place
    # rewrite of special tokens to segment 3 is only kept for XLNet, where 3 is the padding segment).
    kept = [key for key in reference.keys() if not (arch == "bert" and key == "token_type_ids")]
    assert {k: ours[k][1:] for k in kept} == {k: reference[k][1:] for k in kept}


@pytest.mark.parametrize("arch", ["bert", "roberta"])  # RoBERTa's token_type_ids are all 0: sequence ids needed
def test_adapter_model_features_point_at_the_answer(tiny_model, arch):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model(arch))
    records = toy_data.make_templated_qa(12, seed=2, version_2=True, long_context=False)
    features = run_qa_beam_search.prepare_train_features(as_batch(records), tokenizer, COLUMNS, 128, 32, None)
    windows = run_qa_beam_search.tokenize_windows(as_batch(records), tokenizer, COLUMNS, 128, 32)
    assert len(features["input_ids"]) == len(records)  # short contexts: one window each
    for i, record in enumerate(records):
        start, end, cls_index = features["start_positions"][i], features["end_positions"][i], features["cls_index"][i]
        assert cls_index == 0 and features["input_ids"][i][0] == tokenizer.cls_token_id
        # p_mask opens exactly the context tokens and the CLS token.
        context_tokens = {k for k, s in enumerate(windows.sequence_ids(i)) if s == 1}
        assert {k for k, m in enumerate(features["p_mask"][i]) if m == 0.0} == context_tokens | {0}
        if record["answers"]["text"]:
            offsets = windows["offset_mapping"][i]
            assert record["context"][offsets[start][0] : offsets[end][1]] == record["answers"]["text"][0]
            assert features["is_impossible"][i] == 0.0
        else:
            assert (start, end, features["is_impossible"][i]) == (0, 0, 1.0)
    assert "token_type_ids" in features if arch == "bert" else "token_type_ids" not in features


# Whole runs (in-process) ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("beam_data")
    train = toy_data.write_qa_file(toy_data.make_templated_qa(8, seed=1, version_2=True), folder / "train.json", "flat")
    dev = toy_data.write_qa_file(toy_data.make_templated_qa(9, seed=2, version_2=True), folder / "dev.jsonl", "jsonl")
    return str(train), str(dev)


def run(model_dir, output_dir, *extra):
    run_qa_beam_search.main([
        "--model_name_or_path", model_dir, "--output_dir", str(output_dir), "--report_to", "none",
        "--version_2_with_negative", "--max_seq_length", "96", "--doc_stride", "32", "--seed", "7",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--logging_steps", "1",
        "--save_strategy", "no", "--disable_tqdm", "true", *extra,
    ])
    return output_dir


V2_EVAL_KEYS = {"eval_exact", "eval_f1", "eval_total", "eval_HasAns_exact", "eval_HasAns_f1", "eval_NoAns_exact",
                "eval_NoAns_f1", "eval_best_exact", "eval_best_f1", "eval_samples", "eval_runtime"}
PREDICTION_FILES = ("eval_predictions.json", "eval_nbest_predictions.json", "eval_null_odds.json")


def test_xlnet_full_fine_tuning_train_eval_predict(tiny_model, toy_files, tmp_path):
    train_file, dev_file = toy_files
    out = run(tiny_model("xlnet"), tmp_path / "xlnet", "--train_file", train_file, "--validation_file", dev_file,
              "--test_file", dev_file, "--do_train", "--do_eval", "--do_predict", "--max_steps", "3")

    assert (out / "model.safetensors").is_file() and read_json(out / "config.json")["model_type"] == "xlnet"
    assert V2_EVAL_KEYS <= set(read_json(out / "eval_results.json"))
    assert {"test_exact", "test_f1", "predict_samples"} <= set(read_json(out / "predict_results.json"))
    assert read_json(out / "train_results.json")["train_samples"] == 8
    dev_ids = [r["id"] for r in toy_data.make_templated_qa(9, seed=2, version_2=True)]
    for stage in ("eval", "predict"):
        predictions = read_json(out / f"{stage}_predictions.json")
        null_odds = read_json(out / f"{stage}_null_odds.json")
        nbest = read_json(out / f"{stage}_nbest_predictions.json")
        assert list(predictions) == list(null_odds) == list(nbest) == dev_ids
        assert all(1 <= len(n) <= 20 and list(n[0]) == ["start_log_prob", "end_log_prob", "text", "probability"]
                   for n in nbest.values())
    # The same model and data give the same answers in eval and predict.
    assert read_json(out / "eval_nbest_predictions.json") == read_json(out / "predict_nbest_predictions.json")


@pytest.mark.parametrize("arch, adapter_config", [("bert", "seq_bn"), ("roberta", "lora")])
def test_adapter_with_beam_head_trains_saves_and_reloads(tiny_model, toy_files, tmp_path, arch, adapter_config):
    train_file, dev_file = toy_files
    out = run(tiny_model(arch), tmp_path / "train", "--train_file", train_file, "--validation_file", dev_file,
              "--do_train", "--do_eval", "--max_steps", "10", "--learning_rate", "1e-2", "--train_adapter",
              "--adapter_config", adapter_config)

    losses = [entry["loss"] for entry in read_json(out / "trainer_state.json")["log_history"] if "loss" in entry]
    assert len(losses) == 10 and losses[-1] < 0.8 * losses[0]  # every step sees the same 8 features
    assert sorted(os.listdir(out / "squad")) == [
        "adapter_config.json", "head_config.json", "pytorch_adapter.bin", "pytorch_model_head.bin"]
    assert read_json(out / "squad" / "head_config.json")["model_class"] == "BeamSearchQuestionAnsweringModel"
    assert not (out / "model.safetensors").exists()
    assert V2_EVAL_KEYS <= set(read_json(out / "eval_results.json"))
    for name in PREDICTION_FILES:
        assert (out / name).is_file()

    # --load_adapter restores the adapter and the trained head: the same predictions, to the last bit.
    reloaded = run(tiny_model(arch), tmp_path / "reload", "--validation_file", dev_file, "--do_eval",
                   "--train_adapter", "--load_adapter", str(out / "squad"))
    for name in PREDICTION_FILES:
        assert read_json(reloaded / name) == read_json(out / name), name
    trained_metrics = read_json(out / "eval_results.json")
    reloaded_metrics = read_json(reloaded / "eval_results.json")
    assert {k: v for k, v in reloaded_metrics.items() if "exact" in k or "f1" in k} == {
        k: v for k, v in trained_metrics.items() if "exact" in k or "f1" in k}


def test_train_adapter_on_xlnet_fails_before_loading_anything(tiny_model, toy_files, tmp_path, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("loaded before the architecture check")

    monkeypatch.setattr(run_qa_beam_search, "load_qa_examples", must_not_run)
    monkeypatch.setattr(run_qa_beam_search, "load_model", must_not_run)
    train_file, _ = toy_files
    with pytest.raises(UsageError) as err:
        run(tiny_model("xlnet"), tmp_path / "out", "--train_file", train_file, "--do_train", "--train_adapter")
    message = str(err.value)
    assert "does not support xlnet" in message and "Drop --train_adapter" in message and "roberta-base" in message
    assert not (tmp_path / "out").exists()

    # And a model with no beam-search head of its own needs --train_adapter.
    with pytest.raises(UsageError, match="add --train_adapter"):
        run(tiny_model("bert"), tmp_path / "out", "--train_file", train_file, "--do_train")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arch, extra", [
    ("xlnet", []),
    ("bert", ["--train_adapter", "--adapter_config", "seq_bn"]),
    ("roberta", ["--train_adapter", "--adapter_config", "lora"]),
])
def test_real_squad_sample_writes_results_and_prediction_files(tiny_model, shared_data, tmp_path, arch, extra):
    """The acceptance run (hf_squad_sample.json as train and validation, v2, 10 steps) with shorter windows."""
    sample = str(shared_data / "hf_squad_sample.json")
    out = run(tiny_model(arch), tmp_path / arch, "--train_file", sample, "--validation_file", sample, "--do_train",
              "--do_eval", "--max_steps", "10", "--max_seq_length", "128", *extra)
    results = read_json(out / "eval_results.json")
    assert V2_EVAL_KEYS <= set(results) and results["eval_total"] == 14
    assert results["eval_HasAns_total"] == 8 and results["eval_NoAns_total"] == 6
    for name in PREDICTION_FILES:
        assert len(read_json(out / name)) == 14, name
