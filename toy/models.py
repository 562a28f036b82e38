"""Tiny random-weight Hugging Face models with locally trained fast tokenizers.

The machine running the tests has no internet, so nothing can come from the HF hub. Instead
this module builds a small tokenizer with the ``tokenizers`` library from a built-in corpus
(see the note above the tokenizer section for how each kind is made) and saves a 2-layer,
hidden-32 model next to it, in a folder that ``from_pretrained`` can load.

Usage:
    from toy import models as tiny_models
    path = tiny_models.build_tiny_model("bert", "/tmp/tiny-bert", seed=0)

    python -m toy.models bert /tmp/tiny-bert

Each arch saves the class that carries its pretraining head (BertForMaskedLM,
T5ForConditionalGeneration, ...), so AutoModelForQuestionAnswering / MaskedLM / CausalLM /
Seq2SeqLM can all load the folder; missing heads are randomly initialised.
"""

import collections
import itertools
import math
import os
import re
import sys

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.implementations import ByteLevelBPETokenizer

from toy import data as toy_data

ARCHS = ("bert", "roberta", "distilbert", "t5", "bart", "gpt2", "xlnet", "xlm")

VOCAB_SIZE = 1500
MODEL_MAX_LENGTH = 512

# Every character class users may feed. WordPiece/Unigram vocabs hold each one as a piece, so
# none becomes [UNK]/<unk>; byte-level BPE covers all bytes anyway.
ALPHABET = (
    "abcdefghijklmnopqrstuvwxyz"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "0123456789"
    ".,;:'\"()-?!%$&/[]{}#@*+=<>_~`|\\^"
)

# Words for the general-English half of the corpus (the other half is toy_data's vocabulary).
_SUBJECTS = ("The team", "A student", "Our company", "The city council", "Every player", "The old man",
             "My sister", "The report", "This book", "The new school")
_VERBS = ("said", "found", "wrote", "built", "opened", "announced", "reported", "closed", "made", "sold")
_OBJECTS = ("a new plan", "the first prize", "two houses", "their best year", "the small shop",
            "an open letter", "the main road", "three songs", "a long story", "the river bridge")
_TAILS = ("in {year}", "on Monday", "after the war", "during the summer", "before noon",
          "at {hour}:{minute}", "for {n} years", "with {n}% more", "for ${n}.{minute}", "near {city}")
_PATTERNS = (
    "{s} {v} {o} {t}.",
    "{s} {v} {o}, and it was {n}% better than before.",
    "\"Why?\" asked {name}; {s} {v} {o} {t}!",
    "{s} {v} {o} (about {n} of them) {t}.",
    "It's {name}'s idea: {s} {v} {o} - {t}.",
    "Was it true that {s} {v} {o} {t}?",
    "{name} & {name2} {v} {o} on {day}/{month}/{year}.",
    "'{o}' is what {s} {v} {t}.",
)
# Plain common words, so real English text (SQuAD, WikiText) is not all single characters.
_ADJECTIVES = ("large small early late public local national general political social important major "
               "different possible similar several local final second third main former whole strong "
               "short young high low free full").split()
_NOUNS = ("government system group country world state family music church war game water history "
          "student village river island army song album film season party league station company "
          "government area number part series name year people time work life day side region power "
          "century population language university record event team death building period").split()
_PAST_VERBS = ("became began included received described released joined played moved used known "
               "called followed returned produced created served developed remained continued held "
               "began won lost named placed").split()
_ADVERBS = ("also only however often later still never again there then").split()
_PLAIN = ("{The} {adj} {noun} {verb} the {adj2} {noun2} of the {noun3}.",
          "{The} {noun} {adv} {verb} {n} {noun2}s between {year} and {year2}.",
          "After the {noun}, which was {adj}, they {verb} a {noun2} with their {noun3}.")


def _punctuation_sentences():
    """Short sentences with digits and the usual punctuation (80 of them)."""
    sentences = []
    for i, (s, p) in enumerate(itertools.product(range(len(_SUBJECTS)), range(len(_PATTERNS)))):
        fill = dict(
            s=_SUBJECTS[s], v=_VERBS[i % len(_VERBS)], o=_OBJECTS[(i * 3) % len(_OBJECTS)],
            name=toy_data.NAMES[i % 20], name2=toy_data.NAMES[(i * 7) % 20], city=toy_data.CITIES[i % 20],
            n=(i * 37) % 100, hour=i % 24, minute=f"{(i * 7) % 60:02d}", year=1900 + (i * 13) % 125,
            day=1 + i % 28, month=1 + i % 12,
        )
        fill["t"] = _TAILS[(i * 7) % len(_TAILS)].format(**fill)
        sentences.append(_PATTERNS[p].format(**fill))
    return sentences


