"""run_mlm.py on tiny random BERT, RoBERTa and DistilBERT, offline: adapters and full fine-tuning lower the
perplexity of held-out text, a saved adapter reloads to the same perplexity, blocks vs line_by_line on a known text,
whole-word masking, from-scratch config overrides, streaming, and the one-line errors.

Masking is random, so an eval_loss depends on the masks drawn: comparisons between models use 200 held-out lines
(the spread over mask draws is about 0.02 nats, the effects asserted are several times that), and "identical"
comparisons draw the same masks by seeding torch right before evaluating.
"""
import json
import logging
import math
from unittest import mock

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoTokenizer, DataCollatorForLanguageModeling, HfArgumentParser, TrainingArguments

import run_mlm
from checks import max_input_positions
from script_utils import UsageError
from toy import data as toy_data

SEQ = 64
COMMON = ["--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--overwrite_output_dir",
          "--per_device_eval_batch_size", "64"]
TRAIN = ["--do_train", "--max_steps", "30", "--learning_rate", "2e-2", "--per_device_train_batch_size", "8"]
ARCHS = ["bert", "roberta", "distilbert"]


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """Train and held-out validation text (different seeds)."""
    folder = tmp_path_factory.mktemp("mlm-text")
    return {
        "train": toy_data.write_lm_text(str(folder / "train.txt"), n_lines=300, seed=0),
        "validation": toy_data.write_lm_text(str(folder / "valid.txt"), n_lines=200, seed=1),
    }


def run(out_dir, *args):
    """run_mlm.main in-process; returns (trainer, {name: results dict} for the *_results.json written)."""
    trainer = run_mlm.main(["--output_dir", str(out_dir), *COMMON, *args])
    results = {}
    for name in ("train", "eval", "all"):
        path = out_dir / f"{name}_results.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
    return trainer, results


def data_args(text, *extra):
    return ["--train_file", text["train"], "--validation_file", text["validation"], "--max_seq_length", str(SEQ),
            *extra]


def seeded_eval_loss(trainer, seed=0):
    """eval_loss with the masks drawn from a fixed seed (the collator masks with torch's global generator)."""
    torch.manual_seed(seed)
    return trainer.evaluate()["eval_loss"]


@pytest.fixture(scope="module")
def untrained(tiny_model, text, tmp_path_factory):
    """untrained(arch) -> eval results of the untrained model; evaluate.load is made to fail (offline metric)."""
    cache = {}

    def get(arch):
        if arch not in cache:
            out = tmp_path_factory.mktemp(f"mlm-untrained-{arch}")
            with mock.patch("evaluate.load", side_effect=AssertionError("evaluate.load must not be called")):
                _, results = run(out, "--model_name_or_path", tiny_model(arch), "--do_eval", *data_args(text))
            cache[arch] = results["eval"]
        return cache[arch]

    return get


@pytest.fixture(scope="module")
def trained(tiny_model, text, tmp_path_factory):
    """trained(arch, adapter_config or "full") -> (out_dir, trainer, results); each trains once per module."""
    cache = {}

    def get(arch, setting):
        if (arch, setting) not in cache:
            out = tmp_path_factory.mktemp(f"mlm-{arch}-{setting}")
            adapter = [] if setting == "full" else ["--train_adapter", "--adapter_config", setting]
            trainer, results = run(out, "--model_name_or_path", tiny_model(arch), "--do_eval", *TRAIN, *adapter,
                                   *data_args(text))
            cache[arch, setting] = (out, trainer, results)
        return cache[arch, setting]

    return get


