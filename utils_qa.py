"""Post-processing for extractive question answering: the model's start/end logits (one row per feature, i.e. per
window of a context) back to answer texts of the original contexts, and the prediction files ({stage}_predictions.json,
{stage}_nbest_predictions.json and, for SQuAD v2.0, {stage}_null_odds.json).

It follows the upstream loop (kept in toy/upstream.py, which tests/test_postprocess_equivalence.py compares with):
1. each feature's candidate spans: its n_best_size highest start positions x n_best_size highest end positions, kept
   when both tokens have offsets in the context, end >= start, the span is at most max_answer_length tokens and (if the
   features have `token_is_max_context`) the start token has its maximum context in this feature;
2. for each example, its candidates from all its features, best score first; `keep_answer` may reject one by its
   text (the next best takes its place); the first n_best_size make its n-best list, with softmax probabilities;
3. the answer: the best candidate; in v2 "" (no answer) when the null score minus the best non-empty candidate's
   score is above null_score_diff_threshold.
Numbers are computed in the logits' precision (float32 in the scripts), as in the loop, so that the files match it.
"""
import logging
from typing import NamedTuple, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prediction_files import write_prediction_files
from qa_data import read_column

logger = logging.getLogger(__name__)


def keep_answer(text: str, context: str, start_char: int, end_char: int) -> bool:
    """Whether a candidate answer may be used: `text` is context[start_char:end_char]. Edit this to reject answers
    (return False); the next best candidate then takes the rejected one's place in the n-best list and as the answer.
    The null answer of SQuAD v2.0 ("") is not a span and is not passed here. Example: `return ". " not in text`."""
    return True


class QAPredictions(NamedTuple):
    answers: dict  # {example id: answer text}; in v2 "" means "no answer"
    nbest: dict  # {example id: [{"start_logit", "end_logit", "text", "probability"}, ...]}, best first
    null_odds: Optional[dict] = None  # v2: {example id: null score - best non-empty candidate's score}
    best_non_null: Optional[dict] = None  # v2: {example id: the best non-empty candidate's text}


