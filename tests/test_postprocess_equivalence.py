"""The vectorised `utils_qa.postprocess_qa_predictions` against the straightforward algorithm it replaced.

`reference_postprocess_qa_predictions` below is a verbatim copy of the loop implementation that run_qa.py used
before the vectorisation (itself the adapters/transformers `utils_qa.py` algorithm, SPEC section 5.1). Both run on
the same random logits and must give identical return values and byte-identical prediction files: v1 and v2, at
scale, with ties, masked (None) offsets, `token_is_max_context`, the "empty" fallback, unpadded (dynamic padding)
offsets, examples without features and features out of order. benchmarks/postprocess.py times the two.
"""
import collections
import logging
from typing import Optional, Tuple

import datasets
import numpy as np
import pyarrow as pa
import pytest
from tqdm.auto import tqdm

from utils_qa import postprocess_qa_predictions, write_prediction_files


logger = logging.getLogger("utils_qa")


# ----------------------------------------------------------------------------------------------------------------------
# The straightforward algorithm (verbatim copy, do not edit: it is the specification the fast version must match)
# ----------------------------------------------------------------------------------------------------------------------


def reference_postprocess_qa_predictions(
    examples,
    features,
    predictions: Tuple[np.ndarray, np.ndarray],
    version_2_with_negative: bool = False,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    null_score_diff_threshold: float = 0.0,
    output_dir: Optional[str] = None,
    prefix: Optional[str] = None,
    log_level: Optional[int] = logging.WARNING,
):
    """
    Post-processes the predictions of a question-answering model to convert them to answers that are substrings of the
    original contexts. This is the base postprocessing functions for models that only return start and end logits.

    Args:
        examples: The non-preprocessed dataset (see the main script for more information).
        features: The processed dataset (see the main script for more information).
        predictions (:obj:`Tuple[np.ndarray, np.ndarray]`):
            The predictions of the model: two arrays containing the start logits and the end logits respectively. Its
            first dimension must match the number of elements of :obj:`features`.
        version_2_with_negative (:obj:`bool`, `optional`, defaults to :obj:`False`):
            Whether or not the underlying dataset contains examples with no answers.
        n_best_size (:obj:`int`, `optional`, defaults to 20):
            The total number of n-best predictions to generate when looking for an answer.
        max_answer_length (:obj:`int`, `optional`, defaults to 30):
            The maximum length of an answer that can be generated. This is needed because the start and end predictions
            are not conditioned on one another.
        null_score_diff_threshold (:obj:`float`, `optional`, defaults to 0):
            The threshold used to select the null answer: if the best answer has a score that is less than the score of
            the null answer minus this threshold, the null answer is selected for this example (note that the score of
            the null answer for an example giving several features is the minimum of the scores for the null answer on
            each feature: all features must be aligned on the fact they `want` to predict a null answer).

            Only useful when :obj:`version_2_with_negative` is :obj:`True`.
        output_dir (:obj:`str`, `optional`):
            If provided, the dictionaries of predictions, n_best predictions (with their scores and logits) and, if
            :obj:`version_2_with_negative=True`, the dictionary of the scores differences between best and null
            answers, are saved in `output_dir`.
        prefix (:obj:`str`, `optional`):
            If provided, the dictionaries mentioned above are saved with `prefix` added to their names.
        log_level (:obj:`int`, `optional`, defaults to ``logging.WARNING``):
            ``logging`` log level (e.g., ``logging.WARNING``)
    """
    if len(predictions) != 2:
        raise ValueError("`predictions` should be a tuple with two elements (start_logits, end_logits).")
    all_start_logits, all_end_logits = predictions

    if len(predictions[0]) != len(features):
        raise ValueError(f"Got {len(predictions[0])} predictions and {len(features)} features.")

    # Build a map example to its corresponding features.
    example_id_to_index = {k: i for i, k in enumerate(examples["id"])}
    features_per_example = collections.defaultdict(list)
    for i, feature in enumerate(features):
        features_per_example[example_id_to_index[feature["example_id"]]].append(i)

    # The dictionaries we have to fill.
    all_predictions = collections.OrderedDict()
    all_nbest_json = collections.OrderedDict()
    if version_2_with_negative:
        scores_diff_json = collections.OrderedDict()

    # Logging.
    logger.setLevel(log_level)
    logger.info(f"Post-processing {len(examples)} example predictions split into {len(features)} features.")

    # Let's loop over all the examples!
    for example_index, example in enumerate(tqdm(examples)):
        # Those are the indices of the features associated to the current example.
        feature_indices = features_per_example[example_index]

        min_null_prediction = None
        prelim_predictions = []

        # Looping through all the features associated to the current example.
        for feature_index in feature_indices:
            # We grab the predictions of the model for this feature.
            start_logits = all_start_logits[feature_index]
            end_logits = all_end_logits[feature_index]
            # This is what will allow us to map some the positions in our logits to span of texts in the original
            # context.
            offset_mapping = features[feature_index]["offset_mapping"]
            # Optional `token_is_max_context`, if provided we will remove answers that do not have the maximum context
            # available in the current feature.
            token_is_max_context = features[feature_index].get("token_is_max_context", None)

            # Update minimum null prediction.
            feature_null_score = start_logits[0] + end_logits[0]
            if min_null_prediction is None or min_null_prediction["score"] > feature_null_score:
                min_null_prediction = {
                    "offsets": (0, 0),
                    "score": feature_null_score,
                    "start_logit": start_logits[0],
                    "end_logit": end_logits[0],
                }

            # Go through all possibilities for the `n_best_size` greater start and end logits.
            start_indexes = np.argsort(start_logits)[-1 : -n_best_size - 1 : -1].tolist()
            end_indexes = np.argsort(end_logits)[-1 : -n_best_size - 1 : -1].tolist()
            for start_index in start_indexes:
                for end_index in end_indexes:
                    # Don't consider out-of-scope answers, either because the indices are out of bounds or correspond
                    # to part of the input_ids that are not in the context.
                    if (
                        start_index >= len(offset_mapping)
                        or end_index >= len(offset_mapping)
                        or offset_mapping[start_index] is None
                        or len(offset_mapping[start_index]) < 2
                        or offset_mapping[end_index] is None
                        or len(offset_mapping[end_index]) < 2
                    ):
                        continue
                    # Don't consider answers with a length that is either < 0 or > max_answer_length.
                    if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                        continue
                    # Don't consider answer that don't have the maximum context available (if such information is
                    # provided).
                    if token_is_max_context is not None and not token_is_max_context.get(str(start_index), False):
                        continue

                    prelim_predictions.append(
                        {
                            "offsets": (offset_mapping[start_index][0], offset_mapping[end_index][1]),
                            "score": start_logits[start_index] + end_logits[end_index],
                            "start_logit": start_logits[start_index],
                            "end_logit": end_logits[end_index],
                        }
                    )
        if version_2_with_negative and min_null_prediction is not None:
            # Add the minimum null prediction
            prelim_predictions.append(min_null_prediction)
            null_score = min_null_prediction["score"]

        # Only keep the best `n_best_size` predictions.
        predictions = sorted(prelim_predictions, key=lambda x: x["score"], reverse=True)[:n_best_size]

        # Add back the minimum null prediction if it was removed because of its low score.
        if (
            version_2_with_negative
            and min_null_prediction is not None
            and not any(p["offsets"] == (0, 0) for p in predictions)
        ):
            predictions.append(min_null_prediction)

        # Use the offsets to gather the answer text in the original context.
        context = example["context"]
        for pred in predictions:
            offsets = pred.pop("offsets")
            pred["text"] = context[offsets[0] : offsets[1]]

        # In the very rare edge case we have not a single non-null prediction, we create a fake prediction to avoid
        # failure.
        if len(predictions) == 0 or (len(predictions) == 1 and predictions[0]["text"] == ""):
            predictions.insert(0, {"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "score": 0.0})

        # Compute the softmax of all scores (we do it with numpy to stay independent from torch/tf in this file, using
        # the LogSumExp trick).
        scores = np.array([pred.pop("score") for pred in predictions])
        exp_scores = np.exp(scores - np.max(scores))
        probs = exp_scores / exp_scores.sum()

        # Include the probabilities in our predictions.
        for prob, pred in zip(probs, predictions):
            pred["probability"] = prob

        # Pick the best prediction. If the null answer is not possible, this is easy.
        if not version_2_with_negative:
            all_predictions[example["id"]] = predictions[0]["text"]
        else:
            # Otherwise we first need to find the best non-empty prediction.
            i = 0
            while predictions[i]["text"] == "":
                i += 1
            best_non_null_pred = predictions[i]

            # Then we compare to the null prediction using the threshold.
            score_diff = null_score - best_non_null_pred["start_logit"] - best_non_null_pred["end_logit"]
            scores_diff_json[example["id"]] = float(score_diff)  # To be JSON-serializable.
            if score_diff > null_score_diff_threshold:
                all_predictions[example["id"]] = ""
            else:
                all_predictions[example["id"]] = best_non_null_pred["text"]

        # Make `predictions` JSON-serializable by casting np.float back to float.
        all_nbest_json[example["id"]] = [
            {k: (float(v) if isinstance(v, (np.float16, np.float32, np.float64)) else v) for k, v in pred.items()}
            for pred in predictions
        ]

    write_prediction_files(
        output_dir, prefix, all_predictions, all_nbest_json, scores_diff_json if version_2_with_negative else None
    )
    return all_predictions



# ----------------------------------------------------------------------------------------------------------------------
# Synthetic SQuAD-like data (also used by benchmarks/postprocess.py at SQuAD-v2-dev scale)
# ----------------------------------------------------------------------------------------------------------------------

_WORDS = None


def _vocabulary():
    global _WORDS
    if _WORDS is None:
        rng = np.random.default_rng(1234)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        _WORDS = ["".join(rng.choice(letters, size=int(n))) for n in rng.integers(1, 10, size=2000)]
    return _WORDS


def make_case(n_examples, seed=0, *, width=384, version_2=False, multi_window_rate=0.05, padded=True,
              tie_levels=None, masked_rate=0.0, short_rate=0.0, zero_rate=0.0, max_context=False,
              dtype=np.float32, min_context_tokens=12, peaked=False):
    """(examples, features, (start_logits, end_logits)) shaped like run_qa.py's SQuAD evaluation data.

    Each feature is [CLS] question [SEP] context-window [SEP] [pad ...] with offsets None outside the context window,
    and the input_ids/token_type_ids/attention_mask columns a real feature has. A fraction of the examples (long
    contexts) span 2-3 overlapping windows. Options: `padded=False` stops the offsets at the last [SEP] (dynamic
    padding) and pads the logits with -100 as the Trainer's evaluation loop does; `tie_levels` draws the logits from
    that many integer values (ties everywhere); `masked_rate` sets random context offsets to None and `short_rate`
    gives random context tokens an offset of length 1 and `zero_rate` the offset (0, 0); `max_context` adds a
    `token_is_max_context` column; single-window contexts have between `min_context_tokens` and a full window of
    tokens. `peaked` logits look like a trained model's: low outside the context, peaks at an answer start and end,
    so that most top indices fall in the context and there are many candidate spans (random logits mostly hit
    question and padding tokens).
    """
    rng = np.random.default_rng(seed)
    vocab = _vocabulary()
    ids, contexts = [], []
    feature_example, feature_length, offsets_rows, kind_rows = [], [], [], []  # kind: 0 None, 1 short, 2 offset
    max_context_rows, context_spans = [], []
    for e in range(n_examples):
        qid = f"{seed:x}{e:07d}"
        q_len = int(rng.integers(6, 21))
        window = width - q_len - 3
        step = max(1, window // 2)
        n_windows = 1 if rng.random() >= multi_window_rate else int(rng.integers(2, 4))
        if n_windows == 1:
            short = rng.random() < 0.1
            n_tokens = int(rng.integers(min(min_context_tokens, window), (min(12, window) if short else window) + 1))
        else:
            n_tokens = window + step * (n_windows - 2) + int(rng.integers(1, step + 1))
        words = [vocab[i] for i in rng.integers(0, len(vocab), size=n_tokens)]
        lengths = np.array([len(w) for w in words])
        starts = np.concatenate([[0], np.cumsum(lengths[:-1] + 1)])
        ids.append(qid)
        contexts.append(" ".join(words))
        first = 0
        while True:
            count = min(window, n_tokens - first)
            offsets = np.zeros((width, 2), dtype=np.int64)
            kind = np.zeros(width, dtype=np.int8)
            positions = np.arange(q_len + 2, q_len + 2 + count)
            offsets[positions, 0] = starts[first : first + count]
            offsets[positions, 1] = starts[first : first + count] + lengths[first : first + count]
            kind[positions] = 2
            if masked_rate:
                kind[positions[rng.random(count) < masked_rate]] = 0
            if short_rate:
                kind[positions[(rng.random(count) < short_rate) & (kind[positions] == 2)]] = 1
            if zero_rate:
                offsets[positions[rng.random(count) < zero_rate]] = 0
            feature_example.append(qid)
            feature_length.append(width if padded else q_len + 3 + count)
            context_spans.append((q_len + 2, count))
            offsets_rows.append(offsets)
            kind_rows.append(kind)
            if max_context:
                if rng.random() < 0.1:
                    max_context_rows.append(None)
                else:
                    flags = rng.random(count) < 0.7
                    max_context_rows.append({str(int(p)): bool(f) for p, f in zip(positions, flags)})
            if first + count >= n_tokens:
                break
            first += step

    n_features = len(feature_example)
    length = np.array(feature_length)
    offsets = np.stack(offsets_rows).reshape(-1, 2)
    kind = np.stack(kind_rows).reshape(-1)
    keep_token = (np.arange(width)[None, :] < length[:, None]).reshape(-1)
    offsets, kind = offsets[keep_token], kind[keep_token]
    values = offsets[np.arange(2)[None, :] < kind[:, None]]
    inner = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(kind)]), pa.int32()), pa.array(values, pa.int64()),
        mask=pa.array(kind == 0),
    )
    row_offsets = pa.array(np.concatenate([[0], np.cumsum(length)]), pa.int32())
    token_ids = rng.integers(5, 30000, size=int(length.sum()))
    columns = {
        "input_ids": pa.ListArray.from_arrays(row_offsets, pa.array(token_ids, pa.int32())),
        "token_type_ids": pa.ListArray.from_arrays(row_offsets, pa.array(token_ids % 2, pa.int8())),
        "attention_mask": pa.ListArray.from_arrays(row_offsets, pa.array(np.ones_like(token_ids), pa.int8())),
        "offset_mapping": pa.ListArray.from_arrays(row_offsets, inner),
        "example_id": pa.array(feature_example, pa.string()),
    }
    features = datasets.Dataset(datasets.table.InMemoryTable(pa.table(columns)))
    if max_context:
        features = features.add_column("token_is_max_context", max_context_rows)
    examples = datasets.Dataset.from_dict(
        {
            "id": ids,
            "title": ["synthetic"] * n_examples,
            "context": contexts,
            "question": ["what is it?"] * n_examples,
            "answers": [{"text": [], "answer_start": []}] * n_examples,
        }
    )

    shape = (n_features, width)
    if tie_levels:
        start = rng.integers(0, tie_levels, size=shape).astype(dtype)
        end = rng.integers(0, tie_levels, size=shape).astype(dtype)
    elif peaked:
        start, end = rng.normal(size=shape) - 8.0, rng.normal(size=shape) - 8.0
        for f, (first_position, count) in enumerate(context_spans):
            context = slice(first_position, first_position + count)
            start[f, context] += 8.0
            end[f, context] += 8.0
            answer_start = first_position + int(rng.integers(0, count))
            answer_end = min(answer_start + int(rng.integers(0, 6)), first_position + count - 1)
            for logits, position in ((start, answer_start), (end, answer_end)):
                logits[f, max(position - 2, 0) : position + 3] += 2.0
                logits[f, position] += 4.0
        if version_2:
            null = rng.random(n_features) < 0.4
            start[:, 0] += np.where(null, 20.0, 4.0)
            end[:, 0] += np.where(null, 20.0, 4.0)
        start, end = start.astype(dtype), end.astype(dtype)
    else:
        start = rng.normal(size=shape).astype(dtype)
        end = rng.normal(size=shape).astype(dtype)
        if version_2:  # some windows prefer the null answer
            null = rng.random(n_features) < 0.3
            start[null, 0] += 3.0
            end[null, 0] += 3.0
    if not padded:
        beyond = np.arange(width)[None, :] >= length[:, None]
        start[beyond] = -100
        end[beyond] = -100
    return examples, features, (start, end)


