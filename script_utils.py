"""Plumbing shared by the five scripts, knowing nothing of their tasks: the error type users see, arguments, logging,
loading from the Hub with readable errors, the output folder and its checkpoints, the train/evaluate/predict steps."""
import argparse
import datetime
import gc
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import zipfile
from typing import Optional

import torch
import torch.distributed as dist
import transformers

logger = logging.getLogger(__name__)


class UsageError(ValueError):
    """A mistake in the user's command or data. The scripts print its message as one line and exit non-zero."""


def start_cpu_process_group(argv=None):
    """`torchrun --nproc_per_node N` without a GPU: make the N processes one distributed job over gloo (transformers
    does only with --use_cpu, else each process trains alone, all writing the same files), with --ddp_timeout (given
    to gloo on GPUs only; not read from a .json file). First in main(): TrainingArguments reads ACCELERATE_USE_CPU."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "ACCELERATE_USE_CPU" in os.environ or torch.cuda.is_available():
        return
    if any(arg.split("=")[0] in ("--deepspeed", "--fsdp") for arg in argv):
        raise UsageError("--deepspeed and --fsdp need GPUs: on this machine, without a GPU, accelerate would "
                         "ignore --deepspeed (a plain DDP run) and refuse --fsdp. Leave them out to train with "
                         "plain DDP over gloo.")
    os.environ["ACCELERATE_USE_CPU"] = "true"
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--ddp_timeout", "--ddp-timeout", type=int, default=1800)
    seconds = parser.parse_known_args(argv)[0].ddp_timeout
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=seconds))


def end_process_group():
    """Tear a distributed run's process group down (ours or accelerate's), also after an error, while the interpreter
    is whole. dist.destroy_process_group() alone leaves gloo's worker threads running: the trainer's DDP model still
    holds the group, in reference cycles that only the interpreter's exit collects. A worker finishing the last
    collective then needs the GIL to free that collective's tensors; at exit CPython ends such a thread (pthread_exit
    through C++ code), and the process aborts: "terminate called without an active exception", exit status 134. So:
    hold the group, collect the cycles, then let go of it last: its destructor releases the GIL (workers can finish
    what they do) and joins gloo's threads."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    group = dist.group.WORLD
    dist.destroy_process_group()
    gc.collect()  # the trainer, its DDP model, ...: nobody holds the group now but `group`
    del group  # the process group goes here, with gloo's threads


def parse_args(dataclass_types, argv=None):
    """argv (or one `.json` arguments file) parsed into the dataclasses; parser errors become one-line UsageErrors."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = transformers.HfArgumentParser(dataclass_types)
    # A .json file and more flags: the parser would say that a flag the file sets is missing.
    if len(argv) > 1 and argv[0].endswith(".json") and not argv[0].startswith("-"):
        raise UsageError(f"An arguments file ({argv[0]}) must be the only argument: put {argv[1]} and the other flags "
                         "in the file, or pass every flag on the command line.")
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            if not os.path.isfile(argv[0]):
                raise UsageError(f"Arguments file {argv[0]} does not exist.")
            try:
                return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
            except json.JSONDecodeError as err:
                raise UsageError(f"Arguments file {argv[0]} is not valid JSON: {err.msg} at line {err.lineno}, "
                                 f"column {err.colno}.") from err
        return parser.parse_args_into_dataclasses(args=argv)
    except UsageError:
        raise
    except ValueError as err:
        message = " ".join(str(err).split())
        if "doesn't support bf16/gpu" in message:  # TrainingArguments' check, which knows only GPUs unless --use_cpu
            message = ("--bf16 needs a GPU with bfloat16 support (Ampere or newer), and this machine has none. On a "
                       "CPU, add --use_cpu to train in bfloat16 there; or drop --bf16.")
        raise UsageError(message) from err


def setup_logging(training_args, script_logger):
    """Log to stdout like the upstream scripts: INFO on the main process, the process log level everywhere else (the
    root logger's level, which every module's logger inherits). Each line once: transformers and datasets print through
    their own handlers only (datasets, and transformers when $CI is set, would pass each line on to the root's too)."""
    import datasets
    if training_args.should_log:  # the default log_level is passive: INFO on the main process
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    logging.getLogger().setLevel(log_level)
    for library in (datasets, transformers):
        library.utils.logging.set_verbosity(log_level)
        library.utils.logging.disable_propagation()
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    distributed = training_args.parallel_mode.value == "distributed"
    script_logger.warning(f"Process rank: {training_args.local_rank}, device: {training_args.device}, n_gpu: "
                          f"{training_args.n_gpu}, distributed training: {distributed}, 16-bits training: "
                          f"{training_args.fp16}")
    script_logger.info(f"Training/evaluation parameters {training_args}")
    return log_level


def from_pretrained_or_fail(loader, name, what, **kwargs):
    """loader(name, **kwargs); an OSError (no network, not a model folder, ...) becomes a one-line UsageError."""
    try:
        return loader(name, **kwargs)
    except OSError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"Could not load the {what} '{name}': {first_line} Without network access, pass a local "
                         "directory (or fill the Hugging Face cache beforehand).") from err


