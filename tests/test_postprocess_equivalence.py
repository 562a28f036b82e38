"""`utils_qa.postprocess_qa_predictions` against the upstream loop it follows.

`reference_postprocess_qa_predictions` (toy/upstream.py) is the upstream post-processing loop of the
adapters/transformers `utils_qa.py`, verbatim. Both run on the same random logits (toy/synthetic_squad.py), on
contexts with sentences and newlines, and must give the same answers, the same predictions and null odds files byte
for byte, and the same n-best lists: texts exactly, numbers to a relative 1e-6 (the softmax may sum in another order;
the n-best file is written on one line, upstream's with indent=4). Malformed inputs (NaN logits, an example without
features, candidates that are all empty) get the new, defined behaviour instead of the loop's accidents.
benchmarks/postprocess.py times the two.
"""
import json
import logging

import datasets
import numpy as np
import pytest

from toy.synthetic_squad import make_case
from toy.upstream import reference_postprocess_qa_predictions
from utils_qa import postprocess_qa_predictions

# Comparison -----------------------------------------------------------------------------------------------------------


def with_sentences(examples):
    """The same contexts (same lengths: the offsets stay right) with sentences and line breaks: every 7th word ends
    with a full stop, every 11th space is a newline."""
    def rewrite(context):
        words = context.split(" ")
        for i in range(6, len(words), 7):
            words[i] = words[i][:-1] + "."
        pieces = " ".join(words).split(" ")
        return "".join(piece + ("" if i == len(pieces) - 1 else "\n" if i % 11 == 10 else " ")
                       for i, piece in enumerate(pieces))

    contexts = [rewrite(c) for c in examples["context"]]
    assert [len(c) for c in contexts] == [len(c) for c in examples["context"]]
    return examples.remove_columns("context").add_column("context", contexts)


def run_both(tmp_path, examples, features, predictions, **kwargs):
    """Both implementations' return values and files (name: text)."""
    results = {}
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, function in (("reference", reference_postprocess_qa_predictions), ("ours", postprocess_qa_predictions)):
        out_dir = tmp_path / name
        out_dir.mkdir()
        returned = function(examples, features, predictions, output_dir=str(out_dir), prefix="eval", **kwargs)
        results[name] = (returned, {p.name: p.read_text() for p in sorted(out_dir.iterdir())})
    return results["reference"], results["ours"]


def assert_same_nbest(ours, reference):
    """Same ids in the same order, same texts and keys, numbers to a relative 1e-6."""
    assert list(ours) == list(reference)
    for qid, entries in reference.items():
        assert [e["text"] for e in ours[qid]] == [e["text"] for e in entries], qid
        for mine, theirs in zip(ours[qid], entries):
            assert set(mine) == set(theirs)
            for key in ("start_logit", "end_logit", "probability"):
                assert mine[key] == pytest.approx(theirs[key], rel=1e-6), (qid, key)


def assert_same(tmp_path, examples, features, predictions, **kwargs):
    """Same answers (order included), null odds, predictions and null odds files byte for byte, same n-best lists
    returned and written. Returns our result and the reference's n-best lists."""
    (reference, reference_files), (ours, our_files) = run_both(tmp_path, examples, features, predictions, **kwargs)
    assert list(ours.answers.items()) == list(reference.items())
    v2 = kwargs.get("version_2_with_negative")
    names = ["eval_nbest_predictions.json", "eval_predictions.json"] + (["eval_null_odds.json"] if v2 else [])
    assert sorted(our_files) == sorted(reference_files) == sorted(names)
    assert our_files["eval_predictions.json"] == reference_files["eval_predictions.json"]
    if v2:
        assert our_files["eval_null_odds.json"] == reference_files["eval_null_odds.json"]
        assert {str(k): v for k, v in ours.null_odds.items()} == json.loads(reference_files["eval_null_odds.json"])
    reference_nbest = json.loads(reference_files["eval_nbest_predictions.json"])
    written = json.loads(our_files["eval_nbest_predictions.json"])
    assert written == {str(k): v for k, v in ours.nbest.items()}  # the file holds what is returned (keys: strings)
    assert_same_nbest(written, reference_nbest)
    assert "\n" not in our_files["eval_nbest_predictions.json"].rstrip("\n")  # compact: one line
    return ours, reference_nbest


def case(n_examples, seed, **kwargs):
    examples, features, logits = make_case(n_examples, seed=seed, **kwargs)
    return with_sentences(examples), features, logits


# Well-formed input: the same results ----------------------------------------------------------------------------------


