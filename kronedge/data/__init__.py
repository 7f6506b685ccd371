"""GLUE tasks, their metrics, and unlabelled text for general distillation.

Example:
    >>> from kronedge.data import load_task, compute_metrics
    >>> ds = load_task("sst2", "dev")
    >>> compute_metrics("sst2", [1] * len(ds), ds.labels)["accuracy"]
"""

from .corpus import load_corpus
from .glue import TASKS, DataError, TaskData, TaskSpec, get_task, load_task, read_tsv
from .metrics import compute_metrics

__all__ = ["TASKS", "TaskSpec", "TaskData", "DataError", "get_task", "load_task", "read_tsv",
           "compute_metrics", "load_corpus"]
