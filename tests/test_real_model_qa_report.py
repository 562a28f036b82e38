"""The parts of benchmarks/real_model_qa.py that need no model: data splits, run_qa.py command lines, the v2
"never abstaining" F1 diagnostic, the flat summary keys and the table. (The training runs themselves are the opt-in
tests/test_real_model_qa.py.)"""
import json

import pytest


@pytest.fixture(scope="module")
def bench(real_model_qa_benchmark):
    return real_model_qa_benchmark


def test_splits_hold_out_article_5_and_v1_keeps_answerable_questions(bench, shared_data, tmp_path):
    splits = bench.write_splits(shared_data / "squad2_dev_partial.json", tmp_path)
    counts = {mode: [bench.count_questions(path) for path in files] for mode, files in splits.items()}
    assert counts == {"v1": [581, 124], "v2": [1160, 247], "v2_tuned": [950, 210, 247]}
    assert [bench.count_questions(path, unanswerable=True) for path in splits["v1"]] == [0, 0]
    # v2 eval: 123 of 247 unanswerable, so answering "" everywhere scores F1 49.8 (the line on the v2 plot).
    assert bench.count_questions(splits["v2"][1], unanswerable=True) == 123
    titles = {mode: [[a["title"] for a in json.loads(path.read_text())["data"]] for path in files]
              for mode, files in splits.items()}
    source = [a["title"] for a in json.loads((shared_data / "squad2_dev_partial.json").read_text())["data"]]
    assert titles["v1"] == titles["v2"] == [source[:4], source[4:5]]
    # v2_tuned: article 4 is held out of training to tune the threshold on; article 5 is never seen before scoring.
    assert titles["v2_tuned"] == [source[:3], source[3:4], source[4:5]]
    assert bench.count_questions(splits["v2_tuned"][1], unanswerable=True) == 102


def test_run_qa_command_lines(bench, tmp_path):
    files = (tmp_path / "train.json", tmp_path / "eval.json")
    recipe = bench.RECIPE
    untrained = bench.run_qa_argv("untrained", "v1", files, tmp_path / "o", "MODEL", 400, 40, recipe, 42)
    assert "--do_train" not in untrained and "--train_file" not in untrained
    assert "--version_2_with_negative" not in untrained

    seq_bn = bench.run_qa_argv("seq_bn", "v2", files, tmp_path / "o", "MODEL", 400, 40, recipe, 42)
    flags = dict(zip(seq_bn, seq_bn[1:]))
    assert flags["--adapter_config"] == "seq_bn[reduction_factor=8]"
    assert flags["--learning_rate"] == "0.001" and flags["--max_steps"] == "400"
    assert flags["--max_seq_length"] == "256" and flags["--doc_stride"] == "128"
    assert "--train_adapter" in seq_bn and "--version_2_with_negative" in seq_bn
    assert flags["--eval_steps"] == "40" and "--eval_on_start" in seq_bn

    full = bench.run_qa_argv("full", "v1", files, tmp_path / "o", "MODEL", 400, 400, recipe, 42)
    assert "--train_adapter" not in full and dict(zip(full, full[1:]))["--learning_rate"] == "0.0002"
    assert "--eval_strategy" not in full  # one evaluation, at the end, when eval_steps >= steps


def test_v2_tuned_command_line_tunes_on_the_held_out_training_article(bench, tmp_path):
    files = (tmp_path / "train.json", tmp_path / "tune.json", tmp_path / "eval.json")
    argv = bench.run_qa_argv("lora", "v2_tuned", files, tmp_path / "o", "MODEL", 400, 40, bench.RECIPE, 42)
    flags = dict(zip(argv, argv[1:]))
    assert flags["--train_file"] == str(files[0])
    assert flags["--validation_file"] == str(files[1]) and flags["--test_file"] == str(files[2])
    assert {"--do_eval", "--do_predict", "--tune_null_threshold", "--version_2_with_negative"} <= set(argv)
    assert "--eval_strategy" not in argv  # no learning curve in this mode


def test_f1_at_threshold_answers_the_best_span_unless_the_null_odds_are_above(bench, tmp_path):
    def qa(qid, answers):
        return {"id": qid, "question": "?", "is_impossible": not answers,
                "answers": [{"text": t, "answer_start": 0} for t in answers]}

    eval_file = tmp_path / "eval.json"
    eval_file.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [
        qa("a", ["cat"]), qa("b", []), qa("c", ["dog"])]}]}]}))
    nbest_file, odds_file = tmp_path / "nbest.json", tmp_path / "odds.json"
    nbest_file.write_text(json.dumps({"a": [{"text": ""}, {"text": "cat"}], "b": [{"text": "x"}], "c": [{"text": "y"}]}))
    odds_file.write_text(json.dumps({"a": -1.0, "b": 0.5, "c": 2.0}))
    # 0.0: a answers "cat" (1), b and c abstain (1, 0). 1.0: b answers "x" (0). -2.0: everyone abstains (b: 1).
    assert bench.f1_at_threshold(nbest_file, odds_file, eval_file, 0.0) == pytest.approx(100 * 2 / 3)
    assert bench.f1_at_threshold(nbest_file, odds_file, eval_file, 1.0) == pytest.approx(100 / 3)
    assert bench.f1_at_threshold(nbest_file, odds_file, eval_file, -2.0) == pytest.approx(100 / 3)


