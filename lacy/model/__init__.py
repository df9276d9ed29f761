"""The SLM in any causal-LM family with its <CALL> row, and the one loader of Hugging Face models."""
