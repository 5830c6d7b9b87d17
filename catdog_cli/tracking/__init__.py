"""Experiments people can find again: MLflow and TensorBoard logging, and the listing of past runs.

Rule: this package listens; it never steers. Trackers subscribe to what training already tells its caller (the
`Events` the CLI passes in, and the final record the command returns) and never appear in the training loop:
training does not import this package, it sits on the floor above it (just below cli). Each tracker imports its
library lazily, only when asked for (`--log mlflow`: the `.[mlflow]` extra), and a tracker that fails costs one
warning, never the run. `listing` (`catdog runs`) reads the run folders' own records (run.json, compare.json,
lr_find.json).
"""
