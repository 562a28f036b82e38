"""Tiny random-weight models with locally trained tokenizers (`toy.models`) and toy SQuAD-style and LM data
(`toy.data`), for the tests, quickstart.py and the benchmarks. Nothing here needs a network."""