def hub_kwargs(model_args) -> dict:
    """The model arguments every from_pretrained call takes."""
    return {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token,
            "trust_remote_code": model_args.trust_remote_code}


def load_config_and_tokenizer(model_args, use_fast: bool = True):
    """The pretrained config and tokenizer (--config_name / --tokenizer_name, else --model_name_or_path)."""
    config = from_pretrained_or_fail(transformers.AutoConfig.from_pretrained, model_args.config_name or
                                     model_args.model_name_or_path, "config", **hub_kwargs(model_args))
    tokenizer = from_pretrained_or_fail(transformers.AutoTokenizer.from_pretrained, model_args.tokenizer_name or
                                        model_args.model_name_or_path, "tokenizer", use_fast=use_fast,
                                        **hub_kwargs(model_args))
    return config, tokenizer


def use_the_models_own_loss(model):
    """The model's own mean loss: the Trainer would pass `num_items_in_batch` to it, which XLNet's QA head and the
    beam-search head swallow (a loss not divided by the accumulation steps) and T5 as adapters wraps it refuses."""
    model.accepts_loss_kwargs = False
    return model


def require_fast_tokenizer(tokenizer, why: str = "for offsets and overflowing windows"):
    """The QA scripts need a fast (Rust) tokenizer: {why}."""
    if not isinstance(tokenizer, transformers.PreTrainedTokenizerFast):
        raise UsageError(
            f"This example script only works for models that have a fast tokenizer ({why}); "
            f"{type(tokenizer).__name__} is not one. Use a model folder with a tokenizer.json. Checkout the big table "
            "of models at https://huggingface.co/transformers/index.html#supported-frameworks to find the model "
            "types that meet this requirement.")


