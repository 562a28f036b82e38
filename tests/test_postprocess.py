"""postprocess_qa_predictions against a brute-force reading of the upstream post-processing algorithm (also with a
candidate filter through utils_qa.keep_answer), the top-3 file of docs/customising.md, and the oracle check through
the metric."""
import json
import os

import numpy as np
import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from qa_data import QAColumns
from run_qa import prepare_validation_features
from squad_metric import compute_squad_v1, compute_squad_v2
import prediction_files
import script_utils
import utils_qa
from prediction_files import write_prediction_files
from toy import data as toy_data
from utils_qa import postprocess_qa_predictions

SEQ_LEN, QUESTION_TOKENS = 24, 4


def synthetic_features(n_examples, seed):
    """Examples with contexts of numbered words in sentences of five ("w0_0 w0_1 w0_2 w0_3 w0_4. w0_5 ..."); 1-3
    windows each, whose first tokens are 'question' (None offsets)."""
    rng = np.random.default_rng(seed)
    examples, features = [], []
    for e in range(n_examples):
        words = [f"w{e}_{k}" + ("." if k % 5 == 4 else "") for k in range(40)]
        context = " ".join(words)
        starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
        examples.append({"id": f"q{e}", "context": context})
        for window in range(int(rng.integers(1, 4))):
            first_word = window * 10
            offsets = [None] * QUESTION_TOKENS + [
                [int(starts[k]), int(starts[k] + len(words[k]))] for k in range(first_word, first_word + SEQ_LEN - 5)
            ] + [None]
            features.append({"example_id": f"q{e}", "offset_mapping": offsets})
    return Dataset.from_list(examples), Dataset.from_list(features)


def brute_force(examples, features, start_logits, end_logits, v2, n_best, max_len, threshold, keep=None):
    """Every (start, end) pair whose start is among the n_best highest start logits and end among the n_best highest
    end logits of its window, inside the context, in order and not too long, and whose text `keep` accepts; null = min
    CLS score over windows."""
    predictions, nbest_texts, null_odds = {}, {}, {}
    for example in examples:
        candidates, null = [], None
        for i, feature in enumerate(features):
            if feature["example_id"] != example["id"]:
                continue
            s, e, offsets = start_logits[i], end_logits[i], feature["offset_mapping"]
            top_starts = set(np.argsort(-s)[:n_best].tolist())
            top_ends = set(np.argsort(-e)[:n_best].tolist())
            if null is None or s[0] + e[0] < null:
                null = s[0] + e[0]
            for a in top_starts:
                for b in top_ends:
                    if offsets[a] is None or offsets[b] is None or b < a or b - a + 1 > max_len:
                        continue
                    candidates.append((s[a] + e[b], example["context"][offsets[a][0] : offsets[b][1]]))
        if keep is not None:
            candidates = [c for c in candidates if keep(c[1])]
        if v2:
            candidates.append((null, ""))
        candidates = sorted(candidates, key=lambda c: -c[0])[:n_best]
        if v2 and not any(text == "" for _, text in candidates):
            candidates.append((null, ""))
        if not any(text for _, text in candidates):
            candidates.insert(0, (0.0, "empty"))
        nbest_texts[example["id"]] = [text for _, text in candidates]
        if not v2:
            predictions[example["id"]] = candidates[0][1]
            continue
        best_score, best_text = next(c for c in candidates if c[1] != "")
        null_odds[example["id"]] = null - best_score
        predictions[example["id"]] = "" if null - best_score > threshold else best_text
    return predictions, nbest_texts, null_odds