def _plain_sentences(n_sentences=240):
    """Plain sentences that cycle through the common-word lists with coprime strides."""
    def pick(words, i, stride):
        return words[(i * stride) % len(words)]

    sentences = []
    for i in range(n_sentences):
        sentences.append(_PLAIN[i % len(_PLAIN)].format(
            The=("The", "A", "This", "Each")[i % 4], adj=pick(_ADJECTIVES, i, 7), adj2=pick(_ADJECTIVES, i, 11),
            noun=pick(_NOUNS, i, 5), noun2=pick(_NOUNS, i, 13), noun3=pick(_NOUNS, i, 17),
            verb=pick(_PAST_VERBS, i, 3), adv=pick(_ADVERBS, i, 1), n=2 + i % 9,
            year=1800 + (i * 29) % 200, year2=1990 + i % 30,
        ))
    return sentences


def corpus():
    """The tokenizer training corpus (~600 lines): toy_data's vocabulary plus general English."""
    return toy_data.vocabulary_sentences() + _punctuation_sentences() + _plain_sentences()


# ----------------------------------------------------------------------------- tokenizers
#
# Byte-level BPE is trained with the tokenizers BPE trainer, which is deterministic. The
# WordPiece and Unigram trainers are not: WordPiece numbers its "##c" pieces in hash-map order
# (so merge ties, and even the vocab size, change from run to run), and the Unigram trainer's
# EM scores vary too; it also never keeps a frequent word such as "does" as a piece on a small
# corpus, because it seeds pieces from substrings shared by *distinct* words. Those two vocabs
# are therefore counted directly from the corpus: every character, every word seen twice, then
# the most frequent 2-3 character pieces until VOCAB_SIZE. Same corpus, same vocab, every time.


LETTERS_DIGITS = "".join(c for c in ALPHABET if c.isalnum())
PUNCTUATION = "".join(c for c in ALPHABET if not c.isalnum())


def _corpus_counts(lowercase):
    """Corpus counts of words (letter/digit runs, punctuation split off) and of punctuation marks."""
    text = "\n".join(corpus())
    text = text.lower() if lowercase else text
    return collections.Counter(re.findall(r"[A-Za-z0-9]+", text)), collections.Counter(
        c for c in text if c in PUNCTUATION)


def _frequency_pieces(words, alphabet, start, inner, budget):
    """Return [(piece, count)]: every alphabet character, every word seen twice, then n-grams.

    start/inner mark a piece at the start of a word ("" or "▁") or inside it ("##" or "").
    2-3 character n-grams fill the vocab up to budget, most frequent first; ties are broken
    alphabetically so the result is deterministic.
    """
    keep, ngrams = collections.Counter(), collections.Counter()
    for char in alphabet:
        keep[start + char] += 1  # every character is a piece, even if the corpus lacks it
        keep[inner + char] += 1
    for word, n in words.items():
        for i in range(len(word)):
            prefix = start if i == 0 else inner
            keep[prefix + word[i]] += n
            for size in (2, 3):
                if i + size <= len(word):
                    ngrams[prefix + word[i:i + size]] += n
    for word, n in words.items():
        if n >= 2:
            keep[start + word] = max(keep[start + word], ngrams[start + word], n)
    chosen = sorted(keep.items(), key=lambda p: (-p[1], p[0]))
    rest = sorted(((p, n) for p, n in ngrams.items() if p not in keep), key=lambda p: (-p[1], p[0]))
    return chosen + rest[:max(0, budget - len(chosen))]


