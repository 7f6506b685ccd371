"""Training: one stage's settings, batches, the trainer, its time budget and its checkpoints.

  config       TrainConfig (persisted with a version), TrainingError
  hardware     native bf16, precision choice, seeding, library versions
  batching     Encoded examples, tokenisation, length-bucketed batches, padding
  checkpoint   the run directory's files: resumable state (atomic), Progress, log, best weights, TrainResult
  budget       TimeBudget: calibration, fitting and re-planning in whole epochs
  distributed  rank-0 files, barriers, decisions agreed by every process
  report       Reporter: the progress bar, log lines and run log of a stage (rank 0)
  selection    EarlyStopping: the best evaluation by the primary metric, patience
  trainer      Trainer (run / train_step / end_epoch ...), train_loop
"""

import importlib

# name -> submodule. Loaded on first use, so that the configs (torch-free) import without torch and
# `kronedge --help` stays fast.
_EXPORTS = {
    "Encoded": "batching", "bucket_batches": "batching", "check_max_length": "batching", "collate": "batching",
    "encode": "batching", "load_tokenizer": "batching", "TimeBudget": "budget", "Progress": "checkpoint",
    "read_progress": "checkpoint", "TrainResult": "checkpoint", "TrainConfig": "config", "TrainingError": "config",
    "settings_key": "config", "is_main_process": "distributed", "wait_for_everyone": "distributed",
    "choose_precision": "hardware", "cpu_has_bf16": "hardware", "seed_everything": "hardware",
    "set_threads": "hardware", "versions": "hardware", "Trainer": "trainer", "train_loop": "trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
