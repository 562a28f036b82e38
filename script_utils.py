# coding=utf-8
"""Script plumbing shared by the five scripts: the error type users see, argument parsing, logging, the output folder
and its checkpoints, loading from the Hub with readable errors, and the train / evaluate / predict-and-save steps.

Nothing here knows about question answering or language modelling.
"""
import contextlib
import json
import logging
import os
import re
import signal
import sys
import threading
from typing import Optional

from transformers import TrainerCallback


logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# Errors, arguments, logging
# ----------------------------------------------------------------------------------------------------------------------


class UsageError(ValueError):
    """A mistake in the user's command or data. The scripts print its message as one line and exit non-zero."""


def parse_args(dataclass_types, argv=None):
    """Parse the command line into the given dataclasses. A single `.json` argument is read as an arguments file.

    The parser's own ValueErrors (unknown flags, inconsistent TrainingArguments such as --load_best_model_at_end with
    different eval/save strategies, --fp16 without a GPU) become one-line UsageErrors."""
    from transformers import HfArgumentParser

    argv = sys.argv[1:] if argv is None else list(argv)
    use_gloo_on_cpu_under_torchrun(argv)
    parser = HfArgumentParser(dataclass_types)
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            if not os.path.isfile(argv[0]):
                raise UsageError(f"Arguments file {argv[0]} does not exist.")
            try:
                return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
            except json.JSONDecodeError as err:
                raise UsageError(
                    f"Arguments file {argv[0]} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}."
                ) from err
        return parser.parse_args_into_dataclasses(args=argv)
    except UsageError:
        raise
    except ValueError as err:
        raise UsageError(" ".join(str(err).split())) from err


def use_gloo_on_cpu_under_torchrun(argv=()):
    """`torchrun --nproc_per_node N` on a machine without a GPU: make the N processes one distributed job (gloo).

    transformers only sets up CPU distributed training with --use_cpu; otherwise each process runs on its own as a
    single-process job, all writing the same files (and --ddp_backend gloo alone breaks evaluation). Must run before
    TrainingArguments is created (its device set-up reads ACCELERATE_USE_CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "ACCELERATE_USE_CPU" in os.environ:
        return
    import torch

    if not torch.cuda.is_available():
        if any(arg.split("=")[0] in ("--deepspeed", "--fsdp") for arg in argv):
            # In CPU mode accelerate drops DeepSpeed without a word (a plain DDP run) and refuses FSDP.
            raise UsageError("--deepspeed and --fsdp need GPUs: on this machine, without a GPU, accelerate would "
                             "ignore --deepspeed (a plain DDP run) and refuse --fsdp. Leave them out to train with "
                             "plain DDP over gloo.")
        os.environ["ACCELERATE_USE_CPU"] = "true"
        start_gloo_with_ddp_timeout(argv)


def start_gloo_with_ddp_timeout(argv):
    """transformers hands --ddp_timeout to the process group on GPUs only: on CPU, gloo kept torch's 30-minute default
    whatever the flag said. Start the group here with the flag's value; accelerate then uses it as it is. (A .json
    arguments file is not read here: its ddp_timeout is still ignored on CPU.)"""
    import argparse
    import datetime

    import torch.distributed as dist

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--ddp_timeout", "--ddp-timeout", type=int, default=1800)
    seconds = parser.parse_known_args(list(argv))[0].ddp_timeout
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=seconds))


HELPER_MODULES = ("script_utils", "checks", "qa_data", "utils_qa", "squad_metric", "utils_lm", "prediction_files",
                  "trainer_qa", "trainer_seq2seq_qa")


def setup_logging(training_args, script_logger):
    """Log to stdout like the upstream scripts: INFO on the main process, the process log level everywhere else."""
    import datasets
    import transformers

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log:
        # The default of training_args.log_level is passive, so we set log level at info here to have that default.
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    script_logger.setLevel(log_level)
    for name in HELPER_MODULES:  # INFO on the main process only, for the helpers' messages too
        logging.getLogger(name).setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    script_logger.warning(
        f"Process rank: {training_args.local_rank}, device: {training_args.device}, n_gpu: {training_args.n_gpu}, "
        + f"distributed training: {training_args.parallel_mode.value == 'distributed'}, "
        + f"16-bits training: {training_args.fp16}"
    )
    script_logger.info(f"Training/evaluation parameters {training_args}")
    return log_level


def from_pretrained_or_fail(loader, name, what, **kwargs):
    """loader(name, **kwargs); an OSError (no network, not a model folder, ...) becomes a one-line UsageError."""
    try:
        return loader(name, **kwargs)
    except OSError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"Could not load the {what} '{name}': {first_line} Without network access, pass a local directory "
            "(or fill the Hugging Face cache beforehand)."
        ) from err


def load_config_and_tokenizer(model_args, use_fast: bool = True):
    """The pretrained config and tokenizer (--config_name / --tokenizer_name, else --model_name_or_path)."""
    from transformers import AutoConfig, AutoTokenizer

    hub_kwargs = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision,
                  "token": model_args.token, "trust_remote_code": model_args.trust_remote_code}
    config = from_pretrained_or_fail(AutoConfig.from_pretrained, model_args.config_name or
                                     model_args.model_name_or_path, "config", **hub_kwargs)
    tokenizer = from_pretrained_or_fail(AutoTokenizer.from_pretrained, model_args.tokenizer_name or
                                        model_args.model_name_or_path, "tokenizer", use_fast=use_fast, **hub_kwargs)
    return config, tokenizer


def use_the_models_own_loss(model):
    """The Trainer passes `num_items_in_batch` to a forward that takes **kwargs and expects the model to divide its
    loss by it. XLNet's QA head and the beam-search head would swallow it (their loss then not divided by the
    gradient accumulation steps), and T5's forward as adapters wraps it stops with a TypeError. With this the loss is
    the model's own mean loss, as before transformers 4.46."""
    model.accepts_loss_kwargs = False
    return model


