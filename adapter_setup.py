"""Adapter set-up for the five scripts: the adapter's name, and adding or loading adapters with any problem as one
line before training (checks.py runs the same inspections of configs and adapter folders before the model loads)."""
import inspect
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Optional

import torch
from adapters import ADAPTER_CONFIG_MAP, AdapterConfig, BnConfig, LoRAConfig, Stack
from safetensors.torch import load_file

from script_utils import CHECKPOINT_NAME, UsageError, one_line

ADAPTER_CONFIG_ERRORS = (ValueError, TypeError, SyntaxError, KeyError, AttributeError)  # what AdapterConfig.load raises


def adapter_name(data_args, default: str) -> str:
    """The trained adapter's (and its folder's) name: --dataset_name's last part made safe, else `default`."""
    return safe_adapter_name(getattr(data_args, "dataset_name", None), default)


def safe_adapter_name(name: Optional[str], default: str) -> str:
    """`name`'s last part in [A-Za-z0-9_-], at most 64 long (a path would save outside --output_dir); else `default`."""
    last = re.split(r"[/\\]+", (name or "").strip().rstrip("/\\"))[-1]
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", last).strip("_-")[:64]
    return default if not cleaned or CHECKPOINT_NAME.match(cleaned) or cleaned == "runs" else cleaned


def load_adapter_config(value, flag: str = "--adapter_config"):
    """AdapterConfig.load(value) (None stays None); what it cannot read is a one-line UsageError listing the names."""
    try:
        return AdapterConfig.load(value)
    except ADAPTER_CONFIG_ERRORS as err:
        raise UsageError(f"{flag} {value!r} is not a valid adapter configuration ({one_line(err)}). Use one of: "
                         f"{', '.join(sorted(ADAPTER_CONFIG_MAP))}; a JSON file; or a config string such as 'seq_bn["
                         "reduction_factor=8]' (string values quoted: 'seq_bn[non_linearity=\"gelu\"]').") from err


