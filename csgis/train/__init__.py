"""Training: a short loop (`loop.fit`) over a task (smoothing, or pre-training the segmenter).

Read in the order the data flows:
  tasks.py       what is trained: model, criterion, input, validation, best-metric key
  step.py        one optimisation step (autocast, GradScaler, DDP gradients, non-finite guard)
  state.py       seeds, RNG capture, the run's counters (exact resume)
  run_folder.py  the run folder: config.yaml, metrics.jsonl, train.log, archiving, resume
  loop.py        train(cfg): set-up (`Run`), then the loop (`fit`)
"""
from csgis.train.loop import TrainingInterrupted, fit, train
from csgis.train.run_folder import RunExistsError, read_metrics
from csgis.train.step import NonFiniteLossError, train_step
from csgis.train.tasks import SegmenterCheckpointError

__all__ = ["train", "fit", "train_step", "read_metrics", "TrainingInterrupted", "RunExistsError",
           "NonFiniteLossError", "SegmenterCheckpointError"]
