"""Post-processing for extractive question answering: the model's start/end logits back to answer spans of the
original contexts, and the prediction files ({stage}_predictions.json, {stage}_nbest_predictions.json and, for SQuAD
v2.0, {stage}_null_odds.json). Reads only the examples' id and context columns (their names given by the script) and
the features' example_id, offset_mapping and, where present, token_is_max_context."""
import collections
import gc
import json
import logging
from functools import partial
from itertools import accumulate
from json.encoder import encode_basestring_ascii
from typing import Optional, Tuple

import numpy as np

from prediction_files import dumps_indent4, write_prediction_files
from qa_data import read_column

logger = logging.getLogger(__name__)
QAPredictions = collections.namedtuple("QAPredictions", "predictions best_non_null null_odds")


def postprocess_qa_predictions(
    examples, features, predictions: Tuple[np.ndarray, np.ndarray], version_2_with_negative: bool = False,
    n_best_size: int = 20, max_answer_length: int = 30, null_score_diff_threshold: float = 0.0,
    output_dir: Optional[str] = None, prefix: Optional[str] = None, log_level: Optional[int] = logging.WARNING,
    id_column: str = "id", context_column: str = "context", background_files: bool = False,
    with_null_odds: bool = False,
):
    """Post-processes the start and end logits (one row per feature) of a question-answering model into answers that
    are substrings of the original contexts, searching all features at once with numpy, with exactly the output of
    the straightforward loop over features (kept in toy/upstream.py; tests/test_postprocess_equivalence.py compares).
    v2: the answer is "" when the null score (the minimum over the example's features) minus the best span's score is
    above null_score_diff_threshold. The prediction files go to output_dir if given (names starting with `prefix`),
    from a background process if background_files. The summary line is logged if log_level (the calling process's) is
    INFO or below. Returns {id: answer}; with with_null_odds, QAPredictions(those answers, and for v2 {id: best
    non-null answer} and {id: null odds}, as in the null odds file, for the SQuAD v2.0 metric's threshold sweep)."""
    if len(predictions) != 2:
        raise ValueError("`predictions` should be a tuple with two elements (start_logits, end_logits).")
    if len(predictions[0]) != len(features):
        raise ValueError(f"Got {len(predictions[0])} predictions and {len(features)} features.")
    # Each feature's example: the last example with that id, as the loop's dict does.
    example_ids = read_column(examples, id_column)
    example_id_to_index = {k: i for i, k in enumerate(example_ids)}
    feature_example = np.array([example_id_to_index[k] for k in read_column(features, "example_id")], dtype=np.int64)
    # Only for the calling process (INFO on the main one): this module's logger, shared, is left as it is.
    if log_level is None or log_level <= logging.INFO:
        logger.info(f"Post-processing {len(examples)} example predictions split into {len(features)} features.")
    # Hundreds of thousands of small acyclic objects are built below: cyclic garbage collection would only slow it.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        all_predictions, all_nbest_json, scores_diff_json, best_non_null = _predictions_and_nbest(
            features, predictions, example_ids, feature_example, read_column(examples, context_column),
            version_2_with_negative, n_best_size, max_answer_length, null_score_diff_threshold,
        )
    finally:
        if gc_was_enabled:
            gc.enable()
    write_prediction_files(output_dir, prefix, all_predictions, all_nbest_json, scores_diff_json, background_files)
    return QAPredictions(all_predictions, best_non_null, scores_diff_json) if with_null_odds else all_predictions