def test_reference_flags_and_defaults(text):
    model_args, data, _, adapter_args = HfArgumentParser(
        (run_mlm.ModelArguments, run_mlm.DataTrainingArguments, TrainingArguments, run_mlm.AdapterArguments)
    ).parse_args_into_dataclasses(["--train_file", text["train"], "--output_dir", "x"])
    assert vars(model_args) == {
        "model_name_or_path": None, "model_type": None, "config_overrides": None, "config_name": None,
        "tokenizer_name": None, "cache_dir": None, "use_fast_tokenizer": True, "model_revision": "main",
        "token": None, "trust_remote_code": False, "torch_dtype": None, "low_cpu_mem_usage": False,
        "merge_adapter_on_save": False,  # ours
    }
    assert vars(data) == {
        "dataset_name": None, "dataset_config_name": None, "train_file": text["train"], "validation_file": None,
        "overwrite_cache": False, "validation_split_percentage": 5, "max_seq_length": None,
        "preprocessing_num_workers": None, "mlm_probability": 0.15, "line_by_line": False,
        "pad_to_max_length": False, "max_train_samples": None, "max_eval_samples": None, "streaming": False,
        "whole_word_mask": False,  # ours (opt-in)
        "text_column": None,  # ours (default: the reference's rule)
    }
    assert (adapter_args.train_adapter, adapter_args.adapter_config, adapter_args.load_adapter) == (False, "seq_bn", "")


def test_untrained_eval_has_the_reference_keys(untrained):
    results = untrained("bert")
    assert set(results) == {"eval_loss", "eval_accuracy", "eval_runtime", "eval_samples", "eval_samples_per_second",
                            "eval_steps_per_second", "eval_model_preparation_time", "perplexity"}
    assert results["perplexity"] == pytest.approx(math.exp(results["eval_loss"]))
    assert 700 < results["perplexity"] < 3000  # nearly uniform over the 1,500-token vocabulary


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("setting", ["seq_bn", "double_seq_bn", "lora", "prefix_tuning"])
def test_adapter_training_lowers_held_out_perplexity(trained, untrained, arch, setting):
    out, trainer, results = trained(arch, setting)
    # At least 0.05 nats (the spread over mask draws is about 0.02); the tiny models gain 0.1-0.2 in 30 steps.
    assert results["eval"]["eval_loss"] < untrained(arch)["eval_loss"] - 0.05
    # The adapter is named "mlm" (no --dataset_name); only adapter (and head) weights are written.
    assert (out / "mlm" / "adapter_config.json").exists() and (out / "mlm" / "pytorch_adapter.bin").exists()
    assert not (out / "model.safetensors").exists()
    assert results["train"]["train_samples"] == len(trainer.train_dataset)
    assert results["eval"]["eval_samples"] == untrained(arch)["eval_samples"]


@pytest.mark.parametrize("arch", ARCHS)
def test_full_fine_tuning_lowers_held_out_perplexity(trained, untrained, arch):
    out, _, results = trained(arch, "full")
    assert results["eval"]["perplexity"] < 0.5 * untrained(arch)["perplexity"]
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()


def test_saved_adapter_reloads_to_identical_perplexity(trained, tiny_model, text, tmp_path):
    out, trainer, _ = trained("bert", "seq_bn")
    reloaded, _ = run(tmp_path, "--model_name_or_path", tiny_model("bert"), "--train_adapter", "--adapter_config",
                      "seq_bn", "--load_adapter", str(out / "mlm"), "--do_eval", *data_args(text))
    # BERT's MLM head transform trains with the adapter and is saved with it (pytorch_model_head.bin).
    assert (out / "mlm" / "pytorch_model_head.bin").exists()
    assert seeded_eval_loss(reloaded) == pytest.approx(seeded_eval_loss(trainer), rel=1e-6)
    # Without the adapter, the same masks give the untrained loss: the reload is what makes the difference.
    fresh, _ = run(tmp_path / "fresh", "--model_name_or_path", tiny_model("bert"), "--train_adapter",
                   "--adapter_config", "seq_bn", "--do_eval", *data_args(text))
    assert seeded_eval_loss(fresh) > seeded_eval_loss(trainer) + 0.05


# ---------------------------------------------------------------------------------------------------------- blocks


KNOWN_TEXT = [
    "Alice lives in Paris.",
    "",
    "   ",
    "Bob works at the bakery, and Carol likes the colour blue.",
    "The old museum in Lima opens at 42 past eight.",
    "Why?",
]


