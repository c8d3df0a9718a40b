"""Text engines behind two roles: `Generator` (complete, embed) and `Trainer` (adapters, fine-tune).

`gradient_async.engine.registry` knows every engine (name -> factory + availability);
the server, its CLI and the demo read it. Engines that batch in-process (the test and
local engines) are wrapped in `BatchedEngine`, a `DynamicBatcher` that groups concurrent
completions into one `generate` call; the vLLM engine schedules its own batches.
"""

from gradient_async.engine.base import (
    AdapterSpec,
    BaseModelSpec,
    BatchGenerator,
    Engine,
    EngineError,
    FineTuneOutcome,
    GenerationRequest,
    GenerationResult,
    Generator,
    Trainer,
    TrainingSample,
    TrainingSegment,
)
from gradient_async.engine.batched import BatchedEngine
from gradient_async.engine.batching import DynamicBatcher

__all__ = [
    "AdapterSpec",
    "BaseModelSpec",
    "BatchGenerator",
    "BatchedEngine",
    "DynamicBatcher",
    "Engine",
    "EngineError",
    "FineTuneOutcome",
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "Trainer",
    "TrainingSample",
    "TrainingSegment",
]
