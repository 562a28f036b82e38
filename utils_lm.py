"""Language-modelling helpers for run_mlm.py and run_clm.py: loading text data (a Hub dataset or local files, with the
upstream scripts' carving of a validation split), config overrides for training from scratch, grouping tokenized
text into blocks, offline accuracy and perplexity.
"""
import itertools
import logging
import math
import os
from functools import partial
from typing import Optional

import numpy as np
from adapters import AdapterTrainer
from transformers import Trainer

from resumable_trainer import ResumableTrainerMixin
from script_utils import (UsageError, data_file_problem, from_pretrained_or_fail, hub_kwargs, innermost_error,
                          select_samples)

logger = logging.getLogger(__name__)


LM_FILE_BUILDERS = {"txt": "text", "csv": "csv", "json": "json", "jsonl": "json"}


def lm_file_builder(path: str) -> str:
    """The `datasets` builder for a local LM data file: text, csv or json (JSON Lines or a list of records)."""
    return LM_FILE_BUILDERS[path.split(".")[-1].lower()]


def check_lm_data_args(data_args):
    """The upstream __post_init__ checks (plus .jsonl, existing files, one format for both files)."""
    files = {"--train_file": data_args.train_file, "--validation_file": data_args.validation_file}
    if data_args.dataset_name is None and all(path is None for path in files.values()):
        raise UsageError("Need either a dataset name or a training/validation file.")
    for flag, path in files.items():
        if path is None:
            continue
        extension = path.split(".")[-1].lower()
        if extension not in LM_FILE_BUILDERS:
            raise UsageError(
                f"{flag} {path}: unsupported extension '.{extension}'. Use a .txt, .csv, .json or .jsonl file."
            )
        if "*" not in path and "://" not in path and not os.path.isfile(path):
            raise UsageError(f"{flag} {path} does not exist.")
    if data_args.train_file is not None and data_args.validation_file is not None:
        if lm_file_builder(data_args.train_file) != lm_file_builder(data_args.validation_file):
            raise UsageError(
                f"--train_file {data_args.train_file} and --validation_file {data_args.validation_file} have different "
                "formats; both are read with one loader, so give them the same format (.txt, .csv or .json/.jsonl)."
            )
    pct = data_args.validation_split_percentage
    if pct is not None and not 0 <= pct < 100:
        raise UsageError(f"--validation_split_percentage {pct} must be between 0 and 99.")


def _load_lm_dataset(path, name=None, **kwargs):
    import datasets

    try:
        return datasets.load_dataset(path, name, **kwargs)
    except ConnectionError as err:
        raise UsageError(
            f"Could not load dataset '{path}' from the Hugging Face Hub ({type(err).__name__}). Without network "
            "access, pass local files instead: --train_file/--validation_file (.txt, .csv, .json or .jsonl)."
        ) from err


def load_lm_raw_datasets(data_args, model_args, text_builder_kwargs=None):
    """Raw LM data as in the upstream script: a hub dataset or local files; with no validation split, the first
    validation_split_percentage % of train becomes validation and the rest train (even without --do_eval).

    Returns (raw_datasets, carved) where carved says the validation split was cut from train. With --streaming the
    data is streamed (local files too) and nothing is carved (checks_lm.py refuses --do_eval then)."""
    common = {"cache_dir": model_args.cache_dir, "token": model_args.token}
    if data_args.streaming:
        common["streaming"] = True
    if data_args.dataset_name is not None:
        path, name = data_args.dataset_name, data_args.dataset_config_name
        common["trust_remote_code"] = model_args.trust_remote_code
    else:
        data_files = {}
        if data_args.train_file is not None:
            data_files["train"] = data_args.train_file
        if data_args.validation_file is not None:
            data_files["validation"] = data_args.validation_file
        path, name = lm_file_builder(data_args.validation_file or data_args.train_file), None
        common["data_files"] = data_files
        if path == "text":
            common.update(text_builder_kwargs or {})
    try:
        raw_datasets = _load_lm_dataset(path, name, **common)
        carved = "validation" not in raw_datasets and "train" in raw_datasets and not data_args.streaming
        if carved:
            pct = data_args.validation_split_percentage
            empty = raw_datasets["train"].select([])
            raw_datasets["validation"] = _load_split_or_empty(path, name, f"train[:{pct}%]", empty, common)
            raw_datasets["train"] = _load_split_or_empty(path, name, f"train[{pct}%:]", empty, common)
    except UsageError:
        raise
    except Exception as err:  # parse errors arrive as DatasetGenerationError (pyarrow/pandas inside)
        if data_args.dataset_name is not None:
            raise UsageError(f"Could not load the language-modelling data ({type(err).__name__}: {err}).") from err
        files = [path for path in (data_args.train_file, data_args.validation_file) if path]
        for path in files:  # the line at fault, found by reading the file, where there is one
            if (problem := data_file_problem(path)) is not None:
                raise UsageError(problem) from err
        raise UsageError(f"Could not load {' and '.join(files)}: {innermost_error(err)}") from err
    return raw_datasets, carved


