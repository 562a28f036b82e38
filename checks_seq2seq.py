"""Pre-flight checks of run_seq2seq_qa.py, on top of checks.py's (its data are checked by checks.check_qa_data): its
generation flags, and an encoder-decoder model whose position table fits the inputs, labels and generated answers.
Each runs on what main() loaded. A copy of the script that does not want them deletes the lines marked `# checks.py`
in its main() and this file (with checks.py).
"""
from checks import (
    check_adapter_fit,
    check_adapters_support,
    check_arguments,
    check_data_arguments,
    check_fits_positions,
    check_numeric_args,
)
from script_utils import UsageError


def check_seq2seq_arguments(model_args, data_args, training_args, adapter_args):
    """Right after parse_args: the flags every script shares, the data flags, generation lengths and beams, and a fast
    tokenizer for evaluation."""
    check_arguments(model_args, training_args, adapter_args)
    check_data_arguments(data_args)
    check_numeric_args(positive=[("--generation_max_length", training_args.generation_max_length),
                                 ("--generation_num_beams", training_args.generation_num_beams)])
    if not model_args.use_fast_tokenizer and (training_args.do_eval or training_args.do_predict):
        raise UsageError(
            "--use_fast_tokenizer False: evaluation and prediction need a fast tokenizer (its offsets split long "
            "contexts into windows). Drop the flag."
        )


def check_seq2seq_model(config, data_args, training_args, adapter_args, max_seq_length: int):
    """Right after the config loads: an encoder-decoder model that adapters supports, the adapter's fit, and a position
    table that fits the inputs, the labels and the generated answers (BART has a fixed one)."""
    name = config.name_or_path
    if not getattr(config, "is_encoder_decoder", False):
        raise UsageError(
            f"{name} is a '{config.model_type}' model, not an encoder-decoder: run_seq2seq_qa.py generates answers "
            "with T5, BART and the like. For extractive QA with BERT-like models use run_qa.py."
        )
    check_adapters_support(config, name)
    check_adapter_fit(adapter_args, config)
    check_fits_positions(max_seq_length, config, "--max_seq_length")
    check_fits_positions(data_args.max_answer_length, config, "--max_answer_length")
    if training_args.generation_max_length is not None:
        check_fits_positions(training_args.generation_max_length, config, "--generation_max_length")
    else:
        check_fits_positions(data_args.val_max_answer_length, config, "--val_max_answer_length")
