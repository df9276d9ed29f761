"""Evaluations run by main.py test: the closed world's KB metrics, real-text FActScore, zero-shot NLU, and what they share."""
