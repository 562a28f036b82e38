"""Post-processing for the beam-search QA head (XLNet, XLM, and beam_search_head.py's head on an adapter model): its
top start/end candidates mapped back to answer spans of the original contexts, and the prediction files
({stage}_predictions.json, {stage}_nbest_predictions.json and, for SQuAD v2.0, {stage}_null_odds.json, whose null
odds are the minimum answer-class logit of a question's windows).
"""
import collections
import logging
from typing import Optional, Tuple

import numpy as np
from tqdm.auto import tqdm

from prediction_files import write_prediction_files
from qa_data import read_column

logger = logging.getLogger(__name__)


def keep_answer(text: str, context: str, start_char: int, end_char: int) -> bool:
    """Whether a candidate answer may be used: `text` is context[start_char:end_char]. Edit this to reject answers
    (return False); the next best candidate then takes the rejected one's place. Example: `return ". " not in text`."""
    return True


def postprocess_qa_predictions_with_beam_search(
    examples,
    features,
    predictions: Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    version_2_with_negative: bool = False,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    start_n_top: int = 5,
    end_n_top: int = 5,
    output_dir: Optional[str] = None,
    prefix: Optional[str] = None,
    log_level: Optional[int] = logging.WARNING,
    id_column: str = "id",
    context_column: str = "context",
):
    """Post-processes the predictions of a question-answering model with beam search (XLNet, XLM, or an adapter model
    with the same head) into answers that are substrings of the original contexts.

    Args:
        examples: The non-preprocessed dataset (only its id and context columns are read).
        features: The processed dataset (example_id, offset_mapping and, optionally, token_is_max_context).
        predictions: The model's five outputs at inference, each with one row per feature: start_top_log_probs and
            start_top_index (start_n_top per feature), end_top_log_probs and end_top_index (start_n_top * end_n_top;
            the ends of the i-th start are at i*end_n_top .. i*end_n_top+end_n_top-1) and cls_logits (one per feature).
        version_2_with_negative: Whether the dataset has questions without an answer: then the minimum cls_logits
            over each example's features is returned (and written) as its null odds.
        n_best_size: How many of the best predictions each example's n-best list keeps.
        max_answer_length: The longest answer, in tokens.
        start_n_top: How many of the top start logits are searched for the n_best_size predictions.
        end_n_top: How many of the top end logits (per start) are searched for the n_best_size predictions.
        output_dir: If given, the predictions, the n-best lists and, for v2, the null odds are written there as JSON.
        prefix: If given, added to the names of those files ({prefix}_predictions.json...).
        log_level: The calling process's logging level: the summary line is logged at INFO or below.
        id_column: The examples' id column.
        context_column: The examples' context column.

    Returns:
        ``(all_predictions, scores_diff_json)``: ``{id: answer text}`` (always the best candidate, which may be ""
        only when there is none) and ``{id: min cls logit}`` for v2 (None for v1). An example without any feature
        (--max_eval_samples cuts features) gets no answer: it is left out of what is returned and written.
    """
    if len(predictions) != 5:
        raise ValueError("`predictions` should be a tuple with five elements.")

    if len(predictions[0]) != len(features):
        raise ValueError(f"Got {len(predictions[0])} predictions and {len(features)} features.")
    if any(np.isnan(np.asarray(predictions[k], dtype=float)).any() for k in (0, 2, 4)):
        raise ValueError("The start/end log-probabilities or cls logits contain NaN (a half-precision overflow?): no "
                         "answer can be ranked.")

    # Build a map example to its corresponding features.
    example_ids, contexts = read_column(examples, id_column), read_column(examples, context_column)
    example_id_to_index = {k: i for i, k in enumerate(example_ids)}
    features_per_example = collections.defaultdict(list)
    for i, example_id in enumerate(_feature_column(features, "example_id")):
        features_per_example[example_id_to_index[example_id]].append(i)
    all_offset_mappings = _feature_column(features, "offset_mapping")
    all_token_is_max_context = _feature_column(features, "token_is_max_context")

    # log_level is the level of the calling process (INFO on the main process): the message is only for that one. The
    # level of this module's logger, which other code shares, is left as it is.
    if log_level is None or log_level <= logging.INFO:
        logger.info(f"Post-processing {len(examples)} example predictions split into {len(features)} features.")

    all_predictions = collections.OrderedDict()
    all_nbest_json = collections.OrderedDict()
    scores_diff_json = collections.OrderedDict() if version_2_with_negative else None
    for example_index, (example_id, context) in enumerate(tqdm(zip(example_ids, contexts), total=len(examples))):
        if not features_per_example[example_index]:
            continue
        prelim_predictions, min_null_score = _beam_candidates(
            features_per_example[example_index], predictions, all_offset_mappings, all_token_is_max_context,
            start_n_top, end_n_top, max_answer_length,
        )
        # keep_answer may reject a candidate by its text, before the n-best cut: the next best takes its place.
        prelim_predictions = [p for p in prelim_predictions
                              if keep_answer(context[slice(*p["offsets"])], context, *p["offsets"])]
        nbest, min_null_score = _nbest_with_probabilities(prelim_predictions, min_null_score, context, n_best_size)
        # Pick the best prediction and set the probability for the null answer.
        all_predictions[example_id] = nbest[0]["text"]
        if version_2_with_negative:
            scores_diff_json[example_id] = float(min_null_score)
        all_nbest_json[example_id] = nbest

    missing = sum(not features_per_example[example_index] for example_index in range(len(example_ids)))
    if missing:
        logger.warning(f"{missing} of {len(example_ids)} examples have no feature (--max_eval_samples and "
                       "--max_predict_samples cap features): they get no prediction and are left out of the metric.")
    write_prediction_files(output_dir, prefix, {"predictions": all_predictions, "nbest_predictions": all_nbest_json,
                                                "null_odds": scores_diff_json})
    return all_predictions, scores_diff_json