def adapter_config_problem(adapter_config, model_config, flag: str, value) -> Optional[str]:
    """Why `adapter_config` cannot be added to a model with `model_config` (adapters: a bare assert), or None."""
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
        for factor in factors if config["phm_layer"] else []:  # PHM layers: both sizes divisible by phm_dim
            phm_dim, bottleneck = config["phm_dim"], max(1, int(hidden // factor))
            if phm_dim > 0 and hidden % phm_dim == 0 and bottleneck % phm_dim == 0:
                continue
            fitting = [f for f in (1, 2, 4, 8, 16, 32, 64, 128) if phm_dim > 0 and hidden % phm_dim == 0
                       and max(1, hidden // f) % phm_dim == 0]
            dims = [d for d in (1, 2, 3, 4, 6, 8, 12, 16) if hidden % d == 0 and bottleneck % d == 0]
            fits = [f"reduction_factor {', '.join(map(str, fitting))} (with phm_dim {phm_dim})"] if fitting else []
            fits = " or ".join(fits + [f"phm_dim {', '.join(map(str, dims))} (with reduction_factor {factor:g})"])
            base = value if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_+-]+", value) else "compacter"
            nearest = max([f for f in fitting if f <= factor] or fitting[:1]) if fitting else None
            example = f"{base}[reduction_factor={nearest}]" if nearest is not None else f"{base}[phm_dim={dims[-1]}]"
            return (f"{flag} {value!r} does not fit this model: its PHM (compacter) layers need the hidden size "
                    f"({hidden}) and the bottleneck ({bottleneck} = hidden size // reduction_factor {factor:g}) to be "
                    f"divisible by phm_dim ({phm_dim}). Values that fit: {fits}; e.g. --adapter_config \"{example}\".")
    return None


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


def _trained_on(saved: dict) -> str:
    """"a bert model (bert-base-uncased)", from an adapter_config.json, for messages."""
    name = f" ({saved['model_name']})" if saved.get("model_name") else ""
    return f"a {saved.get('model_type') or 'different'} model{name}"


def adapter_folder_problem(folder: str, flag: str, model_config, model_class: Optional[str] = None) -> Optional[str]:
    """Why the adapter folder cannot be loaded into a model with `model_config` (and `model_class`'s head), or None."""
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
    head, problem = _read_json_file(folder, "head_config.json", flag) if model_class else (None, None)
    trained_class = head.get("model_class") if isinstance(head, dict) else None
    if problem is not None or not trained_class or trained_class == model_class:
        return problem
    if saved.get("model_type") != model_config.model_type:
        return (f"{flag} {folder} holds an adapter and a {trained_class} head trained on {_trained_on(saved)}; this "
                f"is a {model_config.model_type} model ({model_class}). Pass an adapter trained on this model.")
    return (f"{flag} {folder} holds a {trained_class} head, which does not fit this script's {model_class} model (a "
            "head for another task or model). Pass an adapter trained by this script; to reuse only the adapter, pass "
            "it as --load_lang_adapter (its head is not loaded), or copy the folder without head_config.json and "
            "pytorch_model_head.bin.")


def check_adapter_mode(adapter_args):
    """Adapters load in adapter mode only: without --train_adapter, --load_adapter would be ignored."""
    if not adapter_args.train_adapter and (adapter_args.load_adapter or adapter_args.load_lang_adapter):
        raise UsageError("--load_adapter/--load_lang_adapter need --train_adapter (adapters load in adapter mode).")


def setup_adapters(model, adapter_args, name: str):
    """adapters' setup_adapter_training, any problem one UsageError line; returns (`name`, language adapter or None)."""
    check_adapter_mode(adapter_args)  # checks.py runs it before the model loads; here for a copy without checks.py
    if not adapter_args.train_adapter:
        return None, None
    adapter_config = load_adapter_config(adapter_args.adapter_config, "--adapter_config")
    if adapter_args.load_adapter:
        _load_adapter_or_fail(model, adapter_args.load_adapter, "--load_adapter", name, adapter_config)
    elif name not in model.adapters_config:
        problem = adapter_config_problem(adapter_config, model.config, "--adapter_config", adapter_args.adapter_config)
        if problem is not None:
            raise UsageError(problem)
        try:
            model.add_adapter(name, config=adapter_config)
        except (AssertionError, ArithmeticError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise UsageError(f"--adapter_config {adapter_args.adapter_config!r} cannot be added to this "
                             f"{model.config.model_type} model: {one_line(err)}") from err
    lang_name, source = None, adapter_args.load_lang_adapter
    if source:
        lang_config = load_adapter_config(adapter_args.lang_adapter_config, "--lang_adapter_config")
        lang_name = _load_adapter_or_fail(model, source, "--load_lang_adapter", name, lang_config, language=True)
    # adapters' set_active_adapters (which train_adapter calls) resets LoRA weights in a forward context before it
    # records the adapter it activates, so that context warns "There are adapters available but none are activated
    # for the forward pass." about the very adapter being activated: that message is dropped, at this call only.
    def not_that_warning(record):
        return not record.getMessage().startswith("There are adapters available but none are activated")

    adapters_logger = logging.getLogger("adapters.model_mixin")
    adapters_logger.addFilter(not_that_warning)
    try:
        model.train_adapter(name)  # freeze every weight but this adapter's (and the head's)
    finally:
        adapters_logger.removeFilter(not_that_warning)
    model.set_active_adapters(Stack(lang_name, name) if lang_name else name)
    return name, lang_name


def _load_adapter_or_fail(model, source: str, flag: str, name: str, config, language: bool = False) -> str:
    """model.load_adapter(source) as `name` or as a headless language adapter; returns the name, problems one line."""
    problem = adapter_folder_problem(source, flag, model.config, None if language else model.__class__.__name__)
    if problem is not None:
        raise UsageError(problem)
    local, model_type = os.path.isdir(source), model.config.model_type
    saved = _read_json_file(source, "adapter_config.json", flag)[0] or {}  # a dict: adapter_folder_problem saw to it
    load_as = name
    if language:  # under its saved name, made safe and not `name` (adapters would overwrite the task adapter)
        load_as = safe_adapter_name(saved["name"] if isinstance(saved.get("name"), str) else source, "lang")
        load_as = f"{load_as}_lang" if load_as == name else load_as
    takes_head = "with_head" in inspect.signature(model.load_adapter).parameters
    kwargs = {"loading_info": {}, **({"with_head": False} if language and takes_head else {})}
    try:
        model.load_adapter(source, config=None if local else config, load_as=load_as, **kwargs)  # config: for the Hub
    except RuntimeError as err:  # load_state_dict: "size mismatch for ...", one line per weight
        message = f"{flag} {source} could not be loaded into this {model_type} model: {one_line(err)}"
        mismatch = re.search(r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from "
                             r"checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)", str(err))
        if mismatch is not None:
            message = (f"{flag} {source} was trained on a model of another size: its weight {mismatch[1]} has shape "
                       f"{mismatch[2]}, this {model_type} model's {mismatch[3]}. Pass an adapter trained on this model "
                       "(or that model as --model_name_or_path).")
        raise UsageError(message) from err
    except (OSError, ValueError, KeyError, TypeError, AttributeError, AssertionError, ArithmeticError) as err:
        hint = "" if local else " Without network access, pass a local folder written by --train_adapter."
        raise UsageError(f"{flag} {source} could not be loaded: {one_line(err)}{hint}") from err
    unexpected, missing = (kwargs["loading_info"].get(keys) or [] for keys in ("unexpected_keys", "missing_keys"))
    if saved.get("name") and saved["name"] != load_as:
        unexpected, missing = _copy_renamed_weights(model, source, saved["name"], load_as, unexpected, missing)
    if unexpected or missing:
        raise UsageError(f"{flag} {source} does not fit this {model_type} model: {len(unexpected)} of its weights have "
                         f"no place in it{' (e.g. ' + unexpected[0] + ')' if unexpected else ''} and {len(missing)} "
                         f"weights of the adapter are missing{' (e.g. ' + missing[0] + ')' if missing else ''}; it was "
                         f"trained on {_trained_on(saved)}. Pass an adapter trained on this model (or that model as "
                         "--model_name_or_path).")
    return load_as


def _copy_renamed_weights(model, folder: str, saved_name: str, load_as: str, unexpected, missing):
    """Copies in weights adapters' renaming misses (prompt tuning's embedding, a prefix pool key); returns keys left."""
    by_new_key = {re.sub(rf"(?<![^.]){re.escape(saved_name)}(?=\.)", load_as, key): key for key in unexpected}
    renamed = {key: by_new_key[key] for key in missing if key in by_new_key}
    if not renamed:
        return unexpected, missing
    safe, legacy = os.path.join(folder, "adapter.safetensors"), os.path.join(folder, "pytorch_adapter.bin")
    weights = load_file(safe) if os.path.isfile(safe) else torch.load(legacy, map_location="cpu", weights_only=True)
    copied = {}
    with torch.no_grad():
        for own in (model.state_dict(keep_vars=True), model.base_model.state_dict(keep_vars=True)):
            for key, saved_key in renamed.items():
                if key not in copied and key in own and saved_key in weights:
                    own[key].copy_(weights[saved_key])
                    copied[key] = saved_key
    return [key for key in unexpected if key not in copied.values()], [key for key in missing if key not in copied]
