"""Text engines behind one protocol: the deterministic test engine and the real local model.

The local server (`gradient_async.server`) talks to an engine only through
`gradient_async.engine.base.Engine`, wrapped in a `DynamicBatcher` that groups
concurrent completions into one `Engine.generate` call.
"""

from gradient_async.engine.base import (
    AdapterSpec,
    BaseModelSpec,
    Engine,
    EngineError,
    FineTuneOutcome,
    GenerationRequest,
    GenerationResult,
    TrainingSample,
    TrainingSegment,
)
from gradient_async.engine.batching import DynamicBatcher

__all__ = [
    "AdapterSpec",
    "BaseModelSpec",
    "DynamicBatcher",
    "Engine",
    "EngineError",
    "FineTuneOutcome",
    "GenerationRequest",
    "GenerationResult",
    "TrainingSample",
    "TrainingSegment",
]
