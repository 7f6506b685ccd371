"""Named errors shared by the commands. Every error a user can fix derives from :class:`KronedgeError`
(defined in the torch-free ``runtime.errors`` and re-exported here); the CLI prints those as one line with
exit code 1 and shows a traceback for anything else (or, with ``kronedge --debug``, for these too).

Each stage keeps its own subclass beside its code (``PlanError`` in ``kronedge.planner``, ``TrainingError``
in ``kronedge.training.config``, ``ModelDirError`` in ``runtime.contract``, ...); this module holds only
the base and the error for command-line input that belongs to no stage.
"""

from runtime.errors import KronedgeError

__all__ = ["KronedgeError", "UsageError", "seed_problem"]


class UsageError(KronedgeError, ValueError):
    """Command-line options that cannot be parsed or do not fit together."""


def seed_problem(seed: int) -> str | None:
    """Why ``seed`` cannot seed numpy and torch (they take 0 to 2**32 - 1; torch also takes negatives, numpy does
    not), or None: checked before any model loads, so a bad seed never costs a teacher's load."""
    if not 0 <= seed < 2**32:
        return f"seed must be an integer from 0 to 2**32 - 1, got {seed}"
    return None
