"""run_clm.py on a tiny random GPT-2, offline: adapters and full fine-tuning lower the perplexity of held-out text, a
saved adapter reloads to the same perplexity, config overrides (from scratch and on a pretrained config), blocks,
streaming, and the one-line errors that replace the reference's crashes.

Causal LM evaluation is deterministic (no masking), so perplexities are compared exactly where they must be equal.
"""
import json
import math
import os
from unittest import mock

import pytest
import torch
from transformers import HfArgumentParser, TrainingArguments

import run_clm
from conftest import run_script
from script_utils import UsageError
from toy import data as toy_data

BLOCK = 64
COMMON = ["--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--overwrite_output_dir",
          "--per_device_eval_batch_size", "32"]
TRAIN = ["--do_train", "--max_steps", "30", "--learning_rate", "1e-2", "--per_device_train_batch_size", "8"]


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """Train and held-out validation text (different seeds: no shared lines by construction)."""
    folder = tmp_path_factory.mktemp("clm-text")
    return {
        "train": toy_data.write_lm_text(str(folder / "train.txt"), n_lines=300, seed=0),
        "validation": toy_data.write_lm_text(str(folder / "valid.txt"), n_lines=200, seed=1),
    }


def run(out_dir, *args):
    """run_clm.main in-process; returns (trainer, {name: results dict} for the *_results.json written)."""
    trainer = run_clm.main(["--output_dir", str(out_dir), *COMMON, *args])
    results = {}
    for name in ("train", "eval", "all"):
        path = out_dir / f"{name}_results.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
    return trainer, results


def data_args(text, *extra):
    return ["--train_file", text["train"], "--validation_file", text["validation"], "--block_size", str(BLOCK), *extra]


@pytest.fixture(scope="module")
def untrained(tiny_model, text, tmp_path_factory):
    """Eval-only run of the untrained model, with evaluate.load made to fail: nothing may need the network."""
    out = tmp_path_factory.mktemp("clm-untrained")
    with mock.patch("evaluate.load", side_effect=AssertionError("evaluate.load must not be called")):
        _, results = run(out, "--model_name_or_path", tiny_model("gpt2"), "--do_eval", *data_args(text))
    return results["eval"]


@pytest.fixture(scope="module")
def trained(tiny_model, text, tmp_path_factory):
    """trained(adapter_config or "full") -> (out_dir, trainer, results); each setting trains once per module."""
    cache = {}

    def get(setting):
        if setting not in cache:
            out = tmp_path_factory.mktemp(f"clm-{setting}")
            adapter = [] if setting == "full" else ["--train_adapter", "--adapter_config", setting]
            trainer, results = run(out, "--model_name_or_path", tiny_model("gpt2"), "--do_eval", *TRAIN, *adapter,
                                   *data_args(text))
            cache[setting] = (out, trainer, results)
        return cache[setting]

    return get


def test_reference_flags_and_defaults(text):
    model_args, data, _, adapter_args = HfArgumentParser(
        (run_clm.ModelArguments, run_clm.DataTrainingArguments, TrainingArguments, run_clm.AdapterArguments)
    ).parse_args_into_dataclasses(["--train_file", text["train"], "--output_dir", "x", "--no_keep_linebreaks"])
    assert vars(model_args) == {
        "model_name_or_path": None, "model_type": None, "config_overrides": None, "config_name": None,
        "tokenizer_name": None, "cache_dir": None, "use_fast_tokenizer": True, "model_revision": "main",
        "token": None, "trust_remote_code": False, "torch_dtype": None, "low_cpu_mem_usage": False,
        "merge_adapter_on_save": False,  # ours
    }
    assert vars(data) == {
        "dataset_name": None, "dataset_config_name": None, "train_file": text["train"], "validation_file": None,
        "max_train_samples": None, "max_eval_samples": None, "streaming": False, "block_size": None,
        "overwrite_cache": False, "validation_split_percentage": 5, "preprocessing_num_workers": None,
        "keep_linebreaks": False,
        "text_column": None,  # ours (default: the reference's rule)
    }
    assert (adapter_args.train_adapter, adapter_args.adapter_config, adapter_args.load_adapter) == (False, "seq_bn", "")


