"""The base class of every error a user can fix (a bad option, a missing or corrupt file, a setup step not
done). It lives here, import-free, so that the torch-free runtime and the training side share one base:
``kronedge.errors`` re-exports it.

The CLIs print these as one line and exit 1; any other exception is a bug and keeps its traceback.
Subclasses also derive from the builtin their callers catch (``ValueError``, ``RuntimeError``).
"""


class KronedgeError(Exception):
    """An error the user can fix; its message is one line that says what to do."""
