"""Synthetic SQuAD-like evaluation data at any scale: examples, features and start/end logits shaped like run_qa.py's,
for the post-processing equivalence tests (tests/test_postprocess_equivalence.py) and benchmarks/postprocess.py (at
SQuAD-v2-dev scale). Random words, no tokenizer and no model: the features are built directly as Arrow columns.
"""
import collections

import datasets
import numpy as np
import pyarrow as pa

_WORDS = None

# The options that shape each window's offsets (see make_case).
_WindowOptions = collections.namedtuple(
    "_WindowOptions", "width padded masked_rate short_rate zero_rate max_context"
)


def _vocabulary():
    global _WORDS
    if _WORDS is None:
        rng = np.random.default_rng(1234)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        _WORDS = ["".join(rng.choice(letters, size=int(n))) for n in rng.integers(1, 10, size=2000)]
    return _WORDS


def make_case(n_examples, seed=0, *, width=384, version_2=False, multi_window_rate=0.05, padded=True,
              tie_levels=None, masked_rate=0.0, short_rate=0.0, zero_rate=0.0, max_context=False,
              dtype=np.float32, min_context_tokens=12, peaked=False):
    """(examples, features, (start_logits, end_logits)) shaped like run_qa.py's SQuAD evaluation data.

    Each feature is [CLS] question [SEP] context-window [SEP] [pad ...] with offsets None outside the context window,
    and the input_ids/token_type_ids/attention_mask columns a real feature has. A fraction of the examples (long
    contexts) span 2-3 overlapping windows. Options: `padded=False` stops the offsets at the last [SEP] (dynamic
    padding) and pads the logits with -100 as the Trainer's evaluation loop does; `tie_levels` draws the logits from
    that many integer values (ties everywhere); `masked_rate` sets random context offsets to None and `short_rate`
    gives random context tokens an offset of length 1 and `zero_rate` the offset (0, 0); `max_context` adds a
    `token_is_max_context` column; single-window contexts have between `min_context_tokens` and a full window of
    tokens. `peaked` logits look like a trained model's: low outside the context, peaks at an answer start and end,
    so that most top indices fall in the context and there are many candidate spans (random logits mostly hit
    question and padding tokens).
    """
    # One generator for everything, drawn in a fixed order (examples and their windows, token ids, logits): the same
    # seed always gives the same case.
    rng = np.random.default_rng(seed)
    options = _WindowOptions(width, padded, masked_rate, short_rate, zero_rate, max_context)
    ids, contexts, windows = [], [], collections.defaultdict(list)
    for e in range(n_examples):
        qid = f"{seed:x}{e:07d}"
        ids.append(qid)
        contexts.append(_add_example(rng, qid, windows, options, multi_window_rate, min_context_tokens))

    length = np.array(windows["length"])
    features = _features_dataset(rng, windows, length, width)
    if max_context:
        features = features.add_column("token_is_max_context", windows["max_context"])
    examples = datasets.Dataset.from_dict(
        {
            "id": ids,
            "title": ["synthetic"] * n_examples,
            "context": contexts,
            "question": ["what is it?"] * n_examples,
            "answers": [{"text": [], "answer_start": []}] * n_examples,
        }
    )
    start, end = _logits(rng, (len(length), width), windows["context_span"], version_2, tie_levels, peaked, dtype)
    if not padded:
        beyond = np.arange(width)[None, :] >= length[:, None]
        start[beyond] = -100
        end[beyond] = -100
    return examples, features, (start, end)


