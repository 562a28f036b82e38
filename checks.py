"""Pre-flight checks: each raises a UsageError that says what is wrong and how to fix it, before the model is loaded
(so a mistake costs seconds, not a training run) and before anything is written to the output folder.

They read nothing themselves: main() calls them on what it has loaded, each call where its inputs exist and marked
`# checks.py` at the end of its line. A copy of a script that does not want them deletes those lines and this file
(with checks_lm.py / checks_seq2seq.py), and runs as before on valid input. The sections below follow main():
1. the command line, right after parse_args;
2. the model config and tokenizer, right after they load (model type, adapter fit, lengths against positions);
3. the data, right after it loads (QA examples: columns, ids, answers read through the script's answer_spans, question
   and context columns that look swapped, and the windows every question leaves for its context).
A new check goes into the section whose inputs it needs. None uses a random number generator.
"""
import importlib
import logging
import os
import pkgutil
from typing import Optional

from adapter_setup import adapter_config_problem, adapter_folder_problem, check_adapter_mode, load_adapter_config
from script_utils import UsageError

try:  # the QA helpers, which a copy of run_mlm.py or run_clm.py does without
    from qa_data import missing_answer_column, read_column, read_records, stage_source
    from squad_metric import SQUAD_V1_METRICS, SQUAD_V2_METRICS
except ImportError:
    pass

logger = logging.getLogger(__name__)


# 1. The command line (right after parse_args) -------------------------------------------------------------------------


def check_numeric_args(positive=(), non_negative=()):
    """(flag, value) pairs: `positive` values must be >= 1 when set, `non_negative` ones >= 0."""
    for flag, value in positive:
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value} must be a positive number.")
    for flag, value in non_negative:
        if value is not None and value < 0:
            raise UsageError(f"{flag} {value} must not be negative.")


def check_arguments(model_args, training_args, adapter_args, actions=("train", "eval", "predict")):
    """The command line every script shares: the adapter configuration, the model/config/tokenizer folders, the
    output folder, batch sizes, --load_adapter sources, and that there is something to do (one of --do_{actions})."""
    check_adapter_mode(adapter_args)  # adapter_setup's rule, here before the model loads
    if adapter_args.train_adapter:  # the configurations must parse
        load_adapter_config(adapter_args.adapter_config, "--adapter_config")
        if adapter_args.load_lang_adapter:
            load_adapter_config(adapter_args.lang_adapter_config, "--lang_adapter_config")
    check_model_source(getattr(model_args, "model_name_or_path", None), "--model_name_or_path")
    check_model_source(getattr(model_args, "config_name", None), "--config_name")
    check_model_source(getattr(model_args, "tokenizer_name", None), "--tokenizer_name",
                       required_file=("tokenizer.json", "tokenizer_config.json", "config.json"))
    output_dir = training_args.output_dir
    if output_dir and os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(f"--output_dir {output_dir} is a file; pass a folder (it is created if needed).")
    counts = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")
    check_numeric_args(positive=[(f"--{name}", getattr(training_args, name)) for name in counts],
                       non_negative=[("--num_train_epochs", training_args.num_train_epochs)])
    check_adapter_sources(adapter_args)
    check_reporting(training_args)
    if not any(getattr(training_args, f"do_{action}") for action in actions):
        flags = [f"--do_{action}" for action in actions]
        raise UsageError(f"Nothing to do: pass {', '.join(flags[:-1])} and/or {flags[-1]}.")


