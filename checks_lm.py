"""Pre-flight checks of run_mlm.py and run_clm.py, on top of checks.py's: their own flags, the model type (pretrained
or --model_type), the sequence length against the position table, and the raw data splits. Each raises a UsageError
that says what is wrong and how to fix it, before the model is loaded. A copy of a script that does not want them can
delete the marked block in its main() and this file (with checks.py).
"""
import logging

from checks import (
    check_adapter_fit,
    check_arguments,
    check_data_arguments,
    check_fits_positions,
    check_model_type,
    load_or_describe,
)
from script_utils import UsageError, load_config_and_tokenizer

logger = logging.getLogger(__name__)


def check_lm_run(model_args, data_args, training_args, adapter_args, head_names: dict, task: str, length_for):
    """run_mlm.py and run_clm.py: arguments, model and adapter sources, the model type (pretrained or --model_type),
    the script's sequence length (length_for(data_args, tokenizer, config)) against the position table, and the raw
    data splits."""
    from transformers import CONFIG_MAPPING, AutoTokenizer

    from script_utils import from_pretrained_or_fail
    from utils_lm import apply_config_overrides, load_lm_raw_datasets

    check_arguments(model_args, training_args, adapter_args, actions=("train", "eval"))
    check_data_arguments(data_args)
    check_lm_arguments(data_args, training_args)
    name = model_args.model_name_or_path or model_args.config_name
    if name:
        config, tokenizer = load_config_and_tokenizer(model_args, use_fast=model_args.use_fast_tokenizer)
    elif model_args.model_type in CONFIG_MAPPING and model_args.tokenizer_name:
        name = f"--model_type {model_args.model_type}"
        config = CONFIG_MAPPING[model_args.model_type]()
        tokenizer = from_pretrained_or_fail(AutoTokenizer.from_pretrained, model_args.tokenizer_name, "tokenizer")
    else:
        return  # the script itself says what --model_type / --tokenizer_name it needs
    if model_args.config_overrides is not None:
        apply_config_overrides(config, model_args.config_overrides)
    check_model_type(config, name, head_names, task)
    check_adapter_fit(adapter_args, config)
    length_flag = "--max_seq_length" if hasattr(data_args, "max_seq_length") else "--block_size"
    given = getattr(data_args, length_flag[2:])
    check_fits_positions(length_for(data_args, tokenizer, config), config, length_flag, default_length_note(given))
    builder_kwargs = {"keep_linebreaks": data_args.keep_linebreaks} if hasattr(data_args, "keep_linebreaks") else None
    raw_datasets, carved = load_or_describe(lambda: load_lm_raw_datasets(data_args, model_args, builder_kwargs),
                                            [data_args.train_file, data_args.validation_file])
    check_raw_lm_splits(raw_datasets, carved, data_args, training_args)


def check_lm_arguments(data_args, training_args):
    """The language-modelling scripts' own flags: --mlm_probability (run_mlm.py) and --streaming."""
    probability = getattr(data_args, "mlm_probability", None)
    if probability is not None and not 0.0 < probability <= 1.0:
        raise UsageError(f"--mlm_probability {probability} must be in (0, 1].")
    check_lm_streaming(data_args, training_args)


def check_lm_streaming(data_args, training_args):
    """A stream has no length: training needs --max_steps, and a validation split cannot be carved by percentage."""
    if not data_args.streaming:
        return
    if training_args.do_train and training_args.max_steps <= 0:
        raise UsageError(
            "--streaming reads the training data as a stream of unknown length, so the number of epochs cannot be "
            "turned into steps: pass --max_steps N (the number of optimizer steps to train for)."
        )
    has_validation = data_args.validation_file is not None or data_args.dataset_name is not None
    if training_args.do_eval and not has_validation:
        raise UsageError(
            "--streaming with --do_eval needs a validation split: a percentage of a stream of unknown length "
            "(--validation_split_percentage) cannot be carved out. Pass --validation_file."
        )


def default_length_note(given) -> str:
    """For check_fits_positions' message: where a length came from when the flag was not given."""
    return "" if given is not None else " (the default, from the tokenizer's model_max_length)"


def check_raw_lm_splits(raw_datasets, carved, data_args, training_args):
    """Fail before the model is loaded when a split that is needed is missing or has no rows."""
    if training_args.do_train and "train" not in raw_datasets:
        raise UsageError(
            "--do_train requires a train dataset: pass --train_file (or a --dataset_name with a train split)."
        )
    if training_args.do_eval and "validation" not in raw_datasets:
        raise UsageError("--do_eval requires a validation dataset: pass --validation_file.")
    if data_args.streaming:
        return
    if training_args.do_train and len(raw_datasets["train"]) == 0:
        raise UsageError("The training data has no rows: check --train_file (or --validation_split_percentage).")
    if training_args.do_eval and len(raw_datasets["validation"]) == 0:
        if carved:
            total = len(raw_datasets["train"])
            raise UsageError(
                f"The validation split is empty: {data_args.validation_split_percentage}% of the {total} rows of the "
                "training data rounds to 0 rows. Pass --validation_file, or raise --validation_split_percentage."
            )
        raise UsageError("The validation data has no rows: check --validation_file.")
    if getattr(data_args, "line_by_line", False):
        for split, needed in (("train", training_args.do_train), ("validation", training_args.do_eval)):
            if needed and not has_non_blank_line(raw_datasets[split]):
                raise UsageError(
                    f"--line_by_line makes one example per non-empty line, and every line of the {split} data is blank "
                    f"({len(raw_datasets[split])} rows): check the {split} file (or drop --line_by_line)."
                )


def has_non_blank_line(dataset) -> bool:
    """Whether a text column (`text`, else the first, as the scripts choose it) holds a line that is not blank; reads
    up to the first one."""
    from utils_lm import lm_column_names

    names = lm_column_names(dataset)
    column = "text" if "text" in names else names[0]
    for batch in dataset.iter(batch_size=1000):
        if any(isinstance(line, str) and line.strip() for line in batch[column]):
            return True
    return False
