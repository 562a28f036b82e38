"""Pre-flight checks of run_mlm.py and run_clm.py, on top of checks.py's: their own flags, the raw data splits, the
model type (pretrained or --model_type), the sequence length against the position table. Each raises a UsageError that
says what is wrong and how to fix it, before the model is loaded; each runs on what main() loaded. A copy of a script
that does not want them deletes the lines marked `# checks.py` in its main() and this file (with checks.py).
"""
import logging

from checks import check_adapter_fit, check_arguments, check_data_arguments, check_fits_positions, check_model_type
from script_utils import UsageError

logger = logging.getLogger(__name__)


# 1. The command line (right after parse_args) -------------------------------------------------------------------------


def check_lm_arguments(model_args, data_args, training_args, adapter_args):
    """The flags every script shares, the data flags, and the language-modelling scripts' own: --mlm_probability
    (run_mlm.py) and --streaming."""
    check_arguments(model_args, training_args, adapter_args, actions=("train", "eval"))
    check_data_arguments(data_args)
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


# 2. The model config and tokenizer (right after they load) ------------------------------------------------------------


def check_mlm_model(config, model_args, data_args, adapter_args, max_seq_length: int):
    """run_mlm.py: a model type with a masked-LM head that adapters supports; max_seq_length_for()'s length."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    _check_lm_model(config, model_args, adapter_args, MODEL_FOR_MASKED_LM_MAPPING_NAMES, "masked language-modelling",
                    max_seq_length, "--max_seq_length", data_args.max_seq_length)


def check_clm_model(config, model_args, data_args, adapter_args, block_size: int):
    """run_clm.py: a model type with a causal-LM head that adapters supports; block_size_for()'s length."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    _check_lm_model(config, model_args, adapter_args, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, "causal language-modelling",
                    block_size, "--block_size", data_args.block_size)


def _check_lm_model(config, model_args, adapter_args, head_names: dict, task: str, length: int, flag: str, given):
    """The model type (pretrained or --model_type, after --config_overrides), the adapter's fit, and the script's
    sequence length (`given` on the command line, or None for the default) against the position table."""
    name = model_args.model_name_or_path or model_args.config_name or f"--model_type {config.model_type}"
    check_model_type(config, name, head_names, task)
    check_adapter_fit(adapter_args, config)
    default = " (the default, from the tokenizer's model_max_length)"
    check_fits_positions(length, config, flag, "" if given is not None else default)


# 3. The data (right after it loads) -----------------------------------------------------------------------------------


def check_lm_data(raw_datasets, carved, data_args, training_args):
    """The raw splits load_lm_raw_datasets returned (carved: the validation split was cut from train): each one that
    is needed exists and has rows (with --line_by_line, a line that is not blank), and holds the text column
    (utils_lm.lm_text_column: --text_column, else `text`, else the first column if it holds text)."""
    from utils_lm import lm_text_column

    if training_args.do_train and "train" not in raw_datasets:
        raise UsageError(
            "--do_train requires a train dataset: pass --train_file (or a --dataset_name with a train split)."
        )
    if training_args.do_eval and "validation" not in raw_datasets:
        raise UsageError("--do_eval requires a validation dataset: pass --validation_file.")
    for split, needed in (("train", training_args.do_train), ("validation", training_args.do_eval)):
        if needed:
            lm_text_column(raw_datasets[split], data_args.text_column)
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
            if needed and not has_non_blank_line(raw_datasets[split], data_args.text_column):
                raise UsageError(
                    f"--line_by_line makes one example per non-empty line, and every line of the {split} data is blank "
                    f"({len(raw_datasets[split])} rows): check the {split} file (or drop --line_by_line)."
                )


def has_non_blank_line(dataset, text_column=None) -> bool:
    """Whether the text column (as the scripts choose it: utils_lm.lm_text_column) holds a line that is not blank;
    reads up to the first one."""
    from utils_lm import lm_text_column

    column = lm_text_column(dataset, text_column)
    for batch in dataset.iter(batch_size=1000):
        if any(isinstance(line, str) and line.strip() for line in batch[column]):
            return True
    return False
