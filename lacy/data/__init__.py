"""Corpus -> tokens -> packed blocks with per-token side arrays: corpora, tokenizers, the on-disk store, annotation, the DataModule."""
