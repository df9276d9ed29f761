"""The cascade: the SLM writes, a partner writes where it calls."""