# ----------------------------------------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------------------------------------


def assert_identical(tmp_path, examples, features, predictions, **kwargs):
    """Run both implementations; same return value (order included) and byte-identical files. Returns them."""
    results = {}
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, function in (("reference", reference_postprocess_qa_predictions), ("fast", postprocess_qa_predictions)):
        out_dir = tmp_path / name
        out_dir.mkdir()
        returned = function(examples, features, predictions, output_dir=str(out_dir), prefix="eval", **kwargs)
        results[name] = (returned, {p.name: p.read_bytes() for p in sorted(out_dir.iterdir())})
    (reference, reference_files), (fast, fast_files) = results["reference"], results["fast"]
    assert type(fast) is type(reference)
    assert list(fast.items()) == list(reference.items())
    expected_files = ["eval_nbest_predictions.json", "eval_predictions.json"]
    if kwargs.get("version_2_with_negative"):
        expected_files.insert(1, "eval_null_odds.json")
    assert sorted(reference_files) == sorted(fast_files) == expected_files
    for name in expected_files:
        assert fast_files[name] == reference_files[name], f"{name} differs"
    return reference, {name: content.decode() for name, content in reference_files.items()}


def nbest_of(files):
    import json

    return json.loads(files["eval_nbest_predictions.json"])


# ----------------------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v2,peaked", [(False, False), (True, False), (True, True)], ids=["v1", "v2", "v2-peaked"])
def test_identical_at_scale(tmp_path, v2, peaked):
    examples, features, logits = make_case(600, seed=1 + v2 + 2 * peaked, version_2=v2, multi_window_rate=0.15,
                                           peaked=peaked)
    assert len(features) > len(examples) + 50  # several windows per long context
    predictions, files = assert_identical(tmp_path, examples, features, logits, version_2_with_negative=v2)
    assert len(predictions) == len(examples)
    if v2:
        answers = list(predictions.values())
        assert 0 < answers.count("") < len(answers)  # both null and span answers were chosen
    if peaked:  # most windows have many candidate spans: the n-best lists are full
        assert sum(len(cands) >= 20 for cands in nbest_of(files).values()) > len(examples) / 2