def _predictions_and_nbest(features, predictions, example_ids, feature_example, contexts, version_2_with_negative,
                           n_best_size, max_answer_length, null_score_diff_threshold):
    """The loop's {id: answer}, {id: n-best entries} (as a function that builds it) and, for v2, {id: null score
    difference} and {id: best non-null answer}."""
    cand = _span_candidates(features, *predictions, n_best_size, max_answer_length)
    table = _nbest_table(cand, feature_example, len(example_ids), version_2_with_negative, n_best_size)
    counts = np.diff(table.bounds)
    # Whether each entry's text, context[offset_start:offset_end], is non-empty, from the offsets alone (the length
    # of a Python slice, negative offsets included).
    length = np.fromiter(map(len, contexts), dtype=np.int64, count=len(contexts))[table.example]
    clipped_end, clipped_start = (np.where(offset < 0, np.maximum(offset + length, 0), np.minimum(offset, length))
                                  for offset in (table.offset_end, table.offset_start))
    has_text = clipped_end > clipped_start
    first_text_empty = (counts > 0) & ~np.append(has_text, True)[np.minimum(table.bounds[:-1], len(has_text))]
    # Examples sorted with Python's sorted() (NaN scores) and the "empty" fallback go through the loop's steps one by
    # one; all the others at once.
    irregular = table.slow | set(np.flatnonzero((counts == 0) | ((counts == 1) & first_text_empty)).tolist())
    answers = [None] * len(example_ids)
    with_entries = np.flatnonzero(counts > 0)
    for e, text in zip(with_entries.tolist(), _entry_texts(table, contexts, table.bounds[:-1][with_entries])):
        answers[e] = text
    v2_best = []  # (example, null score minus the best non-null prediction's, its text), numpy values as in the loop
    if version_2_with_negative:
        null_score, regular, score_diffs, best = _v2_score_diffs(cand, table, has_text, irregular)
        v2_best = list(zip(regular, score_diffs, _entry_texts(table, contexts, best)))
    irregular_nbest = {}
    for example_index in sorted(irregular):
        nbest, logits = _irregular_nbest(cand, table, contexts, example_index, version_2_with_negative, n_best_size)
        irregular_nbest[example_index] = nbest
        if not version_2_with_negative:
            answers[example_index] = nbest[0]["text"]
            continue
        i = 0
        while nbest[i]["text"] == "":
            i += 1
        v2_best.append((example_index, null_score[example_index] - logits[i][0] - logits[i][1], nbest[i]["text"]))
    null_odds, best_texts = [None] * len(example_ids), [None] * len(example_ids)
    for e, score_diff, text in v2_best:
        null_odds[e] = float(score_diff)  # To be JSON-serializable.
        best_texts[e] = text
        answers[e] = "" if score_diff > null_score_diff_threshold else text

    # A repeated id keeps its first position and its last value, as in the loop. The n-best file's text is made only
    # where the file is written, in the background writer when there is one.
    all_predictions = collections.OrderedDict(zip(example_ids, answers))
    all_nbest_json = partial(_nbest_text, table, contexts, example_ids, irregular_nbest)
    if not version_2_with_negative:
        return all_predictions, all_nbest_json, None, None
    return (all_predictions, all_nbest_json, collections.OrderedDict(zip(example_ids, null_odds)),
            collections.OrderedDict(zip(example_ids, best_texts)))


def _entry_texts(table, contexts, entries):
    """The texts of the given n-best entries (an array of indices)."""
    return [contexts[e][a:b] for e, a, b in zip(table.example[entries].tolist(), table.offset_start[entries].tolist(),
                                                 table.offset_end[entries].tolist())]


_NBEST_ENTRY = ('{\n            "start_logit": %s,\n            "end_logit": %s,\n            "text": %s,\n'
                '            "probability": %s\n        }')


