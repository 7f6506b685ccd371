"""Training: one stage's settings, batches, the trainer, its time budget and its checkpoints.

  config       TrainConfig (persisted with a version), TrainingError
  hardware     native bf16, precision choice, seeding, library versions
  batching     Encoded examples, tokenisation, length-bucketed batches, padding
  checkpoint   resumable state on disk (atomic), Progress, best weights
  budget       TimeBudget: calibration, fitting and re-planning in whole epochs
  distributed  rank-0 files, barriers, decisions agreed by every process
  trainer      Trainer (run / train_step / end_epoch ...), TrainResult, train_loop
"""

from .batching import Encoded, bucket_batches, collate, encode, load_tokenizer
from .budget import TimeBudget
from .checkpoint import Progress, read_progress
from .config import TrainConfig, TrainingError, settings_key
from .distributed import is_main_process, wait_for_everyone
from .hardware import choose_precision, cpu_has_bf16, seed_everything, versions
from .trainer import Trainer, TrainResult, train_loop

__all__ = ["Encoded", "Progress", "TimeBudget", "TrainConfig", "TrainResult", "Trainer", "TrainingError",
           "bucket_batches", "choose_precision", "collate", "cpu_has_bf16", "encode", "is_main_process",
           "load_tokenizer", "read_progress", "seed_everything", "settings_key", "train_loop", "versions", "wait_for_everyone"]
