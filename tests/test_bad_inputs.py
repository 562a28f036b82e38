"""Bad input is answered with one clear line, before the model is loaded, with the output folder left as it was.

Table-driven: each case writes its input, runs the script's main() in-process with the model loaders patched to fail
the test if they are reached ("failed fast": every check runs before the model is loaded), and asserts the UsageError
message's key words and that the output folder (holding an earlier run's results, with --overwrite_output_dir in the
command) is byte-for-byte unchanged. A few cases run as a subprocess to check the CLI itself: exit code 1, the
message as the last line of stderr prefixed with "error:", no traceback, no model weights loaded.
"""
import copy
import importlib
import json
import shutil

import pytest

from conftest import run_script, snapshot
from script_utils import UsageError
from toy import data as toy_data

# Inputs ---------------------------------------------------------------------------------------------------------------


def _records(n=6, seed=0, version_2=False):
    return toy_data.make_templated_qa(n, seed=seed, version_2=version_2)


def _flat(records):
    return json.dumps({"version": "1.1", "data": records})


def _jsonl(records):
    return "".join(json.dumps(r) + "\n" for r in records)


def _renamed(records, old, new):
    out = copy.deepcopy(records)
    for r in out:
        r[new] = r.pop(old)
    return out


def _with(records, index, **changes):
    out = copy.deepcopy(records)
    out[index].update(changes)
    return out


def _nested_without_qas():
    return json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Alice lives in Paris."}]}]})


def _csv_bad_answers():
    return (
        "id,title,context,question,answers\n"
        'a1,t,Alice lives in Paris.,Where does Alice live?,"{""text"": [""Paris""], ""answer_start"": [15]}"\n'
        "a2,t,Bob lives in Rome.,Where does Bob live?,Rome at 13\n"
    )


def _long_question(records):
    return _with(records, 2, question="Where does Alice live " + "and work " * 40 + "?")


def _unfixable(records):
    out = copy.deepcopy(records)
    for r in out:
        r["answers"] = {"text": ["Atlantis"], "answer_start": [3]}
    return out