def check_reporting(training_args):
    """--report_to integrations that are not installed and --push_to_hub without the Hub: the Trainer raised on them
    when it was created, after the model had loaded (TrainingArguments has turned "all"/"none" into a list)."""
    from huggingface_hub import constants, get_token
    from transformers.integrations import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations

    installed = get_available_reporting_integrations()
    for name in training_args.report_to or []:
        if name not in INTEGRATION_TO_CALLBACK:
            raise UsageError(f"--report_to {name} is not an integration transformers knows: use one of "
                             f"{', '.join(INTEGRATION_TO_CALLBACK)}, or none.")
        if name not in installed:
            others = f" (installed: {', '.join(installed)})" if installed else ""
            raise UsageError(f"--report_to {name}: {name} is not installed. Install its package, or pass "
                             f"--report_to none or another integration{others}.")
    if not training_args.push_to_hub:
        return
    if constants.HF_HUB_OFFLINE:
        raise UsageError("--push_to_hub needs the Hugging Face Hub, and offline mode is on (HF_HUB_OFFLINE): drop "
                         "--push_to_hub (the model is saved in --output_dir) or run online.")
    if training_args.hub_token is None and get_token() is None:
        raise UsageError("--push_to_hub needs a Hugging Face token: log in with `hf auth login`, pass --hub_token, or "
                         "drop --push_to_hub (the model is saved in --output_dir).")


def check_data_arguments(data_args):
    """The lengths, sizes and counts among a script's data arguments are positive; --doc_stride is not negative."""
    positive = (
        "max_seq_length", "block_size", "n_best_size", "max_answer_length", "val_max_answer_length", "num_beams",
        "max_train_samples", "max_eval_samples", "max_predict_samples", "preprocessing_num_workers",
    )
    check_numeric_args(positive=[(f"--{name}", getattr(data_args, name, None)) for name in positive],
                       non_negative=[("--doc_stride", getattr(data_args, "doc_stride", None))])


def _looks_like_local_path(name: str) -> bool:
    """A path, not a Hub id ("org/name"): absolute, relative with ./ or ../, home-relative, or several levels deep."""
    return name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or "\\" in name or name.count("/") >= 2


def _adapter_folders_inside(folder: str, depth: int = 2) -> list:
    """Sub-folders (up to `depth` levels down) that hold an adapter_config.json, relative to folder."""
    found = []
    for root, dirs, files in os.walk(folder):
        level = os.path.relpath(root, folder).count(os.sep) + (root != folder)
        if root != folder and "adapter_config.json" in files:
            found.append(os.path.relpath(root, folder))
        if level >= depth:
            dirs[:] = []
    return sorted(found)


def check_model_source(name: Optional[str], flag: str, required_file=("config.json",)):
    """A local --model_name_or_path/--config_name/--tokenizer_name must exist and be a model folder (holding one of
    `required_file`). Hub ids are left to from_pretrained (which fails with its own message offline)."""
    if name is None:
        return
    if os.path.isdir(name):
        if not any(os.path.isfile(os.path.join(name, f)) for f in required_file):
            adapters_inside = _adapter_folders_inside(name)
            hint = " Pass a folder saved with save_pretrained() or a Hugging Face Hub model id."
            if adapters_inside:
                hint = (f" It holds adapters ({', '.join(adapters_inside)}): pass the base model as {flag} and the "
                        "adapter folder as --load_adapter (with --train_adapter).")
            raise UsageError(f"{flag} {name} is not a model folder: it has no {' or '.join(required_file)}.{hint}")
    elif os.path.isfile(name):
        raise UsageError(f"{flag} {name} is a file; pass the folder that holds {required_file[0]} (or a Hub model id).")
    elif _looks_like_local_path(name):
        raise UsageError(f"{flag} {name} does not exist. Pass an existing model folder or a Hugging Face Hub model id.")


def check_adapter_sources(adapter_args):
    """--load_adapter/--load_lang_adapter given as a local path must be a folder written by save_adapter (with
    adapter_config.json); the common mistake of passing the run's output or checkpoint folder names the adapter
    folders inside it."""
    for flag, source in (("--load_adapter", adapter_args.load_adapter),
                         ("--load_lang_adapter", adapter_args.load_lang_adapter)):
        if not source or os.path.isfile(os.path.join(source, "adapter_config.json")):
            continue
        if os.path.isdir(source):
            inside = _adapter_folders_inside(source)
            hint = " Pass a folder written by --train_adapter (it holds adapter_config.json and pytorch_adapter.bin)."
            if inside:
                hint = (f" It contains adapter folders: {', '.join(os.path.join(source, a) for a in inside)}; "
                        "pass one of them.")
            raise UsageError(f"{flag} {source} is not an adapter folder: it has no adapter_config.json.{hint}")
        if os.path.isfile(source) or _looks_like_local_path(source):
            what = "a file" if os.path.isfile(source) else "it does not exist"
            raise UsageError(
                f"{flag} {source} is not an adapter folder ({what}). "
                "Pass a folder written by --train_adapter (it holds adapter_config.json), or an AdapterHub / "
                "Hugging Face Hub adapter id."
            )


