"""The offline SQuAD metrics against hand-computed values of the official v1.1 and v2.0 evaluation scripts."""
import pytest
from transformers import EvalPrediction

from script_utils import UsageError
from squad_metric import compute_squad_eval_metrics, compute_squad_v1, compute_squad_v2


def ref(qid, *texts):
    return {"id": qid, "answers": {"text": list(texts), "answer_start": [0] * len(texts)}}


def pred(qid, text, na=None):
    p = {"id": qid, "prediction_text": text}
    if na is not None:
        p["no_answer_probability"] = na
    return p


def test_v1_normalisation_and_partial_overlap():
    references = [
        ref("a", "Eiffel Tower"),  # articles, case and punctuation are ignored -> exact
        ref("b", "Paris"),  # "Paris France": precision 1/2, recall 1 -> F1 2/3
        ref("c", "the blue car", "a red car"),  # several golds: the best one counts
    ]
    predictions = [pred("a", "the eiffel tower!"), pred("b", "Paris, France"), pred("c", "red  car")]
    result = compute_squad_v1(predictions, references)
    # c: vs "blue car" F1 = 0.5, vs "red car" EM 1 F1 1
    assert result["exact_match"] == pytest.approx(100 * 2 / 3)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 3)
    assert set(result) == {"exact_match", "f1"}


def test_v1_empty_prediction_scores_zero_and_missing_prediction_counts_in_total():
    references = [ref("a", "x y"), ref("b", "z")]
    result = compute_squad_v1([pred("a", "")], references)
    assert result == {"exact_match": 0.0, "f1": 0.0}
    result = compute_squad_v1([pred("a", "x")], references)  # b unanswered: counts as 0 in a total of 2
    assert result["f1"] == pytest.approx(100 * (2 * 1 * 0.5 / 1.5) / 2)


def test_v1_rejects_unanswerable_questions_with_a_hint():
    with pytest.raises(UsageError, match="--version_2_with_negative"):
        compute_squad_v1([pred("a", "")], [ref("a")])


def test_v2_keys_and_values_hand_computed():
    references = [ref("h1", "Denver Broncos"), ref("h2", "1990s", "the 1990s"), ref("n1"), ref("n2")]
    predictions = [
        pred("h1", "Broncos", 0.0),  # EM 0, F1 2*(1*0.5)/1.5 = 2/3
        pred("h2", "1990s", 0.0),  # EM 1
        pred("n1", "", 0.0),  # correct abstention: 1
        pred("n2", "something", 0.0),  # wrong: 0
    ]
    result = compute_squad_v2(predictions, references)
    assert result["total"] == 4 and result["HasAns_total"] == 2 and result["NoAns_total"] == 2
    assert result["exact"] == pytest.approx(100 * 2 / 4)
    assert result["f1"] == pytest.approx(100 * (2 / 3 + 1 + 1 + 0) / 4)
    assert result["HasAns_exact"] == pytest.approx(50.0)
    assert result["HasAns_f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert result["NoAns_exact"] == result["NoAns_f1"] == pytest.approx(50.0)
    # Official sweep over questions sorted by no-answer probability (all 0.0 here, file order): start from the
    # number of NoAns questions (2), add the score of each HasAns question, subtract 1 for each NoAns question with
    # a non-empty prediction; keep the best running total. exact: 2 -> 2 (h1) -> 3 (h2) -> 3 (n1) -> 2 (n2).
    assert result["best_exact"] == pytest.approx(100 * 3 / 4) and result["best_exact_thresh"] == 0.0
    # f1: 2 -> 2 2/3 -> 3 2/3 -> 3 2/3 -> 2 2/3.
    assert result["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4) and result["best_f1_thresh"] == 0.0
    assert list(result) == [
        "exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
        "NoAns_total", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh",
    ]


def test_v2_no_answer_threshold_and_best_threshold_sweep():
    references = [ref("h", "cat"), ref("n")]
    # na prob 1.5 > 1.0: the non-empty prediction for n is replaced by "no answer" -> scored correct.
    result = compute_squad_v2([pred("h", "cat", 0.2), pred("n", "dog", 1.5)], references)
    assert result["exact"] == 100.0
    # Sweep (official find_best_thresh): sorted by na prob h(0.2), n(1.5); start from 1 (number of NoAns),
    # h adds 1 -> 2 at thresh 0.2; n with a non-empty prediction subtracts 1. Best 2/2 at threshold 0.2.
    assert result["best_exact"] == 100.0 and result["best_exact_thresh"] == 0.2


def test_v2_gold_answers_that_normalise_to_nothing_count_as_no_answer():
    # The official script drops golds that normalise to "" ("the", "!") and then compares with "".
    result = compute_squad_v2([pred("q", "", 0.0)], [ref("q", "The", "!")])
    assert result["exact"] == 100.0 and result["HasAns_total"] == 1


def test_dispatch_on_version():
    eval_prediction = EvalPrediction(predictions=[pred("a", "x", 0.0)], label_ids=[ref("a", "x")])
    assert "exact_match" in compute_squad_eval_metrics(eval_prediction, version_2_with_negative=False)
    assert "HasAns_exact" in compute_squad_eval_metrics(eval_prediction, version_2_with_negative=True)


def test_v2_scores_equal_the_official_functions_on_random_texts():
    """exact and F1 from the once-normalised tokens equal the official compute_exact / compute_f1 per question, on texts
    with articles, punctuation, case, extra spaces, repeats, empty and all-punctuation answers."""
    import random

    from transformers.data.metrics import squad_metrics as official

    from squad_metric import NormalizedTokens, _raw_scores

    rng = random.Random(0)
    words = ["the", "a", "an", "Paris", "paris", "New", "York", "city", "of", "!", ",", "...", "  ", "élan", "42", ""]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 5))) for _ in range(400)]
    golds = {f"q{i}": rng.sample(texts, rng.randint(1, 3)) for i in range(300)}
    predicted = {f"q{i}": rng.choice(texts) for i in range(300)}
    exact, f1 = _raw_scores(predicted, golds, NormalizedTokens())
    for qid, answers in golds.items():
        assert exact[qid] == max(official.compute_exact(g, predicted[qid]) for g in answers)
        assert f1[qid] == max(official.compute_f1(g, predicted[qid]) for g in answers)