def innermost_error(err: Exception) -> str:
    """The message of the innermost exception of err's chain, on one line, cut to 300 characters."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return " ".join(str(err).split())[:300] or type(err).__name__


def data_file_problem(path: str) -> Optional[str]:
    """For a data file its loader failed on: not UTF-8, a CSV file with a header but no rows, or the first line of a
    JSON Lines file that is not JSON (the loaders' own errors name none of them). None when it is none of them, or not
    a local file."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError as err:
        return f"Data file {path} is not UTF-8 text (byte offset {err.start}); save it as UTF-8."
    if path.lower().endswith(".csv") and sum(bool(line.strip()) for line in lines) == 1:
        return f"Data file {path} has a header line but no data rows: add one row per example below the header."
    first = lines[0].strip() if lines else ""
    if not (path.lower().endswith((".json", ".jsonl")) and first.startswith("{") and first.endswith("}")):
        return None  # not JSON Lines (a JSON document over several lines, a CSV or text file)
    for number, line in enumerate(lines, start=1):
        try:
            if line.strip():
                json.loads(line)
        except json.JSONDecodeError as err:
            return f"Data file {path}: line {number} is not valid JSON ({err.msg})."
    return None


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (runs of whitespace collapsed), cut to `limit` characters; else its type."""
    text = " ".join(str(err).split())
    return (text[:limit] + ("..." if len(text) > limit else "")) if text else type(err).__name__


RESULT_FILES = ("all_results.json", "train_results.json", "eval_results.json", "predict_results.json")
# The prediction files of the QA scripts, {stage}_{name}.json (prediction_files.write_prediction_files writes only these
# names): a file added here is also removed by --overwrite_output_dir.
PREDICTION_FILE_NAMES = ("predictions", "nbest_predictions", "null_odds")
PREDICTION_FILES = tuple(f"{stage}_{name}.json" for stage in ("eval", "predict") for name in PREDICTION_FILE_NAMES)
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
LOCK_FILE = ".run.lock"  # in --output_dir: held by the run using it (see lock_output_dir)


# Checkpoints: which one to resume from, and whether it can be ---------------------------------------------------------


def detect_last_checkpoint(training_args, adapter_args=None) -> Optional[str]:
    """Upstream's rule with --do_train, without --overwrite_output_dir: the last complete checkpoint of a non-empty
    output_dir, else refuse it (prepare_output_dir clears the output_dir later, once every check has passed). Every
    check of a checkpoint to resume from is here: complete, a checkpoint-N folder, the adapter configuration of this
    run (adapter_args, when given)."""
    resume = training_args.resume_from_checkpoint
    if resume is not None and not (isinstance(resume, str) and resume.lower() in ("true", "false")):
        if not os.path.isdir(resume):
            raise UsageError(
                f"--resume_from_checkpoint {resume} is not a folder. Pass a checkpoint-N folder written by an earlier "
                "run (or leave the flag out: training resumes from the last checkpoint of --output_dir by itself).")
        problem = checkpoint_problem(resume)
        if problem is None and not CHECKPOINT_NAME.match(os.path.basename(os.path.normpath(resume))):
            problem = ("it is not a complete checkpoint (a checkpoint-N folder written during training holds the "
                       "optimizer, scheduler and random states a resume needs)")
        problem = problem or adapter_mismatch(resume, adapter_args)
        if problem is not None:
            raise UsageError(f"--resume_from_checkpoint {resume} cannot be resumed from: {problem}.")
    output_dir = training_args.output_dir
    if training_args.overwrite_output_dir or not (os.path.isdir(output_dir) and training_args.do_train):
        return None
    last_checkpoint = last_complete_checkpoint(output_dir)
    if last_checkpoint is None and any(  # anything but the incomplete checkpoints a killed run of this command left
            name != LOCK_FILE
            and not (CHECKPOINT_NAME.match(name) and checkpoint_problem(os.path.join(output_dir, name)))
            for name in os.listdir(output_dir)):
        raise UsageError(f"Output directory ({output_dir}) already exists and is not empty. "
                         "Use --overwrite_output_dir to overcome.")
    if last_checkpoint is not None and resume is None:
        problem = adapter_mismatch(last_checkpoint, adapter_args)
        if problem is not None:
            raise UsageError(f"Cannot resume from {last_checkpoint}: {problem}. Use --overwrite_output_dir to train "
                             "afresh, or another --output_dir.")
        logger.info(f"Checkpoint detected, resuming training at {last_checkpoint}. To avoid this behavior, change "
                    "the `--output_dir` or add `--overwrite_output_dir` to train from scratch.")
    return last_checkpoint


def checkpoint_to_resume(training_args, last_checkpoint):
    """--resume_from_checkpoint ("True": the last complete checkpoint, "False": none) if given, else last_checkpoint."""
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        return last_complete_checkpoint(training_args.output_dir) if resume.lower() == "true" else None
    return last_checkpoint if resume is None else resume


def checkpoint_problem(path: str) -> Optional[str]:
    """Why a checkpoint folder cannot be resumed from, or None. transformers writes trainer_state.json last (missing,
    cut short or from another step: the run was killed while saving); the RNG files of distributed runs, written
    alongside it, are checked too."""
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
    for name in sorted(name for name in os.listdir(path) if name.startswith("rng_state") and name.endswith(".pth")):
        try:
            with zipfile.ZipFile(os.path.join(path, name)) as archive:
                if archive.testzip() is not None:
                    raise zipfile.BadZipFile(name)
        except (zipfile.BadZipFile, OSError, EOFError):
            return f"its {name} is cut short (the run was stopped while saving it)"
    return None


def _adapter_config_file(path: str) -> Optional[dict]:
    """The "config" entry of an adapter_config.json (as save_adapter writes it), or None."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("config")
    except (ValueError, OSError, AttributeError):
        return None


def _saved_adapter_config(folder: str) -> Optional[dict]:
    """The adapter configuration a checkpoint holds (in a subfolder named after the adapter), or None."""
    for name in sorted(os.listdir(folder)):
        if os.path.isfile(os.path.join(folder, name, "adapter_config.json")):
            return _adapter_config_file(os.path.join(folder, name, "adapter_config.json"))
    return None


def adapter_mismatch(checkpoint: str, adapter_args) -> Optional[str]:
    """Why `checkpoint` holds another adapter configuration than this run trains (its optimizer state would not fit
    the parameters: transformers failed deep inside), or None. adapter_args None: not checked."""
    if adapter_args is None:
        return None
    from adapters import AdapterConfig

    saved = _saved_adapter_config(checkpoint)
    if not adapter_args.train_adapter:
        return None if saved is None else ("the checkpoint holds another adapter configuration (an adapter; this run "
                                           "trains the whole model, without --train_adapter)")
    if saved is None:
        return ("the checkpoint holds another adapter configuration (none: the whole model was trained, without "
                "--train_adapter)")
    loaded = adapter_args.load_adapter  # --load_adapter FOLDER: its configuration is trained
    wanted = _adapter_config_file(os.path.join(loaded, "adapter_config.json")) if loaded else None
    try:
        here = AdapterConfig.load(wanted or adapter_args.adapter_config).to_dict()
        there = AdapterConfig.load(saved).to_dict()
    except (ValueError, TypeError, KeyError, AttributeError, SyntaxError):
        return None  # the adapter checks of the run say what is wrong with it
    differ = sorted(key for key in set(here) | set(there) if here.get(key) != there.get(key))
    if not differ:
        return None
    shown = ", ".join(f"{key}: {there.get(key)!r} there, {here.get(key)!r} here" for key in differ[:3])
    return f"the checkpoint holds another adapter configuration ({shown})"


def _checkpoint_folders(output_dir: str) -> list:
    """checkpoint-N folders of output_dir, newest (largest N) first."""
    names = os.listdir(output_dir) if os.path.isdir(output_dir) else []
    found = [(int(match.group(1)), os.path.join(output_dir, name)) for name in names
             if (match := CHECKPOINT_NAME.match(name)) and os.path.isdir(os.path.join(output_dir, name))]
    return [path for _, path in sorted(found, reverse=True)]


def last_complete_checkpoint(output_dir: str) -> Optional[str]:
    """The newest complete checkpoint-N of output_dir; newer incomplete ones are skipped with a warning."""
    for path in _checkpoint_folders(output_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning(f"Ignoring the incomplete checkpoint {path}: {problem}.")
    return None


def _read_state(folder: str) -> Optional[dict]:
    try:
        with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def finished_training(training_args, checkpoint: Optional[str]) -> bool:
    """Whether the checkpoint to resume from has trained all the steps (--max_steps) or epochs asked for: a finished
    job run again. (transformers would run the loop once more and write a checkpoint one step past the end.)"""
    state = _read_state(checkpoint) if checkpoint is not None else None
    if state is None:
        return False
    if training_args.max_steps > 0:
        return state.get("global_step", 0) >= training_args.max_steps
    return (state.get("epoch") or 0) >= training_args.num_train_epochs


def load_finished_model(trainer, checkpoint: str):
    """The model and state a finished job ended with, into `trainer` instead of training again: the output_dir's when
    the job saved them (its trainer_state.json is at the checkpoint's step), else (stopped after its last checkpoint)
    the checkpoint's, or with --load_best_model_at_end the best checkpoint's, then saved as training would have."""
    from transformers import TrainerState

    output_dir, step = trainer.args.output_dir, _read_state(checkpoint)["global_step"]
    saved = (_read_state(output_dir) or {}).get("global_step") == step
    state_folder = output_dir if saved else checkpoint
    trainer.state = TrainerState.load_from_json(os.path.join(state_folder, "trainer_state.json"))
    weights = state_folder
    if not saved and trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint is not None \
            and os.path.isdir(trainer.state.best_model_checkpoint):
        weights = trainer.state.best_model_checkpoint
    logger.warning(f"Training already finished at step {step} ({checkpoint}): not training again; the model from "
                   f"{weights}{'' if saved else ' is saved to the output folder'}.")
    trainer._load_from_checkpoint(weights)
    trainer._load_rng_state(checkpoint)  # as training left it: an evaluation that draws (MLM masks) draws the same
    if not saved:
        trainer.save_model()
        trainer.save_state()


# The output folder: one run at a time, and what an earlier run left ---------------------------------------------------

_held_locks = {}  # output folder (real path) -> the open lock file this process holds


def _take_lock(output_dir: str) -> Optional[str]:
    """Lock output_dir/.run.lock for this process, with flock (released by the operating system when the process
    ends, however it ends: no stale lock), and write "pid on host" into it; or say which run holds it."""
    import fcntl
    import socket

    key = os.path.realpath(output_dir)
    if key in _held_locks:
        return None
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_FILE)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(descriptor, 200).decode("utf-8", "replace").strip() or "a process that has not said"
        os.close(descriptor)
        return (f"Another run is using --output_dir {output_dir} (process {holder}, which holds {path}): wait for "
                "it to end, or use another --output_dir.")
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()} on {socket.gethostname()}\n".encode())
    _held_locks[key] = descriptor
    return None