def _beam_candidates(feature_indices, predictions, all_offset_mappings, all_token_is_max_context, start_n_top,
                     end_n_top, max_answer_length):
    """The candidate answers of one example over all its features (each start among the start_n_top best, each end
    among the end_n_top best for that start), and the minimum null (cls) score of its features."""
    start_top_log_probs, start_top_index, end_top_log_probs, end_top_index, cls_logits = predictions
    min_null_score = None
    prelim_predictions = []
    for feature_index in feature_indices:
        start_log_prob = start_top_log_probs[feature_index]
        start_indexes = start_top_index[feature_index]
        end_log_prob = end_top_log_probs[feature_index]
        end_indexes = end_top_index[feature_index]
        feature_null_score = cls_logits[feature_index]
        # This is what will allow us to map some the positions in our logits to span of texts in the original context.
        offset_mapping = all_offset_mappings[feature_index]
        # Optional `token_is_max_context`, if provided we will remove answers that do not have the maximum context
        # available in the current feature.
        token_is_max_context = all_token_is_max_context[feature_index]

        # Update minimum null prediction
        if min_null_score is None or feature_null_score < min_null_score:
            min_null_score = feature_null_score

        # Go through all possibilities for the `n_start_top`/`n_end_top` greater start and end logits.
        for i in range(start_n_top):
            for j in range(end_n_top):
                start_index = int(start_indexes[i])
                j_index = i * end_n_top + j
                end_index = int(end_indexes[j_index])
                # Don't consider out-of-scope answers (last part of the test should be unnecessary because of the
                # p_mask but let's not take any risk)
                if (
                    start_index >= len(offset_mapping)
                    or end_index >= len(offset_mapping)
                    or offset_mapping[start_index] is None
                    or len(offset_mapping[start_index]) < 2
                    or offset_mapping[end_index] is None
                    or len(offset_mapping[end_index]) < 2
                ):
                    continue
                # Don't consider answers with a length negative or > max_answer_length.
                if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                    continue
                # Don't consider answer that don't have the maximum context available (if such information is
                # provided).
                if token_is_max_context is not None and not token_is_max_context.get(str(start_index), False):
                    continue
                prelim_predictions.append(
                    {
                        "offsets": (offset_mapping[start_index][0], offset_mapping[end_index][1]),
                        "score": start_log_prob[i] + end_log_prob[j_index],
                        "start_log_prob": start_log_prob[i],
                        "end_log_prob": end_log_prob[j_index],
                    }
                )
    return prelim_predictions, min_null_score


def _nbest_with_probabilities(prelim_predictions, min_null_score, context, n_best_size):
    """The n_best_size best candidates with their text and softmax probability, as JSON-ready floats; a fake empty
    answer when there is no candidate (and then a null score of -2e-6, as upstream)."""
    # Only keep the best `n_best_size` predictions.
    predictions = sorted(prelim_predictions, key=lambda x: x["score"], reverse=True)[:n_best_size]

    # Use the offsets to gather the answer text in the original context.
    for pred in predictions:
        offsets = pred.pop("offsets")
        pred["text"] = context[offsets[0] : offsets[1]]

    # In the very rare edge case we have not a single non-null prediction, we create a fake prediction to avoid
    # failure.
    if len(predictions) == 0:
        # Without predictions min_null_score is going to be None and None will cause an exception later
        min_null_score = -2e-6
        predictions.insert(0, {"text": "", "start_logit": -1e-6, "end_logit": -1e-6, "score": min_null_score})

    # Compute the softmax of all scores (we do it with numpy to stay independent from torch/tf in this file, using
    # the LogSumExp trick).
    scores = np.array([pred.pop("score") for pred in predictions])
    exp_scores = np.exp(scores - np.max(scores))
    probs = exp_scores / exp_scores.sum()

    # Include the probabilities in our predictions.
    for prob, pred in zip(probs, predictions):
        pred["probability"] = prob

    # Make `predictions` JSON-serializable by casting np.float back to float.
    nbest = [
        {k: (float(v) if isinstance(v, (np.float16, np.float32, np.float64)) else v) for k, v in pred.items()}
        for pred in predictions
    ]
    return nbest, min_null_score


def _feature_column(features, name):
    """One column of the features, read at once (reading `features[i]` decodes the whole row every time): from a
    datasets.Dataset, or from a list of dicts. A missing column reads as None for every feature."""
    if hasattr(features, "column_names"):
        return features[name] if name in features.column_names else [None] * len(features)
    return [feature.get(name) for feature in features]