def test_untrained_eval_has_the_reference_keys(untrained):
    assert set(untrained) == {"eval_loss", "eval_accuracy", "eval_runtime", "eval_samples", "eval_samples_per_second",
                              "eval_steps_per_second", "eval_model_preparation_time", "perplexity"}
    assert untrained["perplexity"] == pytest.approx(math.exp(untrained["eval_loss"]))
    # Nearly uniform over the ~1,100-token vocabulary: the model is random.
    assert 500 < untrained["perplexity"] < 2000


@pytest.mark.parametrize("setting", ["seq_bn", "double_seq_bn", "lora", "prefix_tuning", "full"])
def test_training_lowers_held_out_perplexity(trained, untrained, setting):
    out, trainer, results = trained(setting)
    assert results["eval"]["perplexity"] < 0.95 * untrained["perplexity"]
    assert results["train"]["train_samples"] == len(trainer.train_dataset)
    assert results["eval"]["eval_samples"] == untrained["eval_samples"]
    if setting == "full":
        assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    else:
        # The adapter is named "clm" (no --dataset_name); no full model is written.
        assert (out / "clm" / "adapter_config.json").exists() and (out / "clm" / "pytorch_adapter.bin").exists()
        assert not (out / "model.safetensors").exists()
        assert set(results["all"]) >= {"train_loss", "eval_loss", "perplexity"}


def test_saved_adapter_reloads_to_identical_perplexity(trained, tiny_model, text, tmp_path):
    out, _, results = trained("seq_bn")
    _, reloaded = run(tmp_path, "--model_name_or_path", tiny_model("gpt2"), "--do_eval", "--train_adapter",
                      "--adapter_config", "seq_bn", "--load_adapter", str(out / "clm"), *data_args(text))
    assert reloaded["eval"]["perplexity"] == pytest.approx(results["eval"]["perplexity"], rel=1e-6)
    assert reloaded["eval"]["eval_accuracy"] == results["eval"]["eval_accuracy"]


def test_blocks_are_the_concatenated_tokens_cut_to_block_size(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    path = toy_data.write_lm_text(str(tmp_path / "t.txt"), n_lines=40, seed=5)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model("gpt2"))
    args = run_clm.DataTrainingArguments(train_file=path)
    raw, _ = run_clm.load_lm_raw_datasets(args, run_clm.ModelArguments(), {"keep_linebreaks": True})
    _, blocks = run_clm.build_blocks(raw["train"], "train", tokenizer, "text", 16, args,
                                     TrainingArguments(output_dir=str(tmp_path)))
    # keep_linebreaks (the default): every row but the last ends with "\n", which is part of the text.
    rows = raw["train"]["text"]
    assert all(row.endswith("\n") for row in rows[:-1])
    ids = [i for row in rows for i in tokenizer(row)["input_ids"]]
    assert len(blocks) == len(ids) // 16
    assert blocks["input_ids"] == [ids[i : i + 16] for i in range(0, len(blocks) * 16, 16)]
    assert blocks["labels"] == blocks["input_ids"]


