"""`client.fine_tunes`: `POST /models/{id}/fine-tune` (synchronous training on the given samples)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gradient_async._client import RequestOptions
from gradient_async._config import NOT_GIVEN, NotGiven, TimeoutTypes
from gradient_async._errors import ValidationError
from gradient_async.resources._base import AsyncResource, path_id
from gradient_async.types._base import validate_input
from gradient_async.types.fine_tunes import FineTuneBody, FineTuneResult, Sample

__all__ = ["AsyncFineTunes", "normalize_samples"]


def _sample_dict(sample: str | Sample | Mapping[str, Any], multiplier: float | None) -> dict[str, Any]:
    if isinstance(sample, Sample):
        data: dict[str, Any] = sample.model_dump()
    elif isinstance(sample, str):
        data = {"inputs": sample}
    elif isinstance(sample, Mapping):
        data = dict(sample)
        # The official SDK's shape: {"inputs": ..., "multiplier": ...}
        if "multiplier" in data:
            data["fine_tuning_parameters"] = {"multiplier": data.pop("multiplier")}
    else:
        raise ValidationError(f"a sample must be a string, a dict or a Sample, got {type(sample).__name__}")
    params = data.get("fine_tuning_parameters") or data.get("fineTuningParameters")
    if multiplier is not None and (params is None or params.get("multiplier") is None):
        data.pop("fineTuningParameters", None)
        data["fine_tuning_parameters"] = {"multiplier": multiplier}
    return data


def normalize_samples(
    samples: Sequence[str | Sample | Mapping[str, Any]], multiplier: float | None = None
) -> dict[str, Any]:
    """The wire body for `samples` (strings, dicts in the official SDK's shape, or Sample objects)."""
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence):
        raise ValidationError("samples must be a list of samples, e.g. [{'inputs': 'text'}] or ['text']")
    body = validate_input(
        FineTuneBody, "fine-tune samples", {"samples": [_sample_dict(s, multiplier) for s in samples]}
    )
    return body.to_wire()


class AsyncFineTunes(AsyncResource):
    """Fine-tune an adapter on samples."""

    async def create(
        self,
        adapter_id: str,
        *,
        samples: Sequence[str | Sample | Mapping[str, Any]],
        multiplier: float | None = None,
        idempotent: bool = False,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> FineTuneResult:
        """Train `adapter_id` on `samples`; returns trainable tokens and summed loss of this call.

        Not retried once the request may have reached the server (the adapter would train
        twice) unless `idempotent=True`.

        Args:
            samples: strings, `{"inputs": str | [{"value", "trainable", "parse_special_tokens"}],
                "multiplier": float}` dicts, or `Sample` objects.
            multiplier: default per-sample loss weight for samples that set none.

        Example::

            r = await client.fine_tunes.create(adapter.id, samples=["Q: 2+2?\\nA: 4"])
            print(r.number_of_trainable_tokens, r.sum_loss, r.mean_loss)
        """
        path = f"/models/{path_id(adapter_id, 'adapter_id')}/fine-tune"
        body = normalize_samples(samples, multiplier)
        result = await self._client.request(
            RequestOptions(
                "POST",
                path,
                json=body,
                idempotent=idempotent,
                timeout=timeout,
                max_retries=max_retries,
                extra_headers=extra_headers,
                extra_query=extra_query,
                extra_body=extra_body,
            ),
            FineTuneResult.model_validate,
        )
        return result
