"""`torchrun --nproc_per_node 2` on CPU (gloo): a 2-process training run with --load_best_model_at_end
--metric_for_best_model f1 finishes, and its evaluation and prediction (post-processed and scored once, on
exactly one prediction per feature) equal those of one process on the same weights."""
import os
import subprocess
import sys

import pytest

from conftest import read_json
from toy import data as toy_data


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp_data")
    dev = toy_data.make_templated_qa(11, seed=22, version_2=True)
    return {
        "train": toy_data.write_qa_file(toy_data.make_templated_qa(24, seed=21, version_2=True), str(folder / "train.json"), "flat"),
        "dev": toy_data.write_qa_file(dev, str(folder / "dev.json"), "flat"),
        # The test file has no answers: predictions only.
        "test": toy_data.write_qa_file(
            [{k: v for k, v in r.items() if k != "answers"} for r in toy_data.make_templated_qa(7, seed=23)],
            str(folder / "test.jsonl"), "jsonl",
        ),
    }


def _quality(metrics):
    """The metric values, without timings."""
    return {k: v for k, v in metrics.items() if k != "epoch" and not k.endswith(("_runtime", "_per_second", "_preparation_time"))}


def test_two_process_training_and_evaluation_match_one_process(tiny_model, qa_data, tmp_path, repo_root):
    import run_qa

    model = tiny_model("bert")
    common = [
        "--model_name_or_path", model,
        "--validation_file", qa_data["dev"], "--test_file", qa_data["test"],
        "--do_eval", "--do_predict", "--version_2_with_negative",
        "--max_seq_length", "48", "--doc_stride", "16",
        # Features of different lengths (no padding), evaluated longest first and put back in order, gathered from
        # the processes padded to one length. One feature a batch: within a batch, a short feature's logits over
        # its padding tokens would take part in its n-best search, so its n-best list would depend on the batch it
        # lands in (as in the reference); --pad_to_max_length (the default) pads every feature alike instead.
        "--pad_to_max_length", "False", "--per_device_eval_batch_size", "1",
        # 11 examples give an odd number of features: the distributed sampler repeats one to fill the last step,
        # and that repeat must not reach post-processing.
        "--train_adapter", "--adapter_config", "seq_bn",
        "--report_to", "none", "--disable_tqdm", "true",
    ]
    ddp_dir = str(tmp_path / "ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)  # plain torchrun on a CPU machine: the scripts must set up gloo themselves
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(repo_root / "run_qa.py")]
        + common
        + [
            "--train_file", qa_data["train"], "--do_train", "--output_dir", ddp_dir,
            "--per_device_train_batch_size", "4", "--max_steps", "6", "--learning_rate", "5e-3",
            "--eval_strategy", "steps", "--eval_steps", "3", "--save_steps", "3",
            "--load_best_model_at_end", "--metric_for_best_model", "f1",
        ],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "distributed training: True" in result.stdout + result.stderr
    state = read_json(ddp_dir, "trainer_state.json")
    assert state["global_step"] == 6
    assert os.path.basename(state["best_model_checkpoint"]) in ("checkpoint-3", "checkpoint-6")
    ddp_eval = read_json(ddp_dir, "eval_results.json")
    assert "eval_f1" in ddp_eval and "eval_HasAns_f1" in ddp_eval

    # One process, evaluating the adapter (and head) the 2-process run ended with.
    single_dir = str(tmp_path / "single")
    run_qa.main(common + ["--output_dir", single_dir, "--load_adapter", os.path.join(ddp_dir, "squad")])

    assert _quality(read_json(single_dir, "eval_results.json")) == _quality(ddp_eval)
    for name in ("eval_predictions.json", "eval_nbest_predictions.json", "eval_null_odds.json",
                 "predict_predictions.json", "predict_nbest_predictions.json"):
        assert read_json(single_dir, name) == read_json(ddp_dir, name), name
    assert len(read_json(ddp_dir, "eval_predictions.json")) == 11
    assert len(read_json(ddp_dir, "predict_predictions.json")) == 7