@pytest.mark.parametrize("v2,peaked", [(False, False), (True, False), (True, True)], ids=["v1", "v2", "v2-peaked"])
def test_same_at_scale(tmp_path, v2, peaked):
    examples, features, logits = case(600, seed=1 + v2 + 2 * peaked, version_2=v2, multi_window_rate=0.15,
                                      peaked=peaked)
    assert len(features) > len(examples) + 50  # several windows per long context
    ours, nbest = assert_same(tmp_path, examples, features, logits, version_2_with_negative=v2)
    assert len(ours.answers) == len(examples)
    texts = [e["text"] for entries in nbest.values() for e in entries]
    assert any(". " in t for t in texts) and any("\n" in t for t in texts)  # answers across sentences and lines
    if v2:
        answers = list(ours.answers.values())
        assert 0 < answers.count("") < len(answers)  # both null and span answers were chosen
        assert all(ours.best_non_null[qid] == next(e["text"] for e in nbest[qid] if e["text"]) for qid in nbest)
    if peaked:  # most windows have many candidate spans: the n-best lists are full
        assert sum(len(entries) >= 20 for entries in nbest.values()) > len(examples) / 2


@pytest.mark.parametrize(
    "v2,n_best,max_len,threshold,width,dtype",
    [
        (True, 5, 4, 1.5, 96, np.float64),  # few candidates, short answers, a threshold, float64 logits
        (False, 60, 30, 0.0, 48, np.float32),  # n_best_size larger than the sequence
        (True, 1, 30, -1.0, 64, np.float16),  # a single candidate, half-precision logits
    ],
)
def test_same_with_other_settings(tmp_path, v2, n_best, max_len, threshold, width, dtype):
    examples, features, logits = case(120, seed=5, width=width, version_2=v2, multi_window_rate=0.3, dtype=dtype)
    assert_same(tmp_path, examples, features, logits, version_2_with_negative=v2, n_best_size=n_best,
                max_answer_length=max_len, null_score_diff_threshold=threshold)


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("width", [64, 384])
def test_same_with_ties(tmp_path, v2, width):
    """Logits drawn from 3 values: argsort ties at every rank and equal candidate scores everywhere."""
    examples, features, logits = case(150, seed=7, width=width, version_2=v2, tie_levels=3, multi_window_rate=0.3)
    # The ties are the hard case: numpy's default argsort does not order equal values like a stable sort, so an
    # implementation using kind="stable" (or argpartition) would pick other candidates. Make sure this data shows it.
    start = logits[0]
    assert (np.argsort(start, axis=-1)[:, -1:-21:-1] != np.argsort(start, axis=-1, kind="stable")[:, -1:-21:-1]).any()
    _, nbest = assert_same(tmp_path, examples, features, logits, version_2_with_negative=v2)
    scores = [c["start_logit"] + c["end_logit"] for entries in nbest.values() for c in entries]
    assert len(scores) > len(set(scores)) * 5  # many candidates share a score


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_same_with_masked_offsets_and_token_is_max_context(tmp_path, v2):
    examples, features, logits = case(150, seed=11, width=128, version_2=v2, masked_rate=0.3, short_rate=0.1,
                                      zero_rate=0.01, max_context=True, multi_window_rate=0.3)
    assert "token_is_max_context" in features.column_names
    _, nbest = assert_same(tmp_path, examples, features, logits, version_2_with_negative=v2, n_best_size=5)
    # Spans with offsets (0, 0) count as the null prediction for "add the null prediction back" in v2.
    assert any(c["text"] == "" for entries in nbest.values() for c in entries[:5] if c["probability"] < 0.999)


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_same_with_dynamic_padding(tmp_path, v2):
    """Offsets stop at each feature's own length and the logits are -100 beyond it (as the evaluation loop pads
    batches of different lengths); short features put -100 positions among the top start/end indices."""
    examples, features, logits = case(200, seed=13, width=384, version_2=v2, padded=False, multi_window_rate=0.1,
                                      min_context_tokens=1)
    lengths = [len(o) for o in features["offset_mapping"]]
    assert min(lengths) < 20 and max(lengths) <= 384 == logits[0].shape[1]
    assert_same(tmp_path, examples, features, logits, version_2_with_negative=v2)


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_same_with_the_empty_fallback_and_features_out_of_order(tmp_path, v2):
    """Examples with no valid span (upstream's "empty" answer), and features not in example order."""
    examples, features, (start, end) = case(80, seed=17, width=64, version_2=v2, multi_window_rate=0.3)
    rng = np.random.default_rng(0)
    no_span = {features[int(i)]["example_id"] for i in rng.choice(len(features), size=6, replace=False)}
    offsets = [[None] * len(o) if qid in no_span else o
               for qid, o in zip(features["example_id"], features["offset_mapping"])]
    features = features.remove_columns("offset_mapping").add_column("offset_mapping", offsets)
    order = rng.permutation(len(features))
    _, nbest = assert_same(tmp_path, examples, features.select(order), (start[order], end[order]),
                           version_2_with_negative=v2)
    assert sum(entries[0]["text"] == "empty" for entries in nbest.values()) == len(no_span)


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_same_for_plain_python_inputs(tmp_path, v2):
    """Features as a list of dicts (offsets as tuples) and logits as lists of rows."""
    examples, features, (start, end) = case(40, seed=19, width=48, version_2=v2, padded=False, multi_window_rate=0.3)
    feature_list = [{"example_id": f["example_id"], "offset_mapping": [o if o is None else tuple(o)
                                                                       for o in f["offset_mapping"]]}
                    for f in features]
    assert_same(tmp_path, examples, feature_list, (start.tolist(), end.tolist()), version_2_with_negative=v2)


