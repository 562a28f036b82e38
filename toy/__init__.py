"""What the tests, quickstart.py and the benchmarks build on, with no network: tiny random-weight models with locally
trained tokenizers (`toy.models`), toy SQuAD-style and LM data (`toy.data`), synthetic post-processing inputs at any
scale (`toy.synthetic_squad`), and the upstream algorithms kept verbatim as oracles (`toy.upstream`)."""
