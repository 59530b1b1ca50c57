"""Classifier: feature messages in; per-chunk predictions and one verdict per song out."""