def require_fast_tokenizer(tokenizer, why: str = "for offsets and overflowing windows"):
    """The QA scripts need a fast (Rust) tokenizer: {why}."""
    from transformers import PreTrainedTokenizerFast

    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise UsageError(
            f"This example script only works for models that have a fast tokenizer ({why}); "
            f"{type(tokenizer).__name__} is not one. Use a model folder with a tokenizer.json. Checkout the big table "
            "of models at https://huggingface.co/transformers/index.html#supported-frameworks to find the model "
            "types that meet this requirement."
        )


def innermost_error(err: Exception) -> str:
    innermost = err
    while innermost.__cause__ is not None or innermost.__context__ is not None:
        innermost = innermost.__cause__ or innermost.__context__
    return " ".join(str(innermost).split())[:300] or type(innermost).__name__


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (runs of whitespace collapsed), cut to `limit` characters; else its type."""
    text = " ".join(str(err).split())
    return (text[:limit] + ("..." if len(text) > limit else "")) if text else type(err).__name__



# ----------------------------------------------------------------------------------------------------------------------
# Adapters: the name of the trained adapter, and the adapter set-up with the libraries' errors as one line
# ----------------------------------------------------------------------------------------------------------------------


def adapter_name(data_args, default: str) -> str:
    """The name of the adapter a run trains, and so of its folder in --output_dir and in every checkpoint-N/: the last
    part of --dataset_name (the Hub id `rajpurkar/squad_v2` gives `squad_v2`, the folder `/data/my_squad/` gives
    `my_squad`), each character other than a letter, a digit, `_` or `-` replaced by `_`; `default` ("squad", "mlm",
    "clm") without --dataset_name or when nothing usable is left. The upstream scripts used --dataset_name itself, and
    adapters saves to os.path.join(output_dir, name): for a folder, the folder itself (the adapter went into the
    user's data, never into the output folder or the checkpoints)."""
    return safe_adapter_name(getattr(data_args, "dataset_name", None), default)


def safe_adapter_name(name: Optional[str], default: str) -> str:
    """The last part of `name` as a folder name of [A-Za-z0-9_-] (adapters also refuses "." in adapter names), at most
    64 characters; `default` when nothing is left or the result would pass for a checkpoint-N or runs folder."""
    last = re.split(r"[/\\]+", (name or "").strip().rstrip("/\\"))[-1]
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", last).strip("_-")[:64]
    if not cleaned or _CHECKPOINT_NAME.match(cleaned) or cleaned == "runs":
        return default
    return cleaned


# What AdapterConfig.load raises for a name, a config string or a JSON file it cannot read.
ADAPTER_CONFIG_ERRORS = (ValueError, TypeError, SyntaxError, KeyError, AttributeError)


def load_adapter_config(value, flag: str = "--adapter_config"):
    """AdapterConfig.load(value) (None stays None); what it cannot read is a one-line UsageError listing the names."""
    import adapters
    from adapters import AdapterConfig

    try:
        return AdapterConfig.load(value)
    except ADAPTER_CONFIG_ERRORS as err:
        valid = ", ".join(sorted(adapters.ADAPTER_CONFIG_MAP))
        raise UsageError(
            f"{flag} {value!r} is not a valid adapter configuration ({one_line(err)}). "
            f"Use one of: {valid}; a JSON file; or a config string such as 'seq_bn[reduction_factor=8]' "
            "(string values quoted: 'seq_bn[non_linearity=\"gelu\"]')."
        ) from err


def adapter_config_problem(adapter_config, model_config, flag: str, value) -> Optional[str]:
    """Why `adapter_config` cannot be added to a model with `model_config` (adapters stops on it with a bare
    AssertionError or ZeroDivisionError), or None: PHM (compacter) layers need the hidden size and the bottleneck
    (hidden size // reduction_factor) divisible by phm_dim; reduction factors and LoRA ranks must be positive."""
    from collections.abc import Mapping

    from adapters import BnConfig, LoRAConfig

    hidden = getattr(model_config, "hidden_size", None)
    for config in getattr(adapter_config, "configs", None) or [adapter_config]:  # a ConfigUnion (mam, unipelt) or one
        if isinstance(config, LoRAConfig) and not config["r"] > 0:
            return f"{flag} {value!r}: the LoRA rank r={config['r']} must be a positive number (e.g. lora[r=8])."
        if not isinstance(config, BnConfig) or not isinstance(hidden, int):
            continue
        factors = config["reduction_factor"]
        factors = list(factors.values()) if isinstance(factors, Mapping) else [factors]
        for factor in factors:
            if not (isinstance(factor, (int, float)) and factor > 0):
                return (f"{flag} {value!r}: reduction_factor {factor} must be a positive number (the bottleneck is the "
                        "hidden size divided by it).")
        if config["phm_layer"]:
            for factor in factors:
                problem = _phm_problem(hidden, factor, config["phm_dim"], flag, value)
                if problem is not None:
                    return problem
    return None


def _phm_problem(hidden: int, factor, phm_dim: int, flag: str, value) -> Optional[str]:
    """adapters' PHMLayer asserts that its input and output sizes (hidden size and bottleneck) divide by phm_dim."""
    bottleneck = max(1, int(hidden // factor))
    if phm_dim > 0 and hidden % phm_dim == 0 and bottleneck % phm_dim == 0:
        return None
    factors = [f for f in (1, 2, 4, 8, 16, 32, 64, 128) if phm_dim > 0 and hidden % phm_dim == 0
               and max(1, hidden // f) % phm_dim == 0]
    dims = [d for d in (1, 2, 3, 4, 6, 8, 12, 16) if hidden % d == 0 and bottleneck % d == 0]
    fits = ([f"reduction_factor {', '.join(map(str, factors))} (with phm_dim {phm_dim})"] if factors else []) + [
        f"phm_dim {', '.join(map(str, dims))} (with reduction_factor {factor:g})"]
    base = value if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_+-]+", value) else "compacter"
    nearest = max([f for f in factors if f <= factor] or factors[:1]) if factors else None
    example = f"{base}[reduction_factor={nearest}]" if nearest is not None else f"{base}[phm_dim={dims[-1]}]"
    return (
        f"{flag} {value!r} does not fit this model: its PHM (compacter) layers need the hidden size ({hidden}) and the "
        f"bottleneck ({bottleneck} = hidden size // reduction_factor {factor:g}) to be divisible by phm_dim "
        f"({phm_dim}). Values that fit: {' or '.join(fits)}; e.g. --adapter_config \"{example}\"."
    )


def _read_json_file(folder: str, name: str, flag: str):
    """(content of folder/name, None), (None, None) when the file is absent, or (None, what is wrong with it)."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None, None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f), None
    except json.JSONDecodeError as err:
        return None, (f"{flag} {folder}: {name} is not valid JSON ({err.msg} at line {err.lineno}, column "
                      f"{err.colno}). It is written by save_adapter: save the adapter again, or repair the file.")
    except (UnicodeDecodeError, OSError) as err:
        return None, f"{flag} {folder}: {name} cannot be read ({one_line(err)})."


def _trained_on(saved) -> str:
    """"a bert model (bert-base-uncased)", from an adapter_config.json, for messages."""
    saved = saved if isinstance(saved, dict) else {}
    name = f" ({saved['model_name']})" if saved.get("model_name") else ""
    return f"a {saved.get('model_type') or 'different'} model{name}"


def adapter_folder_problem(folder: str, flag: str, model_config, model_class: Optional[str] = None) -> Optional[str]:
    """Why the adapter folder `folder` (written by save_adapter) cannot be loaded into a model with `model_config`,
    found by reading its adapter_config.json and, given the class of the model it is loaded into with its head, its
    head_config.json; None when nothing is found. adapters would stop with a JSONDecodeError or a KeyError, or with a
    multi-line `size mismatch` RuntimeError, or keep a head of another task silently untrained."""
    from adapters import AdapterConfig

    saved, problem = _read_json_file(folder, "adapter_config.json", flag)
    if saved is None:
        return problem
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), (dict, str)):
        return (f'{flag} {folder}: adapter_config.json is not an adapter configuration written by save_adapter (it has '
                'no "config" entry). Pass a folder written by --train_adapter.')
    try:
        AdapterConfig.load(saved["config"])
    except ADAPTER_CONFIG_ERRORS as err:
        return (f'{flag} {folder}: the "config" entry of its adapter_config.json is not a valid adapter configuration '
                f"({one_line(err)}).")
    hidden, trained_hidden = getattr(model_config, "hidden_size", None), saved.get("hidden_size")
    if isinstance(hidden, int) and isinstance(trained_hidden, int) and hidden != trained_hidden:
        return (f"{flag} {folder} holds an adapter trained on {_trained_on(saved)} of hidden size {trained_hidden}; "
                f"this {model_config.model_type} model has hidden size {hidden}. Pass an adapter trained on this model "
                "(or the adapter's model as --model_name_or_path).")
    if model_class is None:
        return None
    head, problem = _read_json_file(folder, "head_config.json", flag)
    trained_class = head.get("model_class") if isinstance(head, dict) else None
    trained_type = saved.get("model_type")
    if problem is None and trained_class and trained_class != model_class and trained_type != model_config.model_type:
        problem = (f"{flag} {folder} holds an adapter and a {trained_class} head trained on {_trained_on(saved)}; this "
                   f"is a {model_config.model_type} model ({model_class}). Pass an adapter trained on this model.")
    elif problem is None and trained_class and trained_class != model_class:
        problem = (f"{flag} {folder} holds a {trained_class} head, which does not fit this script's {model_class} "
                   "model (a head for another task or model). Pass an adapter trained by this script; to reuse only "
                   "the adapter, pass it as --load_lang_adapter (its head is not loaded), or copy the folder without "
                   "head_config.json and pytorch_model_head.bin.")
    return problem


def setup_adapters(model, adapter_args, name: str):
    """adapters' setup_adapter_training step by step, with every problem the libraries raise there (or let pass
    silently) as a one-line UsageError, before anything is written: --adapter_config/--lang_adapter_config and whether
    the configuration fits the model; the --load_adapter/--load_lang_adapter folders (their JSON files, the size and
    type of model they were trained on, the task of the head). The task adapter is `name`; a language adapter keeps
    its saved name (made safe, and different from `name`: adapters would overwrite the task adapter) and is loaded
    without its head (a language adapter's head, e.g. a masked-LM one, is not this task's). Returns (adapter name,
    language adapter name or None), as setup_adapter_training."""
    from adapters import Stack

    if not adapter_args.train_adapter:
        if adapter_args.load_adapter or adapter_args.load_lang_adapter:
            raise UsageError("--load_adapter/--load_lang_adapter need --train_adapter (adapters load in adapter mode).")
        return None, None
    adapter_config = load_adapter_config(adapter_args.adapter_config, "--adapter_config")
    if adapter_args.load_adapter:
        _load_adapter_or_fail(model, adapter_args.load_adapter, "--load_adapter", name, adapter_config, with_head=True)
    elif name not in model.adapters_config:
        problem = adapter_config_problem(adapter_config, model.config, "--adapter_config", adapter_args.adapter_config)
        if problem is not None:
            raise UsageError(problem)
        try:
            model.add_adapter(name, config=adapter_config)
        except (AssertionError, ArithmeticError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise UsageError(f"--adapter_config {adapter_args.adapter_config!r} cannot be added to this "
                             f"{model.config.model_type} model: {one_line(err)}") from err
    lang_name = None
    if adapter_args.load_lang_adapter:
        lang_config = load_adapter_config(adapter_args.lang_adapter_config, "--lang_adapter_config")
        lang_name = _language_adapter_name(adapter_args.load_lang_adapter, name)
        _load_adapter_or_fail(model, adapter_args.load_lang_adapter, "--load_lang_adapter", lang_name, lang_config,
                              with_head=False)
    model.train_adapter(name)  # freeze every weight but this adapter's (and the head's)
    model.set_active_adapters(Stack(lang_name, name) if lang_name else name)
    return name, lang_name


def _language_adapter_name(source: str, task_adapter: str) -> str:
    saved, _ = _read_json_file(source, "adapter_config.json", "") if os.path.isdir(source) else (None, None)
    saved_name = saved.get("name") if isinstance(saved, dict) and isinstance(saved.get("name"), str) else source
    name = safe_adapter_name(saved_name, "lang")
    return f"{name}_lang" if name == task_adapter else name


def _load_adapter_or_fail(model, source: str, flag: str, load_as: str, config, with_head: bool):
    """model.load_adapter(source, load_as=...), its errors as one line; an adapter none of whose weights (or only
    some) found their place in the model (trained on another type of model: adapters loads nothing and says nothing)
    is refused too. Weights that adapters' renaming to load_as missed are copied over (_renamed_weights)."""
    import inspect

    local = os.path.isdir(source)
    if local:
        problem = adapter_folder_problem(source, flag, model.config, model.__class__.__name__ if with_head else None)
        if problem is not None:
            raise UsageError(problem)
    kwargs = {"loading_info": {}}
    if not with_head and "with_head" in inspect.signature(model.load_adapter).parameters:
        kwargs["with_head"] = False
    try:
        # `config` only helps to find an adapter on the Hub (adapters warns that it is deprecated for a folder).
        model.load_adapter(source, config=None if local else config, load_as=load_as, **kwargs)
    except RuntimeError as err:  # load_state_dict: "size mismatch for ...", one line per weight
        raise UsageError(_size_mismatch_message(source, flag, model, err)) from err
    except (OSError, ValueError, KeyError, TypeError, AttributeError, AssertionError, ArithmeticError) as err:
        hint = "" if local else " Without network access, pass a local folder written by --train_adapter."
        raise UsageError(f"{flag} {source} could not be loaded: {one_line(err)}{hint}") from err
    unexpected = kwargs["loading_info"].get("unexpected_keys") or []
    missing = kwargs["loading_info"].get("missing_keys") or []
    saved, _ = _read_json_file(source, "adapter_config.json", flag) if local else (None, None)
    renamed = _renamed_weights(missing, unexpected, saved.get("name") if isinstance(saved, dict) else None, load_as)
    if renamed and local:
        renamed = _copy_renamed_weights(model, source, renamed)
    unexpected = [key for key in unexpected if key not in renamed.values()]
    missing = [key for key in missing if key not in renamed]
    if unexpected or missing:
        raise UsageError(
            f"{flag} {source} does not fit this {model.config.model_type} model: {len(unexpected)} of its weights have "
            f"no place in it{' (e.g. ' + unexpected[0] + ')' if unexpected else ''} and {len(missing)} weights of the "
            f"adapter are missing{' (e.g. ' + missing[0] + ')' if missing else ''}; it was trained on "
            f"{_trained_on(saved)}. Pass an adapter trained on this model (or that model as --model_name_or_path)."
        )


def _renamed_weights(missing, unexpected, saved_name: Optional[str], load_as: str) -> dict:
    """{missing key: unexpected key} for the weights whose keys differ only in the adapter's name. adapters' renaming
    of a loaded adapter (load_as) misses some: prompt tuning's embedding (left untrained) and the shared prefix-tuning
    pool of encoder-decoder models under one of its two keys (loaded under the other)."""
    if not saved_name or saved_name == load_as:
        return {}
    segment = re.compile(rf"(?<![^.]){re.escape(saved_name)}(?=\.)")
    by_new_key = {segment.sub(load_as, key): key for key in unexpected}
    return {key: by_new_key[key] for key in missing if key in by_new_key}


def _copy_renamed_weights(model, folder: str, renamed: dict) -> dict:
    """Copy the weights that adapters' renaming missed (_renamed_weights) from the adapter folder's weights file into
    the model; returns the pairs it copied."""
    import torch

    safe = os.path.join(folder, "adapter.safetensors")
    if os.path.isfile(safe):
        from safetensors.torch import load_file

        weights = load_file(safe)
    else:
        weights = torch.load(os.path.join(folder, "pytorch_adapter.bin"), map_location="cpu", weights_only=True)
    copied = {}
    for module in (model, model.base_model):
        own = module.state_dict(keep_vars=True)
        with torch.no_grad():
            for key, saved_key in renamed.items():
                if key not in copied and key in own and saved_key in weights:
                    own[key].copy_(weights[saved_key])
                    copied[key] = saved_key
    return copied


def _size_mismatch_message(source: str, flag: str, model, err: RuntimeError) -> str:
    mismatch = re.search(r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from "
                         r"checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)", str(err))
    if mismatch is None:
        return f"{flag} {source} could not be loaded into this {model.config.model_type} model: {one_line(err)}"
    weight, theirs, ours = mismatch.groups()
    return (f"{flag} {source} was trained on a model of another size: its weight {weight} has shape {theirs}, this "
            f"{model.config.model_type} model's {ours}. Pass an adapter trained on this model (or that model as "
            "--model_name_or_path).")



# ----------------------------------------------------------------------------------------------------------------------
# The output folder and its checkpoints
# ----------------------------------------------------------------------------------------------------------------------


RESULT_FILES = ("all_results.json", "train_results.json", "eval_results.json", "predict_results.json")


PREDICTION_FILES = tuple(
    f"{stage}_{name}.json"
    for stage in ("eval", "predict")
    for name in ("predictions", "nbest_predictions", "null_odds", "generations")
)


def detect_last_checkpoint(training_args, remove_stale: bool = True) -> Optional[str]:
    """The upstream rule: resume from the last checkpoint-N of a non-empty output_dir, refuse any other non-empty one.

    Only applies with --do_train and without --overwrite_output_dir. Only complete checkpoints count: one that a
    killed run left half-written is ignored (and removed by prepare_output_dir before training writes anything).
    An explicit --resume_from_checkpoint must be a complete checkpoint folder.

    remove_stale=True removes the results of an earlier run right away with --overwrite_output_dir (scripts that do
    not call prepare_output_dir); scripts that do pass False, so that a run stopped by a UsageError changes nothing.
    """
    check_resume_from_checkpoint(training_args)
    output_dir = training_args.output_dir
    if training_args.overwrite_output_dir and os.path.isdir(output_dir) and training_args.should_save:
        if remove_stale:
            remove_stale_outputs(training_args)
        return None
    if not (os.path.isdir(output_dir) and training_args.do_train):
        return None
    last_checkpoint = last_complete_checkpoint(output_dir)
    if last_checkpoint is None and _leftover_content(output_dir):
        raise UsageError(
            f"Output directory ({output_dir}) already exists and is not empty. "
            "Use --overwrite_output_dir to overcome."
        )
    if last_checkpoint is not None and training_args.resume_from_checkpoint is None:
        logger.info(
            f"Checkpoint detected, resuming training at {last_checkpoint}. To avoid this behavior, change "
            "the `--output_dir` or add `--overwrite_output_dir` to train from scratch."
        )
    return last_checkpoint


def checkpoint_to_resume(training_args, last_checkpoint):
    """An explicit --resume_from_checkpoint wins over the automatically detected one ("True": the last complete
    checkpoint of --output_dir, "False": none)."""
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        return last_complete_checkpoint(training_args.output_dir) if resume.lower() == "true" else None
    if resume is not None:
        return resume
    return last_checkpoint


_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_problem(path: str) -> Optional[str]:
    """Why a checkpoint folder cannot be resumed from, or None when it is complete.

    transformers writes checkpoint-N/ file by file, trainer_state.json last (after the weights, optimizer, scheduler
    and RNG states), so a folder whose trainer_state.json is missing, cut short or from another step was left by a
    run killed while saving. The per-process RNG files of distributed runs are written concurrently with it, so
    they are checked too (a torch file is a zip archive: a cut one has no central directory)."""
    import zipfile

    state_file = os.path.join(path, "trainer_state.json")
    if not os.path.isfile(state_file):
        return "it has no trainer_state.json (the run was stopped while saving it)"
    try:
        with open(state_file, encoding="utf-8") as f:
            state = json.load(f)
    except (ValueError, OSError):
        return "its trainer_state.json is cut short (the run was stopped while saving it)"
    match = _CHECKPOINT_NAME.match(os.path.basename(os.path.normpath(path)))
    if match is not None and state.get("global_step") != int(match.group(1)):
        return f"its trainer_state.json is for step {state.get('global_step')}"
    for name in sorted(os.listdir(path)):
        if name.startswith("rng_state") and name.endswith(".pth"):
            try:
                with zipfile.ZipFile(os.path.join(path, name)) as archive:
                    if archive.testzip() is not None:
                        raise zipfile.BadZipFile(name)
            except (zipfile.BadZipFile, OSError, EOFError):
                return f"its {name} is cut short (the run was stopped while saving it)"
    return None


def _checkpoint_folders(output_dir: str) -> list:
    """checkpoint-N folders of output_dir, newest (largest N) first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_NAME.match(name)
        if match is not None and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return [path for _, path in sorted(found, reverse=True)]


def last_complete_checkpoint(output_dir: str) -> Optional[str]:
    """The newest checkpoint-N of output_dir that is complete (see checkpoint_problem); incomplete newer ones are
    skipped with a warning."""
    for path in _checkpoint_folders(output_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning(f"Ignoring the incomplete checkpoint {path}: {problem}.")
    return None


def _leftover_content(output_dir: str) -> list:
    """Names in output_dir other than incomplete checkpoints (which a killed run of this command left behind)."""
    return [
        name
        for name in os.listdir(output_dir)
        if not (_CHECKPOINT_NAME.match(name) and checkpoint_problem(os.path.join(output_dir, name)) is not None)
    ]


def check_resume_from_checkpoint(training_args):
    """--resume_from_checkpoint PATH must be a complete checkpoint folder (checked before anything is loaded)."""
    resume = training_args.resume_from_checkpoint
    if resume is None or (isinstance(resume, str) and resume.lower() in ("true", "false")):
        return
    if not os.path.isdir(resume):
        raise UsageError(
            f"--resume_from_checkpoint {resume} is not a folder. Pass a checkpoint-N folder written by an earlier "
            "run (or leave the flag out: training resumes from the last checkpoint of --output_dir by itself)."
        )
    problem = checkpoint_problem(resume)
    if problem is not None:
        raise UsageError(f"--resume_from_checkpoint {resume} cannot be resumed from: {problem}.")


def remove_stale_outputs(training_args, keep: Optional[str] = None):
    """--overwrite_output_dir: remove what an earlier run left in output_dir, so that it does not mix with this run's
    results: result and prediction files, and (when training) its checkpoint-N folders, which a later resume would
    otherwise pick up. `keep` (a checkpoint being resumed from) stays. Main process only."""
    import shutil

    output_dir = training_args.output_dir
    if not (training_args.should_save and os.path.isdir(output_dir)):
        return
    removed = []
    for name in RESULT_FILES + PREDICTION_FILES:
        path = os.path.join(output_dir, name)
        if os.path.isfile(path):
            os.remove(path)
            removed.append(name)
    if training_args.do_train:
        keep = os.path.realpath(keep) if keep else None
        for path in _checkpoint_folders(output_dir):
            if os.path.realpath(path) != keep:
                shutil.rmtree(path)
                removed.append(os.path.basename(path))
    if removed:
        logger.warning(f"--overwrite_output_dir: removed from {output_dir} what an earlier run left: {', '.join(removed)}.")


def prepare_output_dir(training_args, last_checkpoint: Optional[str] = None):
    """Call right before training/evaluation writes anything, after every check has passed (so that a run stopped by
    a UsageError leaves the output folder as it was). With --overwrite_output_dir: remove the earlier run's results
    and checkpoints (remove_stale_outputs). When resuming: remove the incomplete checkpoints a killed run left, so
    that the new ones are written into clean folders. Main process only."""
    output_dir = training_args.output_dir
    if not (training_args.should_save and os.path.isdir(output_dir)):
        return
    if training_args.overwrite_output_dir:
        resume = checkpoint_to_resume(training_args, last_checkpoint)
        remove_stale_outputs(training_args, keep=resume if isinstance(resume, str) else None)
    elif training_args.do_train:
        import shutil

        for path in _checkpoint_folders(output_dir):
            problem = checkpoint_problem(path)
            if problem is not None:
                logger.warning(f"Removing the incomplete checkpoint {path}: {problem}.")
                shutil.rmtree(path)


def model_card_kwargs(model_args, data_args, task: str) -> dict:
    """Keyword arguments for Trainer.create_model_card / push_to_hub, as the upstream scripts builds them."""
    kwargs = {"finetuned_from": model_args.model_name_or_path, "tasks": task}
    if data_args.dataset_name is not None:
        kwargs["dataset_tags"] = data_args.dataset_name
        if data_args.dataset_config_name is not None:
            kwargs["dataset_args"] = data_args.dataset_config_name
            kwargs["dataset"] = f"{data_args.dataset_name} {data_args.dataset_config_name}"
        else:
            kwargs["dataset"] = data_args.dataset_name
    return kwargs



# ----------------------------------------------------------------------------------------------------------------------
# Samples, train / evaluate / predict and save the results
# ----------------------------------------------------------------------------------------------------------------------


def select_samples(dataset, max_samples: Optional[int]):
    """The first max_samples rows (all when None), as the upstream scripts cut --max_*_samples."""
    return dataset if max_samples is None else dataset.select(range(min(len(dataset), max_samples)))


def capped_length(length: int, tokenizer, name: str) -> int:
    """--max_seq_length / --block_size, capped at the tokenizer's model_max_length with a warning (as upstream)."""
    if length > tokenizer.model_max_length:
        logger.warning(
            f"The {name} passed ({length}) is larger than the maximum length for the model "
            f"({tokenizer.model_max_length}). Using {name}={tokenizer.model_max_length}."
        )
    return min(length, tokenizer.model_max_length)


def samples_used(max_samples: Optional[int], dataset, trainer=None) -> int:
    """metrics["*_samples"] as the upstream scripts report it: min(max_samples or len, len). A stream has no length:
    then, after training, the number of examples the optimizer steps consumed (at most max_samples)."""
    if hasattr(dataset, "__len__"):
        return min(max_samples if max_samples is not None else len(dataset), len(dataset))
    args = trainer.args
    consumed = trainer.state.global_step * args.train_batch_size * args.gradient_accumulation_steps * args.world_size
    return consumed if max_samples is None else min(consumed, max_samples)


def write_text_atomically(path, text: str, encoding: str = "utf-8"):
    """Write `text` to `path` atomically: into a temporary file in the same folder (path.tmp-PID), flushed to disk,
    then renamed over path. A crash at any moment leaves the old file (or none), never part of the new one."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "w", encoding=encoding) as writer:
            writer.write(text)
            writer.flush()
            os.fsync(writer.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def save_metrics(trainer, split: str, metrics: dict):
    """trainer.save_metrics(split, metrics), written atomically: {split}_results.json and all_results.json (the
    earlier keys updated with these), the text transformers writes (json.dump(indent=4, sort_keys=True)). Main
    process only."""
    if not trainer.is_world_process_zero():
        return
    all_path = os.path.join(trainer.args.output_dir, "all_results.json")
    all_metrics = {}
    if os.path.exists(all_path):
        try:
            with open(all_path) as f:
                all_metrics = json.load(f)
        except ValueError:
            logger.warning(f"{all_path} is not valid JSON (cut short by an older version?): written anew.")
    all_metrics.update(metrics)
    texts = [(f"{split}_results.json", json.dumps(metrics, indent=4, sort_keys=True)),  # before touching the disk
             ("all_results.json", json.dumps(all_metrics, indent=4, sort_keys=True))]
    for name, text in texts:
        write_text_atomically(os.path.join(trainer.args.output_dir, name), text)


class StopOnSignal(TrainerCallback):
    """Preemption: after a SIGTERM or SIGINT (see stop_on_signal), the training step under way ends, a checkpoint is
    saved at it (and nothing is evaluated), and training stops. The signal handler only records the signal; the
    decision is taken at a step end, by all processes together in a distributed run (they must stop at the same
    step)."""

    def __init__(self):
        self.signals = []  # the signals received, in order
        self.stopping = False  # decided (by every process) to stop at this step
        self.saved_step = None  # the step of the last checkpoint saved
        self.start_step = 0  # the step training (re)started from

    def handle(self, signum, frame):
        self.signals.append(signum)  # no logging here: the handler may interrupt a log call

    def agreed(self, args) -> bool:
        """Whether any process received a signal."""
        stop = bool(self.signals)
        if args.world_size > 1:
            import torch
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                flag = torch.tensor([int(stop)], device=args.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop = bool(flag.item())
        return stop

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if not self.stopping and self.agreed(args):
            self._stop(state)
            control.should_save, control.should_evaluate = True, False  # should_training_stop: on_save
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if not self.stopping and self.agreed(args):  # a signal after the epoch's last step had ended
            self._stop(state)
            control.should_save = True
        if self.stopping:
            control.should_evaluate = False
            if self.saved_step == state.global_step:  # saved already: never write the same checkpoint twice
                control.should_save, control.should_training_stop = False, True
        return control

    def on_save(self, args, state, control, **kwargs):
        self.saved_step = state.global_step
        if self.stopping:
            control.should_training_stop = True  # after the save, so that the checkpoint's TrainerControl is as usual
        return control

    def _stop(self, state):
        self.stopping = True
        name = signal.Signals(self.signals[0]).name if self.signals else "A signal to another process"
        logger.warning(f"{name} received: saving a checkpoint at step {state.global_step}, then stopping.")


@contextlib.contextmanager
def stop_on_signal(trainer, signals=(signal.SIGTERM, signal.SIGINT)):
    """Around trainer.train(): a SIGTERM (a cluster or spot machine preempting the job) or SIGINT (Ctrl-C) stops
    training at the end of the current step with a complete checkpoint there (StopOnSignal), then the process exits
    with status 128 + the signal's number, one log line saying where the checkpoint is; nothing else is saved or
    evaluated. Signals that arrive while the checkpoint is written are ignored until it is complete. The handlers are
    installed only while training (and only from the main thread, where Python allows them)."""
    callback = StopOnSignal()
    trainer.add_callback(callback)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in signals:
            previous[signum] = signal.signal(signum, callback.handle)
    try:
        yield callback
        stopped = callback.stopping or callback.agreed(trainer.args)  # or a signal after training's last step
        step = trainer.state.global_step
        if stopped and step not in (callback.saved_step, callback.start_step):
            trainer._save_checkpoint(trainer.model, trial=None)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        trainer.remove_callback(callback)
    if stopped:
        signum = callback.signals[0] if callback.signals else signal.SIGTERM
        args = trainer.args
        again = " without --overwrite_output_dir" if args.overwrite_output_dir else ""
        logger.warning(
            f"Training stopped by {signal.Signals(signum).name} at step {step}: the checkpoint "
            f"{os.path.join(args.output_dir, f'checkpoint-{step}')} is complete; run the same command{again} to resume "
            "from it."
        )
        raise SystemExit(128 + signum)


def train_and_save(trainer, last_checkpoint, max_samples, train_dataset):
    """Train (resuming from the checkpoint there is, or the one --resume_from_checkpoint names), save the model (in
    adapter mode: the adapter and its head) and the tokenizer, the train metrics and the trainer state. A SIGTERM or
    SIGINT during training ends the run with a checkpoint to resume from (stop_on_signal)."""
    with stop_on_signal(trainer):
        train_result = trainer.train(resume_from_checkpoint=checkpoint_to_resume(trainer.args, last_checkpoint))
    trainer.save_model()  # Saves the tokenizer too for easy upload
    metrics = train_result.metrics
    metrics["train_samples"] = samples_used(max_samples, train_dataset, trainer)
    trainer.log_metrics("train", metrics)
    save_metrics(trainer, "train", metrics)
    trainer.save_state()


def evaluate_and_save(trainer, max_samples, n_examples: int, more_metrics=None):
    """Evaluate and save {eval_results, all_results}.json; more_metrics(metrics) adds keys (e.g. the perplexity)."""
    logger.info("*** Evaluate ***")
    metrics = trainer.evaluate()
    metrics["eval_samples"] = samples_used(max_samples, range(n_examples))
    if more_metrics is not None:
        metrics.update(more_metrics(metrics))
    trainer.log_metrics("eval", metrics)
    save_metrics(trainer, "eval", metrics)
    return metrics


def train_evaluate_predict(trainer, last_checkpoint, data_args, features: dict, predict_examples=None,
                           before_predict=None):
    """The stages asked for (--do_train, --do_eval, --do_predict), in that order, each saving its results.
    before_predict(eval metrics, None without --do_eval), called before predicting, returns keys to add to
    predict_results.json (run_qa.py's --tune_null_threshold)."""
    eval_metrics = None
    if trainer.args.do_train:
        train_and_save(trainer, last_checkpoint, data_args.max_train_samples, features["train"])
    if trainer.args.do_eval:
        eval_metrics = evaluate_and_save(trainer, data_args.max_eval_samples, len(features["eval"]))
    if trainer.args.do_predict:
        more_metrics = before_predict(eval_metrics) if before_predict is not None else None
        predict_and_save(trainer, data_args.max_predict_samples, features["predict"], predict_examples, more_metrics)


def save_model_card(trainer, model_args, data_args, task: str):
    """The model card (README.md in --output_dir), or with --push_to_hub the upload, as the upstream scripts do."""
    kwargs = model_card_kwargs(model_args, data_args, task)
    if trainer.args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    else:
        trainer.create_model_card(**kwargs)


def predict_and_save(trainer, max_samples, predict_dataset, predict_examples, more_metrics=None):
    """Predict on the test features (the QA trainers write the prediction files) and save predict_results.json, with
    the keys of more_metrics added."""
    logger.info("*** Predict ***")
    results = trainer.predict(predict_dataset, predict_examples)
    metrics = results.metrics
    metrics["predict_samples"] = samples_used(max_samples, predict_dataset)
    metrics.update(more_metrics or {})
    trainer.log_metrics("predict", metrics)
    save_metrics(trainer, "predict", metrics)
