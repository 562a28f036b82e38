"""The SQuAD v1.1 and v2.0 metrics, computed offline: the keys and values of evaluate.load("squad"/"squad_v2") (which
downloads the metric from the Hub), from transformers' copy of the official v2.0 evaluation script
(transformers.data.metrics.squad_metrics). v1.1 differs from it only in its F1 for two empty answers (0, not 1)."""
import collections
import itertools
import logging

from script_utils import UsageError

logger = logging.getLogger(__name__)

SQUAD_V1_METRICS = ("exact_match", "f1")
SQUAD_V2_METRICS = ("exact", "f1", "HasAns_exact", "HasAns_f1")


def compute_squad_v1(predictions, references) -> dict:
    """`evaluate.load("squad").compute(...)`: {"exact_match", "f1"} in percent over all references."""
    predicted = {p["id"]: p["prediction_text"] for p in predictions}
    tokens = NormalizedTokens()
    exact_match = f1 = 0.0
    for ref in references:
        if ref["id"] not in predicted:
            logger.warning(f"Unanswered question {ref['id']} will receive score 0.")
            continue
        golds = list(ref["answers"]["text"])
        if not golds:
            raise UsageError(f"Question {ref['id']} has no answer, which SQuAD v1.1 scoring cannot handle: this looks "
                             "like SQuAD v2.0 data. Add --version_2_with_negative.")
        prediction = tokens(predicted[ref["id"]])
        exact_match += max(float(tokens(g) == prediction) for g in golds)
        f1 += max(_f1(tokens(g), prediction) if tokens(g) or prediction else 0.0 for g in golds)  # v1.1: 0 if both ""
    return {"exact_match": 100.0 * exact_match / len(references), "f1": 100.0 * f1 / len(references)}


def compute_squad_v2(predictions, references, no_answer_threshold: float = 1.0) -> dict:
    """`evaluate.load("squad_v2").compute(...)`: exact, f1, total, HasAns_*, NoAns_*, best_* (percent).

    All but best_* score each prediction_text ("no answer" where no_answer_probability is above no_answer_threshold),
    as the official script does. When every prediction also carries "null_odds" (its value in {stage}_null_odds.json)
    and "best_non_null_text" (its best span), best_* come from best_null_threshold: best_exact_thresh and
    best_f1_thresh are null odds, in the units of --null_score_diff_threshold. Otherwise the official sweep runs.
    """
    from transformers.data.metrics import squad_metrics as official

    na_probs = {p["id"]: p["no_answer_probability"] for p in predictions}
    predicted = {p["id"]: p["prediction_text"] for p in predictions}
    has_answer = {ref["id"]: bool(ref["answers"]["text"]) for ref in references}
    tokens = NormalizedTokens()
    golds = {ref["id"]: [text for text in ref["answers"]["text"] if tokens(text)] or [""] for ref in references}
    for ref in references:
        if ref["id"] not in predicted:
            logger.warning(f"Missing prediction for {ref['id']}")
    exact_raw, f1_raw = _raw_scores(predicted, golds, tokens)
    exact = official.apply_no_ans_threshold(exact_raw, na_probs, has_answer, no_answer_threshold)
    f1 = official.apply_no_ans_threshold(f1_raw, na_probs, has_answer, no_answer_threshold)
    result = official.make_eval_dict(exact, f1)
    for prefix, answerable in (("HasAns", True), ("NoAns", False)):
        qids = [qid for qid, has in has_answer.items() if has == answerable]
        if qids:
            official.merge_eval(result, official.make_eval_dict(exact, f1, qid_list=qids), prefix)
    if predictions and all("null_odds" in p and "best_non_null_text" in p for p in predictions):
        null_odds = {p["id"]: p["null_odds"] for p in predictions}
        exact_best, f1_best = _raw_scores({p["id"]: p["best_non_null_text"] for p in predictions}, golds, tokens)
        result["best_exact"], result["best_exact_thresh"] = best_null_threshold(exact_best, null_odds, has_answer)
        result["best_f1"], result["best_f1_thresh"] = best_null_threshold(f1_best, null_odds, has_answer)
    else:
        official.find_all_best_thresh(result, predicted, exact_raw, f1_raw, na_probs, has_answer)
    return dict(result)


class NormalizedTokens(dict):
    """text -> the official get_tokens(text), each text normalised once (the official compute_exact and compute_f1
    normalise both texts for every pair, which cost more than post-processing at SQuAD-v2-dev scale)."""

    def __missing__(self, text):
        from transformers.data.metrics.squad_metrics import normalize_answer
        self[text] = normalize_answer(text).split() if text else []
        return self[text]

    __call__ = dict.__getitem__  # tokens(text): __missing__ fills it in


