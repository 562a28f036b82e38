"""prediction_files: dumps_indent4 gives json.dumps(obj, indent=4) byte for byte (fast shapes and the rest), and
write_json writes it atomically."""
import collections
import json
import math
import os

import numpy as np
import pytest

from conftest import fill_the_disk
import prediction_files
from prediction_files import dumps_indent4, write_json


def oracle(obj) -> str:
    return json.dumps(obj, indent=4)


def assert_same(obj):
    expected = oracle(obj)
    assert dumps_indent4(obj) == expected
    return expected


TEXTS = [
    "", "Normandy", "café Zürich", "北京 中文", "emoji 😀👍🏽", "القاهرة مصر", "mixed עברית and English",
    'say "hi"', "back\\slash", "tab\there", "new\nline", "cr\rlf\n", "\x00\x01\x1f\x7f", "\u2028\u2029", "\ud800",
    "a}, {b", "}]}", "}]", '": [{"', "],\n    \"", "/slash/", " ", "   leading and trailing   ",
]
FLOATS = [
    0.0, -0.0, 1.0, -1.0, 0.5, -2.75, 1e-310, 5e-324, -5e-324, 1e300, -1e300, 1.7976931348623157e308, 1e16, -1e16,
    9999999999999998.0, 1e-4, 9.999999999999999e-05, 1.5e-5, 1e-5, 9.99e-6, 1e-7, 2.0**53, 2.0**53 + 2, 0.1 + 0.2,
    1 / 3, float(np.float32(0.1)), float(np.float32(1e-5)), float(np.float32(-3.4e38)), 123456789.0,
    math.nan, math.inf, -math.inf,
]


def entry(start, end, text, probability):
    return {"start_logit": start, "end_logit": end, "text": text, "probability": probability}


# ---------------------------------------------------------------------------------------------------------------------
# The three files' shapes
# ---------------------------------------------------------------------------------------------------------------------


def test_predictions_with_any_text():
    assert_same({f"id{i}": text for i, text in enumerate(TEXTS)})


def test_null_odds_with_special_floats_ints_bools_and_none():
    obj = {f"q{i}": value for i, value in enumerate(FLOATS + [0, -7, 2**70, True, False, None])}
    assert_same(obj)


def test_nbest_lists_the_fast_path_writes():
    obj = {
        "56be4db0acb8001400a502ec": [entry(s, e, t, p) for s, e, t, p in zip(FLOATS, FLOATS[::-1], TEXTS * 2, FLOATS)],
        "56be4db0acb8001400a502ed": [entry(1.5, 1.5, "tie", 0.5), entry(1.5, 1.5, "tie", 0.5)],
        "56be4db0acb8001400a502ee": [entry(-1e-06, -1e-06, "", 1.0)],
        "中文 id \"quoted\"": [entry(0.1, 0.2, "😀", 0.3)],
    }
    assert_same(obj)
    assert prediction_files._lists_of_flat_dicts(obj.values())  # not left to json.dumps


@pytest.mark.parametrize("empty_at", [[0], [1], [2], [0, 2], [0, 1, 2]])
def test_empty_nbest_lists_anywhere(empty_at):
    obj = {f"q{i}": [] if i in empty_at else [entry(1.0, 2.0, f"t{i}", 0.25)] * (i + 1) for i in range(3)}
    assert_same(obj)
    assert prediction_files._lists_of_flat_dicts(obj.values())


def test_beam_search_and_seq2seq_entries():
    beam = {"a": [{"start_log_prob": -0.5, "end_log_prob": -1.25, "text": "x", "probability": 0.75}] * 3}
    windows = {"a": [{"window": 0, "text": "first", "score": -0.5}, {"window": 1, "text": "", "score": -3.0}],
               "b": [{"window": 0, "text": "ß", "score": 0.0}]}
    for obj in (beam, windows):
        assert_same(obj)
        assert prediction_files._lists_of_flat_dicts(obj.values())


