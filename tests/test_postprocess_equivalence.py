"""The vectorised `utils_qa.postprocess_qa_predictions` against the straightforward algorithm it replaced.

`reference_postprocess_qa_predictions` (toy/upstream.py) is a verbatim copy of the loop implementation that run_qa.py
used before the vectorisation, itself the upstream post-processing algorithm of the adapters/transformers
`utils_qa.py`. Both run on the same random logits (toy/synthetic_squad.py) and must give identical return values and
byte-identical prediction files: v1 and v2, at scale, with ties, masked (None) offsets, `token_is_max_context`, the
"empty" fallback, unpadded (dynamic padding) offsets, examples without features and features out of order.
benchmarks/postprocess.py times the two.
"""
import datasets
import numpy as np
import pytest

from toy.synthetic_squad import make_case
from toy.upstream import reference_postprocess_qa_predictions
from utils_qa import postprocess_qa_predictions

# Comparison -----------------------------------------------------------------------------------------------------------


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


# Tests ----------------------------------------------------------------------------------------------------------------


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
def test_identical_with_integer_ids_and_texts_json_escapes(tmp_path, v2):
    """The n-best file is written from columns, not through json.dumps: integer ids (json writes them as strings),
    and answer texts with non-ASCII letters, quotes, backslashes and a control character, escaped as json does."""
    examples, features, logits = make_case(40, seed=23, width=48, version_2=v2, multi_window_rate=0.3)
    number = {qid: 1000 + i for i, qid in enumerate(examples["id"])}
    same_length = str.maketrans({"a": "\u00e9", "e": '"', "o": "\\", "u": "\u2603", "i": "\t"})
    examples = datasets.Dataset.from_dict({"id": [number[q] for q in examples["id"]],
                                           "context": [c.translate(same_length) for c in examples["context"]]})
    features = features.remove_columns("example_id").add_column("example_id", [number[q] for q in
                                                                               features["example_id"]])
    _, files = assert_identical(tmp_path, examples, features, logits, version_2_with_negative=v2)
    nbest_text = files["eval_nbest_predictions.json"]
    assert all(escaped in nbest_text for escaped in ("\\u00e9", '\\"', "\\\\", "\\u2603", "\\t"))
    assert '"1000": [' in nbest_text


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
