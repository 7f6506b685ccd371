"""Named errors shared by the commands. Every error a user can fix derives from :class:`KronedgeError`
(defined in the torch-free ``runtime.errors`` and re-exported here); the CLI prints those as one line with
exit code 1 and shows a traceback for anything else (or, with ``kronedge --debug``, for these too).

Each stage keeps its own subclass beside its code (``PlanError`` in ``kronedge.planner``, ``TrainingError``
in ``kronedge.training.config``, ``ModelDirError`` in ``runtime.contract``, ...); this module holds only
the base and the error for command-line input that belongs to no stage.
"""

from runtime.errors import KronedgeError

__all__ = ["KronedgeError", "UsageError"]


class UsageError(KronedgeError, ValueError):
    """Command-line options that cannot be parsed or do not fit together."""
