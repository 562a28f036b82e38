"""Small, deterministic SQuAD-style QA data and LM text that the project writes itself.

Tests must not depend on downloaded datasets, so this module generates templated facts
("Alice lives in Paris.") with matching questions ("Where does Alice live?"). The vocabulary
is deliberately small so that a 2-layer random model can learn the pattern in a few hundred
steps, and so that the locally trained tokenizers in ``toy.models`` see every word.

Public API:
    make_templated_qa(n, seed=0, version_2=False, long_context=False, one_fact_per_kind=False) -> list[dict]
    write_qa_file(records, path, fmt) -> str          # fmt: flat | nested | jsonl | csv
    write_lm_text(path, n_lines=200, seed=0) -> str
    vocabulary_sentences() -> list[str]              # every template x every word, for tokenizer training
"""

import csv
import json
import os
import random

NAMES = (
    "Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack",
    "Karen", "Louis", "Maria", "Nathan", "Olivia", "Peter", "Quinn", "Rachel", "Simon", "Tina",
)
CITIES = (
    "Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Dublin", "Lisbon", "Oslo",
    "Boston", "Denver", "Chicago", "Toronto", "Sydney", "Tokyo", "Cairo", "Lima", "Seoul", "Delhi",
)
PLACES = (
    "bakery", "bank", "library", "hospital", "school", "museum", "factory", "garage", "market", "theatre",
    "airport", "hotel", "pharmacy", "studio", "farm", "harbour", "office", "restaurant", "station", "zoo",
)
COLOURS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "grey", "pink")
AGES = tuple(str(a) for a in range(18, 78, 3))  # 20 two-digit ages: digits appear in answers

# Fact kind -> (sentence template, question template, slot values). The answer is always the
# single "{v}" slot, so its character offset can be computed while the context is assembled.
FACTS = {
    "city": ("{name} lives in {v}.", "Where does {name} live?", CITIES),
    "work": ("{name} works at the {v}.", "Where does {name} work?", PLACES),
    "colour": ("{name} likes the colour {v}.", "What colour does {name} like?", COLOURS),
    "age": ("{name} is {v} years old.", "How old is {name}?", AGES),
    "car": ("{name} drives a {v} car.", "What colour is {name}'s car?", COLOURS),
}

# Filler sentences for long contexts. They never mention a person, so every question about a
# person still has exactly one supporting sentence, wherever it lands among the filler.
FILLER = (
    "The {colour} bus stops near the {place} every morning.",
    "In {city} the weather was mild for {age} days.",
    "A {colour} boat waited in the harbour of {city}.",
    "The old {place} in {city} opens at {age} past eight.",
    "Many people visit the {place} when the sky is {colour}.",
    "The road from {city} to {city2} is long and quiet.",
)

TITLES = ("Neighbours", "Town life", "Friends", "Workplaces", "Hobbies")


def _fact_sentence(kind, name, value):
    """Return (sentence, offset of the answer inside the sentence) for one fact."""
    template = FACTS[kind][0]
    sentence = template.format(name=name, v=value)
    return sentence, template.format(name=name, v="\0").index("\0")


def _filler_sentence(rng):
    """One person-free sentence drawn from FILLER."""
    return rng.choice(FILLER).format(
        colour=rng.choice(COLOURS), place=rng.choice(PLACES), city=rng.choice(CITIES),
        city2=rng.choice(CITIES), age=rng.choice(AGES),
    )


def _make_context(rng, long_context, one_fact_per_kind=False):
    """Build one context. Returns (context, facts) with facts[(name, kind)] = (answer, start)."""
    people = rng.sample(NAMES, rng.randint(3, 5))
    fact_sentences = []
    if one_fact_per_kind:  # one fact per person, each of a different kind
        for name, kind in zip(people, rng.sample(sorted(FACTS), len(people))):
            fact_sentences.append((name, kind, rng.choice(FACTS[kind][2])))
    else:
        for name in people:
            for kind in rng.sample(sorted(FACTS), 2):
                fact_sentences.append((name, kind, rng.choice(FACTS[kind][2])))
    rng.shuffle(fact_sentences)

    if long_context:
        # ~80 filler sentences (~700 words); facts are spread over the whole text so their
        # answers land in different windows once the context is split with a doc stride.
        pieces = [("filler", _filler_sentence(rng)) for _ in range(80)]
        for fact in fact_sentences:
            pieces.insert(rng.randint(0, len(pieces)), ("fact", fact))
    else:
        pieces = [("fact", fact) for fact in fact_sentences]

    context, facts = "", {}
    for kind_of_piece, piece in pieces:
        if context:
            context += " "
        if kind_of_piece == "filler":
            context += piece
            continue
        name, kind, value = piece
        sentence, offset = _fact_sentence(kind, name, value)
        facts[(name, kind)] = (value, len(context) + offset)
        context += sentence
    return context, facts


