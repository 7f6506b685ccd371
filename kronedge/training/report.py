"""What a training run shows and records as it goes: the progress bar, its log lines and the JSONL run log.

Only the main process (rank 0) writes; the others keep quiet.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .checkpoint import RunLog

logger = logging.getLogger(__name__)


class Reporter:
    """The progress bar and log of one stage (``desc``), opened at the start of a run and closed at its end."""

    def __init__(self, desc: str, main: bool, local_main: bool):
        self.desc, self.main, self.local_main = desc, main, local_main
        self.bar = self.log = None

    def open(self, run_dir: Path, total: int, initial: int) -> None:
        from tqdm.auto import tqdm

        self.log = RunLog(run_dir, self.desc, enabled=self.main)
        self.bar = tqdm(total=total, initial=initial, desc=self.desc, mininterval=2.0, dynamic_ncols=True,
                        disable=not self.local_main)

    def say(self, message: str) -> None:
        """A log line of its own (not glued to the progress bar), from rank 0 only."""
        if not self.main:
            return
        if self.bar is not None:
            self.bar.clear()
        logger.info(f"[{self.desc}] {message}")
        if self.bar is not None:
            self.bar.refresh()

    def write(self, row: dict) -> None:
        """One row of the run log (``log.jsonl``)."""
        self.log.write(row)

    def advance(self) -> None:
        self.bar.update(1)

    def set_total(self, total: int) -> None:
        self.bar.total = total

    def postfix(self, **values) -> None:
        self.bar.set_postfix(**values)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.log is not None:
            self.log.close()