def postprocess_qa_predictions(
    examples, features, predictions, version_2_with_negative: bool = False, n_best_size: int = 20,
    max_answer_length: int = 30, null_score_diff_threshold: float = 0.0, output_dir: Optional[str] = None,
    prefix: Optional[str] = None, log_level: Optional[int] = logging.WARNING, id_column: str = "id",
    context_column: str = "context",
) -> QAPredictions:
    """Answers of the examples from the start and end logits of their features (see the module's docstring).
    `predictions` is (start_logits, end_logits), each of shape (features, tokens); the features need the columns
    example_id and offset_mapping (None for tokens outside the context), and may have token_is_max_context. The
    prediction files go to output_dir if given, their names starting with `prefix`. An example without any feature
    gets no answer: it is left out of what is returned and written."""
    if len(predictions) != 2:
        raise ValueError("`predictions` should be a tuple with two elements (start_logits, end_logits).")
    start_logits, end_logits = (np.asarray(logits) for logits in predictions)
    if len(start_logits) != len(features):
        raise ValueError(f"Got {len(start_logits)} predictions and {len(features)} features.")
    if start_logits.ndim != 2 or start_logits.shape != end_logits.shape:
        raise ValueError("The start and end logits must be arrays of the same shape (features, tokens), got "
                         f"{start_logits.shape} and {end_logits.shape}.")
    if np.isnan(start_logits).any() or np.isnan(end_logits).any():
        raise ValueError("The start/end logits contain NaN (a half-precision overflow?): no answer can be ranked.")
    if n_best_size < 1:
        raise ValueError(f"n_best_size must be at least 1, got {n_best_size}.")
    if log_level is None or log_level <= logging.INFO:  # the calling process's level (INFO on the main process)
        logger.info(f"Post-processing {len(examples)} example predictions split into {len(features)} features.")

    example_ids, contexts = read_column(examples, id_column), read_column(examples, context_column)
    example_id_to_index = {k: i for i, k in enumerate(example_ids)}
    feature_example = np.array([example_id_to_index[k] for k in read_column(features, "example_id")], dtype=np.int64)
    features_per_example = [[] for _ in example_ids]
    for feature_index, example_index in enumerate(feature_example.tolist()):
        features_per_example[example_index].append(feature_index)
    spans, n_spans = candidate_spans(features, start_logits, end_logits, n_best_size, max_answer_length)
    # Each example's spans next to each other, in the loop's order (by feature, then start rank, then end rank); the
    # null answers stay after them. Python lists of what the loop over the candidates reads (numpy is slow there).
    span_example = feature_example[spans["feature"][:n_spans]]
    order = np.concatenate([np.argsort(span_example, kind="stable"), np.arange(n_spans, len(spans["score"]))])
    spans = {key: values[order] for key, values in spans.items()}
    bounds = np.searchsorted(span_example[order[:n_spans]], np.arange(len(example_ids) + 1)).tolist()
    score, start_char, end_char = spans["score"].tolist(), spans["start_char"].tolist(), spans["end_char"].tolist()

    answers, all_nbest, null_odds, best_non_null = {}, {}, {}, {}
    for example_index, (example_id, context) in enumerate(zip(example_ids, contexts)):
        feature_indices = features_per_example[example_index]
        if not feature_indices:
            continue
        # v2: the null answer is that of the feature with the minimum null score (the first on a tie).
        null = n_spans + min(feature_indices, key=lambda f: score[n_spans + f]) if version_2_with_negative else None
        candidates = range(bounds[example_index], bounds[example_index + 1])
        nbest, texts = nbest_of_example(candidates, null, context, score, start_char, end_char, n_best_size)
        nbest = np.array(nbest, dtype=np.int64)
        scores = spans["score"][nbest]
        start_logit, end_logit = spans["start_logit"][nbest].tolist(), spans["end_logit"][nbest].tolist()
        if not any(texts):  # no span with a text: a fake answer "empty" with score 0 goes first, as upstream does
            texts, start_logit, end_logit = ["empty"] + texts, [0.0] + start_logit, [0.0] + end_logit
            scores = np.concatenate(([0.0], scores))  # float64 then, as upstream's np.array() of its scores
        # The softmax, in the logits' precision.
        exp_scores = np.exp(scores - scores.max())
        probabilities = (exp_scores / exp_scores.sum()).tolist()
        all_nbest[example_id] = [{"start_logit": s, "end_logit": e, "text": t, "probability": p}
                                 for s, e, t, p in zip(start_logit, end_logit, texts, probabilities)]
        if not version_2_with_negative:
            answers[example_id] = texts[0]
            continue
        best = next(i for i, text in enumerate(texts) if text)
        # The null score minus the best non-empty answer's logits, one by one in the logits' precision, as the loop.
        logit = start_logits.dtype.type
        score_diff = spans["score"][null] - logit(start_logit[best]) - logit(end_logit[best])
        null_odds[example_id], best_non_null[example_id] = float(score_diff), texts[best]
        answers[example_id] = "" if score_diff > null_score_diff_threshold else texts[best]

    missing = sum(not feature_indices for feature_indices in features_per_example)
    if missing:
        logger.warning(f"{missing} of {len(example_ids)} examples have no feature (--max_eval_samples and "
                       "--max_predict_samples cap features): they get no prediction and are left out of the metric.")
    if not version_2_with_negative:
        null_odds = best_non_null = None
    write_prediction_files(output_dir, prefix, {"predictions": answers, "nbest_predictions": all_nbest,
                                                "null_odds": null_odds})
    return QAPredictions(answers, all_nbest, null_odds, best_non_null)


def nbest_of_example(candidates, null, context, score, start_char, end_char, n_best_size):
    """One example's n-best list: (candidate indices, their texts). Its spans best first (sorted() is stable: equal
    scores stay in the loop's order), the first n_best_size that keep_answer accepts; in v2 (`null` given) the null
    answer ranks after the spans whose score is not lower, and is added back after the cut unless a kept span has
    offsets (0, 0)."""
    nbest, texts = [], []
    for c in sorted(candidates, key=score.__getitem__, reverse=True):
        if len(nbest) == n_best_size:
            break
        text = context[start_char[c] : end_char[c]]
        if keep_answer(text, context, start_char[c], end_char[c]):
            nbest.append(c)
            texts.append(text)
    if null is not None:
        position = sum(score[c] >= score[null] for c in nbest)
        nbest.insert(position, null)
        texts.insert(position, "")
        del nbest[n_best_size:], texts[n_best_size:]
        if not any(start_char[c] == end_char[c] == 0 for c in nbest):
            nbest.append(null)
            texts.append("")
    return nbest, texts