def test_same_when_a_kept_span_has_offsets_0_0(tmp_path):
    """v2 adds the null prediction back after the n-best cut unless a kept prediction has offsets (0, 0): a span
    whose offsets are (0, 0) counts too."""
    examples = datasets.Dataset.from_list([{"id": "a", "context": "xyz abc de"}, {"id": "b", "context": "xyz abc de"}])
    features = datasets.Dataset.from_list([{"example_id": "a", "offset_mapping": [None, [0, 0], [4, 7], [8, 10]]},
                                           {"example_id": "b", "offset_mapping": [None, [0, 3], [4, 7], [8, 10]]}])
    start = np.array([[-1.0, 6.0, 5.0, 0.0]] * 2, dtype=np.float32)
    end = np.array([[-1.0, 6.0, 1.0, 0.0]] * 2, dtype=np.float32)
    ours, nbest = assert_same(tmp_path, examples, features, (start, end), version_2_with_negative=True, n_best_size=2)
    assert [c["text"] for c in nbest["a"]] == ["", "xyz abc"]  # the (0, 0) span, no null prediction added back
    assert [c["text"] for c in nbest["b"]] == ["xyz", "xyz abc", ""]  # the null prediction added back
    assert ours.answers == {"a": "xyz abc", "b": "xyz"}


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_same_with_integer_ids_and_texts_json_escapes(tmp_path, v2):
    """Integer ids (JSON keys: strings) and answer texts with non-ASCII letters, quotes, backslashes and tabs."""
    examples, features, logits = case(40, seed=23, width=48, version_2=v2, multi_window_rate=0.3)
    number = {qid: 1000 + i for i, qid in enumerate(examples["id"])}
    same_length = str.maketrans({"a": "\u00e9", "e": '"', "o": "\\", "u": "\u2603", "i": "\t"})
    examples = datasets.Dataset.from_dict({"id": [number[q] for q in examples["id"]],
                                           "context": [c.translate(same_length) for c in examples["context"]]})
    features = features.remove_columns("example_id").add_column("example_id",
                                                                [number[q] for q in features["example_id"]])
    ours, _ = assert_same(tmp_path, examples, features, logits, version_2_with_negative=v2)
    assert list(ours.answers) == list(range(1000, 1040))
    text = (tmp_path / "ours" / "eval_nbest_predictions.json").read_text()
    assert all(escaped in text for escaped in ("\\u00e9", '\\"', "\\\\", "\\u2603", "\\t")) and '"1000": [' in text


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_same_on_a_dataset_cached_on_disk(tmp_path, v2):
    """Features as run_qa.py has them: written by Dataset.map to a cache file in batches, memory-mapped back (a
    column in many Arrow chunks), here also reordered by a select() (an indices mapping)."""
    examples, features, (start, end) = case(120, seed=29, width=64, version_2=v2, multi_window_rate=0.3, peaked=True)
    cached = features.map(lambda batch: batch, batched=True, writer_batch_size=25,
                          cache_file_name=str(tmp_path / "features.arrow"))
    order = np.random.default_rng(2).permutation(len(cached))
    cached = cached.select(order)
    assert cached.cache_files and cached.with_format("arrow")["offset_mapping"].num_chunks > 1
    assert_same(tmp_path / "out", examples, cached, (start[order], end[order]), version_2_with_negative=v2)


