"""The QA prediction files ({stage}_predictions.json, {stage}_nbest_predictions.json, {stage}_null_odds.json): the
text of `json.dumps(content, indent=4)` byte for byte, made fast, and written atomically.

With `indent`, json.dumps falls back to its pure-Python encoder, which takes over a second for the n-best file at
SQuAD-v2-dev scale. Here json's C encoder (json.dumps without indent) writes the content with control characters as
separators, and str.replace turns them into indent=4's layout. json escapes control characters inside strings, so a
marker can only be a separator. Content of any other shape goes to json.dumps(indent=4) itself.
"""
import atexit
import json
import logging
import os
from itertools import chain

from script_utils import write_text_atomically

logger = logging.getLogger(__name__)

_SCALARS = frozenset({str, int, float, bool, type(None)})
_ITEM, _KEY = ",\x00", ":\x01"  # the separators the C encoder writes in place of indent=4's
_NBEST_LAYOUT = (
    (_KEY + "[{", ": [\n        {\n            "),  # a list starts
    ("}" + _ITEM + "{", "\n        },\n        {\n            "),  # the next entry of a list
    ("}]" + _ITEM, "\n        }\n    ],\n    "),  # a list ends and the next id follows
    ("]" + _ITEM, "],\n    "),  # an empty list, and the next id follows
    (_ITEM, ",\n            "),  # the next key of an entry
    (_KEY, ": "),
)


def dumps_indent4(obj) -> str:
    """`json.dumps(obj, indent=4)`: fast for a dict of scalars (predictions, null odds) and a dict of lists of flat
    dicts (the n-best lists)."""
    if not isinstance(obj, dict) or not obj or not set(map(type, obj)) <= {str}:
        return json.dumps(obj, indent=4)
    kinds = set(map(type, obj.values()))
    if kinds <= _SCALARS:
        return "{\n    " + json.dumps(obj, separators=(",\n    ", ": "))[1:-1] + "\n}"
    if kinds != {list} or not _lists_of_flat_dicts(obj.values()):
        return json.dumps(obj, indent=4)
    text = json.dumps(obj, separators=(_ITEM, _KEY))
    # The end first: "}]}" may also stand inside a text, where the other patterns, which hold a marker, cannot.
    text = text[:-3] + "\n        }\n    ]\n}" if text.endswith("}]}") else text[:-1] + "\n}"
    for marker, layout in _NBEST_LAYOUT:
        text = text.replace(marker, layout)
    return "{\n    " + text[1:]


def _lists_of_flat_dicts(lists) -> bool:
    """Every item a non-empty dict with str keys and scalar values (an empty dict or a nested value has a layout of
    its own: left to json.dumps)."""
    entries = list(chain.from_iterable(lists))
    return (set(map(type, entries)) <= {dict} and all(entries)
            and set(map(type, chain.from_iterable(entries))) <= {str}
            and set(map(type, chain.from_iterable(map(dict.values, entries)))) <= _SCALARS)


def write_json(path: str, obj, durable: bool = False) -> None:
    """Write dumps_indent4(obj) and a newline atomically (obj may be a function that returns the content, called
    here): into a temporary file in the same folder, then renamed over path. A crash leaves the old file (or none), never part of the new one. Not forced to disk unless durable: for the
    n-best file (tens of MB) the fsync took as long as the encoding, and a rerun writes the files again."""
    text = dumps_indent4(obj() if callable(obj) else obj) + "\n"  # before touching the disk: content json cannot encode leaves no trace
    write_text_atomically(path, text, encoding="ascii", durable=durable)  # json escapes everything else


def write_prediction_files(output_dir, prefix, predictions, nbest, null_odds=None, background=False):
    """Write {prefix}_predictions.json, {prefix}_nbest_predictions.json and, for v2, {prefix}_null_odds.json. Each
    content is a dict, or a function that returns it, called only where the file is written.

    background=True writes them from a forked child process, off the caller's critical path (the metric, the next
    training steps or the prediction run go on meanwhile); wait_for_prediction_files() waits for it, and is called
    before the next write and at exit. Each file is renamed into place complete, so a reader never sees half of one.
    Where the platform cannot fork, the files are written in place."""
    if output_dir is None:
        return
    if not os.path.isdir(output_dir):
        raise EnvironmentError(f"{output_dir} is not a directory.")
    named = [("predictions", predictions), ("nbest_predictions", nbest)]
    if null_odds is not None:
        named.append(("null_odds", null_odds))
    files = [(os.path.join(output_dir, f"{name}.json" if prefix is None else f"{prefix}_{name}.json"), content)
             for name, content in named]
    for path, _ in files:
        logger.info(f"Saving {os.path.basename(path)[:-5].replace('_', ' ')} to {path}.")
    wait_for_prediction_files()  # an earlier write of the same files ends first
    if background and hasattr(os, "fork"):
        pid = os.fork()
        if pid == 0:  # the child: write, and leave without running the parent's exit handlers or flushing its buffers
            try:
                for path, content in files:
                    write_json(path, content)
            except BaseException as err:
                os.write(2, f"error: writing {path} failed: {err!r}\n".encode())
                os._exit(1)
            os._exit(0)
        _writers.append((pid, [path for path, _ in files]))
        return
    for path, content in files:
        write_json(path, content)


_writers = []  # (pid, paths) of background writes not yet waited for


def wait_for_prediction_files():
    """Wait until the prediction files written in the background are on disk; raise if writing them failed."""
    failed = []
    while _writers:
        pid, paths = _writers.pop()
        _, status = os.waitpid(pid, 0)
        if status != 0:
            failed += paths
    if failed:
        raise OSError(f"Writing the prediction files {', '.join(failed)} failed (see the error above).")


atexit.register(wait_for_prediction_files)
