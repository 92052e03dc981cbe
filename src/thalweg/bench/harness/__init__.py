"""The bench's harness: how trials run — the Optuna runner, one trial in a fresh process, the
executors (local pool, Ray), recovery from crashed or hung trials, and the progress display."""
