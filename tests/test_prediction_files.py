"""prediction_files.write_prediction_files: json's text (indent=4, the n-best lists on one line), each file replaced
atomically, only the names declared in script_utils (which --overwrite_output_dir removes); and none of the scripts'
files forks, hand-encodes JSON or switches the garbage collector off."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

import script_utils
from conftest import fill_the_disk
from prediction_files import write_prediction_files

ROOT = Path(__file__).resolve().parent.parent
PREDICTIONS = {"q1": "Normandy", "q2": "", "q3": "café 中文 😀", "q4": 'say "hi"\tback\\slash\n'}
NBEST = {"q1": [{"start_logit": 0.5, "end_logit": -0.25, "text": "é 中文 😀", "probability": 0.75},
                {"start_logit": 0.0, "end_logit": -1e-7, "text": "", "probability": 0.25}], "q2": []}
NULL_ODDS = {"q1": -0.5, "q2": 1e-300, "q3": 0.0}
FILES = {"predictions": PREDICTIONS, "nbest_predictions": NBEST, "null_odds": NULL_ODDS}


def leftovers(folder, names):
    return sorted(set(os.listdir(folder)) - set(names))


def test_the_files_are_json_dumps_with_indent_4_and_the_nbest_lists_on_one_line(tmp_path):
    write_prediction_files(str(tmp_path), "eval", FILES)
    assert (tmp_path / "eval_predictions.json").read_bytes() == (json.dumps(PREDICTIONS, indent=4) + "\n").encode()
    assert (tmp_path / "eval_null_odds.json").read_bytes() == (json.dumps(NULL_ODDS, indent=4) + "\n").encode()
    assert (tmp_path / "eval_nbest_predictions.json").read_bytes() == (json.dumps(NBEST) + "\n").encode()
    assert json.loads((tmp_path / "eval_nbest_predictions.json").read_text()) == NBEST
    write_prediction_files(str(tmp_path), None, {"predictions": PREDICTIONS})  # no prefix: predictions.json
    assert json.loads((tmp_path / "predictions.json").read_text()) == PREDICTIONS
    assert leftovers(tmp_path, ["eval_predictions.json", "eval_null_odds.json", "eval_nbest_predictions.json",
                                "predictions.json"]) == []


def test_an_existing_file_is_replaced(tmp_path):
    path = tmp_path / "predict_predictions.json"
    path.write_text("an older, longer file " * 100)
    write_prediction_files(str(tmp_path), "predict", {"predictions": PREDICTIONS})
    assert json.loads(path.read_text()) == PREDICTIONS
    assert leftovers(tmp_path, [path.name]) == []


def fail_replace(monkeypatch):
    def replace(src, dst):
        raise OSError(18, "Invalid cross-device link")
    monkeypatch.setattr(os, "replace", replace)


def interrupt_replace(monkeypatch):
    def replace(src, dst):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("crash", [fill_the_disk, fail_replace, interrupt_replace])
@pytest.mark.parametrize("existing", [True, False])
def test_a_crash_mid_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, crash, existing):
    """A full disk (or a failed rename, or Ctrl-C) while writing: the previous run's file stays as it was."""
    path = tmp_path / "eval_nbest_predictions.json"
    old = b'{"q1": [{"text": "the previous run"}]}\n'
    if existing:
        path.write_bytes(old)
    crash(monkeypatch)
    with pytest.raises((OSError, KeyboardInterrupt)):
        write_prediction_files(str(tmp_path), "eval", {"nbest_predictions": NBEST})
    monkeypatch.undo()
    if existing:
        assert path.read_bytes() == old
    else:
        assert not path.exists()
    assert leftovers(tmp_path, [path.name]) == []


def test_content_json_cannot_encode_touches_no_file(tmp_path):
    """Every text is made before the first file is written: a numpy float in the null odds changes nothing."""
    (tmp_path / "eval_predictions.json").write_bytes(b"{}\n")
    with pytest.raises(TypeError):
        write_prediction_files(str(tmp_path), "eval", {"predictions": PREDICTIONS, "null_odds": {"q": np.float32(1)}})
    assert (tmp_path / "eval_predictions.json").read_bytes() == b"{}\n"
    assert leftovers(tmp_path, ["eval_predictions.json"]) == []


def test_only_declared_names_and_an_existing_folder(tmp_path):
    with pytest.raises(ValueError, match=r"Add \['generations'\] to script_utils.PREDICTION_FILE_NAMES"):
        write_prediction_files(str(tmp_path), "eval", {"predictions": PREDICTIONS, "generations": {}})
    assert os.listdir(tmp_path) == []
    with pytest.raises(EnvironmentError, match="is not a directory"):
        write_prediction_files(str(tmp_path / "missing"), "eval", FILES)
    write_prediction_files(None, "eval", FILES)  # no output folder: nothing written
    write_prediction_files(str(tmp_path), "eval", {"predictions": PREDICTIONS, "null_odds": None})  # v1: no null odds
    assert os.listdir(tmp_path) == ["eval_predictions.json"]


def test_overwrite_output_dir_removes_every_declared_prediction_file():
    """--overwrite_output_dir's list derives from the declared names: every file the writer may write is on it."""
    assert set(script_utils.PREDICTION_FILES) == {f"{stage}_{name}.json" for stage in ("eval", "predict")
                                                  for name in script_utils.PREDICTION_FILE_NAMES}
    assert set(script_utils.PREDICTION_FILE_NAMES) >= {"predictions", "nbest_predictions", "null_odds"}


def test_no_fork_hand_made_json_encoder_or_gc_switch_in_the_scripts_and_helpers():
    sources = {path.name: path.read_text() for path in ROOT.glob("*.py")}
    assert "run_qa.py" in sources and "utils_qa.py" in sources
    for name, text in sources.items():
        for forbidden in ("os.fork", "gc.disable", "encode_basestring", "float.__repr__"):
            assert forbidden not in text, f"{forbidden} in {name}"
