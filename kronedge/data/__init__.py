"""Labelled tasks (GLUE presets or a user's own CSV/TSV/JSON Lines files), their metrics, and
unlabelled text for general distillation.

Both kinds of task give the same :class:`TaskData` (texts, labels, spec), so the pipeline has no
special case; pass the :class:`TaskSpec` wherever a GLUE task name is accepted.

Example:
    >>> from kronedge.data import DataFiles, compute_metrics, load_task
    >>> ds = load_task("sst2", "dev")
    >>> compute_metrics("sst2", [1] * len(ds), ds.labels)["accuracy"]
    >>> data = DataFiles(train="reviews.csv", validation="reviews-dev.csv")
    >>> dev = data.load("validation")
    >>> compute_metrics(dev.spec, [0] * len(dev), dev.labels)   # {'accuracy': ..., 'f1_macro': ...}
    >>> source = TaskSource.from_options(task=None, train="reviews.csv")   # what a command builds
"""

from .corpus import load_corpus
from .files import MOVIE_REVIEWS, Columns, DataFiles, check_labels
from .glue import TASKS, get_task, load_task, read_tsv, task_file
from .metrics import METRICS, class_report, classification_report, compute_metrics, confusions
from .source import TaskSource
from .spec import DataError, DataFileError, TaskData, TaskSpec, UnknownLabelsError
from .tables import FORMATS, Table, detect_format

__all__ = ["TASKS", "TaskSpec", "TaskData", "DataError", "DataFileError", "UnknownLabelsError", "get_task", "load_task", "read_tsv",
           "task_file", "compute_metrics", "class_report", "classification_report", "confusions", "METRICS",
           "load_corpus", "DataFiles", "Columns", "check_labels", "MOVIE_REVIEWS",
           "Table", "FORMATS", "detect_format", "TaskSource"]