def _wordpiece(out_dir, tokenizer_cls):
    """Uncased WordPiece vocab.txt (like bert-base-uncased); [PAD] gets id 0 as in the real vocab."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words, _ = _corpus_counts(lowercase=True)
    budget = VOCAB_SIZE - len(specials) - len(PUNCTUATION)
    pieces = _frequency_pieces(words, sorted(set(LETTERS_DIGITS.lower())), "", "##", budget)
    vocab = specials + list(PUNCTUATION) + [p for p, _ in pieces]
    path = os.path.join(out_dir, "vocab.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    return tokenizer_cls(vocab_file=path, do_lower_case=True, model_max_length=MODEL_MAX_LENGTH)


def _byte_bpe(out_dir, special_tokens):
    """Byte-level BPE (roberta/bart/gpt2 style); writes vocab.json + merges.txt, returns their paths."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(), vocab_size=VOCAB_SIZE, min_frequency=2, show_progress=False,
                            special_tokens=special_tokens)
    return bpe.save_model(out_dir)


def _unigram(special_tokens, unk_token):
    """SentencePiece-style Unigram tokenizer (Metaspace, as in T5/XLNet), scored by log frequency.

    The sentencepiece package is not installed, so there is no spiece.model: the fast
    tokenizer is saved as tokenizer.json only (no slow tokenizer can be made from it).
    Words are pieces without their punctuation, so "Paris." is "▁Paris" + "." as in real T5.
    """
    words, punctuation = _corpus_counts(lowercase=False)
    budget = VOCAB_SIZE - len(special_tokens) - len(PUNCTUATION) - 1
    pieces = _frequency_pieces(words, LETTERS_DIGITS, "▁", "", budget)
    pieces += [(c, punctuation[c] + 1) for c in PUNCTUATION]
    pieces.append(("▁", sum(punctuation.values())))  # the lone "▁" before punctuation: "▁(" is "▁" + "("
    total = sum(n for _, n in pieces)
    vocab = [(t, 0.0) for t in special_tokens] + [(p, math.log(n / total)) for p, n in pieces]
    tok = Tokenizer(models.Unigram(vocab, unk_id=special_tokens.index(unk_token), byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


def make_tokenizer(arch, out_dir):
    """Build and save the fast tokenizer for arch into out_dir; return the loaded tokenizer."""
    import transformers as tf

    if arch in ("bert", "distilbert"):
        cls = tf.BertTokenizerFast if arch == "bert" else tf.DistilBertTokenizerFast
        tokenizer = _wordpiece(out_dir, cls)
    elif arch in ("roberta", "bart"):
        vocab, merges = _byte_bpe(out_dir, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        cls = tf.RobertaTokenizerFast if arch == "roberta" else tf.BartTokenizerFast
        tokenizer = cls(vocab_file=vocab, merges_file=merges, model_max_length=MODEL_MAX_LENGTH)
    elif arch == "gpt2":
        vocab, merges = _byte_bpe(out_dir, ["<|endoftext|>"])
        tokenizer = tf.GPT2TokenizerFast(vocab_file=vocab, merges_file=merges, model_max_length=MODEL_MAX_LENGTH)
    elif arch == "t5":
        tok = _unigram(["<pad>", "</s>", "<unk>"], "<unk>")
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
        tokenizer = tf.T5TokenizerFast(tokenizer_object=tok, extra_ids=0, model_max_length=MODEL_MAX_LENGTH)
    elif arch == "xlnet":
        specials = ["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>"]
        tok = _unigram(specials, "<unk>")
        tok.post_processor = processors.TemplateProcessing(
            single="$A:0 <sep>:0 <cls>:2", pair="$A:0 <sep>:0 $B:1 <sep>:1 <cls>:2",
            special_tokens=[("<sep>", 4), ("<cls>", 3)])
        tokenizer = tf.XLNetTokenizerFast(tokenizer_object=tok, model_max_length=MODEL_MAX_LENGTH)
    elif arch == "xlm":
        tokenizer = _xlm_tokenizer()
    else:
        raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def _xlm_tokenizer():
    """XLM has no fast tokenizer class, so save a generic PreTrainedTokenizerFast.

    Byte-level BPE (XLM's own is a lowercased "</w>" BPE, but that trainer is not
    deterministic), with XLM's special-token layout and "<s> X </s>" framing.
    """
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(), vocab_size=VOCAB_SIZE, min_frequency=2, show_progress=False,
                            special_tokens=specials)
    tok = bpe._tokenizer
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=True),
        processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1",
                                      special_tokens=[("<s>", 0), ("</s>", 1)]),
    ])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="</s>",
        pad_token="<pad>", unk_token="<unk>", mask_token="<special1>", model_max_length=MODEL_MAX_LENGTH)


# ----------------------------------------------------------------------------- models

HIDDEN, LAYERS, HEADS, FFN, POSITIONS = 32, 2, 2, 64, 512


