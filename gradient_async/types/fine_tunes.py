"""Fine-tuning: `POST /models/{id}/fine-tune` (synchronous: samples in, tokens and loss out)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from gradient_async.types._base import GradientModel, RequestModel

__all__ = ["FineTuneBody", "FineTuneResult", "FineTuningParameters", "Sample", "StructuredInput"]


class StructuredInput(RequestModel):
    """One segment of a sample; `trainable=False` segments give context but add no loss."""

    value: Annotated[str, Field(min_length=1)]
    trainable: bool = True
    parse_special_tokens: bool = True


class FineTuningParameters(RequestModel):
    multiplier: Annotated[float, Field(gt=0)] | None = None


class Sample(RequestModel):
    """A training sample: a plain string, or a list of structured segments (multi-turn)."""

    inputs: Annotated[str, Field(min_length=1)] | Annotated[list[StructuredInput], Field(min_length=1)]
    # The official SDK always sends {"multiplier": ...}; the contract also allows null.
    fine_tuning_parameters: FineTuningParameters | None = Field(default_factory=FineTuningParameters)


class FineTuneBody(RequestModel):
    """Body of `POST /models/{id}/fine-tune`."""

    samples: Annotated[list[Sample], Field(min_length=1)]


class FineTuneResult(GradientModel):
    """Trainable tokens seen and the summed loss over them, for this call."""

    number_of_trainable_tokens: Annotated[int, Field(ge=0)]
    sum_loss: float

    @property
    def mean_loss(self) -> float | None:
        """sum_loss / number_of_trainable_tokens, or None when no token was trainable."""
        if self.number_of_trainable_tokens == 0:
            return None
        return self.sum_loss / self.number_of_trainable_tokens
