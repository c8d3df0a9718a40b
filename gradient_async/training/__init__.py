"""Fine-tune runs over a dataset: epochs, batches under a byte/token cap, seeded shuffle, progress with the
running loss, per-step and per-epoch records, a crash-safe checkpoint, and evaluation after each epoch.

Example::

    from gradient_async.training import fine_tune_run

    run = await fine_tune_run(client, adapter.id, "train.jsonl", epochs=2, batch_size=8,
                              checkpoint="run.ckpt.jsonl", resume=True)
    print([e.mean_loss for e in run.epochs])
"""

from gradient_async.training.checkpoint import CheckpointError
from gradient_async.training.dataset import DEFAULT_MAX_REQUEST_BYTES, Step, TrainingSet, load_samples, plan_steps
from gradient_async.training.run import (
    EpochRecord,
    FineTuneRunResult,
    StepRecord,
    TrainingProgress,
    UncertainStepError,
    fine_tune_run,
)

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "CheckpointError",
    "EpochRecord",
    "FineTuneRunResult",
    "Step",
    "StepRecord",
    "TrainingProgress",
    "TrainingSet",
    "UncertainStepError",
    "fine_tune_run",
    "load_samples",
    "plan_steps",
]