# name -> content (str or bytes); {"records": ...} helpers are evaluated once per session.
def _input_files():
    good = _records(8, seed=1)
    return {
        "train.json": _flat(good),
        "dev.json": _flat(_records(6, seed=2)),
        "train.txt": "Alice lives in Paris.\n",
        "broken.json": '{"version": "1.1", "data": [\n  {"id": "x", "question": "q"\n',
        "broken.jsonl": _jsonl(good[:2]) + '{"id": "x", "question": \n' + _jsonl(good[2:3]),
        "bad_answers.csv": _csv_bad_answers(),
        "nested_no_qas.json": _nested_without_qas(),
        "empty_data.json": json.dumps({"version": "1.1", "data": []}),
        "empty.json": "",
        "latin1.json": _flat(good).replace("Alice", "Alic\u00e9").encode("latin-1"),
        "query_column.json": _flat(_renamed(good, "question", "query")),
        "no_answers.jsonl": _jsonl([{k: v for k, v in r.items() if k != "answers"} for r in good]),
        "answers_as_text.jsonl": _jsonl([{**r, "answers": r["answers"]["text"][0]} for r in good]),
        "uneven_answers.json": _flat(_with(good, 3, answers={"text": ["Paris", "Rome"], "answer_start": [3]})),
        "null_question.jsonl": _jsonl(_with(good, 4, question=None)),
        "v2_train.json": _flat(_records(9, seed=3, version_2=True)),
        "v2_dev.json": _flat(_records(9, seed=4, version_2=True)),
        "duplicate_ids.json": _flat(_with(_records(6, seed=2), 4, id=_records(6, seed=2)[1]["id"])),
        "unfixable.json": _flat(_unfixable(good)),
        "long_question.json": _flat(_long_question(good)),
        "args_broken.json": '{"model_name_or_path": "x", ',
        "data_not_list.json": json.dumps({"version": "1.1", "data": {"title": "t"}}),
        "list_of_text.json": json.dumps(["Alice lives in Paris.", "Bob works at the bank."]),
        "bom.json": "\ufeff" + _flat(good),
        "nested_no_context.json": json.dumps({"data": [{"title": "t", "paragraphs": [{"qas": []}]}]}),
        "starts_as_text.json": _flat([{**r, "answers": {"text": r["answers"]["text"], "answer_start": [str(x) for x in r["answers"]["answer_start"]]}} for r in good]),
        "answers_not_lists.json": _flat([{**r, "answers": {"text": r["answers"]["text"][0], "answer_start": r["answers"]["answer_start"][0]}} for r in good]),
        "lm_broken.jsonl": '{"text": "Alice lives in Paris."}\n{"text": \n{"text": "Bob works at the bank."}\n',
        "lm_broken.csv": 'text,source\n"Alice lives in Paris.",a\n"Bob works at the bank.",b,extra\n',
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model):
    """Data files, an adapter folder and model folders for the cases; an earlier run's output to protect."""
    root = tmp_path_factory.mktemp("bad_inputs")
    data = root / "data"
    data.mkdir()
    for name, content in _input_files().items():
        (data / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    toy_data.write_lm_text(str(data / "lm.txt"), n_lines=40)

    bert = tiny_model("bert")
    models = root / "models"
    from transformers import ViTConfig, XLNetConfig

    small = {"num_hidden_layers": 1, "num_attention_heads": 2}
    for model_type, config in (("xlnet", XLNetConfig(d_model=32, n_layer=1, n_head=2, d_inner=37)),
                               ("vit", ViTConfig(hidden_size=32, intermediate_size=37, **small))):
        folder = models / model_type  # the bert tokenizer with a config of another model type
        shutil.copytree(bert, folder)
        config.save_pretrained(folder)
    # What an adapter run leaves: tokenizer files and an adapter folder, no config.json.
    adapter_run = models / "adapter_run"
    (adapter_run / "squad").mkdir(parents=True)
    (adapter_run / "squad" / "adapter_config.json").write_text("{}")
    (adapter_run / "tokenizer.json").write_text("{}")
    incomplete = models / "checkpoint-4"  # killed while saving: no trainer_state.json yet
    (incomplete / "squad").mkdir(parents=True)
    return {"root": root, "data": data, "model": bert, "t5": tiny_model("t5"), "models": models}


def _earlier_run(folder):
    """An output folder holding an earlier run's results (which --overwrite_output_dir will replace, but only once
    every check has passed)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "all_results.json").write_text(json.dumps({"eval_f1": 12.5}))
    (folder / "eval_predictions.json").write_text(json.dumps({"q1": "Paris"}))
    (folder / "checkpoint-7" / "squad").mkdir(parents=True, exist_ok=True)  # killed while saving it
    (folder / "checkpoint-7" / "squad" / "adapter_config.json").write_text("{}")
    return folder


# The table ------------------------------------------------------------------------------------------------------------

# Placeholders: {data} data folder, {model} tiny bert, {t5} tiny t5, {models} other model folders, {out} output folder.
DROP = object()  # as a value: leave the flag out
COMMON = {"--output_dir": "{out}", "--overwrite_output_dir": None, "--report_to": "none", "--max_steps": "2"}
QA_BASE = {
    "--model_name_or_path": "{model}",
    "--train_file": "{data}/train.json",
    "--validation_file": "{data}/dev.json",
    "--do_train": None,
    "--do_eval": None,
    "--max_seq_length": "64",
    "--doc_stride": "16",
    **COMMON,
}
LM_BASE = {
    "--model_name_or_path": "{model}",
    "--train_file": "{data}/lm.txt",
    "--validation_file": "{data}/lm.txt",
    "--do_train": None,
    "--do_eval": None,
    **COMMON,
}
BASES = {
    "run_qa": QA_BASE,
    # Beam search fine-tunes XLNet/XLM in full; other encoders get an adapter and the beam-search head.
    "run_qa_beam_search": {**QA_BASE, "--train_adapter": None},
    "run_seq2seq_qa": {**QA_BASE, "--model_name_or_path": "{t5}", "--doc_stride": DROP},  # an encoder-decoder
    "run_mlm": {**LM_BASE, "--max_seq_length": "32"},
    "run_clm": {**LM_BASE, "--block_size": "32"},  # bert has a causal-LM head (BertLMHeadModel)
}

# (script, id, changes to its base command (value DROP removes the flag), key words of the message)
CASES = [
    ("run_qa", "missing file", {"--train_file": "{data}/nope.json"}, ["--train_file", "nope.json", "does not exist"]),
    ("run_qa", "missing validation file", {"--validation_file": "{data}/nope.tsv"}, ["--validation_file", "nope.tsv", "does not exist"]),
    ("run_qa", "unsupported extension", {"--train_file": "{data}/train.txt"}, ["train.txt", "unsupported extension", ".jsonl"]),
    ("run_qa", "empty file", {"--train_file": "{data}/empty.json"}, ["empty.json", "is empty"]),
    ("run_qa", "broken JSON", {"--train_file": "{data}/broken.json"}, ["broken.json", "not valid JSON", "line 3"]),
    ("run_qa", "broken JSON Lines", {"--train_file": "{data}/broken.jsonl"}, ["broken.jsonl", "line 3", "not valid JSON"]),
    ("run_qa", "CSV answers not JSON", {"--train_file": "{data}/bad_answers.csv"}, ["bad_answers.csv", "record 1", "answer_spans()", "Rome at 13"]),
    ("run_qa", "nested SQuAD without qas", {"--train_file": "{data}/nested_no_qas.json"}, ["SQuAD layout", "paragraphs[0]", "qas"]),
    ("run_qa", "data is not a list", {"--train_file": "{data}/data_not_list.json"}, ["data_not_list.json", '"data" is a dict']),
    ("run_qa", "records are not objects", {"--train_file": "{data}/list_of_text.json"}, ["list_of_text.json", "record 0 is a str"]),
    ("run_qa", "byte-order mark", {"--train_file": "{data}/bom.json"}, ["bom.json", "BOM"]),
    ("run_qa", "nested SQuAD without context", {"--train_file": "{data}/nested_no_context.json"}, ["SQuAD layout", '"context"']),
    ("run_qa", "answer starts as text", {"--train_file": "{data}/starts_as_text.json"}, ["answer_spans() returned the starts", "integer character offsets", "(texts, starts)"]),
    ("run_qa", "answers not lists", {"--train_file": "{data}/answers_not_lists.json"}, ["answer_spans() returned the texts", "not a list of texts", '["Paris"']),
    ("run_qa", "empty data list", {"--train_file": "{data}/empty_data.json"}, ["empty_data.json", "no examples"]),
    ("run_qa", "not UTF-8", {"--train_file": "{data}/latin1.json"}, ["latin1.json", "UTF-8"]),
    ("run_qa", "question column renamed", {"--train_file": "{data}/query_column.json"}, ["query_column.json", "question", "query"]),
    ("run_qa", "no answers to train on", {"--train_file": "{data}/no_answers.jsonl"}, ["no_answers.jsonl", "answers", "training"]),
    ("run_qa", "answers as plain text", {"--train_file": "{data}/answers_as_text.jsonl"}, ["answers", "answer_start", "SQuAD layout"]),
    ("run_qa", "answer texts without starts", {"--train_file": "{data}/uneven_answers.json"}, ["record 3", "2 answer texts", "1 start(s)"]),
    ("run_qa", "record without question", {"--train_file": "{data}/null_question.jsonl"}, ["record 4", "no question"]),
    ("run_qa", "duplicate ids", {"--validation_file": "{data}/duplicate_ids.json"}, ["duplicate_ids.json", "more than once", "record 4"]),
    ("run_qa", "no answer found in context", {"--train_file": "{data}/unfixable.json"}, ["unfixable.json", "no example is left"]),
    ("run_qa", "no train file", {"--train_file": DROP}, ["--do_train", "train"]),
    ("run_qa", "no validation file", {"--validation_file": DROP}, ["--do_eval", "validation"]),
    ("run_qa", "empty selection", {"--max_train_samples": "0"}, ["--max_train_samples", "positive"]),
    ("run_qa", "negative stride", {"--doc_stride": "-1"}, ["--doc_stride", "negative"]),
    ("run_qa", "stride not below length", {"--doc_stride": "64"}, ["--doc_stride", "--max_seq_length"]),
    ("run_qa", "question too long for stride", {"--train_file": "{data}/long_question.json"}, ["tokens long", "--doc_stride", "record 2", "keeps only 0 context tokens", "Use a larger --max_seq_length or a shorter question."]),
    ("run_qa", "question and context swapped", {"--question_column": "context", "--context_column": "question"}, ["look swapped", "--question_column question --context_column context"]),
    ("run_qa", "zero batch size", {"--per_device_train_batch_size": "0"}, ["--per_device_train_batch_size", "positive"]),
    ("run_qa", "output folder is a file", {"--output_dir": "{data}/train.json"}, ["--output_dir", "is a file"]),
    ("run_qa", "tokenizer folder without tokenizer", {"--tokenizer_name": "{models}/adapter_run/squad"}, ["--tokenizer_name", "tokenizer.json"]),
    ("run_qa", "nothing to do", {"--do_train": DROP, "--do_eval": DROP}, ["--do_train", "--do_eval", "--do_predict"]),
    ("run_qa", "unknown flag", {"--adapter_reduction_factor": "16"}, ["--adapter_reduction_factor", "not used"]),
    ("run_qa", "invalid adapter config", {"--train_adapter": None, "--adapter_config": "seq_bnn"}, ["seq_bnn", "not a valid adapter configuration", "seq_bn"]),
    ("run_qa", "adapter config unquoted string", {"--train_adapter": None, "--adapter_config": "seq_bn[non_linearity=gelu]"}, ["quoted"]),
    ("run_qa", "load_adapter without train_adapter", {"--load_adapter": "{models}/adapter_run/squad"}, ["--train_adapter"]),
    ("run_qa", "load_adapter missing", {"--train_adapter": None, "--load_adapter": "{models}/nope"}, ["--load_adapter", "does not exist"]),
    ("run_qa", "load_adapter is a run folder", {"--train_adapter": None, "--load_adapter": "{models}/adapter_run"}, ["adapter_config.json", "adapter_run/squad"]),
    ("run_qa", "model folder missing", {"--model_name_or_path": "{models}/nope"}, ["nope", "does not exist"]),
    ("run_qa", "model folder is an adapter run", {"--model_name_or_path": "{models}/adapter_run"}, ["config.json", "--load_adapter", "squad"]),
    ("run_qa", "architecture without adapters", {"--model_name_or_path": "{models}/xlnet"}, ["xlnet", "adapters", "Supported model types", "bert"]),
    ("run_qa", "architecture without QA head", {"--model_name_or_path": "{models}/vit"}, ["vit", "question-answering head", "roberta"]),
    ("run_qa", "best model without metric", {"--load_best_model_at_end": None, "--eval_strategy": "steps", "--save_steps": "1", "--eval_steps": "1"}, ["--metric_for_best_model", "exact_match", "f1"]),
    ("run_qa", "best model with v2-only metric", {"--load_best_model_at_end": None, "--eval_strategy": "steps", "--save_steps": "1", "--eval_steps": "1", "--metric_for_best_model": "HasAns_f1"}, ["--metric_for_best_model", "HasAns_f1"]),
    ("run_qa", "best model with v1 metric on v2 data", {"--train_file": "{data}/v2_train.json", "--load_best_model_at_end": None, "--eval_strategy": "steps", "--save_steps": "1", "--eval_steps": "1", "--metric_for_best_model": "exact_match"}, ["unanswerable", "HasAns_f1", "exact_match"]),
    ("run_qa", "best model with mismatched strategies", {"--load_best_model_at_end": None, "--metric_for_best_model": "f1", "--eval_strategy": "epoch"}, ["load_best_model_at_end", "strategy"]),
    ("run_qa", "resume from missing checkpoint", {"--resume_from_checkpoint": "{models}/checkpoint-99"}, ["--resume_from_checkpoint", "not a folder"]),
    ("run_qa", "resume from half-written checkpoint", {"--resume_from_checkpoint": "{models}/checkpoint-4"}, ["checkpoint-4", "trainer_state.json"]),
    ("run_qa", "output folder not empty", {"--overwrite_output_dir": DROP}, ["already exists and is not empty", "--overwrite_output_dir"]),
    ("run_qa_beam_search", "broken JSON Lines", {"--validation_file": "{data}/broken.jsonl"}, ["broken.jsonl", "line 3"]),
    ("run_qa_beam_search", "question too long for stride", {"--train_file": "{data}/long_question.json"}, ["tokens long", "--doc_stride"]),
    ("run_qa_beam_search", "duplicate ids", {"--validation_file": "{data}/duplicate_ids.json"}, ["more than once"]),
    ("run_qa_beam_search", "load_adapter is a run folder", {"--load_adapter": "{models}/adapter_run"}, ["adapter_config.json", "adapter_run/squad"]),
    ("run_qa_beam_search", "best model without metric", {"--load_best_model_at_end": None, "--eval_strategy": "steps", "--save_steps": "1", "--eval_steps": "1"}, ["--metric_for_best_model", "f1"]),
    ("run_qa_beam_search", "output folder not empty", {"--overwrite_output_dir": DROP}, ["already exists and is not empty"]),
    ("run_seq2seq_qa", "broken JSON Lines", {"--train_file": "{data}/broken.jsonl"}, ["broken.jsonl", "line 3"]),
    ("run_seq2seq_qa", "context column missing", {"--context_column": "passage"}, ["passage", "context"]),
    ("run_seq2seq_qa", "duplicate ids", {"--validation_file": "{data}/duplicate_ids.json"}, ["more than once"]),
    ("run_seq2seq_qa", "load_adapter is a run folder", {"--train_adapter": None, "--load_adapter": "{models}/adapter_run"}, ["adapter_run/squad"]),
    ("run_seq2seq_qa", "not an encoder-decoder", {"--model_name_or_path": "{model}"}, ["bert", "encoder-decoder", "run_qa.py"]),
    ("run_seq2seq_qa", "output folder not empty", {"--overwrite_output_dir": DROP}, ["already exists and is not empty"]),
    ("run_mlm", "architecture without masked-LM head", {"--model_name_or_path": "{models}/vit"}, ["vit", "masked language-modelling head", "bert"]),
    ("run_mlm", "load_adapter missing", {"--train_adapter": None, "--load_adapter": "{models}/nope"}, ["--load_adapter", "does not exist"]),
    ("run_mlm", "model folder is an adapter run", {"--model_name_or_path": "{models}/adapter_run"}, ["config.json", "--load_adapter"]),
    ("run_mlm", "broken JSON Lines", {"--train_file": "{data}/lm_broken.jsonl", "--validation_file": DROP}, ["lm_broken.jsonl", "line 2", "not valid JSON"]),
    ("run_mlm", "empty selection", {"--max_train_samples": "0"}, ["--max_train_samples", "positive"]),
    ("run_mlm", "resume from half-written checkpoint", {"--resume_from_checkpoint": "{models}/checkpoint-4"}, ["checkpoint-4", "trainer_state.json"]),
    ("run_mlm", "output folder not empty", {"--overwrite_output_dir": DROP}, ["already exists and is not empty"]),
    ("run_clm", "architecture without adapters", {"--model_name_or_path": "{models}/xlnet"}, ["xlnet", "adapters", "gpt2"]),
    ("run_clm", "load_adapter is a run folder", {"--train_adapter": None, "--load_adapter": "{models}/adapter_run"}, ["adapter_run/squad"]),
    ("run_clm", "unknown flag", {"--evaluation_strategy": "steps"}, ["--evaluation_strategy", "not used"]),
    ("run_clm", "broken CSV", {"--train_file": "{data}/lm_broken.csv", "--validation_file": DROP}, ["lm_broken.csv", "line 3"]),
    ("run_clm", "model folder missing", {"--model_name_or_path": "{models}/nope"}, ["does not exist"]),
    ("run_clm", "resume from missing checkpoint", {"--resume_from_checkpoint": "{models}/checkpoint-99"}, ["not a folder"]),
    ("run_clm", "output folder not empty", {"--overwrite_output_dir": DROP}, ["already exists and is not empty"]),
]


def _argv(script, changes, env, out):
    flags = dict(BASES[script])
    flags.update(changes)
    argv = []
    for flag, value in flags.items():
        if value is DROP:
            continue
        argv.append(flag)
        if value is not None:
            argv.append(value)
    fill = {"data": env["data"], "model": env["model"], "t5": env["t5"], "models": env["models"], "out": out}
    return [a.format(**fill) for a in argv]


@pytest.fixture
def model_loading_fails(monkeypatch):
    """Reaching the model loaders means the check came too late: fail the test."""
    import adapters
    from transformers import modeling_utils

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr(modeling_utils.PreTrainedModel, "from_pretrained", classmethod(loaded))
    monkeypatch.setattr(modeling_utils.PreTrainedModel, "_from_config", classmethod(loaded))
    monkeypatch.setattr(adapters, "init", loaded)


@pytest.mark.parametrize("script, case_id, changes, keywords", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_bad_input(script, case_id, changes, keywords, env, tmp_path, model_loading_fails):
    main = importlib.import_module(script).main
    out = _earlier_run(tmp_path / "out")
    before = snapshot(out)
    with pytest.raises(UsageError) as error:
        main(_argv(script, changes, env, str(out)))
    message = str(error.value)
    assert "\n" not in message
    for word in keywords:
        assert word in message, f"{word!r} not in {message!r}"
    assert snapshot(out) == before


# The command line itself ----------------------------------------------------------------------------------------------

CLI_CASES = [
    ("run_qa", {"--train_file": "{data}/broken.jsonl"}, ["broken.jsonl", "line 3"]),
    ("run_clm", {"--train_adapter": None, "--adapter_config": "seq_bnn"}, ["not a valid adapter configuration"]),
]


@pytest.mark.parametrize("script, changes, keywords", CLI_CASES, ids=["run_qa broken data", "run_clm adapter config"])
def test_cli_prints_one_line_and_exits_1(script, changes, keywords, env, tmp_path, repo_root):
    out = _earlier_run(tmp_path / "out")
    before = snapshot(out)
    result = run_script(f"{script}.py", *_argv(script, changes, env, str(out)), cwd=tmp_path, timeout=300)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ")
    for word in keywords:
        assert word in last_line
    assert "Traceback" not in result.stderr
    assert "loading weights file" not in result.stdout + result.stderr  # failed before the model was loaded
    assert snapshot(out) == before


# Repairs that let the run go on ---------------------------------------------------------------------------------------


def test_training_answers_are_realigned_or_skipped(tmp_path, caplog):
    """An answer off by a few characters or differing by whitespace is moved onto the context; one that is not in
    the context is dropped (its example skipped); correct answers are untouched."""
    import datasets

    from qa_data import QAColumns, realign_train_answers

    context = "Alice lives in\u00a0New York. Bob works at the bank."
    records = [
        {"id": "ok", "question": "Where does Bob work?", "context": context, "answers": {"text": ["bank"], "answer_start": [context.index("bank")]}},
        {"id": "shifted", "question": "Who works?", "context": context, "answers": {"text": ["Bob"], "answer_start": [context.index("Bob") + 3]}},
        {"id": "nbsp", "question": "Where does Alice live?", "context": context, "answers": {"text": ["in New York"], "answer_start": [12]}},
        {"id": "absent", "question": "Where is Rome?", "context": context, "answers": {"text": ["Rome"], "answer_start": [0]}},
    ]
    examples = datasets.Dataset.from_list(records)
    with caplog.at_level("WARNING"):
        fixed = realign_train_answers(examples, "--train_file x.json", QAColumns("id", "question", "context", "answers"))
    assert fixed["id"] == ["ok", "shifted", "nbsp"]
    answers = {r["id"]: r["answers"] for r in fixed}
    assert answers["ok"] == records[0]["answers"]
    assert answers["shifted"] == {"text": ["Bob"], "answer_start": [context.index("Bob")]}
    assert answers["nbsp"] == {"text": ["in\u00a0New York"], "answer_start": [context.index("in\u00a0New")]}
    for r in fixed:
        start, text = r["answers"]["answer_start"][0], r["answers"]["text"][0]
        assert r["context"][start : start + len(text)] == text
    assert "2 realigned" in caplog.text and "1 dropped" in caplog.text and "1 example(s) skipped" in caplog.text


def test_answers_without_a_start_are_looked_up_and_a_wrong_start_is_a_hint(caplog):
    """answer_spans() may return None for a start: the text's first occurrence in the context; a start given but wrong
    takes the occurrence nearest to it, however far; a text not in the context is dropped, counted in one warning."""
    import datasets
    from transformers import TrainingArguments

    from qa_data import QAColumns, realign_train_answers, with_squad_answers

    context = "Paris is big. " + "Filler words here. " * 20 + "Paris again."
    second = context.rindex("Paris")
    records = [{"id": "none", "context": context, "aliases": "Paris", "start": ""},
               {"id": "hint", "context": context, "aliases": "Paris", "start": str(second - 150)},
               {"id": "absent", "context": context, "aliases": "Rome", "start": ""}]

    def answer_spans(example, columns):
        return [example["aliases"]], [int(example["start"]) if example["start"] else None]

    columns = QAColumns("id", "question", "context", "answers")
    examples = {"train": datasets.Dataset.from_list(records)}
    examples = with_squad_answers(examples, columns, answer_spans, TrainingArguments("unused", report_to="none"))
    with caplog.at_level("WARNING"):
        fixed = realign_train_answers(examples["train"], "--train_file x.tsv", columns)
    assert {r["id"]: r["answers"] for r in fixed} == {"none": {"text": ["Paris"], "answer_start": [0]},
                                                       "hint": {"text": ["Paris"], "answer_start": [second]}}
    assert "1 realigned" in caplog.text and "1 dropped" in caplog.text and "1 example(s) skipped" in caplog.text


def test_arcd_mismatched_answers_are_realigned(shared_data, tmp_path, caplog):
    """The real ARCD files have 3 answers per file that differ from the context by a non-breaking or doubled space:
    all 3 are realigned, none skipped."""
    from qa_data import QAColumns, load_qa_file, realign_train_answers

    examples = load_qa_file(str(shared_data / "arcd_train.json"), cache_dir=str(tmp_path / "cache"))
    with caplog.at_level("WARNING"):
        fixed = realign_train_answers(examples, "--train_file arcd_train.json",
                                      QAColumns("id", "question", "context", "answers"))
    assert len(fixed) == len(examples) == 693
    assert "3 answer(s) did not match" in caplog.text and "3 realigned" in caplog.text and "0 dropped" in caplog.text
    for r in fixed:
        start, text = r["answers"]["answer_start"][0], r["answers"]["text"][0]
        assert r["context"][start : start + len(text)] == text


def test_v2_data_without_flag_runs_in_v2_mode(env, tmp_path, caplog):
    """A `run_qa.py --dataset_name squad_v2` command without --version_2_with_negative: data with
    unanswerable questions switches SQuAD v2.0 mode on (with a warning) instead of failing at the metric after
    training, as the reference did."""
    import run_qa

    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        run_qa.main(_argv("run_qa", {"--do_train": DROP, "--train_file": DROP, "--validation_file": "{data}/v2_dev.json",
                                     "--overwrite_output_dir": DROP}, env, str(out)))
    assert "3 of 9 questions have no answer" in caplog.text and "--version_2_with_negative" in caplog.text
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_total"] == 9 and results["eval_HasAns_total"] == 6 and results["eval_NoAns_total"] == 3
    assert (out / "eval_null_odds.json").is_file()