def check_qa_arguments(model_args, data_args, training_args, adapter_args):
    """run_qa.py and run_qa_beam_search.py: the flags every script shares and the data flags' lengths and counts."""
    check_arguments(model_args, training_args, adapter_args)
    check_data_arguments(data_args)


# 2. The model config and tokenizer (right after they load) ------------------------------------------------------------


def check_adapter_fit(adapter_args, config):
    """With the model's config: a new adapter's configuration fits the model (e.g. compacter's phm_dim divides the
    hidden size), and local --load_adapter/--load_lang_adapter folders are readable and of this hidden size
    (adapter_setup.setup_adapters checks them again, with the model)."""
    if not adapter_args.train_adapter:
        return
    if not adapter_args.load_adapter:
        adapter_config = load_adapter_config(adapter_args.adapter_config, "--adapter_config")
        problem = adapter_config_problem(adapter_config, config, "--adapter_config", adapter_args.adapter_config)
        if problem is not None:
            raise UsageError(problem)
    for flag, source in (("--load_adapter", adapter_args.load_adapter),
                         ("--load_lang_adapter", adapter_args.load_lang_adapter)):
        problem = adapter_folder_problem(source, flag, config) if source and os.path.isdir(source) else None
        if problem is not None:
            raise UsageError(problem)


def adapters_supported_model_types() -> list:
    """Model types that adapters.init() knows (adapters' model packages and its built-in interfaces)."""
    import adapters.models

    types = {m.name for m in pkgutil.iter_modules(adapters.models.__path__) if m.ispkg and m.name != "auto"}
    try:
        from adapters.wrappers.interfaces import CUSTOM_INTERFACES
        types |= set(CUSTOM_INTERFACES)
    except ImportError:
        pass
    return sorted(types)


def adapters_supports(model_type: str) -> bool:
    """Whether adapters.init() can add adapters to this model type: a built-in interface, or a model package (the
    lookup adapters.init itself does)."""
    from adapters.wrappers.interfaces import get_adapter_interface
    from adapters.wrappers.model import get_module_name

    if get_adapter_interface(model_type) is not None:
        return True
    name = get_module_name(model_type)
    try:
        importlib.import_module(f".{name}.modeling_{name}", "adapters.models")
    except ImportError:
        return False
    return True


def check_adapters_support(config, name: str, hint: str = ""):
    """adapters.init() raises "Model x not pre-supported" deep in model loading: say it before the model is loaded."""
    if not adapters_supports(config.model_type):
        raise UsageError(f"{name} is a '{config.model_type}' model, which the adapters library (installed version) "
                         f"does not support. Supported model types: {', '.join(adapters_supported_model_types())}."
                         f"{(' ' + hint) if hint else ''}")


def check_model_type(config, name: str, head_names: dict, task: str, hint: str = ""):
    """Before the model is loaded: transformers has a head for the task for this model type (head_names: its
    MODEL_FOR_<TASK>_MAPPING_NAMES), and adapters.init() (which every adapters script runs) knows the type."""
    if config.model_type not in head_names:
        supported = {t.replace("-", "_") for t in adapters_supported_model_types()}
        alternatives = sorted(t for t in head_names if t.replace("-", "_") in supported)
        raise UsageError(f"{name} is a '{config.model_type}' model, which has no {task} head in transformers. "
                         f"Use a model of one of these types: {', '.join(alternatives)}.")
    check_adapters_support(config, name, hint=hint)