@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("n_best,max_len,threshold", [(20, 30, 0.0), (5, 3, 0.0), (3, 30, 1.5)])
def test_matches_brute_force_on_random_logits(tmp_path, v2, n_best, max_len, threshold):
    examples, features = synthetic_features(30, seed=n_best + max_len)
    rng = np.random.default_rng(7)
    start_logits = rng.normal(size=(len(features), SEQ_LEN)).astype(np.float32)
    end_logits = rng.normal(size=(len(features), SEQ_LEN)).astype(np.float32)
    start_logits[::2, 0] += 4.0  # strong CLS scores in some windows, so that null answers win for some examples
    end_logits[::2, 0] += 4.0
    predictions = postprocess_qa_predictions(
        examples, features, (start_logits, end_logits), version_2_with_negative=v2, n_best_size=n_best,
        max_answer_length=max_len, null_score_diff_threshold=threshold, output_dir=str(tmp_path), prefix="eval",
    ).answers
    expected, expected_nbest, expected_null_odds = brute_force(
        examples, features, start_logits, end_logits, v2, n_best, max_len, threshold
    )
    assert dict(predictions) == expected
    assert json.loads((tmp_path / "eval_predictions.json").read_text()) == expected

    nbest = json.loads((tmp_path / "eval_nbest_predictions.json").read_text())
    assert {qid: [c["text"] for c in cands] for qid, cands in nbest.items()} == expected_nbest
    for candidates in nbest.values():
        assert [list(c) for c in candidates][0] in (["start_logit", "end_logit", "text", "probability"],
                                                    ["text", "start_logit", "end_logit", "probability"])
        assert sum(c["probability"] for c in candidates) == pytest.approx(1.0, abs=1e-5)
        scores = [c["start_logit"] + c["end_logit"] for c in candidates if c["text"] != "empty"]
        assert scores[: len(scores) - v2] == sorted(scores[: len(scores) - v2], reverse=True)

    if v2:
        null_odds = json.loads((tmp_path / "eval_null_odds.json").read_text())
        assert null_odds == pytest.approx(expected_null_odds, abs=1e-5)
        assert "" in predictions.values() and set(predictions.values()) != {""}  # both outcomes exercised
    else:
        assert not (tmp_path / "eval_null_odds.json").exists()


def random_logits(features, seed=7):
    rng = np.random.default_rng(seed)
    start_logits = rng.normal(size=(len(features), SEQ_LEN)).astype(np.float32)
    end_logits = rng.normal(size=(len(features), SEQ_LEN)).astype(np.float32)
    start_logits[::2, 0] += 4.0  # strong CLS scores in some windows, so that null answers win for some examples
    end_logits[::2, 0] += 4.0
    return start_logits, end_logits


@pytest.mark.parametrize("v2", [False, True])
def test_keep_answer_rejects_spans_across_sentences(tmp_path, monkeypatch, v2):
    """docs/customising.md: answers never cross a sentence boundary. keep_answer rejects every span whose text holds
    ". "; each answer and n-best list is then the brute force's over the candidates without such a text (the next
    best valid candidate), where without the filter many answers cross a sentence."""
    examples, features = synthetic_features(30, seed=3)
    logits = random_logits(features)
    unfiltered = postprocess_qa_predictions(examples, features, logits, version_2_with_negative=v2)
    crossing = {qid for qid, entries in unfiltered.nbest.items() if ". " in entries[0]["text"]}
    assert len(crossing) >= 5

    monkeypatch.setattr(utils_qa, "keep_answer", lambda text, context, start_char, end_char: ". " not in text)
    filtered = postprocess_qa_predictions(examples, features, logits, version_2_with_negative=v2)
    expected, expected_nbest, expected_null_odds = brute_force(
        examples, features, *logits, v2, n_best=20, max_len=30, threshold=0.0, keep=lambda text: ". " not in text)
    assert filtered.answers == expected
    assert {qid: [e["text"] for e in entries] for qid, entries in filtered.nbest.items()} == expected_nbest
    assert all(len(entries) >= 20 for entries in filtered.nbest.values())  # full lists: the next best took their place
    assert not any(". " in e["text"] for entries in filtered.nbest.values() for e in entries)
    assert all(filtered.nbest[qid][0]["text"] != unfiltered.nbest[qid][0]["text"] for qid in crossing)
    if v2:
        assert filtered.null_odds == pytest.approx(expected_null_odds, abs=1e-5)


def test_a_top_3_answers_file_from_the_nbest_lists(tmp_path, monkeypatch):
    """docs/customising.md: an extra file, {stage}_top3_answers.json, with each question's three best answers. The
    lines below are the ones the doc shows in run_qa.py's post_processing_function (its name added to
    script_utils.PREDICTION_FILE_NAMES, here by monkeypatch)."""
    declared = script_utils.PREDICTION_FILE_NAMES + ("top3_answers",)
    monkeypatch.setattr(prediction_files, "PREDICTION_FILE_NAMES", declared)
    examples, features = synthetic_features(30, seed=3)
    output_dir, stage = str(tmp_path), "eval"
    result = postprocess_qa_predictions(examples, features, random_logits(features), version_2_with_negative=True,
                                        output_dir=output_dir, prefix=stage)

    # --- as in docs/customising.md ---
    top3 = {qid: [entry["text"] for entry in entries if entry["text"]][:3] for qid, entries in result.nbest.items()}
    write_prediction_files(output_dir, stage, {"top3_answers": top3})
    # ---

    written = json.loads((tmp_path / "eval_top3_answers.json").read_text())
    nbest = json.loads((tmp_path / "eval_nbest_predictions.json").read_text())
    assert list(written) == examples["id"]
    assert written == {qid: [e["text"] for e in entries if e["text"]][:3] for qid, entries in nbest.items()}
    assert all(len(texts) == 3 for texts in written.values())
    assert sorted(os.listdir(tmp_path)) == ["eval_nbest_predictions.json", "eval_null_odds.json",
                                            "eval_predictions.json", "eval_top3_answers.json"]
    with pytest.raises(ValueError, match="Add \\['top_2'\\] to script_utils.PREDICTION_FILE_NAMES"):
        write_prediction_files(output_dir, stage, {"top_2": top3})  # a name not declared