def _load_split_or_empty(path, name, split, empty, common):
    """A percentage slice of a split; datasets raises when the slice has no rows (reported later, if it matters)."""
    try:
        return _load_lm_dataset(path, name, split=split, **common)
    except ValueError as err:
        if "corresponds to no data" not in str(err):
            raise
        return empty


def lm_column_names(dataset) -> list:
    """Column names of a Dataset or IterableDataset (a stream of JSON may not know them before the first row)."""
    names = dataset.column_names
    if names is None:
        first = next(iter(dataset), None)
        names = list(first.keys()) if first is not None else []
    return list(names)


def _column_types(dataset, names) -> dict:
    """{column: its type} for messages and the text rule: the feature's dtype, else (a stream that does not know its
    features) the Python type of the first row's value."""
    features = getattr(dataset, "features", None)
    if features is not None:
        return {name: getattr(features[name], "dtype", type(features[name]).__name__) for name in names}
    first = next(iter(dataset), None) or {}
    return {name: "string" if isinstance(first.get(name), str) else type(first.get(name)).__name__ for name in names}


def lm_text_column(dataset, text_column: Optional[str] = None) -> str:
    """The column the text is read from: --text_column, else `text`, else the first column if it holds text (the
    upstream rule, where it works). Otherwise a UsageError naming the flag and the columns found with their types."""
    names = lm_column_names(dataset)
    types = _column_types(dataset, names)
    found = ", ".join(f"{name} ({kind})" for name, kind in types.items())
    if text_column is not None:
        if types.get(text_column) not in ("string", "large_string"):
            problem = "is not a column" if text_column not in types else f"holds {types[text_column]}, not text"
            raise UsageError(f"--text_column {text_column} {problem} in the data; columns found: {found}.")
        return text_column
    if "text" in names:
        return "text"
    if names and types[names[0]] in ("string", "large_string"):
        return names[0]
    raise UsageError(f"The data has no 'text' column and its first column does not hold text: name the column to "
                     f"train on with --text_column; columns found: {found}.")


def apply_config_overrides(config, overrides: str):
    """config.update_from_string with errors that name the bad key and the valid ones.

    Accepts spaces around keys and values, and sets keys whose current value is None (e.g. gpt2's n_inner), which
    update_from_string refuses; everything else is update_from_string's parsing (int, float, true/false, string)."""
    import difflib

    pairs = []
    for item in overrides.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise UsageError(
                f"--config_overrides {overrides!r}: {item.strip()!r} is not key=value. "
                "Example: --config_overrides n_embd=10,resid_pdrop=0.2,scale_attn_weights=false"
            )
        pairs.append((key, value))
    valid = sorted(set(config.to_dict()) | set(getattr(config, "attribute_map", {})))
    unknown = [key for key, _ in pairs if not hasattr(config, key)]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, valid, n=3)
            hints.append(f"{key} (did you mean {', '.join(close)}?)" if close else key)
        raise UsageError(
            f"--config_overrides: unknown key(s) for a {config.model_type} config: {', '.join(hints)}. "
            f"Valid keys: {', '.join(valid)}."
        )
    settable = []
    for key, value in pairs:
        if getattr(config, key) is None:
            setattr(config, key, _parse_override_value(value))
        else:
            settable.append(f"{key}={value}")
    if settable:
        try:
            config.update_from_string(",".join(settable))
        except ValueError as err:
            raise UsageError(f"--config_overrides {overrides!r}: {err}.") from err


