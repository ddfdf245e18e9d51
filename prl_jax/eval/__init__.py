"""Evaluation metrics, the evaluation driver and reports."""