def check_beam_search_model_type(config, adapter_args, full_fine_tuning_types=("xlnet", "xlm")):
    """run_qa_beam_search.py fine-tunes XLNet and XLM in full (adapters does not support them) and any other encoder
    that adapters supports with --train_adapter (an adapter plus the beam-search head)."""
    model_type = config.model_type
    if model_type in full_fine_tuning_types:
        if adapter_args.train_adapter:
            raise UsageError(
                f"--train_adapter: the adapters library does not support {model_type} models, so no adapter can be "
                f"trained on this one. Drop --train_adapter to fine-tune the whole {model_type} model, or keep it and "
                "use a model that adapters supports, which gets the same kind of beam-search head (e.g. "
                "--model_name_or_path roberta-base or bert-base-uncased)."
            )
        return
    if not adapter_args.train_adapter:
        raise UsageError(
            f"run_qa_beam_search.py fine-tunes whole models only for XLNet and XLM; for this {model_type} model add "
            "--train_adapter (an adapter plus a beam-search QA head), or fine-tune it in full with run_qa.py."
        )
    if getattr(config, "is_encoder_decoder", False) or not adapters_supports(model_type):
        raise UsageError(
            f"--train_adapter with a beam-search head needs an encoder model that adapters supports (BERT, RoBERTa, "
            f"DistilBERT, XLM-RoBERTa, DeBERTa, ...); {model_type} is not one. For encoder-decoder models use "
            "run_seq2seq_qa.py."
        )


# Model types with a table of absolute positions; the first ones number positions from pad_token_id + 1.
_OFFSET_POSITION_TYPES = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "xmod", "data2vec-text",
                                    "longformer", "roberta-prelayernorm", "ibert", "mpnet"})
_ABSOLUTE_POSITION_TYPES = _OFFSET_POSITION_TYPES | frozenset({
    "bert", "distilbert", "albert", "electra", "megatron-bert", "mobilebert", "big_bird", "ernie", "layoutlm",
    "squeezebert", "bert-generation", "gpt2", "gpt_neo", "gpt_bigcode", "biogpt", "opt", "bart", "mbart", "plbart",
    "xlm"})


def max_input_positions(config) -> Optional[int]:
    """How many tokens the model's absolute position embeddings can take; None when unknown or not limited
    (relative or rotary positions: longer inputs run, so the upstream script's behaviour is kept)."""
    absolute = getattr(config, "position_embedding_type", "absolute") == "absolute"
    if config.model_type not in _ABSOLUTE_POSITION_TYPES or not absolute:
        return None
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    if config.model_type in _OFFSET_POSITION_TYPES:
        positions -= (config.pad_token_id or 0) + 1
    return positions


def check_fits_positions(length: int, config, flag: str, source: str = ""):
    """A block longer than the model's position table crashes in the first forward pass: say so up front."""
    limit = max_input_positions(config)
    if limit is not None and length > limit:
        raise UsageError(f"{flag} {length}{source} is larger than the {limit} positions of the model "
                         f"({config.model_type} config: max_position_embeddings/n_positions). Pass {flag} {limit} or "
                         "less, or use a config with more positions.")


