# coding=utf-8
"""The adapter set-up of the five scripts: the name the trained adapter gets (a safe name, so that nothing is written
outside --output_dir), and adding or loading the adapters (--train_adapter, --load_adapter, --load_lang_adapter) with
the adapters and transformers libraries' errors turned into one line that says what to fix, before any training.
checks.py runs the same inspections of configs and adapter folders before the model is loaded.
"""
import json
import logging
import os
import re
from typing import Optional

from script_utils import CHECKPOINT_NAME, UsageError, one_line

logger = logging.getLogger(__name__)


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
    if not cleaned or CHECKPOINT_NAME.match(cleaned) or cleaned == "runs":
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



