"""Character spans -> per-subword flags: how every annotator that finds text (a spaCy token, a judge's span, a KB
value) marks the subword tokens it covers."""
import numpy as np


def span_flags(n_chars: int, spans: list[tuple[int, int]], offsets: np.ndarray) -> np.ndarray:
    """Subwords whose characters overlap any flagged character span [start, end).

    Spans should cover non-whitespace characters only, so a leading-space offset does not pull a
    neighbouring subword in.
    """
    chars = np.zeros(n_chars + 1, dtype=np.int32)
    for a, b in spans:
        chars[a:b] = 1
    cum = np.concatenate([[0], np.cumsum(chars)])
    if len(offsets) == 0:
        return np.zeros(0, dtype=bool)
    return cum[offsets[:, 1]] - cum[offsets[:, 0]] > 0
