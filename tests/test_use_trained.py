"""Using what was trained (use_trained.py, docs/use-your-model.md) and --merge_adapter_on_save: the pipeline snippet
answers as predict_predictions.json; the merged folder loads with plain transformers (no adapters imported) and gives
the adapter model's logits; adapters that cannot be merged are refused before the model loads."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import (AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForQuestionAnswering,
                          AutoModelForSeq2SeqLM, AutoTokenizer)

import run_qa
import run_qa_beam_search
from adapter_setup import MERGEABLE_CONFIGS
from conftest import REPO_ROOT, read_json, run_script
from script_utils import UsageError
from toy import data as toy_data
from use_trained import generate_answers, load_trained_model, qa_pipeline

MAX_SEQ_LENGTH = 48  # every toy context below fits in one window with its question
RUN = ["--max_seq_length", str(MAX_SEQ_LENGTH), "--doc_stride", "16", "--report_to", "none", "--seed", "42",
       "--save_strategy", "no", "--disable_tqdm", "true"]
# LoRA on every linear layer of each encoder layer, trained as quickstart.py trains it (~225 steps): confident
# answers, far from ties (checked below), so that the pipeline's and the script's choices can be compared exactly.
LORA = 'lora[r=32,alpha=32,attn_matrices=["q","k","v"],intermediate_lora=True,output_lora=True]'
TRAIN = ["--do_train", "--train_adapter", "--adapter_config", LORA, "--learning_rate", "5e-3", "--warmup_ratio",
         "0.1", "--num_train_epochs", "3", "--per_device_train_batch_size", "32", "--n_best_size", str(MAX_SEQ_LENGTH)]
MERGEABLE = "lora, ia3, vera, dora, dvora"

# Run in a fresh interpreter: the merged folder with plain transformers only; prints logits and answers as JSON.
PLAIN_QA = """
import json, sys
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer
from use_trained import qa_pipeline
folder, questions, contexts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
model, tokenizer = AutoModelForQuestionAnswering.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
with torch.no_grad():
    out = model(**tokenizer(questions, contexts, padding=True, return_tensors="pt"))
answer = qa_pipeline(model, tokenizer, max_seq_length=%d, doc_stride=16)
print(json.dumps({"adapters_imported": "adapters" in sys.modules,
                  "logits": torch.stack([out.start_logits, out.end_logits]).tolist(),
                  "answers": [answer(question=q, context=c)["answer"] for q, c in zip(questions, contexts)]}))
""" % MAX_SEQ_LENGTH

PLAIN_LM = """
import json, sys
import torch
import transformers
folder, auto_class, ids = sys.argv[1], getattr(transformers, sys.argv[2]), json.loads(sys.argv[3])
model = auto_class.from_pretrained(folder).eval()
with torch.no_grad():
    logits = model(input_ids=torch.tensor(ids)).logits