def _nbest_text(table, contexts, example_ids, irregular_nbest):
    """The n-best file's text, json.dumps({id: n-best entries}, indent=4) exactly, written from the table's columns
    (each value encoded once, without building ~230k dicts: half the time); irregular examples' lists via json."""
    texts = map(encode_basestring_ascii, _entry_texts(table, contexts, np.arange(len(table.example))))
    entries = [_NBEST_ENTRY % entry for entry in zip(_json_numbers(table.start_logit), _json_numbers(table.end_logit),
                                                      texts, _json_numbers(table.probability))]
    bounds, lists = table.bounds.tolist(), []
    # A repeated id keeps its first place and its last value, as in a dict.
    for example_id, e in {example_id: e for e, example_id in enumerate(example_ids)}.items():
        if e in irregular_nbest:
            lists.append(dumps_indent4({example_id: irregular_nbest[e]})[2:-2])
            continue
        key = encode_basestring_ascii(example_id) if isinstance(example_id, str) else json.dumps({example_id: 0})[1:-4]
        lists.append(f"    {key}: [\n        " + ",\n        ".join(entries[bounds[e]:bounds[e + 1]]) + "\n    ]")
    return "{\n" + ",\n".join(lists) + "\n}" if lists else "{}"


def _json_numbers(values):
    """json's text of each value (for finite floats float.__repr__, as json.dumps uses, called directly: faster)."""
    finite = np.issubdtype(values.dtype, np.floating) and np.isfinite(values).all()
    return list(map(float.__repr__ if finite else json.dumps, values.tolist()))


def _v2_score_diffs(cand, table, has_text, irregular):
    """v2: each example's null score (an example without features has the previous one's: the loop does not reset it)
    and, for all the examples not in `irregular` at once, their indices, null score minus the logits of the best
    non-null prediction (the first entry with a text) and that entry; the loop's errors where it has them."""
    null_feature = np.array(table.null_feature)
    latest = np.maximum.accumulate(np.where(null_feature >= 0, np.arange(len(null_feature)), -1))
    null_score = np.asarray(cand.null_score)[null_feature[np.maximum(latest, 0)]]
    if len(latest) and latest[0] < 0:
        raise UnboundLocalError("cannot access local variable 'null_score' where it is not associated with a value")
    regular = np.setdiff1d(np.arange(len(table.bounds) - 1), list(irregular))
    with_text = np.flatnonzero(has_text)
    position = np.searchsorted(with_text, table.bounds[:-1][regular])
    if (position >= len(with_text)).any() or (with_text[np.minimum(position, len(with_text) - 1)]
                                               >= table.bounds[1:][regular]).any():
        raise IndexError("list index out of range")  # every kept prediction is empty: the loop runs past its end
    best = with_text[position]
    score_diffs = null_score[regular] - table.start_logit[best] - table.end_logit[best]
    return null_score, regular.tolist(), score_diffs, best


