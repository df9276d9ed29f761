"""Which targets become <CALL>: the strategy Callback every method is, the LaCy rule, the pure top-k selectors."""
