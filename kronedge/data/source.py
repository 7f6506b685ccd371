"""Where a task's examples come from: a GLUE preset (``--task``) or a user's files (``--train``/``--validation``).

The one object a command builds from its options and hands to the pipeline, so compress, finetune
and eval never branch on the kind of task.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from .files import DataFiles
from .glue import get_task, load_task, task_file
from .spec import CLASSIFICATION, FILE_METRICS, REGRESSION, DataFileError, TaskData, TaskSpec


@dataclass(frozen=True)
class TaskSource:
    """A GLUE task name (with an optional GLUE ``data_dir``) or :class:`DataFiles`, exactly one.

    Example:
        >>> source = TaskSource.from_options(train="t.csv", validation="v.csv", label_column="queue")
        >>> spec = source.spec                                  # TaskSpec, GLUE or inferred
        >>> train, dev = source.load("train"), source.load("dev")
        >>> source.cache_key()                                  # "sst2" or "t-<12 hex of the data>"
    """

    task: str | None = None
    data_dir: str | None = None
    files: DataFiles | None = None

    def __post_init__(self):
        if (self.task is None) == (self.files is None):
            raise DataFileError("give a GLUE task (--task) or data files (--train/--validation), not both"
                                if self.task is not None else "give a GLUE task (--task) or data files (--train FILE)")
        if self.data_dir is not None:
            if self.files is not None:
                raise DataFileError("--data-dir is for GLUE tasks; data files are named by --train/--validation")
            object.__setattr__(self, "data_dir", os.fspath(self.data_dir))
        if self.task is not None:
            get_task(self.task)  # an unknown name fails now, not after the teacher loaded

    @classmethod
    def from_options(cls, task: str | None = None, data_dir=None, train=None, validation=None, format=None,
                     text_column=None, text_pair_column=None, label_column=None, problem_type=None,
                     name=None, metric=None) -> "TaskSource":
        """Build from a command's options (the file options need ``--train`` or ``--validation``)."""
        file_options = {"format": format, "text_column": text_column, "text_pair_column": text_pair_column,
                        "label_column": label_column, "problem_type": problem_type, "name": name, "metric": metric}
        if train is None and validation is None:
            given = [k for k, v in file_options.items() if v is not None]
            if given:
                raise DataFileError(f"--{given[0].replace('_', '-')} applies to data files; add --train FILE "
                                    "and/or --validation FILE")
            return cls(task=task, data_dir=data_dir)
        if task is not None:
            given = "--validation" if train is None else "--train" if validation is None else "--train/--validation"
            raise DataFileError(f"give --task {task} or {given} FILE, not both")
        return cls(data_dir=data_dir, files=DataFiles(train=train, validation=validation, **file_options))

    def with_validation(self, directory: str | os.PathLike) -> "TaskSource":
        """This source, or, for a training file given alone, the same data with a validation set held out of it and
        written under ``directory`` (:meth:`DataFiles.held_out`)."""
        if self.files is None or self.files.train is None or self.files.validation is not None:
            return self
        return replace(self, files=self.files.held_out(directory))

    @property
    def spec(self) -> TaskSpec:
        """The task's :class:`TaskSpec` (for files: one pass over the training file, then cached)."""
        return get_task(self.task) if self.task is not None else self.files.spec()

    @property
    def name(self) -> str:
        return get_task(self.task).name if self.task is not None else self.files.task_name

    def load(self, split: str = "train", spec: TaskSpec | None = None, skip_unknown: bool = False) -> TaskData:
        """``train`` or ``dev``/``validation`` as :class:`TaskData`.

        Args:
            spec: for files, the label set to map by (a trained model's); default :attr:`spec`.
            skip_unknown: for files, leave out the rows whose label ``spec`` lacks (counted in
                ``TaskData.skipped``) instead of failing.
        """
        if self.task is not None:
            glue_split = "dev" if split in ("dev", "validation", "eval") else split
            return load_task(self.task, glue_split, self.data_dir)
        return self.files.load(split, spec, skip_unknown)

    def check(self, splits=("train", "dev"), spec: TaskSpec | None = None) -> None:
        """Fail now on a missing or malformed file of ``splits`` (call it before loading a model)."""
        if self.task is not None:
            glue = get_task(self.task)
            for split in splits:
                task_file(glue, "dev" if split in ("dev", "validation", "eval") else split, self.data_dir)
            return
        self.files.check(spec, splits)

    def model_spec(self, labels, regression: bool = False, name: str | None = None,
                   primary_metric: str | None = None) -> TaskSpec:
        """The spec to score a trained model on these files by: its label names (index = logit column),
        to which the files' labels are mapped by name; a GLUE source gives its preset.

        Example:
            >>> source.model_spec(["billing", "bug", "praise"], name="tickets")   # from a manifest or config
        """
        if self.task is not None:
            return self.spec
        # A GLUE model's own metric (CoLA's matthews, MRPC's f1) is not one a file's spec is scored by: the user's
        # file is then scored, and reported, by the default.
        if primary_metric not in FILE_METRICS[REGRESSION if regression else CLASSIFICATION]:
            primary_metric = None
        split = "validation" if self.files.validation is not None else "train"
        pair = self.files.columns(split).pair is not None
        return TaskSpec.custom(name or self.name, () if regression else labels,
                               REGRESSION if regression else CLASSIFICATION, is_pair=pair,
                               data_file=Path(self.files.path(split)).name, primary_metric=primary_metric)

    def cache_key(self) -> str:
        """A short name for caches: the GLUE name, or the task name and a hash of the options and bytes."""
        if self.task is not None:
            return get_task(self.task).name
        return f"{self.files.task_name}-{self.files.fingerprint()[:12]}"

    def to_dict(self) -> dict:
        return {"task": self.task, "data_dir": self.data_dir,
                "files": self.files.to_dict() if self.files is not None else None}

    @classmethod
    def from_dict(cls, data: dict) -> "TaskSource":
        files = data.get("files")
        return cls(task=data.get("task"), data_dir=data.get("data_dir"),
                   files=DataFiles.from_dict(files) if files is not None else None)