def test_entries_with_other_keys_or_key_orders():
    # utils_qa's "empty" fallback entry lists text first; the beam-search null entry uses other key names.
    obj = {
        "q1": [{"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "probability": 0.9},
               entry(1.0, 2.0, "", 0.1)],
        "q2": [{"text": "", "start_logit": -1e-6, "end_logit": -1e-6, "probability": 1.0},
               {"start_log_prob": -0.5, "end_log_prob": -1.0, "text": "y", "probability": 0.5}],
    }
    assert_same(obj)
    assert prediction_files._lists_of_flat_dicts(obj.values())


def test_seq2seq_formatted_predictions_list():
    obj = [{"id": f"id{i}", "prediction_text": text, "no_answer_probability": 0.0} for i, text in enumerate(TEXTS)]
    assert_same(obj)
    assert_same([{"id": "x", "prediction_text": ""}])


@pytest.mark.parametrize("obj", [{}, [], {"q": []}, {"q": [], "r": []}, [{"a": 1}], {"a": ""}])
def test_empty_containers(obj):
    assert_same(obj)


def test_ordered_dict_in_its_own_order():
    obj = collections.OrderedDict((f"q{i}", [entry(float(i), -1.0, "t", 0.5)]) for i in range(4))
    obj.move_to_end("q0")  # an OrderedDict's order, not the underlying dict's
    assert_same(obj)
    odds = collections.OrderedDict((f"q{i}", float(i)) for i in range(4))
    odds.move_to_end("q1", last=False)
    assert_same(odds)


# ---------------------------------------------------------------------------------------------------------------------
# Shapes left to json.dumps: the same text, or the same error
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [
    {"q": [entry(np.float64(0.1), 1.0, "t", 0.5)]},  # a float subclass: json writes float.__repr__
    {"q": np.float64(0.25)},
    {1: "one", 2.5: "float key", None: "none", False: "bool", -7: "int"},  # keys json converts
    {1: [entry(0.1, 0.2, "t", 0.3)]},
    {"q": [entry(0.1, 0.2, "t", 0.3), {}]},  # an empty entry
    {"q": [{}]},
    {"q": [entry(0.1, 0.2, "t", 0.3), {"text": "short"}]},  # entries of different sizes
    {"q": [entry([0.1, 0.2], 0.2, "t", 0.3)]},  # nested deeper
    {"q": [entry({"a": 1}, 0.2, "t", 0.3)]},
    {"q": [[1, 2], [3]]},
    {"q": (entry(0.1, 0.2, "t", 0.3),)},  # a tuple: json writes a list
    {"q": [entry(0.1, 0.2, "t", 0.3)], "r": "mixed"},
    {"q": [entry(0.1, 0.2, "t", 0.3)], "r": None},
    {"q": [collections.OrderedDict(entry(0.1, 0.2, "t", 0.3))]},
    {"q": [entry(0.1, 0.2, "t", 0.3)], 5: []},
    {"q": [{1: 0.5, "b": 0.25}]},  # a key json converts inside an entry
    [entry(0.1, 0.2, "t", 0.3), "not a dict"],
    [1, 2.5, "x"],
    [[entry(0.1, 0.2, "t", 0.3)]],
    {"q": ["a", "b"]},
    "just a string", 1.5, None, 7,
])
def test_other_shapes_fall_back_to_json(obj):
    assert_same(obj)


@pytest.mark.parametrize("obj", [
    {"q": [entry(np.float32(0.1), 1.0, "t", 0.5)]},
    {"q": np.float32(0.5)},
    {"q": [entry(0.1, 0.2, "t", np.int64(3))]},
    [{"id": "x", "prediction_text": np.str_("ok"), "score": np.float32(1.0)}],
    {"q": [entry(0.1, 0.2, {1, 2}, 0.3)]},
])
def test_values_json_cannot_encode_raise_the_same_error(obj):
    with pytest.raises(TypeError) as expected:
        oracle(obj)
    with pytest.raises(TypeError) as got:
        dumps_indent4(obj)
    assert str(got.value) == str(expected.value)


def test_nan_and_infinity_keep_json_spelling():
    text = assert_same({"q": [entry(math.nan, math.inf, "t", -math.inf)]})
    assert '"start_logit": NaN' in text and '"end_logit": Infinity' in text and '"probability": -Infinity' in text


# ---------------------------------------------------------------------------------------------------------------------
# Randomised: many n-best documents of various sizes
# ---------------------------------------------------------------------------------------------------------------------

CHARS = list("abc xyz0123456789\"\\/{}[],:\n\t\r\x00\x1f\x7f") + ["é", "ß", "中", "文", "😀", "ق", "\u2028", "\ud83d"]


def random_text(rng):
    return "".join(rng.choice(CHARS, size=int(rng.integers(0, 12))).tolist())


def random_float(rng):
    kind = rng.integers(0, 8)
    if kind == 0:
        return float(rng.normal(0.0, 5.0))
    if kind == 1:
        return float(np.float32(rng.normal(0.0, 5.0)))  # a model's logits
    if kind == 2:
        return float(10.0 ** rng.uniform(-12, -3))  # tiny probabilities
    if kind == 3:
        return float(rng.choice([0.0, -0.0, 1.0, 5e-324, 1e-310, 1e300, -1e300, 1e16, 1e-4, 1e-5]))
    if kind == 4:
        return float(rng.choice([math.nan, math.inf, -math.inf]))
    if kind == 5:
        return float(np.frombuffer(rng.bytes(8), dtype=np.float64)[0])  # any bit pattern
    if kind == 6:
        return round(float(rng.uniform(-100, 100)), int(rng.integers(0, 6)))
    return float(rng.uniform(0.0, 1.0))


