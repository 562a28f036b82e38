"""The README's one-command quickstart runs offline from the repository root and writes what it promises."""
import json
import subprocess
import sys


def test_quickstart_trains_and_evaluates_an_adapter(repo_root, tmp_path):
    result = subprocess.run(
        [sys.executable, "quickstart.py", "--output_dir", str(tmp_path), "--epochs", "1"],
        cwd=repo_root, capture_output=True, text=True, check=True,
    )
    assert "seq_bn adapter:  EM" in result.stdout
    assert (tmp_path / "adapter" / "squad" / "pytorch_adapter.bin").is_file()
    eval_results = json.loads((tmp_path / "adapter" / "eval_results.json").read_text())
    assert {"eval_exact_match", "eval_f1"} <= set(eval_results)
    assert len(json.loads((tmp_path / "adapter" / "eval_predictions.json").read_text())) == 60
