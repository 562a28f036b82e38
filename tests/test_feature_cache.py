"""run_qa.py's tokenized features are cached by datasets under a fingerprint of the examples and of the tokenizing
function with its arguments: reused when nothing changed, rebuilt when the tokenization would differ."""
import os
import types

from transformers import AutoTokenizer, TrainingArguments

import run_qa
from qa_data import QAColumns, build_features, load_qa_file
from script_utils import select_samples
from toy import data as toy_data

COLUMNS = QAColumns(id="id", question="question", context="context", answer="answers")


def test_features_cache_key(tiny_model, tmp_path):
    data = toy_data.write_qa_file(toy_data.make_templated_qa(30, seed=1, long_context=True),
                                  str(tmp_path / "dev.json"), "flat")
    training_args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none")
    data_args = types.SimpleNamespace(preprocessing_num_workers=None, overwrite_cache=False)

    def build(model="bert", max_seq_length=64, doc_stride=16, max_samples=None, pad_to_max_length=True,
              prepare=run_qa.prepare_validation_features, tokenizer=None):
        """One run's features: the file loaded and a tokenizer created afresh, as a new process would."""
        examples = select_samples(load_qa_file(data, str(tmp_path / "cache")), max_samples)
        kwargs = {"tokenizer": tokenizer or AutoTokenizer.from_pretrained(tiny_model(model)), "columns": COLUMNS,
                  "max_seq_length": max_seq_length, "doc_stride": doc_stride, "pad_to_max_length": pad_to_max_length}
        return build_features(examples, prepare, kwargs, data_args, training_args, max_samples, "validation")

    first = build()
    cache_file = first.cache_files[0]["filename"]
    written = os.stat(cache_file).st_mtime_ns
    again = build()
    assert again._fingerprint == first._fingerprint
    assert again.cache_files[0]["filename"] == cache_file and os.stat(cache_file).st_mtime_ns == written  # reused
    assert again["input_ids"] == first["input_ids"]

    # A tokenizer that already tokenized the training features (a --do_train --do_eval run) gives the same key as a
    # fresh one (an evaluation-only run): both runs share the evaluation features.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model("bert"))
    build(prepare=run_qa.prepare_train_features, tokenizer=tokenizer)
    assert build(tokenizer=tokenizer)._fingerprint == first._fingerprint

    changed = {
        "max_seq_length": build(max_seq_length=96),
        "doc_stride": build(doc_stride=24),
        "tokenizer": build(model="roberta"),
        "max_samples": build(max_samples=10),
        "pad_to_max_length": build(pad_to_max_length=False),
    }
    fingerprints = [first._fingerprint] + [features._fingerprint for features in changed.values()]
    assert len(set(fingerprints)) == len(fingerprints), dict(zip(["first", *changed], fingerprints))
    assert len(changed["max_samples"]) == 10 < len(first)
    assert max(len(ids) for ids in changed["max_seq_length"]["input_ids"]) == 96
