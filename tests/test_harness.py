"""Tests of the test harness itself: tiny_models (offline tiny models) and toy_data (toy SQuAD).

The script tests rely on these pieces, so a broken tokenizer or a misaligned answer_start here
would show up there as a confusing training failure; these tests pin the basics down first.
"""

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from toy import data as toy_data
from toy import models as tiny_models

QA_ARCHS = ("bert", "roberta", "distilbert")
ADAPTER_ARCHS = ("bert", "roberta", "distilbert", "t5", "bart", "gpt2")
OFFSET_ARCHS = ("bert", "roberta", "distilbert", "xlnet", "t5", "bart")
SENTENCES = ("Alice lives in Paris.", "What colour is Bob's car?", "Tina is 42 years old.",
             "Where does Quinn work?", "The red bus stops near the zoo every morning.")


def _auto_class(arch):
    """The class a script would load this arch with (XLNet: the beam-search QA head)."""
    import transformers as tf

    if arch in QA_ARCHS:
        return tf.AutoModelForQuestionAnswering
    if arch in ("t5", "bart"):
        return tf.AutoModelForSeq2SeqLM
    if arch == "gpt2":
        return tf.AutoModelForCausalLM
    if arch == "xlnet":
        return tf.XLNetForQuestionAnswering
    return tf.AutoModelForMaskedLM  # xlm


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


# ----------------------------------------------------------------------------- tiny_models


@pytest.mark.parametrize("arch", tiny_models.ARCHS)
def test_tokenizer_is_fast_and_matches_config(tiny_model, arch):
    """Scripts need a fast tokenizer (offsets) whose ids agree with the model config."""
    from transformers import AutoConfig, PreTrainedTokenizerFast

    path = tiny_model(arch)
    tok, config = _tokenizer(path), AutoConfig.from_pretrained(path)
    assert isinstance(tok, PreTrainedTokenizerFast) and tok.is_fast
    assert tok.model_max_length == 512
    assert len(tok) == config.vocab_size
    assert 1000 <= len(tok) <= 2000
    assert config.pad_token_id == tok.pad_token_id
    if arch not in ("bert", "distilbert", "t5"):
        assert config.bos_token_id == tok.bos_token_id
    if arch not in ("bert", "distilbert", "xlm"):
        assert config.eos_token_id == tok.eos_token_id


def test_special_token_layout(tiny_model):
    """The ids that real checkpoints use, which scripts and generation code assume."""
    t5, bart, gpt2, xlnet = (_tokenizer(tiny_model(a)) for a in ("t5", "bart", "gpt2", "xlnet"))
    from transformers import AutoConfig

    assert (t5.pad_token_id, t5.eos_token_id, t5.unk_token_id) == (0, 1, 2)
    assert AutoConfig.from_pretrained(tiny_model("t5")).decoder_start_token_id == t5.pad_token_id
    assert (bart.bos_token_id, bart.pad_token_id, bart.eos_token_id) == (0, 1, 2)
    assert AutoConfig.from_pretrained(tiny_model("bart")).decoder_start_token_id == bart.eos_token_id
    assert gpt2.pad_token is None and gpt2.eos_token == gpt2.bos_token == "<|endoftext|>"
    assert xlnet.padding_side == "left"
    assert xlnet("Alice lives in Paris.").input_ids[-2:] == [xlnet.sep_token_id, xlnet.cls_token_id]
    assert t5("Alice lives in Paris.").input_ids[-1] == t5.eos_token_id


@pytest.mark.parametrize("arch", ("bert", "distilbert", "roberta", "bart", "t5", "xlnet"))
def test_toy_text_round_trips_without_unk(tiny_model, arch):
    """Toy data tokenizes into known pieces and decodes back (lowercased for uncased BERT)."""
    tok = _tokenizer(tiny_model(arch))
    records = toy_data.make_templated_qa(30, version_2=True)
    for text in SENTENCES + tuple(r["question"] for r in records) + (records[-1]["context"],):
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.unk_token_id not in ids, tok.convert_ids_to_tokens(ids)
        decoded = tok.decode(ids)
        expected = text.lower() if arch in ("bert", "distilbert") else text
        assert "".join(decoded.split()) == "".join(expected.split())


def test_toy_words_are_whole_tokens(tiny_model):
    """Toy names/cities/places are single tokens, so a 2-layer model learns spans easily."""
    bert, t5 = _tokenizer(tiny_model("bert")), _tokenizer(tiny_model("t5"))
    for word in toy_data.NAMES + toy_data.CITIES + toy_data.PLACES + toy_data.COLOURS:
        assert len(bert.tokenize(word)) == 1, bert.tokenize(word)
        assert len(t5.tokenize(word)) == 1, t5.tokenize(word)