def _add_example(rng, qid, windows, options, multi_window_rate, min_context_tokens):
    """Draw one example's question length and context, append its windows (features) to `windows`, return the
    context."""
    q_len = int(rng.integers(6, 21))
    window = options.width - q_len - 3
    step = max(1, window // 2)
    n_windows = 1 if rng.random() >= multi_window_rate else int(rng.integers(2, 4))
    if n_windows == 1:
        short = rng.random() < 0.1
        n_tokens = int(rng.integers(min(min_context_tokens, window), (min(12, window) if short else window) + 1))
    else:
        n_tokens = window + step * (n_windows - 2) + int(rng.integers(1, step + 1))
    vocab = _vocabulary()
    words = [vocab[i] for i in rng.integers(0, len(vocab), size=n_tokens)]
    lengths = np.array([len(w) for w in words])
    starts = np.concatenate([[0], np.cumsum(lengths[:-1] + 1)])
    first = 0
    while True:
        count = min(window, n_tokens - first)
        _add_window(rng, qid, windows, options, q_len, count, starts[first : first + count],
                    lengths[first : first + count])
        if first + count >= n_tokens:
            break
        first += step
    return " ".join(words)


def _add_window(rng, qid, windows, options, q_len, count, word_starts, word_lengths):
    """Append one feature: `count` context tokens after the question, their offsets and kinds (0: None, 1: an
    offset of length 1, 2: a full offset), and the feature's length and optional token_is_max_context dict."""
    width = options.width
    offsets = np.zeros((width, 2), dtype=np.int64)
    kind = np.zeros(width, dtype=np.int8)
    positions = np.arange(q_len + 2, q_len + 2 + count)
    offsets[positions, 0] = word_starts
    offsets[positions, 1] = word_starts + word_lengths
    kind[positions] = 2
    if options.masked_rate:
        kind[positions[rng.random(count) < options.masked_rate]] = 0
    if options.short_rate:
        kind[positions[(rng.random(count) < options.short_rate) & (kind[positions] == 2)]] = 1
    if options.zero_rate:
        offsets[positions[rng.random(count) < options.zero_rate]] = 0
    windows["example_id"].append(qid)
    windows["length"].append(width if options.padded else q_len + 3 + count)
    windows["context_span"].append((q_len + 2, count))
    windows["offsets"].append(offsets)
    windows["kind"].append(kind)
    if options.max_context:
        if rng.random() < 0.1:
            windows["max_context"].append(None)
        else:
            flags = rng.random(count) < 0.7
            windows["max_context"].append({str(int(p)): bool(f) for p, f in zip(positions, flags)})


def _features_dataset(rng, windows, length, width):
    """The features as a datasets.Dataset of Arrow columns (input_ids, token_type_ids, attention_mask, offset_mapping,
    example_id), each row cut to its feature's length. Built from flat arrays: a list of Python offsets per row
    would take most of the time at SQuAD scale."""
    offsets = np.stack(windows["offsets"]).reshape(-1, 2)
    kind = np.stack(windows["kind"]).reshape(-1)
    keep_token = (np.arange(width)[None, :] < length[:, None]).reshape(-1)
    offsets, kind = offsets[keep_token], kind[keep_token]
    values = offsets[np.arange(2)[None, :] < kind[:, None]]
    inner = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(kind)]), pa.int32()), pa.array(values, pa.int64()),
        mask=pa.array(kind == 0),
    )
    row_offsets = pa.array(np.concatenate([[0], np.cumsum(length)]), pa.int32())
    token_ids = rng.integers(5, 30000, size=int(length.sum()))
    columns = {
        "input_ids": pa.ListArray.from_arrays(row_offsets, pa.array(token_ids, pa.int32())),
        "token_type_ids": pa.ListArray.from_arrays(row_offsets, pa.array(token_ids % 2, pa.int8())),
        "attention_mask": pa.ListArray.from_arrays(row_offsets, pa.array(np.ones_like(token_ids), pa.int8())),
        "offset_mapping": pa.ListArray.from_arrays(row_offsets, inner),
        "example_id": pa.array(windows["example_id"], pa.string()),
    }
    return datasets.Dataset(datasets.table.InMemoryTable(pa.table(columns)))


def _logits(rng, shape, context_spans, version_2, tie_levels, peaked, dtype):
    """Start and end logits: `tie_levels` integer values, model-like peaks (`peaked`) or noise; in v2 some features
    prefer the null answer (position 0)."""
    if tie_levels:
        start = rng.integers(0, tie_levels, size=shape).astype(dtype)
        end = rng.integers(0, tie_levels, size=shape).astype(dtype)
    elif peaked:
        start, end = _peaked_logits(rng, shape, context_spans, version_2)
        start, end = start.astype(dtype), end.astype(dtype)
    else:
        start = rng.normal(size=shape).astype(dtype)
        end = rng.normal(size=shape).astype(dtype)
        if version_2:  # some windows prefer the null answer
            null = rng.random(shape[0]) < 0.3
            start[null, 0] += 3.0
            end[null, 0] += 3.0
    return start, end


def _peaked_logits(rng, shape, context_spans, version_2):
    """float64 logits like a trained model's: low outside the context, a peak at an answer start and end in it."""
    start, end = rng.normal(size=shape) - 8.0, rng.normal(size=shape) - 8.0
    for f, (first_position, count) in enumerate(context_spans):
        context = slice(first_position, first_position + count)
        start[f, context] += 8.0
        end[f, context] += 8.0
        answer_start = first_position + int(rng.integers(0, count))
        answer_end = min(answer_start + int(rng.integers(0, 6)), first_position + count - 1)
        for logits, position in ((start, answer_start), (end, answer_end)):
            logits[f, max(position - 2, 0) : position + 3] += 2.0
            logits[f, position] += 4.0
    if version_2:
        null = rng.random(shape[0]) < 0.4
        start[:, 0] += np.where(null, 20.0, 4.0)
        end[:, 0] += np.where(null, 20.0, 4.0)
    return start, end