@pytest.mark.parametrize("v2", [False, True])
def test_empty_fallback_when_no_span_is_valid(tmp_path, v2):
    examples = Dataset.from_list([{"id": "only", "context": "no tokens map here"}])
    features = Dataset.from_list([{"example_id": "only", "offset_mapping": [None] * 6}])
    start, end = np.arange(6, dtype=np.float32)[None], np.arange(6, dtype=np.float32)[None]
    predictions = postprocess_qa_predictions(
        examples, features, (start, end), version_2_with_negative=v2, output_dir=str(tmp_path), prefix="eval"
    ).answers
    nbest = json.loads((tmp_path / "eval_nbest_predictions.json").read_text())["only"]
    assert nbest[0] == {"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "probability": nbest[0]["probability"]}
    if v2:
        # Candidates: "empty" (score 0) and the null answer (score 0 + 0 at CLS): equal probabilities.
        assert [c["text"] for c in nbest] == ["empty", ""]
        assert nbest[0]["probability"] == pytest.approx(0.5)
        # null score 0 - best non-null 0 = 0, not above the threshold 0: the fallback text wins.
        assert predictions["only"] == "empty"
        assert json.loads((tmp_path / "eval_null_odds.json").read_text()) == {"only": 0.0}
    else:
        assert predictions["only"] == "empty" and nbest[0]["probability"] == 1.0


def test_prediction_count_must_match_features():
    examples, features = synthetic_features(2, seed=0)
    logits = np.zeros((len(features) + 1, SEQ_LEN), dtype=np.float32)
    with pytest.raises(ValueError, match="predictions"):
        postprocess_qa_predictions(examples, features, (logits, logits))


@pytest.mark.parametrize("v2", [False, True])
def test_oracle_logits_score_100(tiny_model, v2):
    """Logits that put the gold span on top (and CLS on top for unanswerable questions) give EM = F1 = 100."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model("bert"))
    records = toy_data.make_templated_qa(20, seed=11, version_2=v2, long_context=True)
    examples = Dataset.from_list(records)
    batch = {key: [r[key] for r in records] for key in records[0]}
    features = Dataset.from_dict(dict(prepare_validation_features(batch, tokenizer, QAColumns("id", "question", "context", "answers"), 128, 32, True)))
    start = np.zeros((len(features), 128), dtype=np.float32)
    end = np.zeros((len(features), 128), dtype=np.float32)
    by_id = {r["id"]: r for r in records}
    for i, feature in enumerate(features):
        answers = by_id[feature["example_id"]]["answers"]
        start[i, 0] = end[i, 0] = 5.0 if not answers["text"] else -5.0
        if not answers["text"]:
            continue
        answer_start = answers["answer_start"][0]
        answer_end = answer_start + len(answers["text"][0])
        tokens = [k for k, o in enumerate(feature["offset_mapping"]) if o and answer_start <= o[0] and o[1] <= answer_end]
        if tokens:
            start[i, tokens[0]] = end[i, tokens[-1]] = 10.0
    predictions = postprocess_qa_predictions(examples, features, (start, end), version_2_with_negative=v2).answers
    formatted = [{"id": k, "prediction_text": v, "no_answer_probability": 0.0} for k, v in predictions.items()]
    references = [{"id": r["id"], "answers": r["answers"]} for r in records]
    result = (compute_squad_v2 if v2 else compute_squad_v1)(formatted, references)
    if v2:
        assert result["exact"] == result["f1"] == 100.0 and result["NoAns_total"] > 0
    else:
        assert result == {"exact_match": 100.0, "f1": 100.0}