def prepare(tmp_path, tokenizer, lines, split="train", **overrides):
    path = tmp_path / "known.txt"
    path.write_text("\n".join(lines) + "\n")
    args = run_mlm.DataTrainingArguments(train_file=str(path), validation_split_percentage=0, **overrides)
    raw, _ = run_mlm.load_lm_raw_datasets(args, run_mlm.ModelArguments())
    return run_mlm.prepare_split(raw, split, tokenizer, "text", args.max_seq_length, args,
                                 TrainingArguments(output_dir=str(tmp_path)))


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_grouped_blocks_on_a_known_text(tiny_model, tmp_path, arch):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model(arch))
    blocks = prepare(tmp_path, tokenizer, KNOWN_TEXT, max_seq_length=8)
    # Every row (the empty ones too: they become just the special tokens) is tokenized, all are concatenated, and
    # the concatenation is cut into blocks of 8; the remainder is dropped.
    ids = [i for line in KNOWN_TEXT for i in tokenizer(line)["input_ids"]]
    assert len(blocks) == len(ids) // 8
    assert blocks["input_ids"] == [ids[i : i + 8] for i in range(0, len(ids) // 8 * 8, 8)]
    assert {len(mask) for mask in blocks["special_tokens_mask"]} == {8}


@pytest.mark.parametrize("pad", [False, True])
def test_line_by_line_examples_on_a_known_text(tiny_model, tmp_path, pad):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model("bert"))
    examples = prepare(tmp_path, tokenizer, KNOWN_TEXT, max_seq_length=12, line_by_line=True, pad_to_max_length=pad)
    # One example per non-empty, non-blank line (4 of 6), truncated to 12 tokens (the long line is cut).
    kept = [line for line in KNOWN_TEXT if line.strip()]
    assert len(examples) == 4
    expected = tokenizer(kept, truncation=True, max_length=12, padding="max_length" if pad else False)["input_ids"]
    assert examples["input_ids"] == expected
    lengths = [len(ids) for ids in examples["input_ids"]]
    assert lengths == [12 if pad else min(12, len(tokenizer(line)["input_ids"])) for line in kept]
    assert len(tokenizer(kept[1])["input_ids"]) > 12  # so the truncation above is real


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_csv_and_json_files_use_their_text_column(tiny_model, tmp_path, fmt):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model("bert"))
    rows = [{"id": i, "text": line} for i, line in enumerate(KNOWN_TEXT)]
    path = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        path.write_text("id,text\n" + "".join(f'{r["id"]},"{r["text"]}"\n' for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    args = run_mlm.DataTrainingArguments(train_file=str(path), validation_split_percentage=0, line_by_line=True,
                                         max_seq_length=64)
    raw, _ = run_mlm.load_lm_raw_datasets(args, run_mlm.ModelArguments())
    examples = run_mlm.prepare_split(raw, "train", tokenizer, "text", 64, args,
                                     TrainingArguments(output_dir=str(tmp_path)))
    # The id column is dropped; empty and blank lines are skipped (csv reads an empty field as None: also skipped).
    kept = [line for line in KNOWN_TEXT if line.strip()]
    assert examples.column_names == ["input_ids", "token_type_ids", "attention_mask", "special_tokens_mask"]
    assert examples["input_ids"] == tokenizer(kept, truncation=True, max_length=64)["input_ids"]


def test_blocks_are_made_per_batch_of_1000_rows_and_max_samples_counts_blocks(tiny_model, tmp_path, caplog):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model("bert"))
    lines = ["Alice lives in Paris.", "Bob works at the bakery."] * 750
    first, rest = (sum(len(tokenizer(line)["input_ids"]) for line in part) for part in (lines[:1000], lines[1000:]))
    # A block size for which cutting each map batch of 1,000 rows separately loses a whole block.
    size = next(size for size in range(64, 128) if first % size + rest % size >= size)
    caplog.set_level(logging.INFO, logger="run_mlm")
    blocks = prepare(tmp_path, tokenizer, lines, max_seq_length=size, max_train_samples=100)
    total = first // size + rest // size  # remainders dropped per batch, as in the reference
    assert total == (first + rest) // size - 1
    assert len(blocks) == 100
    assert f"1500 rows of text -> {total} blocks of {size} tokens" in caplog.text
    assert "--max_train_samples counts blocks, not rows or documents: using 100 blocks" in caplog.text


# ------------------------------------------------------------------------------------------------ whole words


def word_groups(encoding, i):
    """Token positions of each word of text i (fast tokenizer word_ids)."""
    groups = {}
    for position, word in enumerate(encoding.word_ids(i)):
        if word is not None:
            groups.setdefault(word, []).append(position)
    return list(groups.values())


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_whole_word_masking_masks_whole_words(tiny_model, arch):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model(arch))
    # Rare words split into several tokens with the tiny vocabularies.
    texts = ["Zanzibar quizzically juxtaposed xylophones beside Paris.",
             "Alice photosynthesizes kaleidoscopic marmalade in Vladivostok."] * 8
    encoding = run_mlm.add_word_starts(tokenizer(texts, return_special_tokens_mask=True), len(texts))
    groups = word_groups(encoding, 0)
    assert any(len(group) > 1 for group in groups)  # the example really has multi-token words
    features = [{k: encoding[k][i] for k in encoding.keys()} for i in range(len(texts))]

    def masked_positions(collator, seed):
        torch.manual_seed(seed)
        labels = collator(features)["labels"]
        return [set(np.flatnonzero(row.numpy() != -100)) for row in labels]

    wwm = run_mlm.DataCollatorForWholeWordMasking(tokenizer=tokenizer, mlm_probability=0.3)
    masked_tokens = total_tokens = 0
    for seed in range(5):
        for i, masked in enumerate(masked_positions(wwm, seed)):
            for group in word_groups(encoding, i):
                assert set(group) <= masked or not set(group) & masked  # all tokens of a word, or none
            masked_tokens += len(masked)
            total_tokens += sum(len(group) for group in word_groups(encoding, i))
    assert 0.15 < masked_tokens / total_tokens < 0.45  # about mlm_probability of the tokens
    # Token-level masking (the default) does split words: the assertion above can fail.
    per_token = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=0.3)
    features = [{k: v for k, v in feature.items() if k != "word_starts"} for feature in features]
    split_words = sum(
        bool(set(group) & masked) and not set(group) <= masked
        for seed in range(5)
        for i, masked in enumerate(masked_positions(per_token, seed))
        for group in word_groups(encoding, i)
    )
    assert split_words > 0


