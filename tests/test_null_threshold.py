"""SQuAD v2.0 "no answer" threshold: the best-threshold sweep on each question's best non-null answer and null odds
(squad_metric.best_null_threshold, hand-computed and against the official find_best_thresh), and
--tune_null_threshold (run_qa.py, run_qa_beam_search.py): --do_predict applies the best-F1 threshold --do_eval found."""
import logging
import math
import random

import numpy as np
import pytest

from conftest import read_json
from transformers.data.metrics.squad_metrics import find_best_thresh

import run_qa
import run_qa_beam_search
from script_utils import UsageError
from squad_metric import best_null_threshold, compute_squad_v2
from toy import data as toy_data


def ref(qid, *texts):
    return {"id": qid, "answers": {"text": list(texts), "answer_start": [0] * len(texts)}}


def pred(qid, best, null_odds, threshold=0.0):
    """A prediction as run_qa.py hands it to the metric: the answer post-processing chose with `threshold` ("" when
    the null odds are above it), its best non-null answer and its null odds."""
    return {"id": qid, "prediction_text": "" if null_odds > threshold else best, "no_answer_probability": 0.0,
            "best_non_null_text": best, "null_odds": null_odds}


def answered_with(predictions, threshold):
    """The same predictions post-processed again with another threshold."""
    return [pred(p["id"], p["best_non_null_text"], p["null_odds"], threshold) for p in predictions]


REFERENCES = [ref("h1", "Denver Broncos"), ref("h2", "1990s"), ref("n2"), ref("n1"), ref("h3", "the black cat")]
PREDICTIONS = [
    pred("h1", "Broncos", -2.0),  # EM 0, F1 2/3 (precision 1, recall 1/2)
    pred("h2", "1990s", 0.5),  # EM 1, F1 1
    pred("n2", "blah", 1.5),  # unanswerable: answering scores 0, abstaining 1
    pred("n1", "something", 2.0),  # unanswerable
    pred("h3", "cat", 3.0),  # EM 0, F1 2/3 ("the" is dropped: gold "black cat")
]


