"""Per-token side arrays from text: the spaCy fact flags (C_spaCy) and character spans -> subword flags."""
