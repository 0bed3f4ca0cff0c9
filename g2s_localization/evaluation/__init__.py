"""Evaluation: metrics, evaluation loops, bag replay evaluation and plots. Offline only."""