print(json.dumps({"adapters_imported": "adapters" in sys.modules, "logits": logits.tolist()}))
"""


def in_plain_python(script, *args):
    """The JSON a script prints, run by a new interpreter from the repository root."""
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("use-data")
    test = toy_data.make_templated_qa(20, seed=2, one_fact_per_kind=True)
    return {"train": toy_data.write_qa_file(toy_data.make_templated_qa(2400, seed=1, one_fact_per_kind=True),
                                            str(folder / "train.json"), "flat"),
            "test": toy_data.write_qa_file(test, str(folder / "test.json"), "flat"), "records": test}


@pytest.fixture(scope="module")
def trained(tiny_model, qa_data, tmp_path_factory):
    """run_qa.py through its command line: a LoRA adapter trained and the test questions predicted, merged/ written."""
    out = tmp_path_factory.mktemp("use-run") / "out"
    done = run_script("run_qa.py", "--model_name_or_path", tiny_model("bert"), "--train_file", qa_data["train"],
                      "--test_file", qa_data["test"], "--do_predict", "--output_dir", out, *RUN, *TRAIN,
                      "--merge_adapter_on_save")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def questions_and_contexts(records):
    return [r["question"] for r in records], [r["context"] for r in records]


def test_pipeline_answers_are_the_predictions_file(trained, qa_data):
    model, tokenizer = load_trained_model(trained, AutoModelForQuestionAnswering)
    records = qa_data["records"]
    for question, context in zip(*questions_and_contexts(records)):
        assert len(tokenizer(question, context)["input_ids"]) <= MAX_SEQ_LENGTH  # one window each
    # No near-ties: the best span's score (start + end logit) leads the second best's by a clear margin.
    nbest = read_json(trained / "predict_nbest_predictions.json")
    gaps = [sum(n[0][k] - n[1][k] for k in ("start_logit", "end_logit")) for n in nbest.values()]
    assert min(gaps) > 1e-2
    predictions = read_json(trained / "predict_predictions.json")
    assert sum(predictions[r["id"]] == r["answers"]["text"][0] for r in records) >= 5  # it learned something

    answer = qa_pipeline(model, tokenizer, max_seq_length=MAX_SEQ_LENGTH, doc_stride=16)
    assert {r["id"]: answer(question=r["question"], context=r["context"])["answer"] for r in records} == predictions


def test_merged_model_loads_without_adapters_and_gives_the_same_logits_and_answers(trained, qa_data, tiny_model):
    merged = trained / "merged"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in merged.iterdir()}
    questions, contexts = questions_and_contexts(qa_data["records"])
    plain = in_plain_python(PLAIN_QA, merged, json.dumps(questions), json.dumps(contexts))
    assert plain["adapters_imported"] is False

    model, tokenizer = load_trained_model(trained, AutoModelForQuestionAnswering)
    with torch.no_grad():
        out = model(**tokenizer(questions, contexts, padding=True, return_tensors="pt"))
    adapter_logits = torch.stack([out.start_logits, out.end_logits])
    assert torch.allclose(torch.tensor(plain["logits"]), adapter_logits, rtol=0, atol=1e-4)
    predictions = read_json(trained / "predict_predictions.json")
    assert plain["answers"] == [predictions[r["id"]] for r in qa_data["records"]]
    # The adapter is in the encoder's weights (not only the head): the merged query weights moved from the base's.
    key = "bert.encoder.layer.0.attention.self.query.weight"
    base = load_file(f"{tiny_model('bert')}/model.safetensors")[key]
    assert (load_file(merged / "model.safetensors")[key] - base).abs().max() > 1e-3


def test_evaluation_only_run_with_load_adapter_writes_the_same_merged_model(trained, qa_data, tiny_model, tmp_path):
    out = tmp_path / "eval-only"
    run_qa.main(["--model_name_or_path", tiny_model("bert"), "--validation_file", qa_data["test"], "--do_eval",
                 "--train_adapter", "--load_adapter", str(trained / "squad"), "--merge_adapter_on_save",
                 "--output_dir", str(out), *RUN])
    again, first = load_file(out / "merged" / "model.safetensors"), load_file(trained / "merged" / "model.safetensors")
    assert again.keys() == first.keys()
    assert all(torch.equal(again[key], first[key]) for key in first)
    assert read_json(out / "eval_results.json")["eval_exact_match"] >= 25


@pytest.mark.parametrize("script,arch,auto_class,adapter_config", [
    ("run_clm", "gpt2", AutoModelForCausalLM, "lora"),
    ("run_mlm", "bert", AutoModelForMaskedLM, "ia3"),
])
def test_lm_merged_model_gives_the_adapter_models_logits(script, arch, auto_class, adapter_config, tiny_model,
                                                           tmp_path):
    text = toy_data.write_lm_text(str(tmp_path / "train.txt"), n_lines=120, seed=0)
    out = tmp_path / "out"
    length = ["--block_size", "32"] if script == "run_clm" else ["--max_seq_length", "32"]
    done = run_script(f"{script}.py", "--model_name_or_path", tiny_model(arch), "--train_file", text, "--do_train",
                      "--max_steps", "15", "--learning_rate", "2e-2", "--per_device_train_batch_size", "8",
                      "--train_adapter", "--adapter_config", adapter_config, "--merge_adapter_on_save",
                      "--output_dir", out, "--report_to", "none", "--save_strategy", "no", *length)
    assert done.returncode == 0, done.stderr[-3000:]
    ids = [AutoTokenizer.from_pretrained(out)("Alice lives in Paris. The team built two houses.")["input_ids"]]
    plain = in_plain_python(PLAIN_LM, out / "merged", auto_class.__name__, json.dumps(ids))
    assert plain["adapters_imported"] is False

    model, _ = load_trained_model(out, auto_class, adapter_name=script[4:])
    base = auto_class.from_pretrained(tiny_model(arch)).eval()
    with torch.no_grad():
        adapter_logits = model(input_ids=torch.tensor(ids)).logits
        base_logits = base(input_ids=torch.tensor(ids)).logits
    assert torch.allclose(torch.tensor(plain["logits"]), adapter_logits, rtol=0, atol=1e-4)
    assert (adapter_logits - base_logits).abs().max() > 1e-3  # the adapter changed the model


def test_seq2seq_generate_snippet_answers_are_the_predictions_file_merged_or_not(qa_data, tiny_model, tmp_path):
    out = tmp_path / "out"
    done = run_script("run_seq2seq_qa.py", "--model_name_or_path", tiny_model("t5"), "--train_file", qa_data["train"],
                      "--test_file", qa_data["test"], "--do_train", "--do_predict", "--predict_with_generate",
                      "--max_steps", "5", "--learning_rate", "1e-2", "--per_device_train_batch_size", "16",
                      "--max_seq_length", "64", "--train_adapter", "--adapter_config", "lora",
                      "--merge_adapter_on_save", "--output_dir", out, "--report_to", "none", "--save_strategy", "no")
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = read_json(out / "predict_predictions.json")
    records = qa_data["records"]
    expected = [predictions[r["id"]] for r in records]
    assert len(set(expected)) > 1  # not one answer for every question

    model, tokenizer = load_trained_model(out, AutoModelForSeq2SeqLM)
    assert generate_answers(model, tokenizer, *questions_and_contexts(records), max_seq_length=64) == expected
    merged = AutoModelForSeq2SeqLM.from_pretrained(out / "merged").eval()
    assert generate_answers(merged, tokenizer, *questions_and_contexts(records), max_seq_length=64) == expected


def refusal(monkeypatch, main, argv) -> str:
    """The UsageError main(argv) raises, with the model's loading made to fail the test."""
    monkeypatch.setattr(run_qa, "load_model", lambda *args: pytest.fail("the model was loaded"))
    with pytest.raises(UsageError) as raised:
        main(argv)
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("adapter_config", ["seq_bn", "par_bn", "prefix_tuning", "mam", "lora[use_gating=True]",
                                            "mtl_lora"])