def _parse_override_value(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def group_texts(examples, block_size: int, add_labels: bool = False):
    """Concatenate the tokenized texts of one map batch and cut them into block_size chunks; the remainder (and a
    batch shorter than one block) is dropped. add_labels copies input_ids to labels (causal LM)."""
    concatenated_examples = {k: list(itertools.chain(*examples[k])) for k in examples.keys()}
    total_length = len(concatenated_examples[list(examples.keys())[0]])
    total_length = (total_length // block_size) * block_size
    result = {
        k: [t[i : i + block_size] for i in range(0, total_length, block_size)]
        for k, t in concatenated_examples.items()
    }
    if add_labels:
        result["labels"] = result["input_ids"].copy()
    return result


def argmax_logits(logits, labels):
    """preprocess_logits_for_metrics: keep the argmax only (logits may be a tuple with past_key_values after them)."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def lm_accuracy(predictions, references, ignore_index: Optional[int] = None) -> dict:
    """`evaluate.load("accuracy")` offline: the fraction of equal positions (sklearn's accuracy_score), optionally
    skipping positions whose reference is ignore_index. nan when nothing is left to score."""
    predictions = np.asarray(predictions).reshape(-1)
    references = np.asarray(references).reshape(-1)
    if ignore_index is not None:
        keep = references != ignore_index
        predictions, references = predictions[keep], references[keep]
    if references.size == 0:
        return {"accuracy": float("nan")}
    return {"accuracy": float(np.average(predictions == references))}


def perplexity(eval_loss: float) -> float:
    """exp(eval_loss), inf on overflow, as the upstream scripts reports it."""
    try:
        return math.exp(eval_loss)
    except OverflowError:
        return float("inf")


def first_rows(dataset, max_samples: Optional[int]):
    """select_samples for a dataset or a stream. A stream is cut by a generator rather than take(): the Trainer
    starts a new epoch when a stream runs out, and datasets refuses to re-iterate a take() in a later epoch."""
    if max_samples is None or hasattr(dataset, "__len__"):
        return select_samples(dataset, max_samples)
    import datasets

    return datasets.IterableDataset.from_generator(
        _take, gen_kwargs={"dataset": dataset, "n": max_samples}, features=dataset.features
    )


def _take(dataset, n):
    yield from itertools.islice(dataset, n)


def count_rows(dataset) -> int:
    """len(dataset), or the number of rows a stream yields (reads it once)."""
    if hasattr(dataset, "__len__"):
        return len(dataset)
    return sum(1 for _ in dataset)


# Config, tokenizer, model and trainer of the two language-modelling scripts -------------------------------------------


def load_lm_config(model_args, model_types, overrides_on_pretrained: bool):
    """A pretrained config, or a new one of --model_type (one of model_types); --config_overrides applied to a new one
    and, where overrides_on_pretrained, to a pretrained one too."""
    from transformers import CONFIG_MAPPING, AutoConfig

    name = model_args.config_name or model_args.model_name_or_path
    if name:
        config = from_pretrained_or_fail(AutoConfig.from_pretrained, name, "config", **hub_kwargs(model_args))
    elif model_args.model_type not in model_types:
        raise UsageError(
            "Training from scratch (no --model_name_or_path) needs --model_type, one of: " + ", ".join(model_types)
        )
    else:
        config = CONFIG_MAPPING[model_args.model_type]()
        logger.warning("You are instantiating a new config instance from scratch.")
    if model_args.config_overrides is not None and (not name or overrides_on_pretrained):
        logger.info(f"Overriding config: {model_args.config_overrides}")
        apply_config_overrides(config, model_args.config_overrides)
        logger.info(f"New config: {config}")
    return config


def load_lm_tokenizer(model_args):
    """The pretrained tokenizer (--tokenizer_name, else --model_name_or_path): the scripts do not train one."""
    from transformers import AutoTokenizer

    name = model_args.tokenizer_name or model_args.model_name_or_path
    if not name:
        raise UsageError(
            "You are instantiating a new tokenizer from scratch. This is not supported by this script. Train one "
            "elsewhere, save it, and pass it with --tokenizer_name."
        )
    return from_pretrained_or_fail(AutoTokenizer.from_pretrained, name, "tokenizer",
                                   use_fast=model_args.use_fast_tokenizer, **hub_kwargs(model_args))


def torch_dtype(model_args):
    """--torch_dtype as the `dtype` argument of from_pretrained/from_config ("auto"/None passed through)."""
    import torch

    if model_args.torch_dtype in ("auto", None):
        return model_args.torch_dtype
    return getattr(torch, model_args.torch_dtype)


def load_lm_model(auto_class, model_args, config, tokenizer):
    """auto_class (AutoModelForMaskedLM / AutoModelForCausalLM) from pretrained weights or new from the config, as an
    adapters model, its embeddings grown to the tokenizer's vocabulary where they are smaller."""
    import adapters

    if model_args.model_name_or_path:
        model = from_pretrained_or_fail(
            auto_class.from_pretrained, model_args.model_name_or_path, "model",
            from_tf=bool(".ckpt" in model_args.model_name_or_path), config=config, dtype=torch_dtype(model_args),
            low_cpu_mem_usage=model_args.low_cpu_mem_usage, **hub_kwargs(model_args),
        )
    else:
        model = auto_class.from_config(
            config, trust_remote_code=model_args.trust_remote_code,
            # "auto" means the dtype of saved weights, which a new model does not have.
            dtype=None if model_args.torch_dtype == "auto" else torch_dtype(model_args),
        )
        n_params = sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())
        logger.info(f"Training new model from scratch - Total size={n_params/2**20:.2f}M params")

    # Convert the model into an adapter model (the upstream script does this even without --train_adapter).
    adapters.init(model)

    # We resize the embeddings only when necessary to avoid index errors. If you are creating a model from scratch
    # on a small vocab and want a smaller embedding size, remove this test.
    embedding_size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > embedding_size:
        model.resize_token_embeddings(len(tokenizer))
    return model


def save_scratch_base_model(model, base_weights, model_args, training_args, adapter_args):
    """An adapter trained on a model created from scratch is useless without that (random, frozen) base model, which
    adapter checkpoints do not contain: save it (config.json + weights) next to the adapter, after every check has
    passed. base_weights: the model's state dict taken before the adapter was added."""
    from transformers import PreTrainedModel

    if model_args.model_name_or_path or not (
        adapter_args.train_adapter and training_args.do_train and training_args.should_save
    ):
        return
    os.makedirs(training_args.output_dir, exist_ok=True)
    # transformers' own save: adapters' save_pretrained override unlinks the prefix-tuning pools, which breaks the
    # adapter training that follows. base_weights are exactly the base model's (no adapter weights).
    PreTrainedModel.save_pretrained(model, training_args.output_dir, state_dict=base_weights)
    logger.info(
        f"Saved the new base model to {training_args.output_dir} (config.json + weights): reload it with "
        "--model_name_or_path and the adapter with --load_adapter."
    )


def prepare_lm_splits(raw_datasets, prepare_split, units: str, data_args, training_args):
    """(train dataset, evaluation dataset, number of evaluation rows) for the stages asked for (None, 0 otherwise),
    from prepare_split(raw_datasets, split, text_column_name=...); units names the rows in messages ("examples", "blocks of
    128 tokens"). A stream has no length: its evaluation rows are counted by reading it once."""
    text_column_name = lm_text_column(raw_datasets["train" if training_args.do_train else "validation"],
                                      getattr(data_args, "text_column", None))
    prepare = partial(prepare_split, raw_datasets, text_column_name=text_column_name)
    train_dataset = prepare("train") if training_args.do_train else None
    eval_dataset = prepare("validation") if training_args.do_eval else None
    if data_args.streaming and training_args.do_train and next(iter(train_dataset), None) is None:
        raise UsageError(f"The streamed training data gives no {units}: use more text.")
    n_eval_rows = count_rows(eval_dataset) if training_args.do_eval else 0
    if data_args.streaming and training_args.do_eval:
        logger.info(f"validation: {n_eval_rows} {units} (counted by reading the stream).")
        if n_eval_rows == 0:
            raise UsageError(f"The streamed validation data gives no {units}: use more text.")
    return train_dataset, eval_dataset, n_eval_rows


class LMTrainer(ResumableTrainerMixin, Trainer):
    """transformers' Trainer, with the checkpoint fixes every trainer of the five scripts shares."""


class LMAdapterTrainer(ResumableTrainerMixin, AdapterTrainer):
    """adapters' AdapterTrainer (saves only the adapter and head), with the same checkpoint fixes."""


def make_lm_trainer(model, tokenizer, train_dataset, eval_dataset, data_collator, compute_metrics, training_args,
                    adapter_args):
    """AdapterTrainer with --train_adapter, else Trainer. Accuracy is computed offline, and only where the upstream
    scripts compute it (an evaluation with logits)."""
    from transformers import is_torch_xla_available

    with_metrics = training_args.do_eval and not is_torch_xla_available()
    trainer_class = LMAdapterTrainer if adapter_args.train_adapter else LMTrainer
    return trainer_class(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=data_collator,
        compute_metrics=compute_metrics if with_metrics else None,
        preprocess_logits_for_metrics=argmax_logits if with_metrics else None,
    )


def perplexity_metric(metrics) -> dict:
    """The perplexity added to eval_results.json."""
    return {"perplexity": perplexity(metrics["eval_loss"])}