def test_whole_word_masking_trains_end_to_end(tiny_model, text, untrained, tmp_path):
    trainer, results = run(tmp_path, "--model_name_or_path", tiny_model("bert"), "--whole_word_mask",
                           "--line_by_line", "--do_eval", *TRAIN, "--train_adapter", *data_args(text))
    assert trainer.args.remove_unused_columns is False  # word_starts reaches the collator
    assert results["eval"]["eval_loss"] < untrained("bert")["eval_loss"]
    assert results["eval"]["eval_samples"] == sum(1 for line in open(text["validation"]) if line.strip())


# ------------------------------------------------------------------------------------------- scratch, errors


def test_from_scratch_config_overrides_reach_config_json(tiny_model, text, tmp_path):
    vocab_size = len(AutoTokenizer.from_pretrained(tiny_model("bert")))
    overrides = (f"hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,"
                 f"max_position_embeddings=128,vocab_size={vocab_size}")
    _, results = run(tmp_path, "--model_type", "bert", "--tokenizer_name", tiny_model("bert"), "--config_overrides",
                     overrides, "--train_adapter", "--do_train", "--max_steps", "2", *data_args(text))
    config = json.loads((tmp_path / "config.json").read_text())
    assert {k: config[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                   "max_position_embeddings", "vocab_size")} == {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 128, "vocab_size": vocab_size}
    assert (tmp_path / "mlm" / "adapter_config.json").exists()
    assert results["train"]["train_samples"] > 0


