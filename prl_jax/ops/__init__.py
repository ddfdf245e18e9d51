"""Masked, pure array math shared by every method: step segmentation and returns."""
