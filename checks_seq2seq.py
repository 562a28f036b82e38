"""Pre-flight checks of run_seq2seq_qa.py, on top of checks.py's: its generation flags, an encoder-decoder model whose
position table fits the inputs, labels and generated answers, and every stage's data. A copy of the script that does
not want them can delete the marked block in its main() and this file (with checks.py).
"""
from checks import (
    check_adapter_fit,
    check_adapters_support,
    check_arguments,
    check_best_model_metric,
    check_data_arguments,
    check_fits_positions,
    check_numeric_args,
    check_qa_examples,
    examples_to_check,
)
from qa_data import qa_columns, stage_source
from script_utils import UsageError, load_config_and_tokenizer
from squad_metric import SQUAD_V1_METRICS, SQUAD_V2_METRICS


def check_run_seq2seq_qa(model_args, data_args, training_args, adapter_args, answer_spans, generate: bool):
    """Everything run_seq2seq_qa.py checks before it loads anything itself."""
    check_arguments(model_args, training_args, adapter_args)
    check_data_arguments(data_args)
    check_seq2seq_arguments(model_args, data_args, training_args, generate)
    columns = qa_columns(data_args)
    examples, _ = examples_to_check(model_args, data_args, training_args, columns, answer_spans)
    for stage, dataset in examples.items():
        check_qa_examples(dataset, stage_source(data_args, stage), columns, stage, answer_spans)
    config, tokenizer = load_config_and_tokenizer(model_args, use_fast=model_args.use_fast_tokenizer)
    max_seq_length = min(data_args.max_seq_length, tokenizer.model_max_length)
    check_seq2seq_model(config, model_args.model_name_or_path, data_args, training_args, max_seq_length)
    check_adapter_fit(adapter_args, config)


def check_seq2seq_arguments(model_args, data_args, training_args, generate: bool):
    """run_seq2seq_qa.py's own flags: generation lengths and beams, the metric for --load_best_model_at_end (eval_loss
    always; the SQuAD metrics only when answers are generated), and a fast tokenizer for evaluation."""
    squad_metrics = SQUAD_V2_METRICS if data_args.version_2_with_negative else SQUAD_V1_METRICS
    check_best_model_metric(training_args, ("loss",) + (squad_metrics if generate else ()))
    check_numeric_args(positive=[("--generation_max_length", training_args.generation_max_length),
                                 ("--generation_num_beams", training_args.generation_num_beams)])
    if not model_args.use_fast_tokenizer and (training_args.do_eval or training_args.do_predict):
        raise UsageError(
            "--use_fast_tokenizer False: evaluation and prediction need a fast tokenizer (its offsets split long "
            "contexts into windows). Drop the flag."
        )


def check_seq2seq_model(config, name: str, data_args, training_args, max_seq_length: int):
    """An encoder-decoder model that adapters supports, whose position table fits the inputs, the labels and the
    generated answers (BART has a fixed one)."""
    if not getattr(config, "is_encoder_decoder", False):
        raise UsageError(
            f"{name} is a '{config.model_type}' model, not an encoder-decoder: run_seq2seq_qa.py generates answers "
            "with T5, BART and the like. For extractive QA with BERT-like models use run_qa.py."
        )
    check_adapters_support(config, name)
    check_fits_positions(max_seq_length, config, "--max_seq_length")
    check_fits_positions(data_args.max_answer_length, config, "--max_answer_length")
    if training_args.generation_max_length is not None:
        check_fits_positions(training_args.generation_max_length, config, "--generation_max_length")
    else:
        check_fits_positions(data_args.val_max_answer_length, config, "--val_max_answer_length")
