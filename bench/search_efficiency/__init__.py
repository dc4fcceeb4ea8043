"""Search-efficiency benchmark: tunefleet against plain Optuna, random search and HF hyperparameter_search."""
