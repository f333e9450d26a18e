"""The trainer's error type (shared by its modules)."""


class TrainingError(RuntimeError):
    """A training run cannot start or continue; the message says why."""