def lock_output_dir(training_args):
    """One run per output folder: the main process (each node's, with --save_on_each_node) takes the lock, every
    process learns whether all got it; otherwise each raises the same one-line UsageError, having changed nothing."""
    problem = _take_lock(training_args.output_dir) if training_args.should_save else None
    if training_args.world_size > 1 and dist.is_available() and dist.is_initialized():
        problems = [None] * dist.get_world_size()
        dist.all_gather_object(problems, problem)
        problem = next((p for p in problems if p is not None), None)
    if problem is not None:
        raise UsageError(problem)


def release_output_dir(training_args):
    """Let go of the output folder's lock (the end of main(); a process that ends releases it anyway)."""
    descriptor = _held_locks.pop(os.path.realpath(training_args.output_dir), None)
    if descriptor is not None:
        os.close(descriptor)


def prepare_output_dir(training_args, last_checkpoint: Optional[str] = None):
    """Right before anything is written, once every check has passed: lock the output folder (one run at a time), then
    with --overwrite_output_dir, remove an earlier run's result and prediction files and when training its
    checkpoint-N folders (a later resume would pick them up) but the one to resume from; else when training the
    incomplete checkpoints a killed run left. Removal: main process only."""
    lock_output_dir(training_args)
    output_dir = training_args.output_dir
    if not training_args.should_save:
        return
    if training_args.overwrite_output_dir:
        resume = checkpoint_to_resume(training_args, last_checkpoint)
        keep = os.path.realpath(resume) if isinstance(resume, str) else None
        removed = [name for name in RESULT_FILES + PREDICTION_FILES if os.path.isfile(os.path.join(output_dir, name))]
        for name in removed:
            os.remove(os.path.join(output_dir, name))
        for path in _checkpoint_folders(output_dir) if training_args.do_train else []:
            if os.path.realpath(path) != keep:
                shutil.rmtree(path)
                removed.append(os.path.basename(path))
        if os.path.isdir(os.path.join(output_dir, "merged")):  # --merge_adapter_on_save's model: this run's or none
            shutil.rmtree(os.path.join(output_dir, "merged"))
            removed.append("merged")
        if removed:
            logger.warning(f"--overwrite_output_dir: removed from {output_dir} what an earlier run left: "
                           f"{', '.join(removed)}.")
    elif training_args.do_train:
        for path in _checkpoint_folders(output_dir):
            problem = checkpoint_problem(path)
            if problem is not None:
                logger.warning(f"Removing the incomplete checkpoint {path}: {problem}.")
                shutil.rmtree(path)