def test_adapters_that_cannot_be_merged_are_refused_before_the_model_loads(adapter_config, qa_data, tmp_path,
                                                                            monkeypatch):
    out = tmp_path / "out"
    message = refusal(monkeypatch, run_qa.main, [
        "--model_name_or_path", "no-such-model", "--train_file", qa_data["train"], "--output_dir", str(out),
        "--do_train", "--train_adapter", "--adapter_config", adapter_config, "--merge_adapter_on_save"])
    assert message.startswith(f"--merge_adapter_on_save: the adapter of --adapter_config ({adapter_config}) cannot "
                              "be merged")
    assert f"the adapters that can: {MERGEABLE} (without use_gating)" in message
    assert not out.exists()


def test_mergeable_list_is_what_the_message_names():
    assert ", ".join(MERGEABLE_CONFIGS) == MERGEABLE


def test_a_loaded_bottleneck_adapter_is_refused_from_its_folder(qa_data, tiny_model, tmp_path, monkeypatch):
    import adapters

    model = AutoModelForQuestionAnswering.from_pretrained(tiny_model("bert"))
    adapters.init(model)
    model.add_adapter("squad", config="seq_bn")
    folder = tmp_path / "squad"
    model.save_adapter(str(folder), "squad")
    message = refusal(monkeypatch, run_qa.main, [
        "--model_name_or_path", "no-such-model", "--validation_file", qa_data["test"], "--output_dir",
        str(tmp_path / "out"), "--do_eval", "--train_adapter", "--adapter_config", "lora", "--load_adapter",
        str(folder), "--merge_adapter_on_save"])
    assert message.startswith(f"--merge_adapter_on_save: the adapter of --load_adapter {folder} (BnConfig) cannot "
                              "be merged")


@pytest.mark.parametrize("args,start", [
    ([], "--merge_adapter_on_save merges a trained adapter into the model: it needs --train_adapter"),
    (["--train_adapter", "--adapter_config", "lora"], "--merge_adapter_on_save needs an adapter to merge"),
    (["--train_adapter", "--do_train", "--load_lang_adapter", "x"], "--merge_adapter_on_save merges one adapter"),
])
def test_other_refusals(args, start, qa_data, tmp_path, monkeypatch):
    message = refusal(monkeypatch, run_qa.main, [
        "--model_name_or_path", "no-such-model", "--validation_file", qa_data["test"], "--do_eval", "--output_dir",
        str(tmp_path / "out"), "--merge_adapter_on_save", *args])
    assert message.startswith(start)


def test_beam_search_script_refuses_the_flag_in_one_line(qa_data, tmp_path, monkeypatch):
    monkeypatch.setattr(run_qa_beam_search, "load_model", lambda *args: pytest.fail("the model was loaded"))
    with pytest.raises(UsageError) as raised:
        run_qa_beam_search.main(["--model_name_or_path", "no-such-model", "--train_file", qa_data["train"],
                                 "--do_train", "--train_adapter", "--adapter_config", "lora", "--output_dir",
                                 str(tmp_path / "out"), "--merge_adapter_on_save"])
    assert str(raised.value).startswith("--merge_adapter_on_save is not available in this script: its beam-search "
                                        "head (XLNet/XLM) does not load through AutoModelForQuestionAnswering")


def test_cli_refusal_is_one_error_line(qa_data, tmp_path):
    done = run_script("run_qa.py", "--model_name_or_path", "no-such-model", "--train_file", qa_data["train"],
                      "--output_dir", tmp_path / "out", "--do_train", "--train_adapter", "--adapter_config", "seq_bn",
                      "--merge_adapter_on_save")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        "error: --merge_adapter_on_save: the adapter of --adapter_config (seq_bn) cannot be merged")