@pytest.mark.parametrize(
    "v2,n_best,max_len,threshold,width,dtype",
    [
        (True, 5, 4, 1.5, 96, np.float64),  # few candidates, short answers, a threshold, float64 logits
        (False, 60, 30, 0.0, 48, np.float32),  # n_best_size larger than the sequence
        (True, 1, 30, -1.0, 64, np.float16),  # a single candidate, half-precision logits
    ],
)
def test_identical_with_other_settings(tmp_path, v2, n_best, max_len, threshold, width, dtype):
    examples, features, logits = make_case(120, seed=5, width=width, version_2=v2, multi_window_rate=0.3,
                                           dtype=dtype)
    assert_identical(tmp_path, examples, features, logits, version_2_with_negative=v2, n_best_size=n_best,
                     max_answer_length=max_len, null_score_diff_threshold=threshold)


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("width", [64, 384])
def test_identical_with_ties(tmp_path, v2, width):
    """Logits drawn from 3 values: argsort ties at every rank and equal candidate scores everywhere."""
    examples, features, logits = make_case(150, seed=7, width=width, version_2=v2, tie_levels=3,
                                           multi_window_rate=0.3)
    # The ties are the hard case: numpy's default argsort does not order equal values like a stable sort, so an
    # implementation using kind="stable" (or argpartition) would pick other candidates. Make sure this data shows it.
    start = logits[0]
    default_top = np.argsort(start, axis=-1)[:, -1:-21:-1]
    stable_top = np.argsort(start, axis=-1, kind="stable")[:, -1:-21:-1]
    assert (default_top != stable_top).any()
    predictions, files = assert_identical(tmp_path, examples, features, logits, version_2_with_negative=v2)
    scores = [c["start_logit"] + c["end_logit"] for cands in nbest_of(files).values() for c in cands]
    assert len(scores) > len(set(scores)) * 5  # many candidates share a score


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_identical_with_masked_offsets_and_token_is_max_context(tmp_path, v2):
    examples, features, logits = make_case(150, seed=11, width=128, version_2=v2, masked_rate=0.3, short_rate=0.1,
                                           zero_rate=0.01, max_context=True, multi_window_rate=0.3)
    assert "token_is_max_context" in features.column_names
    predictions, files = assert_identical(tmp_path, examples, features, logits, version_2_with_negative=v2,
                                          n_best_size=5)
    # Spans with offsets (0, 0) count as the null prediction for "add the null prediction back" in v2.
    assert any(c["text"] == "" for cands in nbest_of(files).values() for c in cands[:5] if c["probability"] < 0.999)


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_identical_with_dynamic_padding(tmp_path, v2):
    """Offsets stop at each feature's own length and the logits are -100 beyond it (as the evaluation loop pads
    batches of different lengths); short features put -100 positions among the top start/end indices."""
    examples, features, logits = make_case(200, seed=13, width=384, version_2=v2, padded=False,
                                           multi_window_rate=0.1, min_context_tokens=1)
    lengths = [len(o) for o in features["offset_mapping"]]
    assert min(lengths) < 20 and max(lengths) <= 384 == logits[0].shape[1]
    assert_identical(tmp_path, examples, features, logits, version_2_with_negative=v2)


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_identical_with_fallbacks_missing_features_and_shuffled_order(tmp_path, v2):
    """Examples with no valid span ("empty" fallback), examples left without features (max_eval_samples cuts
    features), a duplicated example id, and features not in example order."""
    examples, features, (start, end) = make_case(80, seed=17, width=64, version_2=v2, multi_window_rate=0.3)
    n = len(features)
    rng = np.random.default_rng(0)
    # No valid span at all in the windows of a few examples: every offset None.
    no_span = {features[i]["example_id"] for i in rng.choice(n, size=6, replace=False)}
    offsets = [[None] * len(o) if qid in no_span else o
               for qid, o in zip(features["example_id"], features["offset_mapping"])]
    features = features.remove_columns("offset_mapping").add_column("offset_mapping", offsets)
    # Drop the features of some examples (not the first one) and shuffle the rest.
    ids = list(examples["id"])
    dropped = set(ids[30:33]) | {ids[41]}
    order = [int(i) for i in rng.permutation(n) if features[int(i)]["example_id"] not in dropped]
    features = features.select(order)
    logits = (start[order], end[order])
    # A duplicated id: both examples map to the second one, which gets the features of the first.
    ids[41] = ids[40]
    examples = examples.remove_columns("id").add_column("id", ids)

    predictions, files = assert_identical(tmp_path, examples, features, logits, version_2_with_negative=v2)
    nbest = nbest_of(files)
    assert sum(cands[0]["text"] == "empty" for cands in nbest.values()) >= 6
    assert len(predictions) == len(examples) - 1


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_identical_for_plain_python_inputs(tmp_path, v2):
    """Features as a list of dicts and logits as lists of rows of different lengths (both worked in the loop)."""
    examples, features, (start, end) = make_case(40, seed=19, width=48, version_2=v2, padded=False,
                                                 multi_window_rate=0.3)
    feature_list = [dict(f) for f in features]
    lengths = [len(f["offset_mapping"]) for f in feature_list]
    ragged = ([row[:k] for row, k in zip(start, lengths)], [row[:k] for row, k in zip(end, lengths)])
    assert len(set(lengths)) > 1
    assert_identical(tmp_path, examples, feature_list, ragged, version_2_with_negative=v2)


