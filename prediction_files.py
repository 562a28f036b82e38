"""The QA prediction files ({stage}_predictions.json, _nbest_predictions.json, _null_odds.json), written atomically:
the text of `json.dumps(content, indent=4)` byte for byte, fast (indent makes json.dumps use its slow Python
encoder; here the C encoder writes control characters as separators, which str.replace turns into indent=4's layout)."""
import atexit
import json
import logging
import os
from itertools import chain

from script_utils import write_text_atomically

logger = logging.getLogger(__name__)
_writers = []  # (pid, paths) of background writes not yet waited for
_SCALARS = frozenset({str, int, float, bool, type(None)})
_ITEM, _KEY = ",\x00", ":\x01"  # C-encoder separators, never inside a string: json escapes control characters
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
    """Every item a non-empty dict with str keys and scalar values (other items have layouts of their own)."""
    entries = list(chain.from_iterable(lists))
    return (set(map(type, entries)) <= {dict} and all(entries)
            and set(map(type, chain.from_iterable(entries))) <= {str}
            and set(map(type, chain.from_iterable(map(dict.values, entries)))) <= _SCALARS)


def write_json(path: str, obj, durable: bool = False) -> None:
    """Write dumps_indent4(obj) (obj may be a function that returns the content, or its text), and a newline,
    atomically; fsync only when durable."""
    content = obj() if callable(obj) else obj
    text = (content if isinstance(content, str) else dumps_indent4(content)) + "\n"  # json errors: before the disk
    write_text_atomically(path, text, encoding="ascii", durable=durable)  # json escapes everything else


def write_prediction_files(output_dir, prefix, predictions, nbest, null_odds=None, background=False):
    """Write {prefix}_predictions.json, {prefix}_nbest_predictions.json and, for v2, {prefix}_null_odds.json (contents:
    dicts or functions returning them); background=True: from a forked child, off the caller's critical path."""
    if output_dir is None:
        return
    if not os.path.isdir(output_dir):
        raise EnvironmentError(f"{output_dir} is not a directory.")
    names = ["predictions", "nbest_predictions"] + (["null_odds"] if null_odds is not None else [])
    paths = [os.path.join(output_dir, f"{name}.json" if prefix is None else f"{prefix}_{name}.json") for name in names]
    for path in paths:
        logger.info(f"Saving {os.path.basename(path)[:-5].replace('_', ' ')} to {path}.")
    wait_for_prediction_files()  # an earlier write of the same files ends first
    pid = os.fork() if background and hasattr(os, "fork") else None  # None: written in this process
    if pid:
        _writers.append((pid, paths))
        return
    try:
        for path, content in zip(paths, [predictions, nbest, null_odds]):
            write_json(path, content)
    except BaseException as err:
        if pid is None:
            raise
        os.write(2, f"error: writing {path} failed: {err!r}\n".encode())
        os._exit(1)
    if pid == 0:  # the child leaves without running the parent's exit handlers or flushing its buffers
        os._exit(0)


@atexit.register
def wait_for_prediction_files():
    """Wait until the prediction files written in the background are on disk; raise if writing them failed."""
    failed = []
    while _writers:
        pid, paths = _writers.pop()
        if os.waitpid(pid, 0)[1] != 0:
            failed += paths
    if failed:
        raise OSError(f"Writing the prediction files {', '.join(failed)} failed (see the error above).")