def test_merge_keeps_the_earlier_modes(bench, tmp_path):
    path = tmp_path / "real_model_qa.json"
    path.write_text(json.dumps({"seq_bn_f1": 38.6, "v2_lora_f1": 42.0, "results": {"v1": {}, "v2": {}},
                                "config": {"steps": 400}}))
    new = {"v2_tuned_lora_f1": 50.0, "results": {"v2_tuned": {"lora": {}}}, "config": {"steps": 200}}
    merged = bench.merged_report(path, new)
    assert merged["seq_bn_f1"] == 38.6 and merged["v2_lora_f1"] == 42.0 and merged["v2_tuned_lora_f1"] == 50.0
    assert set(merged["results"]) == {"v1", "v2", "v2_tuned"}
    assert merged["config"] == {"steps": 400} and merged["config_v2_tuned"] == {"steps": 200}
    # A run of v2_tuned alone adds prefixed keys only (the flat v1 keys stay those of the v1 run).
    assert set(bench.summary_keys({"v2_tuned": {"lora": {"f1": 50.0}}})) == {"v2_tuned_lora_f1"}


def test_forced_answer_f1_takes_the_best_non_empty_span_of_answerable_questions(bench, tmp_path):
    def qa(qid, answers):
        return {"id": qid, "question": "?", "is_impossible": not answers,
                "answers": [{"text": t, "answer_start": 0} for t in answers]}

    eval_file = tmp_path / "eval.json"
    eval_file.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [
        qa("a", ["Denver Broncos", "Broncos"]), qa("b", ["Santa Clara"]), qa("c", ["cat"]), qa("d", []),
    ]}]}]}))
    nbest_file = tmp_path / "nbest.json"
    nbest_file.write_text(json.dumps({
        "a": [{"text": ""}, {"text": "Denver Broncos"}],  # abstains, but its best span is exact: 1
        "b": [{"text": ""}],  # no span at all: 0
        "c": [{"text": "the cat sat"}, {"text": "cat"}],  # first span only: "cat sat" vs "cat" = 2/3
        "d": [{"text": "anything"}],  # unanswerable: not counted
    }))
    assert bench.forced_answer_f1(nbest_file, eval_file) == pytest.approx(100 * (1 + 0 + 2 / 3) / 3)


def test_summary_keys_and_table(bench):
    def run(f1, steps, **extra):
        return {"f1": f1, "exact_match": f1 - 1, "peak_mb": 1000.0, "steps": steps, "step_s": 0.5 if steps else None,
                "train_s": 60.0 * bool(steps), "trainable_params": 10 * steps, "curve": [[0, 1.0]], **extra}

    results = {
        "v1": {"untrained": run(6.0, 0), "seq_bn": run(38.0, 400), "full": run(44.0, 400)},
        "v2": {"untrained": run(3.0, 0, HasAns_f1=6.0, NoAns_f1=0.0, HasAns_forced_f1=6.0),
               "seq_bn": run(49.8, 400, HasAns_f1=0.0, NoAns_f1=100.0, HasAns_forced_f1=20.5)},
    }
    flat = bench.summary_keys(results)
    assert flat["untrained_f1"] == 6.0 and flat["seq_bn_f1"] == 38.0 and flat["full_f1"] == 44.0
    assert flat["seq_bn_step_s"] == 0.5 and flat["full_peak_mb"] == 1000.0 and flat["full_trainable_params"] == 4000
    assert "untrained_step_s" not in flat
    assert flat["v2_seq_bn_f1"] == 49.8 and flat["v2_untrained_f1"] == 3.0

    rows = bench.markdown_table(results).splitlines()
    assert len(rows) == 2 + 5
    assert rows[3].startswith("| v1 | seq_bn | 38.0 | 37.0 | 38.0 | 38.0 | 1.0 min | 0.50 s | 1000 MB | 4,000 |")
    assert rows[6].startswith("| v2 | seq_bn | 49.8 | 48.8 | 0.0 | 20.5 |")

    tuned = {"v2_tuned": {"lora": run(51.2, 400, HasAns_f1=20.0, NoAns_f1=82.0, HasAns_forced_f1=35.0, threshold=1.23456,
                                      f1_default_threshold=40.0, oracle_f1=53.0)}}
    assert bench.tuned_table(tuned, 49.8).splitlines()[2] == "| lora | 1.235 | 51.2 | 40.0 | 49.8 | 53.0 | 20.0 / 82.0 |"


def test_readme_recommends_the_benchmarked_recipe(bench, repo_root):
    """The recommended adapter command in benchmarks/README.md ("Results") uses the numbers the benchmark measured."""
    readme = " ".join((repo_root / "benchmarks" / "README.md").read_text().split())
    r = bench.RECIPE
    recommended = (f'--train_adapter --adapter_config "{r["seq_bn_config"]}" --learning_rate 1e-3 '
                   f'--warmup_ratio {r["warmup_ratio"]} '
                   f'--per_device_train_batch_size {r["per_device_train_batch_size"]} '
                   f'--max_seq_length {r["max_seq_length"]} --doc_stride {r["doc_stride"]} --max_steps 400')
    assert r["seq_bn_lr"] == 1e-3
    assert recommended in readme
    assert r["dynamic_padding"] and "`--no_pad_to_max_length --group_by_length`" in readme
    assert r["lora_config"] in readme