# Malformed input: defined behaviour -----------------------------------------------------------------------------------


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_an_example_without_features_gets_no_prediction_and_one_warning(tmp_path, v2, caplog):
    """--max_eval_samples cuts features: the examples left without any get no prediction (the loop wrote "empty",
    or in v2 the previous example's null score, and scored it); the others are as the loop's."""
    examples, features, (start, end) = case(80, seed=17, width=64, version_2=v2, multi_window_rate=0.3)
    ids = list(examples["id"])
    dropped = {ids[0], *ids[30:33], ids[41]}
    keep = [i for i, qid in enumerate(features["example_id"]) if qid not in dropped]
    with caplog.at_level(logging.WARNING, logger="utils_qa"):
        ours = postprocess_qa_predictions(examples, features.select(keep), (start[keep], end[keep]),
                                          version_2_with_negative=v2, output_dir=str(tmp_path), prefix="eval")
    assert [r.getMessage() for r in caplog.records if "no feature" in r.getMessage()] == [
        "5 of 80 examples have no feature (--max_eval_samples and --max_predict_samples cap features): they get no "
        "prediction and are left out of the metric."]
    assert list(ours.answers) == list(ours.nbest) == [qid for qid in ids if qid not in dropped]
    assert json.loads((tmp_path / "eval_predictions.json").read_text()) == ours.answers
    # The rest: what the loop gives on the examples that have features.
    answered = examples.select([i for i, qid in enumerate(ids) if qid not in dropped])
    reference = reference_postprocess_qa_predictions(answered, features.select(keep), (start[keep], end[keep]),
                                                     version_2_with_negative=v2)
    assert list(ours.answers.items()) == list(reference.items())


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_nan_logits_are_an_error(v2):
    """NaN logits (an fp16 overflow) have no order: the loop's answers then depended on where the NaN were."""
    examples, features, (start, end) = case(20, seed=23, width=40, version_2=v2)
    end[3, 7] = np.nan
    with pytest.raises(ValueError, match="logits contain NaN"):
        postprocess_qa_predictions(examples, features, (start, end), version_2_with_negative=v2)


def test_all_empty_candidates_get_the_empty_answer(tmp_path):
    """Every span of an example has offsets (0, 0) (no text): in v2 the loop ran past the end of its n-best list
    (IndexError); now, as whenever no candidate has a text, the fake answer "empty" (score 0) goes first."""
    examples = datasets.Dataset.from_list([{"id": "a", "context": "xyz abc de"}, {"id": "b", "context": "xyz abc de"}])
    features = datasets.Dataset.from_list([{"example_id": "a", "offset_mapping": [None, [0, 0], [0, 0], None]},
                                           {"example_id": "b", "offset_mapping": [None, [0, 3], [4, 7], None]}])
    start = np.array([[1.0, 3.0, 2.0, 0.0], [1.0, 3.0, 2.0, 0.0]], dtype=np.float32)
    end = np.array([[1.0, 2.0, 3.0, 0.0], [1.0, 2.0, 3.0, 0.0]], dtype=np.float32)
    with pytest.raises(IndexError):  # the loop's accident
        reference_postprocess_qa_predictions(examples, features, (start, end), version_2_with_negative=True)
    for v2 in (False, True):
        ours = postprocess_qa_predictions(examples, features, (start, end), version_2_with_negative=v2,
                                          null_score_diff_threshold=5.0)
        assert [e["text"] for e in ours.nbest["a"]] == ["empty"] + [""] * (4 if v2 else 3)  # v2: the null answer too
        assert ours.nbest["a"][0] == {"start_logit": 0.0, "end_logit": 0.0, "text": "empty",
                                      "probability": ours.nbest["a"][0]["probability"]}
        assert ours.answers == {"a": "empty", "b": "xyz abc"}
        if v2:  # the null score (2.0) minus the fake answer's 0: not above the threshold 5
            assert ours.null_odds["a"] == 2.0 and ours.best_non_null["a"] == "empty"


def test_bad_arguments_are_errors():
    examples, features, (start, end) = case(3, seed=0, width=32)
    for function in (reference_postprocess_qa_predictions, postprocess_qa_predictions):
        with pytest.raises(ValueError, match="predictions"):
            function(examples, features, (start[:-1], end[:-1]))
        with pytest.raises(ValueError, match="two elements"):
            function(examples, features, (start, end, end))
    with pytest.raises(ValueError, match="n_best_size must be at least 1"):
        postprocess_qa_predictions(examples, features, (start, end), n_best_size=0)
    with pytest.raises(ValueError, match="same shape"):
        postprocess_qa_predictions(examples, features, (start, end[:, :-1]))
