"""Doc-stride windows and answer labels of run_qa.py, checked by mapping every label back to text."""
import pytest
from transformers import AutoTokenizer

from qa_data import QAColumns
from run_qa import prepare_train_features, prepare_validation_features, tokenize_windows
from toy import data as toy_data

COLUMNS = QAColumns(id="id", question="question", context="context", answer="answers")
MAX_LEN, STRIDE = 128, 32


def as_batch(records):
    return {key: [r[key] for r in records] for key in records[0]}


def cls_position(tokenizer, input_ids):
    if tokenizer.cls_token_id in input_ids:
        return input_ids.index(tokenizer.cls_token_id)
    return input_ids.index(tokenizer.bos_token_id)


@pytest.mark.parametrize("arch", ["bert", "roberta", "xlnet"])  # xlnet pads on the left: context comes first
def test_train_labels_map_back_to_the_gold_answer(tiny_model, arch):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model(arch))
    records = toy_data.make_templated_qa(24, seed=3, version_2=True, long_context=True)
    batch = as_batch(records)
    features = prepare_train_features(dict(batch), tokenizer, COLUMNS, MAX_LEN, STRIDE, pad_to_max_length=True)
    # The same tokenizer call, to get at the offsets that prepare_train_features consumes.
    windows = tokenize_windows(dict(batch), tokenizer, COLUMNS, MAX_LEN, STRIDE, pad_to_max_length=True)
    context_index = 1 if tokenizer.padding_side == "right" else 0

    counts = {"in_window": 0, "outside_window": 0, "impossible": 0}
    for i, example_index in enumerate(windows["overflow_to_sample_mapping"]):
        record = records[example_index]
        start, end = features["start_positions"][i], features["end_positions"][i]
        input_ids = features["input_ids"][i]
        cls_index = cls_position(tokenizer, input_ids)
        if not record["answers"]["text"]:
            assert (start, end) == (cls_index, cls_index)
            counts["impossible"] += 1
            continue
        offsets = windows["offset_mapping"][i]
        sequence_ids = windows.sequence_ids(i)
        context_tokens = [k for k, s in enumerate(sequence_ids) if s == context_index]
        window_start, window_end = offsets[context_tokens[0]][0], offsets[context_tokens[-1]][1]
        answer_start = record["answers"]["answer_start"][0]
        answer_end = answer_start + len(record["answers"]["text"][0])
        if window_start <= answer_start and answer_end <= window_end:
            # The labelled tokens cover exactly the gold answer.
            text = record["context"][offsets[start][0] : offsets[end][1]]
            assert text == record["answers"]["text"][0]
            assert sequence_ids[start] == sequence_ids[end] == context_index
            counts["in_window"] += 1
        else:
            assert (start, end) == (cls_index, cls_index)
            counts["outside_window"] += 1
    assert all(n > 0 for n in counts.values()), counts  # the fixture exercises every labelling rule


def test_validation_features_keep_example_ids_and_only_context_offsets(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model("bert"))
    records = toy_data.make_templated_qa(6, seed=4, long_context=True)
    features = prepare_validation_features(as_batch(records), tokenizer, COLUMNS, MAX_LEN, STRIDE, True)
    ids = features["example_id"]
    assert len(ids) > len(records)  # long contexts overflow into several windows
    assert ids == sorted(ids, key=[r["id"] for r in records].index)  # windows stay in example order
    for i, offsets in enumerate(features["offset_mapping"]):
        sequence_ids = features.sequence_ids(i)
        for k, offset in enumerate(offsets):
            assert (offset is None) == (sequence_ids[k] != 1)
    # Consecutive windows of one example overlap: each starts before the previous one ends.
    first = [i for i, example_id in enumerate(ids) if example_id == records[0]["id"]]
    spans = [
        (min(o[0] for o in features["offset_mapping"][i] if o), max(o[1] for o in features["offset_mapping"][i] if o))
        for i in first
    ]
    assert all(nxt[0] < prev[1] for prev, nxt in zip(spans, spans[1:]))


def test_questions_are_left_stripped(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model("bert"))
    records = toy_data.make_templated_qa(2, seed=5)
    padded = [dict(r, question="    " + r["question"]) for r in records]
    plain = prepare_validation_features(as_batch(records), tokenizer, COLUMNS, MAX_LEN, STRIDE, True)
    stripped = prepare_validation_features(as_batch(padded), tokenizer, COLUMNS, MAX_LEN, STRIDE, True)
    assert plain["input_ids"] == stripped["input_ids"]
