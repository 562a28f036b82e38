"""The README's one-command quickstart runs offline from the repository root and writes what it promises."""
import json

from conftest import run_script


def test_quickstart_trains_and_evaluates_an_adapter(repo_root, tmp_path):
    # --epochs 1: a smoke run (150 steps); the default 5 epochs are what the README's numbers come from.
    result = run_script("quickstart.py", "--output_dir", tmp_path, "--epochs", "1", check=True)
    assert "untrained head:   EM" in result.stdout
    assert "LoRA adapter:     EM" in result.stdout
    assert (tmp_path / "adapter" / "squad" / "pytorch_adapter.bin").is_file()
    adapter_config = json.loads((tmp_path / "adapter" / "squad" / "adapter_config.json").read_text())
    assert adapter_config["config"]["architecture"] == "lora"
    assert adapter_config["hidden_size"] == 64  # the quickstart's wider tiny model, not the 32-wide test default
    trainer_state = json.loads((tmp_path / "adapter" / "trainer_state.json").read_text())
    assert trainer_state["global_step"] == 150  # 4800 training questions / batch 32, one epoch
    eval_results = json.loads((tmp_path / "adapter" / "eval_results.json").read_text())
    assert {"eval_exact_match", "eval_f1"} <= set(eval_results)
    dev = json.loads((tmp_path / "dev.json").read_text())["data"]
    predictions = json.loads((tmp_path / "adapter" / "eval_predictions.json").read_text())
    assert len(predictions) == len(dev) == 200
    assert set(predictions) == {record["id"] for record in dev}