def test_max_seq_length_beyond_the_positions_is_an_error_naming_both(tiny_model, text, tmp_path):
    with pytest.raises(UsageError, match=r"--max_seq_length 256 .*128 positions"):
        run(tmp_path, "--model_type", "bert", "--tokenizer_name", tiny_model("bert"), "--config_overrides",
            "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,max_position_embeddings=128", "--do_train",
            *data_args(text)[:-2], "--max_seq_length", "256")


def test_roberta_positions_start_after_the_padding_index(tiny_model):
    # 514 position rows, but RoBERTa's positions start at pad_token_id + 1 = 2: 512 tokens fit, 513 do not.
    assert max_input_positions(AutoConfig.from_pretrained(tiny_model("roberta"))) == 512


def test_config_overrides_with_a_pretrained_model_is_refused(tiny_model, text, tmp_path):
    with pytest.raises(UsageError, match="can't be used in combination"):
        run(tmp_path, "--model_name_or_path", tiny_model("bert"), "--config_overrides", "hidden_size=8",
            "--do_train", *data_args(text))


def test_streaming(tiny_model, text, tmp_path):
    with pytest.raises(UsageError, match="--max_steps"):
        run(tmp_path / "a", "--model_name_or_path", tiny_model("roberta"), "--streaming", "--do_train",
            *data_args(text))
    trainer, results = run(tmp_path / "b", "--model_name_or_path", tiny_model("roberta"), "--streaming",
                           "--do_train", "--max_steps", "3", "--do_eval", "--max_eval_samples", "5",
                           "--train_adapter", *data_args(text))
    assert trainer.state.global_step == 3
    assert results["eval"]["eval_samples"] == 5
    assert results["train"]["train_samples"] == 3 * 8
    assert math.isfinite(results["eval"]["perplexity"])


def test_empty_validation_split_is_an_error(tiny_model, tmp_path):
    short = toy_data.write_lm_text(str(tmp_path / "short.txt"), n_lines=8, seed=2)
    with pytest.raises(UsageError, match=r"validation split is empty"):
        run(tmp_path / "a", "--model_name_or_path", tiny_model("bert"), "--do_eval", "--train_file", short)
    one_line = toy_data.write_lm_text(str(tmp_path / "one.txt"), n_lines=1, seed=3)
    with pytest.raises(UsageError, match=r"validation split gives no block of 64 tokens"):
        run(tmp_path / "b", "--model_name_or_path", tiny_model("bert"), "--do_eval", "--train_file", short,
            "--validation_file", one_line, "--max_seq_length", "64")


def test_masked_accuracy_ignores_unmasked_positions():
    preds = np.array([[5, 6, 7, 8], [1, 2, 3, 4]])
    labels = np.array([[-100, 6, -100, 0], [1, -100, -100, -100]])
    assert run_mlm.compute_metrics((preds, labels)) == {"accuracy": 2 / 3}


def test_acceptance_wikitext_lora(shared_data, tiny_model, tmp_path):
    """The issue's acceptance run: train a LoRA adapter on WikiText-2 text, evaluate on sample_text.txt."""
    data = ["--train_file", str(shared_data / "wikitext2_raw_test_300k.txt"),
            "--validation_file", str(shared_data / "sample_text.txt"), "--max_seq_length", "128"]
    before, _ = run(tmp_path / "before", "--model_name_or_path", tiny_model("roberta"), "--do_eval", *data)
    after, results = run(tmp_path / "after", "--model_name_or_path", tiny_model("roberta"), "--do_eval",
                         "--do_train", "--train_adapter", "--adapter_config", "lora", "--max_steps", "30",
                         "--learning_rate", "2e-2", "--per_device_train_batch_size", "8", *data)
    assert "perplexity" in results["eval"]
    # The same masks for both models, averaged over 5 draws (sample_text.txt is small: about 20 blocks; the gain is
    # 0.02-0.05 nats per draw, about 0.04 on average: a different domain than the training text).
    gain = np.mean([seeded_eval_loss(before, seed) - seeded_eval_loss(after, seed) for seed in range(5)])
    assert gain > 0.02