def candidate_spans(features, start_logits, end_logits, n_best_size, max_answer_length):
    """The candidate answers of all features, as arrays (feature, score = start + end logit, start_logit, end_logit,
    start_char, end_char), and n_spans: the first n_spans are spans, in the loop's order (by feature, then by the rank
    of the start, then of the end); n_spans + f is feature f's null answer (CLS: logits at position 0, chars 0, 0)."""
    # Each feature's n_best_size highest positions, highest first: the loop's np.argsort(row)[-1:-n_best_size-1:-1]
    # (an argsort of a 2-D array sorts each row as it sorts that row alone, ties included).
    top_starts = np.argsort(start_logits, axis=1)[:, -1 : -n_best_size - 1 : -1]
    top_ends = np.argsort(end_logits, axis=1)[:, -1 : -n_best_size - 1 : -1]
    start_char, start_ok = token_offsets(features, top_starts, 0)
    end_char, end_ok = token_offsets(features, top_ends, 1)
    for f, token_is_max_context in enumerate(optional_column(features, "token_is_max_context") or []):
        if token_is_max_context is not None:
            start_ok[f] &= [bool(token_is_max_context.get(str(s), False)) for s in top_starts[f].tolist()]
    # valid[f, i, j]: the span from the i-th best start to the j-th best end of feature f is a candidate.
    length = top_ends[:, None, :] - top_starts[:, :, None] + 1
    valid = start_ok[:, :, None] & end_ok[:, None, :] & (length >= 1) & (length <= max_answer_length)
    feature, i, j = np.nonzero(valid)
    n_features = len(start_logits)
    start_logit = np.concatenate([start_logits[feature, top_starts[feature, i]], start_logits[:, 0]])
    end_logit = np.concatenate([end_logits[feature, top_ends[feature, j]], end_logits[:, 0]])
    zeros = np.zeros(n_features, dtype=np.int64)
    spans = {"feature": np.concatenate([feature, np.arange(n_features)]), "score": start_logit + end_logit,
             "start_logit": start_logit, "end_logit": end_logit,
             "start_char": np.concatenate([start_char[feature, i], zeros]),
             "end_char": np.concatenate([end_char[feature, j], zeros])}
    return spans, len(feature)


def token_offsets(features, tokens, which):
    """offset_mapping[f][tokens[f, k]][which] for every feature f and k (0 where that token has no offsets), and a
    mask of the tokens that have offsets (not None, inside the feature, two numbers). Reads the column with Arrow: a
    Python list of every offset of SQuAD's features would take longer than all the rest."""
    column = features.with_format("arrow")["offset_mapping"] if hasattr(features, "with_format") else pa.array(
        [feature["offset_mapping"] for feature in features])
    column = column.cast(pa.list_(pa.list_(pa.int64())))  # also when no offset is given at all (a list of nulls)
    n_tokens = pc.list_value_length(column).fill_null(0).to_numpy()
    inside = tokens < n_tokens[:, None]
    picked = pc.list_flatten(column).take(np.where(inside, np.cumsum(n_tokens)[:, None] - n_tokens[:, None] + tokens, 0)
                                          .ravel())  # the picked tokens' offsets: [start_char, end_char] or None
    numbers = pc.list_value_length(picked).fill_null(0).to_numpy()
    ok = inside.ravel() & (numbers >= 2)
    values = np.append(pc.list_flatten(picked).to_numpy(), 0)  # all their numbers in a row (None has none)
    chars = np.where(ok, values[np.where(ok, np.cumsum(numbers) - numbers + which, -1)], 0)
    return chars.reshape(tokens.shape), ok.reshape(tokens.shape)


def optional_column(features, name) -> Optional[list]:
    """A column of the features as a list, or None if they have no such column."""
    if hasattr(features, "column_names"):
        return read_column(features, name) if name in features.column_names else None
    return [feature.get(name) for feature in features] if any(name in feature for feature in features) else None
