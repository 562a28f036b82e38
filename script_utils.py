# coding=utf-8
"""Script plumbing shared by the five scripts: the error type users see, argument parsing, logging, the output folder
and its checkpoints, loading from the Hub with readable errors, and the train / evaluate / predict-and-save steps.

Nothing here knows about question answering or language modelling.
"""
import json
import logging
import os
import re
import sys
from typing import Optional


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
    use_gloo_on_cpu_under_torchrun()
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


def use_gloo_on_cpu_under_torchrun():
    """`torchrun --nproc_per_node N` on a machine without a GPU: make the N processes one distributed job (gloo).

    transformers only sets up CPU distributed training with --use_cpu; otherwise each process runs on its own as a
    single-process job, all writing the same files (and --ddp_backend gloo alone breaks evaluation). Must run before
    TrainingArguments is created (its device set-up reads ACCELERATE_USE_CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "ACCELERATE_USE_CPU" in os.environ:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "true"


HELPER_MODULES = ("script_utils", "checks", "qa_data", "utils_qa", "squad_metric", "utils_lm", "prediction_files",
                  "trainer_qa", "trainer_seq2seq_qa")


def setup_logging(training_args, script_logger):
    """Log to stdout like the reference scripts: INFO on the main process, the process log level everywhere else."""
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
    """The reference rule: resume from the last checkpoint-N of a non-empty output_dir, refuse any other non-empty one.

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
    """Keyword arguments for Trainer.create_model_card / push_to_hub, as the reference builds them."""
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


def train_and_save(trainer, last_checkpoint, max_samples, train_dataset):
    """Train (resuming from the checkpoint there is, or the one --resume_from_checkpoint names), save the model (in
    adapter mode: the adapter and its head) and the tokenizer, the train metrics and the trainer state."""
    train_result = trainer.train(resume_from_checkpoint=checkpoint_to_resume(trainer.args, last_checkpoint))
    trainer.save_model()  # Saves the tokenizer too for easy upload
    metrics = train_result.metrics
    metrics["train_samples"] = samples_used(max_samples, train_dataset, trainer)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()


def evaluate_and_save(trainer, max_samples, n_examples: int, more_metrics=None):
    """Evaluate and save {eval_results, all_results}.json; more_metrics(metrics) adds keys (e.g. the perplexity)."""
    logger.info("*** Evaluate ***")
    metrics = trainer.evaluate()
    metrics["eval_samples"] = samples_used(max_samples, range(n_examples))
    if more_metrics is not None:
        metrics.update(more_metrics(metrics))
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)


def train_evaluate_predict(trainer, last_checkpoint, data_args, features: dict, predict_examples=None):
    """The stages asked for (--do_train, --do_eval, --do_predict), in that order, each saving its results."""
    if trainer.args.do_train:
        train_and_save(trainer, last_checkpoint, data_args.max_train_samples, features["train"])
    if trainer.args.do_eval:
        evaluate_and_save(trainer, data_args.max_eval_samples, len(features["eval"]))
    if trainer.args.do_predict:
        predict_and_save(trainer, data_args.max_predict_samples, features["predict"], predict_examples)


def save_model_card(trainer, model_args, data_args, task: str):
    """The model card (README.md in --output_dir), or with --push_to_hub the upload, as the upstream scripts do."""
    kwargs = model_card_kwargs(model_args, data_args, task)
    if trainer.args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    else:
        trainer.create_model_card(**kwargs)


def predict_and_save(trainer, max_samples, predict_dataset, predict_examples):
    """Predict on the test features (the QA trainers write the prediction files) and save predict_results.json."""
    logger.info("*** Predict ***")
    results = trainer.predict(predict_dataset, predict_examples)
    metrics = results.metrics
    metrics["predict_samples"] = samples_used(max_samples, predict_dataset)
    trainer.log_metrics("predict", metrics)
    trainer.save_metrics("predict", metrics)