def _f1(gold_tokens: list, predicted_tokens: list) -> float:
    """The official compute_f1 on normalised tokens (the same operations, so the same floats)."""
    if len(gold_tokens) == 0 or len(predicted_tokens) == 0:
        return int(gold_tokens == predicted_tokens)  # If either is no-answer, then F1 is 1 if they agree, 0 otherwise
    num_same = sum((collections.Counter(gold_tokens) & collections.Counter(predicted_tokens)).values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(predicted_tokens)
    recall = 1.0 * num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def _raw_scores(texts: dict, golds: dict, tokens: NormalizedTokens):
    """({id: exact}, {id: F1}) of each answered reference's text against its best gold answer. Two normalised texts
    are equal exactly when their token lists are (normalize_answer joins its tokens with single spaces)."""
    exact, f1 = {}, {}
    for qid, answers in golds.items():
        if qid in texts:
            predicted = tokens(texts[qid])
            exact[qid] = max(int(tokens(g) == predicted) for g in answers)
            f1[qid] = max(_f1(tokens(g), predicted) for g in answers)
    return exact, f1


def best_null_threshold(answer_scores: dict, null_odds: dict, has_answer: dict):
    """The official SQuAD v2.0 best-threshold sweep (find_best_thresh) on null odds: (best score in percent, threshold).

    answer_scores[qid] is the exact or F1 score (0..1) of a question's best non-null answer. A question abstains when
    its null odds are above the threshold (post-processing's rule for --null_score_diff_threshold), which scores 1 on
    an unanswerable question and 0 on an answerable one. As the official sweep: all abstain, then answer one by one in
    increasing null odds; the best running total wins (the lowest threshold on ties). Unlike it, so that predicting
    with the threshold gives exactly the best score: equal null odds answer together; abstaining everywhere gives the
    float32 just below the lowest null odds (not 0.0, the default threshold); an unanswerable question's answer scores
    what exact/F1 give it (1 for e.g. "the"); a NaN null odds always answers.
    """
    import numpy as np

    abstain = {qid: float(not has_answer[qid]) for qid in answer_scores}
    always_answer = [qid for qid in answer_scores if null_odds[qid] != null_odds[qid]]  # NaN
    ordered = sorted((qid for qid in null_odds if qid in answer_scores and null_odds[qid] == null_odds[qid]),
                     key=lambda qid: null_odds[qid])
    score = sum(abstain[qid] for qid in ordered) + sum(answer_scores[qid] for qid in always_answer)
    best_score, best_threshold = score, 0.0
    if ordered:
        best_threshold = float(np.nextafter(np.float32(null_odds[ordered[0]]), np.float32(-np.inf)))
    for value, group in itertools.groupby(ordered, key=lambda qid: null_odds[qid]):
        for qid in group:
            score += answer_scores[qid] - abstain[qid]
        if score > best_score:
            best_score, best_threshold = score, value
    return 100.0 * best_score / len(answer_scores), best_threshold


def tuned_null_threshold(data_args, eval_metrics) -> dict:
    """--tune_null_threshold: --do_predict uses the best-F1 null threshold --do_eval found on the evaluation data. Sets
    data_args.null_score_diff_threshold, logs it, returns {"predict_null_score_diff_threshold": it}."""
    if not eval_metrics or "eval_best_f1_thresh" not in eval_metrics:
        raise UsageError("--tune_null_threshold needs the SQuAD v2.0 metrics of --do_eval (eval_best_f1_thresh): "
                         "evaluate on data with answers, with --version_2_with_negative.")
    threshold = eval_metrics["eval_best_f1_thresh"]
    logger.info(f"--tune_null_threshold: predicting with null score difference threshold {threshold!r} (the best F1 "
                f"threshold on the evaluation data: eval_best_f1 {eval_metrics['eval_best_f1']:.2f}).")
    data_args.null_score_diff_threshold = threshold
    return {"predict_null_score_diff_threshold": threshold}


def compute_squad_eval_metrics(p, version_2_with_negative: bool):
    """`compute_metrics` for the QA trainers, the SQuAD metric the upstream scripts load with evaluate, computed
    offline: p.predictions are formatted answers, p.label_ids the references."""
    return (compute_squad_v2 if version_2_with_negative else compute_squad_v1)(p.predictions, p.label_ids)
