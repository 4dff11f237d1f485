"""Pieces of the retrieval evaluation (``scripts/eval_retrieval.py``): datasets, metrics, reference."""