@pytest.mark.parametrize("arch", OFFSET_ARCHS)
def test_offsets_point_at_the_answer(tiny_model, arch):
    """QA postprocessing maps token offsets back to context text; check one answer span."""
    tok = _tokenizer(tiny_model(arch))
    context, question = "Alice lives in Paris. Bob works at the bakery.", "Where does Alice live?"
    left = tok.padding_side == "left"  # XLNet: context|question order, as run_qa does
    enc = tok(*((context, question) if left else (question, context)), return_offsets_mapping=True)
    seq_ids, context_id = enc.sequence_ids(), 0 if left else 1
    spans = [context[s:e].strip() for (s, e), sid in zip(enc.offset_mapping, seq_ids) if sid == context_id]
    assert "Paris" in spans and "bakery" in spans


@pytest.mark.parametrize("arch", tiny_models.ARCHS)
def test_model_loads_with_script_class(tiny_model, arch):
    """Each folder loads with the Auto class its script uses, and runs a forward pass."""
    path = tiny_model(arch)
    model = _auto_class(arch).from_pretrained(path)
    assert model.config.num_hidden_layers == 2
    inputs = _tokenizer(path)("Where does Alice live?", return_tensors="pt")
    if arch in ("t5", "bart"):
        inputs["decoder_input_ids"] = torch.tensor([[model.config.decoder_start_token_id]])
    with torch.no_grad():
        model(**inputs)


