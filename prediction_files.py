"""The prediction files of the QA scripts, written with json: {stage}_{name}.json in the output folder, for the names
declared in script_utils.PREDICTION_FILE_NAMES (which --overwrite_output_dir removes)."""
import json
import logging
import os

from script_utils import PREDICTION_FILE_NAMES, write_text_atomically

logger = logging.getLogger(__name__)


def write_prediction_files(output_dir, prefix, files: dict):
    """Write each {name: content} of `files` to output_dir/{prefix}_{name}.json ({name}.json without a prefix), as
    `json.dumps(content, indent=4)`; the n-best lists, the large file, on one line (indent=4 would take longer than
    the post-processing itself at SQuAD scale). A None content is not written (the null odds of SQuAD v1.1). Each
    file is replaced atomically: never a half-written one."""
    if output_dir is None:
        return
    if not os.path.isdir(output_dir):
        raise EnvironmentError(f"{output_dir} is not a directory.")
    files = {name: content for name, content in files.items() if content is not None}
    undeclared = sorted(set(files) - set(PREDICTION_FILE_NAMES))
    if undeclared:
        raise ValueError(f"Add {undeclared} to script_utils.PREDICTION_FILE_NAMES (--overwrite_output_dir removes "
                         "those files).")
    # Every text is made before any file is touched: content json cannot encode changes nothing on disk.
    texts = {name: json.dumps(content, indent=None if name == "nbest_predictions" else 4) + "\n"
             for name, content in files.items()}
    for name, text in texts.items():
        path = os.path.join(output_dir, f"{name}.json" if prefix is None else f"{prefix}_{name}.json")
        logger.info(f"Saving {name.replace('_', ' ')} to {path}.")
        write_text_atomically(path, text, durable=False)  # no fsync: a lost file is made again by evaluating
