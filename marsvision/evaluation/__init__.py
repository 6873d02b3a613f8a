"""Evaluation on an official split (``evaluate``) and its plots (``report``, needs matplotlib)."""