def make_templated_qa(n, seed=0, version_2=False, long_context=False, one_fact_per_kind=False):
    """Return n flattened HF SQuAD records built from templated facts.

    Each context gets up to 3 questions, so contexts repeat across records (as in SQuAD).
    With version_2, every third question asks about a person absent from the context and has
    no answer (empty text/answer_start lists). By default each of 3-5 people has two facts, so
    a context often holds several facts of the asked kind and only the name tells them apart;
    one_fact_per_kind gives each person one fact of a kind no one else in the context has.
    Deterministic for a given seed.
    """
    rng = random.Random(seed)
    records = []
    while len(records) < n:
        context, facts = _make_context(rng, long_context, one_fact_per_kind)
        title = rng.choice(TITLES)
        for name, kind in rng.sample(sorted(facts), min(3, len(facts))):
            if len(records) == n:
                break
            answers = {"text": [facts[(name, kind)][0]], "answer_start": [facts[(name, kind)][1]]}
            if version_2 and len(records) % 3 == 2:
                present = {person for person, _ in facts}
                name = rng.choice([person for person in NAMES if person not in present])
                answers = {"text": [], "answer_start": []}
            records.append({
                "id": f"toy{seed}-{len(records):05d}",
                "title": title,
                "context": context,
                "question": FACTS[kind][1].format(name=name),
                "answers": answers,
            })
    return records


def _nested(records):
    """Group flat records by title, then by context, into the original SQuAD layout."""
    articles = {}
    for rec in records:
        paragraphs = articles.setdefault(rec.get("title", ""), {})
        qas = paragraphs.setdefault(rec["context"], [])
        answers = rec["answers"]
        qas.append({
            "id": rec["id"],
            "question": rec["question"],
            "answers": [{"text": t, "answer_start": s} for t, s in zip(answers["text"], answers["answer_start"])],
            "is_impossible": len(answers["text"]) == 0,
        })
    return [
        {"title": title, "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()]}
        for title, paragraphs in articles.items()
    ]


def _version(records):
    """SQuAD version string: "v2.0" once any question is unanswerable, else "1.1"."""
    return "v2.0" if any(not r["answers"]["text"] for r in records) else "1.1"


def write_qa_file(records, path, fmt):
    """Write records as "flat" json, "nested" (original SQuAD) json, "jsonl" or "csv"; return path.

    csv stores the answers dict as JSON text in the "answers" column, since csv has no nesting.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        if fmt == "flat":
            json.dump({"version": _version(records), "data": records}, f, ensure_ascii=False)
        elif fmt == "nested":
            json.dump({"version": _version(records), "data": _nested(records)}, f, ensure_ascii=False)
        elif fmt == "jsonl":
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        elif fmt == "csv":
            writer = csv.DictWriter(f, fieldnames=["id", "title", "context", "question", "answers"])
            writer.writeheader()
            for rec in records:
                writer.writerow({**rec, "answers": json.dumps(rec["answers"], ensure_ascii=False)})
        else:
            raise ValueError(f"unknown fmt {fmt!r}; use flat, nested, jsonl or csv")
    return path


def _lm_sentence(rng):
    """A random fact or filler sentence for LM text."""
    if rng.random() < 0.5:
        kind = rng.choice(sorted(FACTS))
        return _fact_sentence(kind, rng.choice(NAMES), rng.choice(FACTS[kind][2]))[0]
    return _filler_sentence(rng)


def write_lm_text(path, n_lines=200, seed=0):
    """Write n_lines sentences, one per line, with a blank line after every document of 4-10 lines."""
    rng = random.Random(seed)
    lines, left_in_doc = [], rng.randint(4, 10)
    for i in range(n_lines):
        lines.append(_lm_sentence(rng))
        left_in_doc -= 1
        if left_in_doc == 0 and i < n_lines - 1:
            lines.append("")
            left_in_doc = rng.randint(4, 10)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def vocabulary_sentences():
    """Every fact/question template with every slot value, plus every filler template.

    Used to train the tiny tokenizers, so each word of the toy data becomes a whole token.
    """
    sentences = []
    for kind, (_, question, values) in sorted(FACTS.items()):
        for i, value in enumerate(values):
            name = NAMES[i % len(NAMES)]
            sentences.append(_fact_sentence(kind, name, value)[0])
            sentences.append(question.format(name=name))
    for i in range(len(NAMES)):
        for template in FILLER:
            sentences.append(template.format(
                colour=COLOURS[i % len(COLOURS)], place=PLACES[i], city=CITIES[i],
                city2=CITIES[-1 - i], age=AGES[i],
            ))
    sentences.extend(f"{title}." for title in TITLES)
    return sentences