def make_model(arch, tokenizer, hidden=HIDDEN, layers=LAYERS, heads=HEADS, ffn=FFN):
    """Build the randomly initialised model for arch; special-token ids come from the tokenizer.

    The size arguments default to the module constants (2 layers x 32 hidden); tests pin numbers
    from those defaults, so pass other sizes explicitly (quickstart.py builds a wider model).
    """
    import transformers as tf

    vocab, tok = len(tokenizer), tokenizer
    h, n, pos = hidden, layers, POSITIONS
    if arch == "bert":
        config = tf.BertConfig(vocab_size=vocab, hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
                               intermediate_size=ffn, max_position_embeddings=pos, pad_token_id=tok.pad_token_id)
        return tf.BertForMaskedLM(config)
    if arch == "roberta":
        # RoBERTa positions start at pad_token_id + 1, so 512 tokens need 514 rows (as in roberta-base).
        config = tf.RobertaConfig(vocab_size=vocab, hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
                                  intermediate_size=ffn, max_position_embeddings=pos + 2, type_vocab_size=1,
                                  pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id)
        return tf.RobertaForMaskedLM(config)
    if arch == "distilbert":
        config = tf.DistilBertConfig(vocab_size=vocab, dim=h, n_layers=n, n_heads=heads, hidden_dim=ffn,
                                     max_position_embeddings=pos, pad_token_id=tok.pad_token_id)
        return tf.DistilBertForMaskedLM(config)
    if arch == "t5":
        config = tf.T5Config(vocab_size=vocab, d_model=h, d_kv=h // heads, d_ff=ffn, num_layers=n,
                             num_decoder_layers=n, num_heads=heads, n_positions=pos,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             decoder_start_token_id=tok.pad_token_id)
        return tf.T5ForConditionalGeneration(config)
    if arch == "bart":
        config = tf.BartConfig(vocab_size=vocab, d_model=h, encoder_layers=n, decoder_layers=n,
                               encoder_attention_heads=heads, decoder_attention_heads=heads,
                               encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, max_position_embeddings=pos,
                               pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.eos_token_id,
                               forced_eos_token_id=tok.eos_token_id)
        return tf.BartForConditionalGeneration(config)
    if arch == "gpt2":
        config = tf.GPT2Config(vocab_size=vocab, n_embd=h, n_layer=n, n_head=heads, n_inner=ffn, n_positions=pos,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        return tf.GPT2LMHeadModel(config)
    if arch == "xlnet":
        config = tf.XLNetConfig(vocab_size=vocab, d_model=h, n_layer=n, n_head=heads, d_inner=ffn, mem_len=None,
                                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                eos_token_id=tok.eos_token_id)
        return tf.XLNetLMHeadModel(config)
    if arch == "xlm":
        ids = dict(pad_index=tok.pad_token_id, eos_index=tok.eos_token_id, bos_index=tok.bos_token_id,
                   unk_index=tok.unk_token_id, mask_index=tok.mask_token_id)
        config = tf.XLMConfig(vocab_size=vocab, emb_dim=h, n_layers=n, n_heads=heads, max_position_embeddings=pos,
                              pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, **ids)
        return tf.XLMWithLMHeadModel(config)
    raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")


def build_tiny_model(arch, out_dir, seed=0, hidden=HIDDEN, layers=LAYERS, heads=HEADS, ffn=FFN):
    """Write config + safetensors weights + fast tokenizer files to out_dir; return out_dir.

    Deterministic: the same seed gives identical weights and tokenizer files. hidden/layers/heads/ffn
    are optional sizes (default: the module constants); hidden must be divisible by heads.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")
    os.makedirs(out_dir, exist_ok=True)
    tokenizer = make_tokenizer(arch, out_dir)
    torch.manual_seed(seed)
    model = make_model(arch, tokenizer, hidden=hidden, layers=layers, heads=heads, ffn=ffn)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def main(argv):
    """CLI: python -m toy.models ARCH OUT_DIR [SEED]."""
    if len(argv) not in (2, 3) or argv[0] not in ARCHS:
        print(f"usage: python -m toy.models {{{','.join(ARCHS)}}} OUT_DIR [SEED]", file=sys.stderr)
        return 2
    print(build_tiny_model(argv[0], argv[1], int(argv[2]) if len(argv) == 3 else 0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