def test_identical_when_a_kept_span_has_offsets_0_0(tmp_path):
    """v2 adds the null prediction back after the n-best cut unless a kept prediction has offsets (0, 0): a span
    whose offsets are (0, 0) counts too."""
    examples = datasets.Dataset.from_list([{"id": "a", "context": "xyz abc de"}, {"id": "b", "context": "xyz abc de"}])
    offsets = [None, [0, 0], [4, 7], [8, 10]]
    features = datasets.Dataset.from_list([{"example_id": "a", "offset_mapping": offsets},
                                           {"example_id": "b", "offset_mapping": [None, [0, 3], [4, 7], [8, 10]]}])
    start = np.array([[-1.0, 6.0, 5.0, 0.0]] * 2, dtype=np.float32)
    end = np.array([[-1.0, 6.0, 1.0, 0.0]] * 2, dtype=np.float32)
    predictions, files = assert_identical(tmp_path, examples, features, (start, end), version_2_with_negative=True,
                                          n_best_size=2)
    nbest = nbest_of(files)
    assert [c["text"] for c in nbest["a"]] == ["", "xyz abc"]  # the (0, 0) span, no null prediction added back
    assert [c["text"] for c in nbest["b"]] == ["xyz", "xyz abc", ""]  # the null prediction added back
    assert predictions == {"a": "xyz abc", "b": "xyz"}


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_identical_with_nan_logits_and_negative_n_best_size(tmp_path, v2):
    """NaN logits (an fp16 overflow) have no order: Python's sorted() and numpy's sort disagree on them."""
    examples, features, (start, end) = make_case(60, seed=23, width=40, version_2=v2, multi_window_rate=0.3)
    rng = np.random.default_rng(1)
    start[rng.random(start.shape) < 0.03] = np.nan
    end[rng.random(end.shape) < 0.03] = np.nan
    start[:3, 0] = np.nan  # NaN null scores
    assert_identical(tmp_path / "nan", examples, features, (start, end), version_2_with_negative=v2)
    assert_identical(tmp_path / "negative", examples, features, (start, end), version_2_with_negative=v2,
                     n_best_size=-3)


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_identical_on_a_dataset_cached_on_disk(tmp_path, v2):
    """Features as run_qa.py has them: written by Dataset.map to a cache file in batches, memory-mapped back (a
    column in many Arrow chunks), here also reordered by a select() (an indices mapping)."""
    examples, features, (start, end) = make_case(120, seed=29, width=64, version_2=v2, multi_window_rate=0.3,
                                                 peaked=True)
    cached = features.map(lambda batch: batch, batched=True, writer_batch_size=25,
                          cache_file_name=str(tmp_path / "features.arrow"))
    order = np.random.default_rng(2).permutation(len(cached))
    cached = cached.select(order)
    assert cached.cache_files and cached.with_format("arrow")["offset_mapping"].num_chunks > 1
    assert_identical(tmp_path / "out", examples, cached, (start[order], end[order]), version_2_with_negative=v2)


def test_prediction_count_mismatch_still_raises():
    examples, features, (start, end) = make_case(3, seed=0, width=32)
    for function in (reference_postprocess_qa_predictions, postprocess_qa_predictions):
        with pytest.raises(ValueError, match="predictions"):
            function(examples, features, (start[:-1], end[:-1]))
        with pytest.raises(ValueError, match="two elements"):
            function(examples, features, (start, end, end))