def select_samples(dataset, max_samples: Optional[int]):
    """The first max_samples rows (all when None), as the upstream scripts cut --max_*_samples."""
    return dataset if max_samples is None else dataset.select(range(min(len(dataset), max_samples)))


def capped_length(length: int, tokenizer, name: str) -> int:
    """--max_seq_length / --block_size, capped at the tokenizer's model_max_length with a warning (as upstream)."""
    if length > tokenizer.model_max_length:
        logger.warning(f"The {name} passed ({length}) is larger than the maximum length for the model "
                       f"({tokenizer.model_max_length}). Using {name}={tokenizer.model_max_length}.")
    return min(length, tokenizer.model_max_length)


def samples_used(max_samples: Optional[int], dataset, trainer=None) -> int:
    """metrics["*_samples"] as upstream: min(max_samples or len, len); for a stream, what the train steps consumed."""
    if hasattr(dataset, "__len__"):
        return min(max_samples if max_samples is not None else len(dataset), len(dataset))
    args = trainer.args
    consumed = trainer.state.global_step * args.train_batch_size * args.gradient_accumulation_steps * args.world_size
    return consumed if max_samples is None else min(consumed, max_samples)


def write_text_atomically(path, text: str, encoding: str = "utf-8", durable: bool = True):
    """`text` into path.tmp-PID, renamed over `path`: a crash never leaves part of a file; durable: fsync'ed first."""
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
    """trainer.save_metrics(split, metrics) written atomically: {split}_results.json and all_results.json (updated)."""
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
    texts = {name: json.dumps(values, indent=4, sort_keys=True)  # all made before touching the disk
             for name, values in ((f"{split}_results.json", metrics), ("all_results.json", {**all_metrics, **metrics}))}
    for name, text in texts.items():
        write_text_atomically(os.path.join(trainer.args.output_dir, name), text)


