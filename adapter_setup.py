"""Adapter set-up for the five scripts: the adapter's name, adding or loading adapters with any problem as one line
before training (checks.py runs the same inspections of configs and adapter folders before the model loads), and
--merge_adapter_on_save's merged model."""
import copy
import inspect
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Optional

import torch
from adapters import ADAPTER_CONFIG_MAP, AdapterConfig, BnConfig, LoRAConfig, MultiTaskConfig, Stack
from safetensors.torch import load_file
from transformers.integrations import is_deepspeed_zero3_enabled

from script_utils import CHECKPOINT_NAME, UsageError, one_line

logger = logging.getLogger(__name__)

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
    base_dtype, base_tensors = model.dtype, {id(t) for t in (*model.parameters(), *model.buffers())}
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
    in_the_models_dtype(model, base_dtype, base_tensors)
    return name, lang_name


def in_the_models_dtype(model, dtype, base_tensors: set):
    """adapters creates (and loads) adapter weights in float32 whatever the model's dtype, so a model loaded with
    --torch_dtype bfloat16/float16 failed at its first forward pass ("mat1 and mat2 must have the same dtype"). Our
    choice: the adapter's weights, and so its computation, in the model's dtype (the optimizer updates them in it too;
    for float32 adapter weights, load the model in float32 and train with --bf16/--fp16). Only tensors added since
    base_tensors (ids) are cast: modules a model keeps in float32 on purpose (T5's `wo`) stay as they are."""
    def added(tensor):
        return (tensor is not None and id(tensor) not in base_tensors and tensor.is_floating_point()
                and tensor.dtype != dtype)

    for module in model.modules():
        for param in filter(added, module._parameters.values()):
            param.data = param.data.to(dtype)  # in place: a weight shared between layers stays shared
        for key, buffer in list(module._buffers.items()):
            if added(buffer):
                module._buffers[key] = buffer.to(dtype)


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


# --merge_adapter_on_save: the trained adapter merged into the weights, saved as a plain transformers model ----------

# The configurations adapters 1.3 can merge: the LoRA family, whose LoRALayer.merge_adapter folds the adapter into the
# weight it adapts ((IA)^3 scales it). Bottleneck adapters, prefix/prompt tuning and ReFT add layers or inputs of
# their own; a gated LoRA (use_gating) or a multi-task LoRA (mtl_lora) cannot be folded either.
MERGEABLE_CONFIGS = ("lora", "ia3", "vera", "dora", "dvora")


def check_merge_flag(model_args, training_args, adapter_args, script_auto_class):
    """--merge_adapter_on_save's problems as one UsageError line, before the model loads (the adapter's config read
    from --adapter_config, or from the --load_adapter folder). script_auto_class: the Auto class a plain transformers
    user would load the merged model with, None where there is none (run_qa_beam_search.py)."""
    if not model_args.merge_adapter_on_save:
        return
    flag = "--merge_adapter_on_save"
    if script_auto_class is None:
        raise UsageError(f"{flag} is not available in this script: its beam-search head (XLNet/XLM) does not load "
                         "through AutoModelForQuestionAnswering, so a merged model could not be served by plain "
                         "transformers. Leave the flag out (or train with run_qa.py).")
    if not adapter_args.train_adapter:
        raise UsageError(f"{flag} merges a trained adapter into the model: it needs --train_adapter (without it the "
                         "whole model is trained and saved in --output_dir as a plain transformers model already).")
    if not (training_args.do_train or adapter_args.load_adapter):
        raise UsageError(f"{flag} needs an adapter to merge: add --do_train, or --load_adapter with an adapter "
                         "folder written by --train_adapter.")
    if adapter_args.load_lang_adapter:
        raise UsageError(f"{flag} merges one adapter: leave out --load_lang_adapter (a stack of two is not merged).")
    if training_args.fsdp or is_deepspeed_zero3_enabled():
        raise UsageError(f"{flag} cannot merge weights sharded over processes (--fsdp, DeepSpeed ZeRO-3): train "
                         "without it, then merge in an evaluation-only run: --train_adapter --load_adapter "
                         f"OUTPUT_DIR/<adapter> --do_eval {flag}.")
    source, value = "--adapter_config", adapter_args.adapter_config
    saved_file = os.path.join(adapter_args.load_adapter or "", "adapter_config.json")
    if adapter_args.load_adapter and os.path.isfile(saved_file):
        saved = _read_json_file(adapter_args.load_adapter, "adapter_config.json", "--load_adapter")[0]
        if not isinstance(saved, dict) or "config" not in saved:
            return  # checks.py and setup_adapters say what is wrong with the folder
        source, value = f"--load_adapter {adapter_args.load_adapter}", saved["config"]
    try:
        config = AdapterConfig.load(value)
    except ADAPTER_CONFIG_ERRORS:
        return  # checks.py and setup_adapters say what is wrong with it
    if not is_mergeable(config):
        kind = value if isinstance(value, str) else type(config).__name__
        raise UsageError(f"{flag}: the adapter of {source} ({kind}) cannot be merged into the model's weights; the "
                         f"adapters that can: {', '.join(MERGEABLE_CONFIGS)} (without use_gating). Leave the flag "
                         "out, or train one of those (e.g. --adapter_config lora).")


def is_mergeable(adapter_config) -> bool:
    """Whether model.merge_adapter folds an adapter of this config into the weights entirely (see MERGEABLE_CONFIGS)."""
    return (isinstance(adapter_config, LoRAConfig) and not isinstance(adapter_config, MultiTaskConfig)
            and not adapter_config["use_gating"])


def save_merged_model(trainer, model_args, auto_class):
    """With --merge_adapter_on_save: the active adapter merged into the weights of trainer.model, saved with the
    tokenizer in OUTPUT_DIR/merged/ as a plain `auto_class` model (from_pretrained loads it without the adapters
    library). Call it last: the adapter stays merged in trainer.model (which gives the same outputs). Main process."""
    if not (model_args.merge_adapter_on_save and trainer.args.should_save):
        return
    model = trainer.model
    model.merge_adapter(model.active_adapters.last())
    merged_weights = model.state_dict()
    # The plain model's skeleton on the meta device, given the merged tensors themselves (assign=True): the weights
    # are not copied. Keys of the adapter layers have no place in it and are left out.
    config = copy.deepcopy(model.config)
    with torch.device("meta"):
        plain = auto_class.from_config(config, trust_remote_code=model_args.trust_remote_code)
    plain_keys = list(plain.state_dict())
    missing = [key for key in plain_keys if key not in merged_weights]
    if missing:
        raise RuntimeError(f"--merge_adapter_on_save: {len(missing)} weights of a plain {type(plain).__name__} are "
                           f"not in the merged model (e.g. {missing[0]}); the adapter folder in --output_dir is saved.")
    plain.load_state_dict({key: merged_weights[key] for key in plain_keys}, assign=True)
    if plain.can_generate():
        plain.generation_config = model.generation_config
    output_dir = os.path.join(trainer.args.output_dir, "merged")
    plain.save_pretrained(output_dir)
    trainer.processing_class.save_pretrained(output_dir)
    logger.info(f"Saved the model with its adapter merged to {output_dir}: it loads with "
                f"{auto_class.__name__}.from_pretrained({output_dir!r}), without the adapters library.")
