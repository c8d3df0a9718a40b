"""The base of every wire model: camelCase on the wire, snake_case in Python, unknown fields kept."""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic
from pydantic import ConfigDict, PrivateAttr
from pydantic.alias_generators import to_camel

from gradient_async._errors import ValidationError

__all__ = ["GradientModel", "RequestModel", "validate_input"]

M = TypeVar("M", bound=pydantic.BaseModel)


class GradientModel(pydantic.BaseModel):
    """A response object. Fields the server adds later are kept (`model_extra`), never rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True)

    _request_id: str | None = PrivateAttr(default=None)

    @property
    def request_id(self) -> str | None:
        """The server's request id (`x-request-id`) of the response this came from, when it sent one."""
        return self._request_id

    def to_wire(self) -> dict[str, Any]:
        """The object as the API writes it (camelCase keys)."""
        return self.model_dump(by_alias=True, mode="json")


class RequestModel(pydantic.BaseModel):
    """A request body, validated before anything is sent. Unknown keys are refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, allow_inf_nan=False
    )

    def to_wire(self) -> dict[str, Any]:
        """The body as the official SDK sends it: camelCase keys, unset optional fields as null."""
        return self.model_dump(by_alias=True, mode="json")


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "input"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def validate_input(model: type[M], what: str, data: dict[str, Any]) -> M:
    """Build `model` from user input, raising our ValidationError that names each bad field."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(f"invalid {what}: {_describe(exc)}") from None