class StopOnSignal(transformers.TrainerCallback):
    """Preemption (see train_and_save): the signal handler only records the signal (it may interrupt a log call); at a
    step end all processes decide together (to stop at the same step) to save a checkpoint, evaluate nothing, stop."""

    def __init__(self):
        self.signals = []  # the signals received, in order
        self.stopping = False  # decided (by every process) to stop at this step
        self.saved_step = None  # the step of the last checkpoint saved
        self.start_step = 0  # the step training (re)started from

    def agreed(self, args) -> bool:  # whether any process received a signal
        if not (args.world_size > 1 and dist.is_available() and dist.is_initialized()):
            return bool(self.signals)
        flag = torch.tensor([int(bool(self.signals))], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if not self.stopping and self.agreed(args):  # at an epoch's end: a signal after its last step had ended
            self.stopping = True
            name = signal.Signals(self.signals[0]).name if self.signals else "A signal to another process"
            logger.warning(f"{name} received: saving a checkpoint at step {state.global_step}, then stopping.")
            control.should_save = True  # should_training_stop: on_save
        if self.stopping:
            control.should_evaluate = False
            if self.saved_step == state.global_step:  # saved already: never write the same checkpoint twice
                control.should_save, control.should_training_stop = False, True

    on_epoch_end = on_step_end

    def on_save(self, args, state, control, **kwargs):
        self.saved_step = state.global_step
        if self.stopping:
            control.should_training_stop = True  # after the save, so that the checkpoint's TrainerControl is as usual


def train_and_save(trainer, last_checkpoint, max_samples, train_dataset):
    """Train, then save the model (in adapter mode: the adapter and its head), tokenizer, metrics and state. SIGTERM
    (preemption) or SIGINT (Ctrl-C): a complete checkpoint at the current step, then exit status 128 + the signal."""
    checkpoint = checkpoint_to_resume(trainer.args, last_checkpoint)
    if finished_training(trainer.args, checkpoint):
        return load_finished_model(trainer, checkpoint)
    callback = StopOnSignal()
    trainer.add_callback(callback)
    in_main_thread = threading.current_thread() is threading.main_thread()  # the only one where Python allows handlers
    previous = {signum: signal.signal(signum, lambda received, frame: callback.signals.append(received))
                for signum in (signal.SIGTERM, signal.SIGINT) if in_main_thread}
    try:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
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
        again = " without --overwrite_output_dir" if trainer.args.overwrite_output_dir else ""
        logger.warning(f"Training stopped by {signal.Signals(signum).name} at step {step}: the checkpoint "
                       f"{os.path.join(trainer.args.output_dir, f'checkpoint-{step}')} is complete; run the same "
                       f"command{again} to resume from it.")
        raise SystemExit(128 + signum)
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
    """The stages asked for, each saving its results; before_predict(eval metrics or None) returns more predict keys."""
    if trainer.args.do_train:
        train_and_save(trainer, last_checkpoint, data_args.max_train_samples, features["train"])
    # --max_eval_samples/--max_predict_samples cut the questions (qa_data.load_qa_examples), every window kept: the
    # *_samples keys count the windows (features) run through the model, as upstream's did.
    eval_metrics = (evaluate_and_save(trainer, None, len(features["eval"])) if trainer.args.do_eval else None)
    if trainer.args.do_predict:
        more_metrics = before_predict(eval_metrics) if before_predict is not None else None
        logger.info("*** Predict ***")
        metrics = trainer.predict(features["predict"], predict_examples).metrics  # QA trainers write the predictions
        metrics["predict_samples"] = len(features["predict"])
        metrics.update(more_metrics or {})
        trainer.log_metrics("predict", metrics)
        save_metrics(trainer, "predict", metrics)


def save_model_card(trainer, model_args, data_args, task: str):
    """The model card (README.md in --output_dir), or with --push_to_hub the upload, as the upstream scripts do."""
    kwargs = {"finetuned_from": model_args.model_name_or_path, "tasks": task}
    if data_args.dataset_name is not None:
        kwargs["dataset_tags"] = kwargs["dataset"] = data_args.dataset_name
        if data_args.dataset_config_name is not None:
            kwargs["dataset_args"] = data_args.dataset_config_name
            kwargs["dataset"] = f"{data_args.dataset_name} {data_args.dataset_config_name}"
    upload_or_write = trainer.push_to_hub if trainer.args.push_to_hub else trainer.create_model_card
    upload_or_write(**kwargs)