def test_best_thresholds_hand_computed_are_null_odds():
    result = compute_squad_v2(PREDICTIONS, REFERENCES)
    # Sweep: every question abstains first (2 right: n1, n2); then in increasing null odds each one answers.
    # exact: 2 -> h1 (-2.0) +0 = 2 -> h2 (0.5) +1 = 3 -> n2 (1.5) -1 = 2 -> n1 (2.0) -1 = 1 -> h3 (3.0) +0 = 1.
    assert result["best_exact"] == pytest.approx(100 * 3 / 5) and result["best_exact_thresh"] == 0.5
    # f1: 2 -> 2 2/3 (-2.0) -> 3 2/3 (0.5) -> 2 2/3 (1.5) -> 1 2/3 (2.0) -> 2 1/3 (3.0).
    assert result["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 5) and result["best_f1_thresh"] == 0.5
    # The official sweep gives the same on these (distinct null odds, best not "abstain everywhere").
    exact = {"h1": 0, "h2": 1, "n2": 0, "n1": 0, "h3": 0}
    f1 = {"h1": 2 / 3, "h2": 1.0, "n2": 0.0, "n1": 0.0, "h3": 2 / 3}
    texts = {p["id"]: p["best_non_null_text"] for p in PREDICTIONS}
    odds = {p["id"]: p["null_odds"] for p in PREDICTIONS}
    has = {r["id"]: bool(r["answers"]["text"]) for r in REFERENCES}
    assert find_best_thresh(texts, exact, odds, has) == (pytest.approx(result["best_exact"]), 0.5)
    assert find_best_thresh(texts, f1, odds, has) == (pytest.approx(result["best_f1"]), 0.5)
    # Predicting with the threshold (answer "" where the null odds are above it) scores exactly the best.
    rescored = compute_squad_v2(answered_with(PREDICTIONS, result["best_f1_thresh"]), REFERENCES)
    assert rescored["f1"] == pytest.approx(result["best_f1"]) and rescored["exact"] == pytest.approx(result["best_exact"])


def test_keys_other_than_best_score_the_actual_predictions_as_before():
    result = compute_squad_v2(PREDICTIONS, REFERENCES)
    # Answers at threshold 0.0: h1 "Broncos" (2/3), h2 "" (0), n2 "" (1), n1 "" (1), h3 "" (0).
    assert result["exact"] == pytest.approx(100 * 2 / 5) and result["f1"] == pytest.approx(100 * (2 + 2 / 3) / 5)
    assert result["HasAns_f1"] == pytest.approx(100 * (2 / 3) / 3) and result["NoAns_exact"] == 100.0
    # The same as the metric without the new fields (the path every key but best_* took before).
    before = compute_squad_v2([{k: p[k] for k in ("id", "prediction_text", "no_answer_probability")}
                               for p in PREDICTIONS], REFERENCES)
    assert list(result) == list(before)
    assert {k: v for k, v in result.items() if not k.startswith("best_")} == \
        {k: v for k, v in before.items() if not k.startswith("best_")}
    # Before, the sweep ran on the answers with no-answer probability 0.0: its threshold was always 0.0.
    assert before["best_f1_thresh"] == before["best_exact_thresh"] == 0.0


def test_equal_null_odds_switch_together():
    references = [ref("a", "x"), ref("b"), ref("c", "y")]
    predictions = [pred("a", "x", 1.0), pred("b", "z", 1.0), pred("c", "y", 2.0)]
    result = compute_squad_v2(predictions, references)
    # Start 1 (b abstains). Null odds 1.0: a +1 and b -1 together -> 1 (not better). 2.0: c +1 -> 2: best 2/3 at 2.0.
    assert result["best_exact"] == pytest.approx(100 * 2 / 3) and result["best_exact_thresh"] == 2.0
    assert compute_squad_v2(answered_with(predictions, 2.0), references)["exact"] == pytest.approx(100 * 2 / 3)
    # The official sweep stops between a and b (66.7 at 1.0), a score that threshold 1.0 does not give (33.3).
    official = find_best_thresh({"a": "x", "b": "z", "c": "y"}, {"a": 1, "b": 0, "c": 1},
                                {"a": 1.0, "b": 1.0, "c": 2.0}, {"a": True, "b": False, "c": True})
    assert official == (pytest.approx(100 * 2 / 3), 1.0)
    assert compute_squad_v2(answered_with(predictions, 1.0), references)["exact"] == pytest.approx(100 / 3)


def test_abstaining_everywhere_gives_a_threshold_just_below_the_lowest_null_odds():
    references = [ref("h", "cat"), ref("n1"), ref("n2")]
    predictions = [pred("h", "dog", -0.1), pred("n1", "x", 0.3), pred("n2", "y", 0.7)]
    result = compute_squad_v2(predictions, references)
    # Start 2 (n1, n2 abstain); h -0.1: +0 -> 2; n1 -> 1; n2 -> 0. Best: 2/3, abstaining everywhere.
    assert result["best_exact"] == result["best_f1"] == pytest.approx(100 * 2 / 3)
    below = float(np.nextafter(np.float32(-0.1), np.float32(-np.inf)))
    assert result["best_exact_thresh"] == result["best_f1_thresh"] == below < -0.1
    # Post-processing compares float32 null odds with it: all of them are above it.
    assert np.float32(-0.1) > result["best_f1_thresh"]
    assert compute_squad_v2(answered_with(predictions, below), references)["f1"] == pytest.approx(100 * 2 / 3)


def test_unanswerable_answers_scored_like_exact_and_f1_and_nan_null_odds_always_answer():
    references = [ref("n"), ref("h", "cat"), ref("m", "dog")]
    # n: its best span "The" normalises to nothing, which exact/F1 count as right for an unanswerable question.
    # m: NaN null odds are never above a threshold: m always answers (and scores 1).
    predictions = [pred("n", "The", 0.2), pred("h", "cat", 0.4), pred("m", "dog", math.nan)]
    result = compute_squad_v2(predictions, references)
    # Start: n abstains (1) + m answers (1) = 2; n 0.2: 1 - 1 + 1 -> 2 (equal); h 0.4: +1 -> 3: best 3/3 at 0.4.
    assert result["best_exact"] == 100.0 and result["best_exact_thresh"] == 0.4
    assert compute_squad_v2(answered_with(predictions, 0.4), references)["exact"] == 100.0


def test_equals_the_official_sweep_on_random_cases_without_ties():
    rng = random.Random(0)
    compared = 0
    for _ in range(300):
        qids = [f"q{i}" for i in range(rng.randint(1, 10))]
        has = {q: rng.random() < 0.5 for q in qids}
        odds = {q: rng.uniform(-5, 5) for q in qids}
        scores = {q: rng.choice([0.0, 1.0, rng.random()]) if has[q] else 0.0 for q in qids}
        official = find_best_thresh(dict.fromkeys(qids, "x"), scores, odds, has)
        best, threshold = best_null_threshold(scores, odds, has)
        applied = sum(scores[q] if odds[q] <= threshold else float(not has[q]) for q in qids)
        assert best == pytest.approx(100 * applied / len(qids))
        if official[0] == pytest.approx(100 * sum(not h for h in has.values()) / len(qids)):
            assert threshold < min(odds.values())  # abstain everywhere (the official sweep says 0.0)
            continue
        assert (best, threshold) == (pytest.approx(official[0]), official[1])
        compared += 1
    assert compared > 100


# --tune_null_threshold through the scripts (a tiny random model: no training needed, its null odds vary) --------------

FAST = ["--max_seq_length", "64", "--doc_stride", "16", "--report_to", "none", "--seed", "42",
        "--per_device_eval_batch_size", "16", "--version_2_with_negative", "--do_eval", "--do_predict"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("null-threshold-data")
    # Few unanswerable questions in the evaluation data, so that answering some pays off even for an untrained model.
    dev = toy_data.make_templated_qa(30, seed=2, version_2=True)
    dev = [r for r in dev if r["answers"]["text"]] + [r for r in dev if not r["answers"]["text"]][:2]
    test = toy_data.make_templated_qa(30, seed=4, version_2=True)
    return {
        "dev": toy_data.write_qa_file(dev, str(folder / "dev.json"), "flat"),
        "test": toy_data.write_qa_file(test, str(folder / "test.json"), "flat"),
        "v1_dev": toy_data.write_qa_file(toy_data.make_templated_qa(6, seed=2), str(folder / "v1_dev.json"), "flat"),
        "v1_test": toy_data.write_qa_file(toy_data.make_templated_qa(6, seed=5), str(folder / "v1_test.json"), "flat"),
        "test_references": [{"id": r["id"], "answers": r["answers"]} for r in test],
    }


def without_timing(metrics):
    return {k: v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second", "_time"))}


def best_spans(nbest_file):
    """Each question's best non-null answer: the first non-empty text of its n-best list."""
    return {qid: next(e["text"] for e in entries if e["text"]) for qid, entries in read_json(nbest_file).items()}


def test_run_qa_predicts_with_the_threshold_tuned_on_evaluation(tiny_model, files, tmp_path, caplog):
    common = ["--model_name_or_path", tiny_model("bert"), "--validation_file", files["dev"],
              "--test_file", files["test"], *FAST]
    run_qa.main([*common, "--output_dir", str(tmp_path / "default")])
    with caplog.at_level(logging.INFO, logger="squad_metric"):
        run_qa.main([*common, "--output_dir", str(tmp_path / "tuned"), "--tune_null_threshold"])
    default, tuned = tmp_path / "default", tmp_path / "tuned"

    # Evaluation is untouched by the flag; its thresholds are values of eval_null_odds.json.
    eval_results = read_json(tuned / "eval_results.json")
    assert without_timing(eval_results) == without_timing(read_json(default / "eval_results.json"))
    for name in ("eval_predictions.json", "eval_null_odds.json", "eval_nbest_predictions.json"):
        assert (tuned / name).read_bytes() == (default / name).read_bytes()
    eval_odds = read_json(tuned / "eval_null_odds.json")
    threshold = eval_results["eval_best_f1_thresh"]
    assert threshold in eval_odds.values()
    assert min(eval_odds.values()) < threshold < max(eval_odds.values())  # not a trivial threshold on this data
    # No span is exactly right: for exact match, abstaining everywhere is best (2 of 22), just below the lowest odds.
    assert eval_results["eval_best_exact"] == pytest.approx(100 * 2 / 22)
    lowest = np.float32(min(eval_odds.values()))
    assert eval_results["eval_best_exact_thresh"] == float(np.nextafter(lowest, np.float32(-np.inf)))

    # Prediction uses it, says so, and turns exactly the questions whose null odds exceed it into "no answer".
    predict_results = read_json(tuned / "predict_results.json")
    assert predict_results["predict_null_score_diff_threshold"] == threshold
    assert "predict_null_score_diff_threshold" not in read_json(default / "predict_results.json")
    assert any(repr(threshold) in r.getMessage() and "--tune_null_threshold" in r.getMessage()
               for r in caplog.records)
    odds = read_json(tuned / "predict_null_odds.json")
    assert odds == read_json(default / "predict_null_odds.json")  # same model, same null odds
    best = best_spans(tuned / "predict_nbest_predictions.json")
    predictions = read_json(tuned / "predict_predictions.json")
    assert predictions == {qid: "" if odds[qid] > threshold else best[qid] for qid in odds}
    assert read_json(default / "predict_predictions.json") == {qid: "" if odds[qid] > 0.0 else best[qid] for qid in odds}
    assert predictions != read_json(default / "predict_predictions.json")  # the threshold made a difference here
    # test_* scores those answers.
    scored = compute_squad_v2([pred(qid, best[qid], odds[qid], threshold) for qid in odds], files["test_references"])
    for key in ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"):
        assert predict_results[f"test_{key}"] == pytest.approx(scored[key])


def test_beam_search_predicts_with_the_threshold_tuned_on_evaluation(tiny_model, files, tmp_path):
    out = tmp_path / "out"
    run_qa_beam_search.main(["--model_name_or_path", tiny_model("bert"), "--validation_file", files["dev"],
                             "--test_file", files["test"], *FAST, "--train_adapter", "--output_dir", str(out),
                             "--tune_null_threshold"])
    eval_results, predict_results = read_json(out / "eval_results.json"), read_json(out / "predict_results.json")
    eval_odds = read_json(out / "eval_null_odds.json")  # the minimum answer-class logit of each question
    threshold = eval_results["eval_best_f1_thresh"]
    assert threshold in eval_odds.values() or threshold < min(eval_odds.values())
    assert predict_results["predict_null_score_diff_threshold"] == threshold
    # The prediction files keep every question's best span (as the reference); the score answers "" where the null
    # odds exceed the tuned threshold (not 1.0).
    odds, spans = read_json(out / "predict_null_odds.json"), read_json(out / "predict_predictions.json")
    scored = compute_squad_v2([pred(qid, spans[qid], odds[qid], threshold) for qid in odds], files["test_references"])
    for key in ("exact", "f1", "HasAns_exact", "NoAns_exact", "best_exact", "best_exact_thresh"):
        assert predict_results[f"test_{key}"] == pytest.approx(scored[key])


@pytest.mark.parametrize("change,message", [
    # v1 data everywhere (unanswerable questions in the test file would switch v2 mode on by themselves)
    ({"--version_2_with_negative": None, "--validation_file": "v1_dev", "--test_file": "v1_test"},
     "add --version_2_with_negative"),
    ({"--do_predict": None}, "pass both"),
    ({"--validation_file": "test"}, "tune on the data it predicts"),
])
@pytest.mark.parametrize("script", [run_qa, run_qa_beam_search])
def test_misuse_stops_before_loading_the_model(tiny_model, files, tmp_path, change, message, script):
    args = {"--model_name_or_path": tiny_model("bert"), "--validation_file": files["dev"],
            "--test_file": files["test"], "--output_dir": str(tmp_path / "out"), "--version_2_with_negative": "",
            "--do_eval": "", "--do_predict": "", "--tune_null_threshold": "", "--train_adapter": ""}
    for flag, value in change.items():
        if value is None:
            del args[flag]
        else:
            args[flag] = files[value]
    argv = [item for flag, value in args.items() for item in ((flag, value) if value else (flag,))]
    with pytest.raises(UsageError, match=message):
        script.main(argv)
    assert not (tmp_path / "out").exists()