@pytest.mark.parametrize("arch", tiny_models.ARCHS)
def test_same_seed_gives_same_model(tiny_model, tmp_path, arch):
    """Builds are reproducible: same seed, same tokenizer and bit-identical weights."""
    first = tiny_model(arch)
    second = tiny_models.build_tiny_model(arch, str(tmp_path / arch), seed=0)
    a, b = load_file(f"{first}/model.safetensors"), load_file(f"{second}/model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / arch / "tokenizer.json").read_text() == open(f"{first}/tokenizer.json").read()


def test_other_seed_gives_other_weights(tiny_model, tmp_path):
    other = tiny_models.build_tiny_model("bert", str(tmp_path / "bert"), seed=1)
    a, b = load_file(f"{tiny_model('bert')}/model.safetensors"), load_file(f"{other}/model.safetensors")
    assert not torch.equal(a["bert.embeddings.word_embeddings.weight"], b["bert.embeddings.word_embeddings.weight"])


def test_cli_builds_a_model(tmp_path, capsys):
    assert tiny_models.main(["distilbert", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert tiny_models.main(["nope", str(tmp_path / "x")]) == 2


@pytest.mark.parametrize("arch", ADAPTER_ARCHS)
def test_adapters_attach(tiny_model, arch):
    """adapters 1.3.0 supports these archs: a seq_bn adapter can be added and activated."""
    import adapters

    model = _auto_class(arch).from_pretrained(tiny_model(arch))
    adapters.init(model)
    model.add_adapter("x", config="seq_bn")
    model.train_adapter("x")
    assert any("adapters.x" in name for name, p in model.named_parameters() if p.requires_grad)


def test_adapters_reject_xlnet(tiny_model):
    """adapters has no XLNet support, so the beam-search script runs without."""
    import adapters

    model = _auto_class("xlnet").from_pretrained(tiny_model("xlnet"))
    with pytest.raises(ValueError, match="not pre-supported"):
        adapters.init(model)


# ----------------------------------------------------------------------------- toy_data


def _check_answers(records):
    for rec in records:
        answers = rec["answers"]
        assert len(answers["text"]) == len(answers["answer_start"])
        for text, start in zip(answers["text"], answers["answer_start"]):
            assert rec["context"][start:start + len(text)] == text


@pytest.mark.parametrize("kwargs", [{}, {"version_2": True}, {"long_context": True},
                                    {"version_2": True, "long_context": True, "seed": 3}, {"one_fact_per_kind": True}])
def test_answer_start_indexes_answer(kwargs):
    records = toy_data.make_templated_qa(60, **kwargs)
    assert len(records) == 60
    assert len({r["id"] for r in records}) == 60
    _check_answers(records)


def test_one_fact_per_kind_gives_each_kind_once_per_context():
    """quickstart.py's data: the question's kind of fact alone finds the answer; the default data needs the name."""
    def kinds(context):
        templates = [template.split("{v}")[0].replace("{name}", "") for template, _, _ in toy_data.FACTS.values()]
        return [t for sentence in context.split(". ") for t in templates if t in sentence]

    easy = {r["context"] for r in toy_data.make_templated_qa(200, seed=1, one_fact_per_kind=True)}
    assert all(3 <= len(kinds(c)) == len(set(kinds(c))) <= 5 for c in easy)
    default = {r["context"] for r in toy_data.make_templated_qa(200, seed=1)}
    assert any(len(kinds(c)) > len(set(kinds(c))) for c in default)


def test_toy_data_is_deterministic():
    assert toy_data.make_templated_qa(20, seed=5) == toy_data.make_templated_qa(20, seed=5)
    assert toy_data.make_templated_qa(20, seed=5) != toy_data.make_templated_qa(20, seed=6)


def test_version_2_has_unanswerable_questions():
    records = toy_data.make_templated_qa(90, version_2=True)
    unanswerable = [r for r in records if not r["answers"]["text"]]
    assert len(unanswerable) == 30
    assert all(r["answers"]["answer_start"] == [] for r in unanswerable)
    assert all(toy_data.make_templated_qa(30)[i]["answers"]["text"] for i in range(30))


def test_long_context_splits_into_windows(tiny_model):
    """With max_length 128 / stride 32, each context spans >= 3 windows, answers in several."""
    tok = _tokenizer(tiny_model("bert"))
    records = toy_data.make_templated_qa(20, long_context=True)
    assert all(len(r["context"].split()) >= 600 for r in records)
    enc = tok([r["question"] for r in records], [r["context"] for r in records], truncation="only_second",
              max_length=128, stride=32, return_overflowing_tokens=True, return_offsets_mapping=True)
    windows_per_record = [list(enc["overflow_to_sample_mapping"]).count(i) for i in range(len(records))]
    assert min(windows_per_record) >= 3
    answer_windows = set()
    for feature, sample in enumerate(enc["overflow_to_sample_mapping"]):
        start = records[sample]["answers"]["answer_start"][0]
        offsets = [o for o, s in zip(enc["offset_mapping"][feature], enc.sequence_ids(feature)) if s == 1]
        if offsets[0][0] <= start < offsets[-1][1]:
            answer_windows.add(feature - list(enc["overflow_to_sample_mapping"]).index(sample))
    assert len(answer_windows) >= 3


def _read_back(path, fmt):
    """Parse a written file with plain json/csv and return flat records."""
    with open(path, encoding="utf-8", newline="") as f:
        if fmt == "flat":
            return json.load(f)["data"]
        if fmt == "jsonl":
            return [json.loads(line) for line in f]
        if fmt == "csv":
            return [{**row, "answers": json.loads(row["answers"])} for row in csv.DictReader(f)]
        records = []
        for article in json.load(f)["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    assert qa["is_impossible"] == (qa["answers"] == [])
                    records.append({
                        "id": qa["id"], "title": article["title"], "context": paragraph["context"],
                        "question": qa["question"],
                        "answers": {"text": [a["text"] for a in qa["answers"]],
                                    "answer_start": [a["answer_start"] for a in qa["answers"]]},
                    })
        return records


@pytest.mark.parametrize("fmt", ["flat", "nested", "jsonl", "csv"])
def test_write_qa_file_round_trips(tmp_path, fmt):
    records = toy_data.make_templated_qa(25, version_2=True)
    path = toy_data.write_qa_file(records, str(tmp_path / f"data.{fmt}"), fmt)
    back = _read_back(path, fmt)
    key = lambda r: r["id"]  # noqa: E731 - nested groups by title, so compare in id order
    assert sorted(back, key=key) == sorted(records, key=key)


def test_nested_groups_questions_by_context(tmp_path):
    records = toy_data.make_templated_qa(30, version_2=True)
    path = toy_data.write_qa_file(records, str(tmp_path / "nested.json"), "nested")
    data = json.load(open(path))
    assert data["version"] == "v2.0"
    paragraphs = [p for article in data["data"] for p in article["paragraphs"]]
    assert len(paragraphs) == len({r["context"] for r in records}) < len(records)
    assert len({a["title"] for a in data["data"]}) == len(data["data"])


def test_write_qa_file_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError):
        toy_data.write_qa_file([], str(tmp_path / "x"), "xml")


def test_write_lm_text(tmp_path):
    path = toy_data.write_lm_text(str(tmp_path / "lm.txt"), n_lines=50)
    lines = open(path, encoding="utf-8").read().splitlines()
    sentences = [line for line in lines if line]
    assert len(sentences) == 50
    assert "" in lines and lines[0] and lines[-1]
    assert open(path).read() == open(toy_data.write_lm_text(str(tmp_path / "again.txt"), n_lines=50)).read()