def test_from_scratch_with_gpt2_config_overrides(tiny_model, text, tmp_path):
    """A GPT-2 from scratch (--model_type gpt2 --tokenizer_name ... --config_overrides ...n_positions=102), made tiny.
    n_positions=102 is below the tokenizer's 512, so the block size adapts to 102 (reference rule, with a warning);
    the adapter's random base model is saved too, so the adapter can be used again."""
    from transformers import AutoTokenizer

    vocab_size = len(AutoTokenizer.from_pretrained(tiny_model("gpt2")))  # instead of GPT-2's 50,257: faster
    overrides = f"n_embd=32,n_head=2,n_layer=2,n_positions=102,vocab_size={vocab_size}"
    trainer, results = run(tmp_path, "--model_type", "gpt2", "--tokenizer_name", tiny_model("gpt2"),
                           "--config_overrides", overrides, "--train_adapter", "--adapter_config",
                           "double_seq_bn[reduction_factor=8]", "--do_train", "--max_steps", "3", "--do_eval",
                           "--train_file", text["train"], "--validation_file", text["validation"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["n_embd"], config["n_head"], config["n_layer"], config["n_positions"]) == (32, 2, 2, 102)
    assert config["vocab_size"] == vocab_size
    assert len(trainer.train_dataset[0]["input_ids"]) == 102
    assert (tmp_path / "clm" / "adapter_config.json").exists()
    _, reloaded = run(tmp_path / "reload", "--model_name_or_path", str(tmp_path), "--do_eval", "--train_adapter",
                      "--adapter_config", "double_seq_bn[reduction_factor=8]", "--load_adapter", str(tmp_path / "clm"),
                      "--block_size", "102", "--train_file", text["train"], "--validation_file", text["validation"])
    assert reloaded["eval"]["perplexity"] == pytest.approx(results["eval"]["perplexity"], rel=1e-6)


def test_block_size_beyond_the_positions_is_an_error_naming_both(tiny_model, text, tmp_path):
    with pytest.raises(UsageError, match=r"--block_size 128 .*102 positions"):
        run(tmp_path, "--model_type", "gpt2", "--tokenizer_name", tiny_model("gpt2"),
            "--config_overrides", "n_embd=32,n_head=2,n_layer=2,n_positions=102", "--do_train",
            *data_args(text)[:-2], "--block_size", "128")


def test_config_overrides_on_a_pretrained_config(tiny_model, text, tmp_path):
    # summary_activation is None in a GPT-2 config, which update_from_string alone cannot set.
    trainer, _ = run(tmp_path, "--model_name_or_path", tiny_model("gpt2"), "--do_eval",
                     "--config_overrides", "resid_pdrop=0.25, summary_activation=tanh", *data_args(text))
    assert trainer.model.config.resid_pdrop == 0.25
    assert trainer.model.config.summary_activation == "tanh"
    assert trainer.model.config.n_embd == 32  # the pretrained values stay


@pytest.mark.parametrize("overrides, message", [
    ("n_embed=10", r"unknown key\(s\) for a gpt2 config: n_embed \(did you mean n_embd"),
    ("n_embd", r"'n_embd' is not key=value"),
    ("n_embd=ten", r"invalid literal for int"),
])
def test_bad_config_overrides_are_usage_errors(tiny_model, text, tmp_path, overrides, message):
    with pytest.raises(UsageError, match=message):
        run(tmp_path, "--model_type", "gpt2", "--tokenizer_name", tiny_model("gpt2"), "--config_overrides",
            overrides, "--do_train", *data_args(text))


def test_cli_reports_a_usage_error_in_one_line(repo_root, tmp_path):
    missing = tmp_path / "missing.txt"
    proc = run_script("run_clm.py", "--model_name_or_path", "gpt2", "--train_file", missing, "--do_train",
                      "--output_dir", tmp_path / "out", env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"error: --train_file {missing} does not exist."
    assert "Traceback" not in proc.stderr


def test_the_block_size_warning_is_printed_once(tiny_model, text, tmp_path):
    proc = run_script("run_clm.py", "--model_name_or_path", tiny_model("gpt2"), "--validation_file", text["validation"],
                      "--do_eval", "--block_size", "2048", "--output_dir", tmp_path, *COMMON, check=True)
    assert (proc.stdout + proc.stderr).count("The block_size passed (2048) is larger than the maximum length") == 1


def test_streaming_needs_max_steps(tiny_model, text, tmp_path):
    with pytest.raises(UsageError, match="--max_steps"):
        run(tmp_path, "--model_name_or_path", tiny_model("gpt2"), "--streaming", "--do_train", *data_args(text))


def test_streaming_local_files(tiny_model, text, untrained, tmp_path):
    # Evaluating a stream gives exactly the in-memory numbers: same blocks in the same order.
    _, streamed = run(tmp_path / "eval", "--model_name_or_path", tiny_model("gpt2"), "--streaming", "--do_eval",
                      *data_args(text))
    assert streamed["eval"]["perplexity"] == pytest.approx(untrained["perplexity"], rel=1e-6)
    assert streamed["eval"]["eval_samples"] == untrained["eval_samples"]
    # Training on the first 5 blocks of a stream for 3 steps of 4 blocks: the stream is re-read after it runs out.
    trainer, results = run(tmp_path / "train", "--model_name_or_path", tiny_model("gpt2"), "--streaming",
                           "--do_train", "--max_steps", "3", "--per_device_train_batch_size", "4",
                           "--max_train_samples", "5", "--train_adapter", *data_args(text))
    assert trainer.state.global_step == 3
    assert results["train"]["train_samples"] == 5


def test_empty_validation_split_is_an_error(tiny_model, tmp_path):
    short = toy_data.write_lm_text(str(tmp_path / "short.txt"), n_lines=8, seed=2)  # 5% of 8 rows: no row
    with pytest.raises(UsageError, match=r"validation split is empty: 5% of the \d+ rows"):
        run(tmp_path / "a", "--model_name_or_path", tiny_model("gpt2"), "--do_eval", "--train_file", short)
    # A validation text shorter than one block gives no block at all.
    with pytest.raises(UsageError, match=r"validation split gives no block of 64 tokens"):
        run(tmp_path / "b", "--model_name_or_path", tiny_model("gpt2"), "--do_eval", "--train_file", short,
            "--validation_file", toy_data.write_lm_text(str(tmp_path / "one.txt"), n_lines=1, seed=3),
            "--block_size", "64")


def test_torch_dtype_is_passed_as_dtype(tiny_model, text, tmp_path):
    trainer, results = run(tmp_path, "--model_name_or_path", tiny_model("gpt2"), "--do_eval",
                           "--torch_dtype", "bfloat16", *data_args(text))
    assert trainer.model.dtype == torch.bfloat16
    assert math.isfinite(results["eval"]["perplexity"])


def test_next_token_accuracy_is_shifted_and_offline():
    preds = torch.tensor([[1, 2, 3], [4, 5, 6]]).numpy()
    labels = torch.tensor([[0, 1, 9], [0, 4, 5]]).numpy()
    # preds[:, :-1] = 1 2 | 4 5 against labels[:, 1:] = 1 9 | 4 5
    assert run_clm.compute_metrics((preds, labels)) == {"accuracy": 0.75}


def test_acceptance_wikitext_double_seq_bn(shared_data, tiny_model, tmp_path):
    """The issue's acceptance run: train on WikiText-2 text, evaluate on sample_text.txt."""
    data = ["--train_file", str(shared_data / "wikitext2_raw_test_300k.txt"),
            "--validation_file", str(shared_data / "sample_text.txt"), "--block_size", "128"]
    _, before = run(tmp_path / "before", "--model_name_or_path", tiny_model("gpt2"), "--do_eval", *data)
    _, after = run(tmp_path / "after", "--model_name_or_path", tiny_model("gpt2"), "--do_eval", "--do_train",
                   "--train_adapter", "--adapter_config", "double_seq_bn[reduction_factor=8]", "--max_steps", "30",
                   "--learning_rate", "1e-2", "--per_device_train_batch_size", "8", *data)
    assert "perplexity" in after["eval"]
    # Deterministic evaluation; the gain is small (about 5%: a different domain than the training text).
    assert after["eval"]["perplexity"] < 0.98 * before["eval"]["perplexity"]
