# coding=utf-8
"""The SQuAD v1.1 and v2.0 metrics, computed offline.

The upstream scripts call evaluate.load("squad"/"squad_v2"), which downloads the metric from the Hugging Face Hub.
These functions give the same keys and values with no network: v2.0 is assembled from transformers' copy of the
official v2.0 evaluation script (transformers.data.metrics.squad_metrics); v1.1 differs from it only in its F1 for two
empty strings (0, not 1), so its F1 is the official v1.1 function.
"""
import collections
import logging

from script_utils import UsageError


logger = logging.getLogger(__name__)

SQUAD_V1_METRICS = ("exact_match", "f1")
SQUAD_V2_METRICS = ("exact", "f1", "HasAns_exact", "HasAns_f1")


def squad_v1_f1(prediction: str, ground_truth: str) -> float:
    """F1 of the official SQuAD v1.1 evaluation script (0 when nothing is shared, even for two empty answers)."""
    from transformers.data.metrics.squad_metrics import normalize_answer

    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def compute_squad_v1(predictions, references) -> dict:
    """`evaluate.load("squad").compute(...)`: {"exact_match", "f1"} in percent over all references."""
    from transformers.data.metrics.squad_metrics import normalize_answer

    predicted = {p["id"]: p["prediction_text"] for p in predictions}
    exact_match = f1 = 0.0
    for ref in references:
        if ref["id"] not in predicted:
            logger.warning(f"Unanswered question {ref['id']} will receive score 0.")
            continue
        golds = list(ref["answers"]["text"])
        if not golds:
            raise UsageError(
                f"Question {ref['id']} has no answer, which SQuAD v1.1 scoring cannot handle: this looks like "
                "SQuAD v2.0 data. Add --version_2_with_negative."
            )
        prediction = predicted[ref["id"]]
        exact_match += max(float(normalize_answer(prediction) == normalize_answer(g)) for g in golds)
        f1 += max(squad_v1_f1(prediction, g) for g in golds)
    total = len(references)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def compute_squad_v2(predictions, references, no_answer_threshold: float = 1.0) -> dict:
    """`evaluate.load("squad_v2").compute(...)`: exact, f1, total, HasAns_*, NoAns_*, best_* (percent)."""
    from transformers.data.metrics import squad_metrics as official

    na_probs = {p["id"]: p["no_answer_probability"] for p in predictions}
    predicted = {p["id"]: p["prediction_text"] for p in predictions}
    has_answer = {ref["id"]: bool(ref["answers"]["text"]) for ref in references}

    exact_raw, f1_raw = {}, {}
    for ref in references:
        qid = ref["id"]
        golds = [text for text in ref["answers"]["text"] if official.normalize_answer(text)] or [""]
        if qid not in predicted:
            logger.warning(f"Missing prediction for {qid}")
            continue
        exact_raw[qid] = max(official.compute_exact(g, predicted[qid]) for g in golds)
        f1_raw[qid] = max(official.compute_f1(g, predicted[qid]) for g in golds)

    exact = official.apply_no_ans_threshold(exact_raw, na_probs, has_answer, no_answer_threshold)
    f1 = official.apply_no_ans_threshold(f1_raw, na_probs, has_answer, no_answer_threshold)
    result = official.make_eval_dict(exact, f1)
    has_ans_qids = [qid for qid, has in has_answer.items() if has]
    no_ans_qids = [qid for qid, has in has_answer.items() if not has]
    if has_ans_qids:
        official.merge_eval(result, official.make_eval_dict(exact, f1, qid_list=has_ans_qids), "HasAns")
    if no_ans_qids:
        official.merge_eval(result, official.make_eval_dict(exact, f1, qid_list=no_ans_qids), "NoAns")
    official.find_all_best_thresh(result, predicted, exact_raw, f1_raw, na_probs, has_answer)
    return dict(result)


def compute_squad_metrics(predictions, references, version_2_with_negative: bool) -> dict:
    """The SQuAD metric the reference loads with evaluate, computed offline."""
    if version_2_with_negative:
        return compute_squad_v2(predictions, references)
    return compute_squad_v1(predictions, references)


def compute_squad_eval_metrics(p, version_2_with_negative: bool):
    """`compute_metrics` for the QA trainers: p.predictions are formatted answers, p.label_ids the references."""
    return compute_squad_metrics(p.predictions, p.label_ids, version_2_with_negative)

