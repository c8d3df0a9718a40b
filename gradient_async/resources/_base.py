"""What every resource shares: the client, and checks on path ids."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from gradient_async._errors import ValidationError

if TYPE_CHECKING:
    from gradient_async._client import AsyncGradient

__all__ = ["AsyncResource", "path_id"]


class AsyncResource:
    def __init__(self, client: AsyncGradient) -> None:
        self._client = client


def path_id(value: object, name: str) -> str:
    """`value` percent-encoded for a URL path (nothing is safe, `/` becomes `%2F`), or ValidationError."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"expected a non-empty string for `{name}`, got {value!r}")
    return quote(value, safe="")
