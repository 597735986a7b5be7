"""Hyperparameter sweeps: W&B-format search spaces, their schema, the Optuna study, trials and reports."""