@pytest.mark.parametrize("seed", range(6))
def test_random_nbest_documents(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        keys = ["start_logit", "end_logit", "text", "probability"]
        obj = {}
        for q in range(int(rng.integers(1, 30))):
            entries = []
            for _ in range(int(rng.integers(0, 25))):
                values = [random_float(rng), random_float(rng), random_text(rng), random_float(rng)]
                if rng.random() < 0.05:  # now and then the "empty" entry's key order, or other value types
                    entries.append(dict(zip(["text", "start_logit", "end_logit", "probability"], values[2:3] +
                                            values[:2] + values[3:])))
                    continue
                if rng.random() < 0.05:
                    values[int(rng.integers(0, 4))] = [None, True, False, 0, -3, 2**64][int(rng.integers(0, 6))]
                entries.append(dict(zip(keys, values)))
            obj[f"{q:04x}{random_text(rng)}"] = entries
        assert_same(obj)
        assert prediction_files._lists_of_flat_dicts(obj.values())  # every one of these takes the fast path
        assert_same({k: (v[0]["text"] if v else "") for k, v in obj.items()})
        assert_same({k: random_float(rng) for k in obj})


def test_large_nbest_document():
    rng = np.random.default_rng(7)
    logits = rng.normal(0.0, 3.0, size=(3000, 20, 2)).astype(np.float32).tolist()
    probabilities = (10.0 ** rng.uniform(-9, 0, size=(3000, 20))).tolist()
    obj = {f"{i:024x}": [entry(s, e, random_text(rng), p) for (s, e), p in zip(rows, probs)]
           for i, (rows, probs) in enumerate(zip(logits, probabilities))}
    assert_same(obj)


# ---------------------------------------------------------------------------------------------------------------------
# write_json
# ---------------------------------------------------------------------------------------------------------------------

NBEST = {"q1": [entry(0.5, -0.25, "é 中文 😀", 0.75), entry(0.0, -1e-7, "", 0.25)], "q2": []}


def leftovers(folder, name):
    return sorted(p for p in os.listdir(folder) if p != name)


@pytest.mark.parametrize("obj", [
    NBEST, {"q1": "é", "q2": ""}, {"q1": -0.5}, {}, {"q": [entry(np.float64(1), 2, "t", 3)]},
])
def test_write_json_writes_the_old_bytes(tmp_path, obj):
    path = tmp_path / "eval_nbest_predictions.json"
    path.write_text("an older, longer file " * 100)
    write_json(path, obj)
    assert path.read_bytes() == (oracle(obj) + "\n").encode("ascii")
    write_json(str(path), obj)  # a str path too
    assert path.read_bytes() == (oracle(obj) + "\n").encode("ascii")
    assert leftovers(tmp_path, path.name) == []


def fail_fsync(monkeypatch):
    def fsync(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", fsync)


def interrupt_fsync(monkeypatch):
    def fsync(fd):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "fsync", fsync)


def fail_replace(monkeypatch):
    def replace(src, dst):
        raise OSError(18, "Invalid cross-device link")
    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("crash", [fill_the_disk, fail_fsync, interrupt_fsync, fail_replace])
@pytest.mark.parametrize("existing", [True, False])
def test_a_crash_mid_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, crash, existing):
    path = tmp_path / "eval_predictions.json"
    durable = crash in (fail_fsync, interrupt_fsync)  # the fsync crashes apply where the file is forced to disk
    old = b'{\n    "q1": "the previous run"\n}\n'
    if existing:
        path.write_bytes(old)
    crash(monkeypatch)
    with pytest.raises((OSError, KeyboardInterrupt)):
        write_json(path, NBEST, durable=durable)
    monkeypatch.undo()
    if existing:
        assert path.read_bytes() == old
    else:
        assert not path.exists()
    assert leftovers(tmp_path, path.name) == []


def test_content_json_cannot_encode_touches_nothing(tmp_path):
    path = tmp_path / "eval_null_odds.json"
    path.write_bytes(b"{}\n")
    with pytest.raises(TypeError):
        write_json(path, {"q": np.float32(0.5)})
    assert path.read_bytes() == b"{}\n"
    assert leftovers(tmp_path, path.name) == []
