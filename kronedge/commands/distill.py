"""CLI commands of this part of the toolchain; `register` adds them to the `kronedge` app."""


def register(app, friendly_errors) -> None:
    """Add this module's commands to ``app``; wrap each with ``friendly_errors``."""