def _irregular_nbest(cand, table, contexts, example_index, version_2_with_negative, n_best_size):
    """One irregular example's n-best entries, with the "empty" fallback, and their (start, end) logits."""
    if example_index in table.slow:
        nbest, scores, logits = _nbest_slow(cand, table, contexts, example_index, version_2_with_negative, n_best_size)
    else:  # no entry, or one whose text is empty
        low, high = table.bounds[example_index], table.bounds[example_index + 1]
        nbest = [{"start_logit": s, "end_logit": e, "text": "", "probability": None} for s, e in zip(
            table.start_logit[low:high].tolist(), table.end_logit[low:high].tolist())]
        scores, logits = table.score[low:high], list(zip(table.start_logit[low:high], table.end_logit[low:high]))
    # In the very rare edge case we have not a single non-null prediction, we create a fake prediction to avoid
    # failure; the softmax then includes its score 0.0 (in float64, as the loop's np.array makes it).
    if len(nbest) == 0 or (len(nbest) == 1 and nbest[0]["text"] == ""):
        scores = np.array([0.0] + list(scores))
        exp_scores = np.exp(scores - np.max(scores))
        probs = (exp_scores / exp_scores.sum()).tolist()
        nbest = [{"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "probability": probs[0]}] + [
            dict(entry, probability=prob) for entry, prob in zip(nbest, probs[1:])]
        logits = [(0.0, 0.0)] + logits
    return nbest, logits


# Answer spans of all features in the loop's order (feature, start rank, end rank), and each feature's null (CLS) score
# and logits, in the logits' dtype: indexing them gives the same numpy scalars (and float arithmetic) as in the loop.
_SpanCandidates = collections.namedtuple("_SpanCandidates", "feature score start_logit end_logit offset_start "
                                         "offset_end null_score null_start_logit null_end_logit")


def _top_indices(logits, n_best_size):
    """The rows, each row's `np.argsort(row)[-1 : -n_best_size - 1 : -1]` exactly (ties included: numpy's default
    argsort of a 2-D array sorts each row as it sorts that row alone), their logits and a mask of the ranks that exist
    (ragged rows may be short). Rows whose k+1 largest values differ take the faster argpartition (same result)."""
    try:
        array = np.asarray(logits)
    except ValueError:  # rows of different lengths
        array = None
    if array is None or array.ndim != 2 or array.dtype == object:
        rows = [np.asarray(row) for row in logits]
        tops = [np.argsort(row)[-1 : -n_best_size - 1 : -1] for row in rows]
        width = max((len(top) for top in tops), default=0)
        index, present = np.zeros((len(rows), width), dtype=np.int64), np.zeros((len(rows), width), dtype=bool)
        values = np.zeros((len(rows), width), dtype=np.result_type(*rows) if rows else np.float32)
        for i, (row, top) in enumerate(zip(rows, tops)):
            index[i, : len(top)], values[i, : len(top)], present[i, : len(top)] = top, row[top], True
        return rows, index, values, present
    width = array.shape[1]
    k = len(range(width)[-1 : -n_best_size - 1 : -1])  # the slice always takes the k largest, largest first
    if not 0 < k < width - 1:
        top = np.argsort(array, axis=-1)[:, -1 : -n_best_size - 1 : -1]
        return array, top, np.take_along_axis(array, top, axis=-1), np.ones(top.shape, dtype=bool)
    rows = np.arange(len(array))[:, None]
    largest = np.argpartition(array, width - k - 1, axis=-1)[:, width - k - 1 :]
    values = array[rows, largest]
    order = np.argsort(values, axis=-1)
    largest, values = largest[rows, order], values[rows, order]
    top, top_values = largest[:, :0:-1], values[:, :0:-1]
    ambiguous = np.flatnonzero(~(values[:, 1:] > values[:, :-1]).all(axis=-1))
    if len(ambiguous):
        top[ambiguous] = np.argsort(array[ambiguous], axis=-1)[:, -1 : -n_best_size - 1 : -1]
        top_values[ambiguous] = np.take_along_axis(array[ambiguous], top[ambiguous], axis=-1)
    return array, top, top_values, np.ones(top.shape, dtype=bool)


def _offset_lookup(features):
    """A function (index, present) -> (usable, first, second) over token indices, one row per feature: `usable` where
    the loop accepts the token (index < len(offset_mapping), offset not None and of length >= 2), `first`/`second` its
    offset[0]/offset[1] (0 elsewhere). Reads a Dataset's int lists from the Arrow buffers, anything else as it is."""
    import datasets
    import pyarrow as pa

    if isinstance(features, datasets.Dataset):
        column = features.with_format("arrow")["offset_mapping"]
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        is_list = (pa.types.is_list, pa.types.is_large_list)
        if (
            any(check(column.type) for check in is_list)
            and any(check(column.type.value_type) for check in is_list)
            and pa.types.is_integer(column.type.value_type.value_type)
            and all(chunk.null_count == 0 and chunk.values.values.null_count == 0 for chunk in chunks)
        ):
            # Chunk by chunk (a cached dataset has one per 1,000 features), without copying the token arrays.
            ends = list(accumulate(map(len, chunks), initial=0))
            readers = [(low, high, _offset_chunk_reader(chunk)) for low, high, chunk in zip(ends, ends[1:], chunks)]

            def lookup(index, present):
                usable = np.zeros(index.shape, dtype=bool)
                first, second = np.zeros(index.shape, dtype=np.int64), np.zeros(index.shape, dtype=np.int64)
                for low, high, read in readers:
                    if high > low:
                        usable[low:high], first[low:high], second[low:high] = read(index[low:high], present[low:high])
                return usable, first, second

            return lookup
    rows = read_column(features, "offset_mapping")
    n_tokens = np.array([len(row) for row in rows], dtype=np.int64)
    row_start = np.cumsum(n_tokens) - n_tokens
    flat_offsets = [offset for row in rows for offset in row]
    flat_usable = np.array([o is not None and len(o) >= 2 for o in flat_offsets] + [False], dtype=bool)
    flat_first, flat_second = np.zeros(len(flat_offsets) + 1, dtype=object), np.zeros(len(flat_offsets) + 1, object)
    flat_first[:-1] = [o[0] if ok else 0 for o, ok in zip(flat_offsets, flat_usable)]
    flat_second[:-1] = [o[1] if ok else 0 for o, ok in zip(flat_offsets, flat_usable)]

    def lookup(index, present):
        inside = present & (index < n_tokens[:, None])
        flat = np.where(inside, row_start[:, None] + index, len(flat_offsets))
        return flat_usable[flat], flat_first[flat], flat_second[flat]

    return lookup


def _offset_chunk_reader(outer):
    """_offset_lookup's function for one Arrow chunk of offset_mapping (lists of int lists, outer ones never null), on
    numpy views of its buffers: token k of row f is child entry offsets[f] + k, its offset a slice of the grandchild."""
    row_offsets = outer.offsets.to_numpy()
    tokens = outer.values
    token_offsets = tokens.offsets.to_numpy()
    token_valid = tokens.is_valid().to_numpy(zero_copy_only=False) if tokens.null_count else None
    values = tokens.values.to_numpy(zero_copy_only=False)
    row_start, n_tokens = row_offsets[:-1], np.diff(row_offsets)

    def read(index, present):
        inside = present & (index < n_tokens[:, None])
        if len(values) < 2:  # no offset of length 2 anywhere
            nothing = np.zeros(index.shape, dtype=np.int64)
            return nothing.astype(bool), nothing, nothing
        flat = np.where(inside, row_start[:, None] + index, 0)
        begin = token_offsets[flat]
        usable = inside & (token_offsets[flat + 1] - begin >= 2)
        if token_valid is not None:
            usable &= token_valid[flat]
        begin = np.where(usable, begin, 0)
        return usable, np.where(usable, values[begin], 0), np.where(usable, values[begin + 1], 0)

    return read


def _span_candidates(features, all_start_logits, all_end_logits, n_best_size, max_answer_length, chunk=1 << 16):
    """The (start, end) pairs the loop keeps, for all features at once and in the loop's order, less those that cannot
    reach their example's n-best list: a pair with at least n_best_size pairs of its feature scoring strictly higher
    (only done when every logit is finite: NaN has no order)."""
    import datasets

    start_rows, start_index, start_value, start_present = _top_indices(all_start_logits, n_best_size)
    end_rows, end_index, end_value, end_present = _top_indices(all_end_logits, n_best_size)
    lookup = _offset_lookup(features)
    start_ok, start_first, _ = lookup(start_index, start_present)
    end_ok, _, end_second = lookup(end_index, end_present)
    # The loop's token_is_max_context rule: a start is kept if the feature has no such dict or the dict's
    # .get(str(start_index), False) is true.
    if not isinstance(features, datasets.Dataset):
        dicts = [features[i].get("token_is_max_context", None) for i in range(len(features))]
    else:
        dicts = read_column(features, "token_is_max_context") if "token_is_max_context" in features.column_names else []
    for f, token_is_max_context in enumerate(dicts):
        if token_is_max_context is not None:
            start_ok[f] &= [bool(token_is_max_context.get(str(s), False)) for s in start_index[f].tolist()]
    # Null (CLS) score of each feature, start_logits[0] + end_logits[0], in the logits' dtype.
    if isinstance(start_rows, np.ndarray) and isinstance(end_rows, np.ndarray):
        null_start, null_end = start_rows[:, 0], end_rows[:, 0]
        null_score = null_start + null_end
    else:
        null_start, null_end = [row[0] for row in start_rows], [row[0] for row in end_rows]
        null_score = [s + e for s, e in zip(null_start, null_end)]

    n_pairs = start_index.shape[1] * end_index.shape[1]
    prune = (0 < n_best_size < n_pairs and all(np.issubdtype(v.dtype, np.floating) for v in (start_value, end_value))
             and all(np.isfinite(np.asarray(v, dtype=float)).all() for v in (start_value, end_value, null_score)))
    # Lengths end - start + 1 in [1, max_answer_length], as one unsigned comparison for an int limit.
    whole = isinstance(max_answer_length, (int, np.integer)) and not isinstance(max_answer_length, bool)
    small = start_index.astype(np.int32), end_index.astype(np.int32)
    pieces = []
    step = max(1, chunk // max(1, n_pairs))
    for low in range(0, max(len(start_index), 1), step):  # once at least, for the arrays' types
        rows = slice(low, low + step)
        if whole:
            keep = (small[1][rows][:, None, :] - small[0][rows][:, :, None]).view(np.uint32) < max(max_answer_length, 0)
        else:
            s, e = start_index[rows][:, :, None], end_index[rows][:, None, :]
            keep = ~(e < s) & ~(e - s + 1 > max_answer_length)
        keep &= start_ok[rows][:, :, None] & end_ok[rows][:, None, :]
        if prune:
            score = start_value[rows][:, :, None] + end_value[rows][:, None, :]
            valid_scores = np.where(keep, score, -np.inf).reshape(len(score), n_pairs)
            nth_best = np.partition(valid_scores, n_pairs - n_best_size, axis=1)[:, n_pairs - n_best_size]
            keep &= score >= nth_best[:, None, None]
        f, a, b = np.nonzero(keep)  # row-major: feature, then start rank, then end rank, as the loop goes
        f += low
        pieces.append((f, start_value[f, a], end_value[f, b], start_first[f, a], end_second[f, b]))
    feature, start_logit, end_logit, offset_start, offset_end = (np.concatenate(p) for p in zip(*pieces))
    return _SpanCandidates(feature, start_logit + end_logit, start_logit, end_logit, offset_start, offset_end,
                           null_score, null_start, null_end)


# The n-best lists of all examples, concatenated: example e owns entries bounds[e]:bounds[e + 1] (numpy arrays).
# null_feature[e]: the example's feature with the minimum null score (-1: none). Examples in `slow` have no entries:
# _nbest_slow sorts their candidates, in the loop's order at by_example[by_bounds[e]:by_bounds[e + 1]].
_NBestTable = collections.namedtuple("_NBestTable", "null_feature bounds example offset_start offset_end start_logit "
                                     "end_logit score probability slow by_example by_bounds")


def _nbest_table(cand, feature_example, n_examples, version_2_with_negative, n_best_size) -> _NBestTable:
    """The loop's n-best lists of all examples at once: it sorts each example's candidates (the minimum null prediction
    last in v2) by descending score with a stable sort, keeps n_best_size, adds back the null prediction if no kept one
    has offsets (0, 0), and takes a softmax."""
    null_score = np.asarray(cand.null_score)
    # The minimum null prediction of each example: the first of its features with the lowest null score.
    n_features = len(feature_example)
    null_feature = np.full(n_examples, -1, dtype=np.int64)
    by_feature = np.lexsort((np.arange(n_features), null_score, feature_example))
    first = np.ones(n_features, dtype=bool)
    first[1:] = feature_example[by_feature][1:] != feature_example[by_feature][:-1]
    null_feature[feature_example[by_feature][first]] = by_feature[first]
    # The candidates by example, then by descending score, ties in the loop's order: a stable sort by score, then the
    # unique key (example, rank by score) sorted (faster than np.lexsort).
    cand_example = feature_example[cand.feature]
    by_score = np.argsort(-cand.score, kind="stable")
    score_rank = np.empty(len(by_score), dtype=np.int64)
    score_rank[by_score] = np.arange(len(by_score))
    ranked = np.argsort(cand_example * max(len(by_score), 1) + score_rank)
    ranked_example = cand_example[ranked]
    by_bounds = np.searchsorted(ranked_example, np.arange(n_examples + 1))
    slow, by_example = _slow_examples(cand.score, cand_example, feature_example, null_score, null_feature, n_best_size)
    entry_candidate, counts, bounds = _entry_candidates(
        cand, ranked, ranked_example, by_bounds, null_score, null_feature, slow, version_2_with_negative, n_best_size
    )

    # The values of each entry: its candidate's, or those of its null prediction's feature (offsets (0, 0)).
    entry_example = np.repeat(np.arange(n_examples), counts)
    real, nulls = np.flatnonzero(entry_candidate >= 0), np.flatnonzero(entry_candidate < 0)
    entry_null = np.maximum(null_feature, 0)[entry_example]

    def entry_values(values, null_values=None):
        entries = np.zeros(len(entry_candidate), dtype=values.dtype)
        entries[real] = values[entry_candidate[real]]
        if null_values is not None and len(nulls):
            entries[nulls] = null_values[entry_null[nulls]]
        return entries

    score = entry_values(cand.score, null_score)
    # The softmax of all lists of the same length as one 2-D array: numpy reduces each row of a contiguous 2-D array
    # exactly as it reduces that row alone (the equivalence tests check the probabilities bit for bit).
    probability = np.zeros(len(score), dtype=score.dtype)
    for length in np.unique(counts[counts > 0]).tolist():
        rows = bounds[:-1][counts == length][:, None] + np.arange(length)
        exp_scores = np.exp(score[rows] - score[rows].max(axis=1, keepdims=True))
        probability[rows] = exp_scores / exp_scores.sum(axis=1, keepdims=True)
    return _NBestTable(
        null_feature.tolist(), bounds, entry_example, entry_values(cand.offset_start), entry_values(cand.offset_end),
        entry_values(cand.start_logit, np.asarray(cand.null_start_logit)),
        entry_values(cand.end_logit, np.asarray(cand.null_end_logit)), score, probability,
        set(np.flatnonzero(slow).tolist()), by_example, by_bounds.tolist(),
    )


def _slow_examples(score, cand_example, feature_example, null_score, null_feature, n_best_size):
    """A mask of the examples that need Python's sorted() (NaN has no order; negative n_best_size), their candidates in
    the loop's order (None if there are none); sets their minimum null prediction by the loop's rule (NaN included)."""
    n_examples = len(null_feature)
    slow = np.zeros(n_examples, dtype=bool)
    if np.issubdtype(score.dtype, np.floating):
        slow[cand_example[np.isnan(score)]] = True
        slow[feature_example[np.isnan(null_score)]] = True
    if n_best_size < 0:
        slow[:] = True
    by_example = None
    if slow.any():
        by_example = np.argsort(cand_example, kind="stable").tolist()
        features_order = np.argsort(feature_example, kind="stable")
        feature_bounds = np.searchsorted(feature_example[features_order], np.arange(n_examples + 1))
        for e in np.flatnonzero(slow).tolist():
            best = -1
            for f in features_order[feature_bounds[e] : feature_bounds[e + 1]].tolist():
                if best < 0 or null_score[best] > null_score[f]:
                    best = f
            null_feature[e] = best
    return slow, by_example


def _entry_candidates(cand, ranked, ranked_example, by_bounds, null_score, null_feature, slow,
                      version_2_with_negative, n_best_size):
    """The n-best entries of the examples not in `slow`, example by example in rank order: each entry's candidate
    (-1: the null prediction), the number of entries of each example and their bounds."""
    n_examples = len(null_feature)
    # Rank of each candidate in its example's sorted list; in v2 the null prediction comes after every candidate
    # whose score is not lower than its own.
    fast = ~slow
    has_null = (null_feature >= 0) & fast & version_2_with_negative
    rank = np.arange(len(ranked)) - by_bounds[ranked_example]
    null_rank = np.zeros(n_examples, dtype=np.int64)
    if version_2_with_negative and len(ranked):
        ahead = cand.score[ranked] >= null_score[np.maximum(null_feature, 0)][ranked_example]
        null_rank = np.bincount(ranked_example[ahead], minlength=n_examples)
        rank = rank + (has_null[ranked_example] & (rank >= null_rank[ranked_example]))
    keep = (rank < n_best_size) & fast[ranked_example]
    null_kept = has_null & (null_rank < n_best_size)
    # "Add back the minimum null prediction if it was removed": unless a kept candidate has offsets (0, 0) too.
    zero_offsets = (cand.offset_start[ranked] == 0) & (cand.offset_end[ranked] == 0)
    n_kept = np.bincount(ranked_example[keep], minlength=n_examples)
    zero_kept = np.bincount(ranked_example[keep & zero_offsets], minlength=n_examples) > 0
    counts = n_kept + (null_kept | (has_null & ~zero_kept))  # kept candidates and null predictions
    bounds = np.concatenate([[0], np.cumsum(counts)])
    entry_candidate = np.full(bounds[-1], -1, dtype=np.int64)  # -1: the null prediction
    entry_candidate[bounds[ranked_example[keep]] + rank[keep]] = ranked[keep]
    return entry_candidate, counts, bounds


def _json_number(value):
    """The loop's cast of n-best values for the JSON: numpy floats to float, anything else as it is."""
    return float(value) if isinstance(value, (np.float16, np.float32, np.float64)) else value


def _nbest_slow(cand, table, contexts, example_index, version_2_with_negative, n_best_size):
    """One example's n-best entries exactly as the loop makes them, with Python's sorted(), their scores and their
    (start, end) logits as numpy scalars (probabilities left to the caller when the "empty" prediction is added)."""
    null_feature = table.null_feature[example_index]
    with_null = version_2_with_negative and null_feature >= 0
    null_score = cand.null_score[null_feature] if with_null else None
    order = table.by_example[table.by_bounds[example_index] : table.by_bounds[example_index + 1]]
    order = sorted(order + ([-1] if with_null else []), key=lambda c: null_score if c < 0 else cand.score[c],
                   reverse=True)[:n_best_size]
    if with_null and not any(c < 0 or (cand.offset_start[c] == 0 and cand.offset_end[c] == 0) for c in order):
        order.append(-1)
    context = contexts[example_index]
    texts = ["" if c < 0 else context[cand.offset_start[c] : cand.offset_end[c]] for c in order]
    scores = [null_score if c < 0 else cand.score[c] for c in order]
    null_logits = (cand.null_start_logit[null_feature], cand.null_end_logit[null_feature]) if with_null else None
    logits = [null_logits if c < 0 else (cand.start_logit[c], cand.end_logit[c]) for c in order]
    probs = [None] * len(order)
    if order and not (len(order) == 1 and texts[0] == ""):
        array = np.array(scores)
        exp_scores = np.exp(array - np.max(array))
        probs = exp_scores / exp_scores.sum()
    nbest = [
        {"start_logit": _json_number(s), "end_logit": _json_number(e), "text": t, "probability": _json_number(p)}
        for (s, e), t, p in zip(logits, texts, probs)
    ]
    return nbest, scores, logits
