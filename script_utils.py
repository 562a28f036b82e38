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


HELPER_MODULES = ("script_utils", "adapter_setup", "checks", "checks_lm", "checks_seq2seq", "qa_data", "utils_qa",
                  "utils_qa_beam_search", "prediction_files", "squad_metric", "utils_lm", "trainer_qa",
                  "trainer_seq2seq_qa")


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


def hub_kwargs(model_args) -> dict:
    """The model arguments every from_pretrained call takes."""
    return {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token,
            "trust_remote_code": model_args.trust_remote_code}


def load_config_and_tokenizer(model_args, use_fast: bool = True):
    """The pretrained config and tokenizer (--config_name / --tokenizer_name, else --model_name_or_path)."""
    from transformers import AutoConfig, AutoTokenizer

    config = from_pretrained_or_fail(AutoConfig.from_pretrained, model_args.config_name or
                                     model_args.model_name_or_path, "config", **hub_kwargs(model_args))
    tokenizer = from_pretrained_or_fail(AutoTokenizer.from_pretrained, model_args.tokenizer_name or
                                        model_args.model_name_or_path, "tokenizer", use_fast=use_fast,
                                        **hub_kwargs(model_args))
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


CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


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
    match = CHECKPOINT_NAME.match(os.path.basename(os.path.normpath(path)))
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
        match = CHECKPOINT_NAME.match(name)
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
        if not (CHECKPOINT_NAME.match(name) and checkpoint_problem(os.path.join(output_dir, name)) is not None)
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


def write_text_atomically(path, text: str, encoding: str = "utf-8", durable: bool = True):
    """Write `text` to `path` atomically: into a temporary file in the same folder (path.tmp-PID), then renamed over
    path. A crash at any moment leaves the old file (or none), never part of the new one. durable: the text is forced
    to disk (fsync) before the rename, so that a power cut cannot leave an empty file either."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "w", encoding=encoding) as writer:
            writer.write(text)
            writer.flush()
            if durable:
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