def check_qa_model(config, adapter_args, max_seq_length: int):
    """run_qa.py: a model type with a QA head that adapters supports, the adapter's fit, the position table."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES as QA_HEADS

    check_model_type(config, config.name_or_path, QA_HEADS, "question-answering",
                     hint="(run_qa_beam_search.py fine-tunes XLNet and XLM without adapters.)")
    check_adapter_fit(adapter_args, config)
    check_fits_positions(max_seq_length, config, "--max_seq_length")


def check_beam_search_model(config, adapter_args, max_seq_length: int):
    """run_qa_beam_search.py: XLNet/XLM in full or another encoder with an adapter, its fit, the position table."""
    check_beam_search_model_type(config, adapter_args)
    check_adapter_fit(adapter_args, config)
    check_fits_positions(max_seq_length, config, "--max_seq_length")


# 3. The data (right after it loads) -----------------------------------------------------------------------------------


def check_best_model_metric(training_args, valid_metrics, reason: str = ""):
    """--load_best_model_at_end with a metric the script does not report (the QA scripts report no eval_loss, the
    default) would fail with a KeyError at the first evaluation, after training (upstream only warned)."""
    if not training_args.load_best_model_at_end:
        return
    metric = training_args.metric_for_best_model
    name = metric[len("eval_"):] if metric and metric.startswith("eval_") else metric
    if name not in valid_metrics:
        raise UsageError(f"--load_best_model_at_end needs --metric_for_best_model set to a metric this script reports"
                         f"{' ' + reason if reason else ''}: {', '.join(valid_metrics)} (got {metric!r}).")


def check_tune_null_threshold(data_args, training_args, version_2_with_negative: bool):
    """--tune_null_threshold takes the best threshold of --do_eval's SQuAD v2.0 metric and predicts with it: it needs
    v2.0 mode, both stages, and evaluation data other than the data it predicts (never tune on the data scored)."""
    if not getattr(data_args, "tune_null_threshold", False):
        return
    if not version_2_with_negative:
        raise UsageError("--tune_null_threshold tunes the \"no answer\" threshold of SQuAD v2.0: add "
                         "--version_2_with_negative (or drop --tune_null_threshold).")
    if not (training_args.do_eval and training_args.do_predict):
        raise UsageError("--tune_null_threshold finds the threshold with --do_eval and predicts with it in "
                         "--do_predict: pass both (or drop --tune_null_threshold and read eval_best_f1_thresh).")
    files = [data_args.validation_file, data_args.test_file]
    if all(path and os.path.exists(path) for path in files) and os.path.samefile(*files):
        raise UsageError(f"--tune_null_threshold would tune on the data it predicts: --validation_file and "
                         f"--test_file are the same file ({files[1]}). Evaluate on held-out data other than "
                         "--test_file.")


def _feature_kind(feature) -> str:
    """A column's type for messages: its dtype, "struct" for a dict of fields, else the feature's class name."""
    if getattr(feature, "dtype", None) is not None:
        return feature.dtype
    return "struct" if isinstance(feature, dict) else type(feature).__name__


ANSWER_SPANS_RETURN = ('it should return (texts, starts): the answer texts and their start character offsets in the '
                       'context, each an int or None to look the text up, e.g. (["Paris", "the capital"], [17, None]), '
                       "or ([], []) when the question has no answer")


def _read_answers(record, i: int, source: str, columns, answer_spans):
    """(texts, starts) of record i through the script's answer_spans(), checked: a list of texts and a list of starts
    (an integer character offset, or None), one start per text."""
    try:
        texts, starts = answer_spans(record, columns)
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as err:
        answers = record.get(columns.answer, "(no such column)")
        raise UsageError(
            f"{source}: record {i}: answer_spans() in the script cannot read its answers ({type(err).__name__}: {err}; "
            f"column '{columns.answer}' holds {str(answers)[:80]!r}). By default it reads the SQuAD layout, e.g. "
            '"answers": {"text": ["Paris"], "answer_start": [17]} (empty lists for an unanswerable question); adapt '
            "answer_spans() to your layout (docs/customising.md)."
        ) from err
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise UsageError(f"{source}: record {i}: answer_spans() returned the texts {str(texts)[:60]!r}, which is not a "
                         f"list of texts; {ANSWER_SPANS_RETURN}.")
    if not isinstance(starts, (list, tuple)) or not all(
            s is None or (isinstance(s, int) and not isinstance(s, bool)) for s in starts):
        raise UsageError(f"{source}: record {i}: answer_spans() returned the starts {str(starts)[:60]!r}, which is not "
                         f"a list of integer character offsets (or None); {ANSWER_SPANS_RETURN}.")
    if len(texts) != len(starts):
        raise UsageError(f"{source}: record {i}: answer_spans() returned {len(texts)} answer texts but {len(starts)} "
                         f"start(s); {ANSWER_SPANS_RETURN}.")
    return texts, starts


def _check_not_swapped(questions: list, contexts: list, source: str, columns):
    """Questions much longer than their contexts (median lengths in characters, more than twice: a short context
    may be a sentence no longer than its question): the two columns are likely swapped, which later shows as
    questions too long for a window. Say so first."""
    question_length = sorted(len(q) for q in questions)[len(questions) // 2]
    context_length = sorted(len(c) for c in contexts)[len(contexts) // 2]
    if question_length > 2 * context_length:
        raise UsageError(
            f"{source}: the questions (column '{columns.question}', median {question_length} characters) are longer "
            f"than their contexts (column '{columns.context}', median {context_length} characters): the two columns "
            f"look swapped. Pass --question_column {columns.context} --context_column {columns.question}."
        )


def check_qa_examples(examples, source: str, columns, stage: str, answer_spans):
    """The raw QA examples of one split (already cut to --max_*_samples): the columns the stage needs hold text in
    every record (question and context, not swapped; a unique id for evaluation and prediction, which are matched to
    questions by id), and the answers read through the script's answer_spans() (which sees the whole record): training
    needs them; evaluation and prediction data may come without (the function asks for a column the data lacks).
    Evaluation answers not at their start are only reported (evaluation compares texts; the script's repair step
    realigns training answers). Unanswerable questions need no check: they switch SQuAD v2.0 mode on (qa_data.py)."""
    if len(examples) == 0:
        raise UsageError(f"{source} has no examples. Check the file (or --max_{stage}_samples).")
    found = examples.column_names
    found_text = ", ".join(f"{name} ({_feature_kind(examples.features[name])})" for name in found)
    needed = [("question", columns.question), ("context", columns.context)]
    if stage != "train":
        needed.append(("id", columns.id))
    for role, column in needed:
        if column not in found or getattr(examples.features[column], "dtype", None) not in ("string", "large_string"):
            raise UsageError(f"{source}: the {role} column '{column}' is missing or not text. Found columns: "
                             f"{found_text}. Name the column with --{role}_column, or rename it in the data.")
    for role, column in needed:
        values = read_column(examples, column)
        if None in values:
            raise UsageError(f"{source}: record {values.index(None)} has no {role} (column '{column}' is empty there).")
    _check_not_swapped(read_column(examples, columns.question), read_column(examples, columns.context), source,
                       columns)
    if stage != "train":
        seen = set()
        for i, example_id in enumerate(read_column(examples, columns.id)):
            if example_id in seen:
                raise UsageError(f"{source}: id {example_id!r} appears more than once (again at record {i}). "
                                 "Predictions are stored per id, so every question needs its own id.")
            seen.add(example_id)
    missing = missing_answer_column(examples, columns, answer_spans)
    if missing is not None and stage == "train":
        raise UsageError(
            f"{source} has no '{missing}' column, which answer_spans() in the script reads the answers from (found: "
            f"{found_text}); training needs answers (by default in --answer_column {columns.answer}: "
            '{"text": ["..."], "answer_start": [character offset in the context]}). Name the column with '
            "--answer_column, or adapt answer_spans() to your layout."
        )
    if missing is not None:  # evaluation and prediction data may come without answers
        return
    mismatched = []
    for i, record in enumerate(read_records(examples)):
        texts, starts = _read_answers(record, i, source, columns, answer_spans)
        context = record[columns.context]
        mismatched += [i for text, start in zip(texts, starts)
                       if start is not None and (start < 0 or context[start: start + len(text)] != text)]
    if mismatched and stage != "train":
        logger.warning(
            f"{source}: {len(mismatched)} answer(s) are not found at their start in the context (first: record "
            f"{mismatched[0]}). Evaluation compares answer texts only, so they are kept as they are."
        )


def check_qa_data(examples: dict, columns, data_args, training_args, answer_spans, other_metrics=(), squad=True):
    """The QA scripts, on {stage: examples} as load_qa_examples returned them (cut to --max_*_samples, SQuAD v2.0 mode
    switched on by unanswerable questions): every stage's examples, and the flags that depend on the mode: the metric
    of --load_best_model_at_end (other_metrics, and the SQuAD metrics where `squad`) and --tune_null_threshold."""
    version_2 = data_args.version_2_with_negative
    reason = "(SQuAD v2.0 metrics: --version_2_with_negative, or data with unanswerable questions)" if version_2 else ""
    # v2.0 also reports best_exact/best_f1 (the scores at the best "no answer" threshold), which may be chosen too.
    squad_metrics = (SQUAD_V2_METRICS + ("best_exact", "best_f1") if version_2 else SQUAD_V1_METRICS) if squad else ()
    check_best_model_metric(training_args, tuple(other_metrics) + squad_metrics, reason)
    check_tune_null_threshold(data_args, training_args, version_2)
    for stage, dataset in examples.items():
        check_qa_examples(dataset, stage_source(data_args, stage), columns, stage, answer_spans)


def _check_windows(examples, source: str, tokenizer, columns, max_seq_length: int, doc_stride: int):
    """Every question must leave room in a window for more than doc_stride context tokens, or the fast tokenizer
    stops the preprocessing with a Rust panic ("`stride` must be strictly less than `max_len`"). Besides the rule of
    check_windows_fit, it fails exactly when a pair that does not fit in one window leaves the context max_seq_length -
    question - special tokens of a pair <= doc_stride tokens. Questions are bounded by their UTF-8 size first (a token
    is at least one byte, plus at most one word-start marker per byte), so only the few long questions are tokenized."""
    pair = tokenizer.num_special_tokens_to_add(pair=True)
    # The room for context is max_seq_length - pair - question tokens; trouble needs question tokens >= threshold.
    threshold = max_seq_length - pair - doc_stride
    questions = read_column(examples, columns.question)
    candidates = [i for i, q in enumerate(questions) if 2 * len(q.lstrip().encode("utf-8")) + 1 >= threshold]
    if not candidates:
        return
    question_tokens = tokenizer([questions[i].lstrip() for i in candidates], add_special_tokens=False)["input_ids"]
    long_questions = [(i, len(ids)) for i, ids in zip(candidates, question_tokens) if len(ids) >= threshold]
    if not long_questions:
        return
    contexts = read_column(examples.select([i for i, _ in long_questions]), columns.context)
    context_tokens = tokenizer(contexts, add_special_tokens=False)["input_ids"]
    for (i, n_question), context_ids in zip(long_questions, context_tokens):
        if n_question + len(context_ids) + pair <= max_seq_length:
            continue  # fits in one window: nothing is truncated
        room = max(max_seq_length - pair - n_question, 0)
        example_id = examples[i][columns.id] if columns.id in examples.column_names else i
        fixes = ["a larger --max_seq_length"] + ([f"a --doc_stride below {room}"] if room > 0 else [])
        raise UsageError(
            f"{source}: question {example_id!r} (record {i}) is {n_question} tokens long, so a window of "
            f"--max_seq_length {max_seq_length} keeps only {room} context tokens, which must be more than "
            f"--doc_stride {doc_stride}. Use {', '.join(fixes)} or a shorter question."
        )


def check_windows_fit(examples: dict, columns, tokenizer, max_seq_length: int, data_args):
    """run_qa.py and run_qa_beam_search.py, with the tokenizer: --doc_stride leaves room in a window (the one rule
    for it) and every question of every stage leaves more than --doc_stride tokens of context (_check_windows)."""
    single = tokenizer.num_special_tokens_to_add(pair=False)
    if data_args.doc_stride > max_seq_length - single:
        raise UsageError(f"--doc_stride ({data_args.doc_stride}) must be at most --max_seq_length ({max_seq_length}) "
                         f"minus the {single} special tokens the tokenizer adds, i.e. {max_seq_length - single}: the "
                         "stride is the overlap between consecutive windows of a long context.")
    for stage, dataset in examples.items():
        _check_windows(dataset, stage_source(data_args, stage), tokenizer, columns, max_seq_length,
                       data_args.doc_stride)
