"""Evaluation items: `{"id"?: ..., "query": str, "expected": str | [str, ...], ...per-item completion params}`.

A source is a JSONL path (read lazily, once per model, so memory stays flat) or a list/iterable of dicts or
`EvalItem`s (an iterable is read into a list). `load_items` reads everything once first, so a bad line is a
InputValidationError naming it (`file:line: ...`) before any request is sent. A missing or null id becomes the
1-based line number (files) or the 0-based position (lists); ids must be unique.

Example::

    items = load_items("eval.jsonl")
    print(len(items), next(iter(items)).expected)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from gradient_async._errors import InputValidationError
from gradient_async.types._base import validate_input
from gradient_async.types.completions import CompleteBody

__all__ = ["EvalItem", "EvalItems", "EvalSource", "load_items"]

_PARAMS = frozenset(CompleteBody.model_fields) - {"query"}
_PARAMS_CAMEL = {CompleteBody.model_fields[name].alias or name for name in _PARAMS}


@dataclass(frozen=True)
class EvalItem:
    """One question: `query`, the acceptable answers `expected`, and completion params for this item only."""

    query: str
    expected: tuple[str, ...]
    id: Any = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def prompt(self) -> dict[str, Any]:
        """The batch engine's prompt for this item."""
        return {"id": self.id, "query": self.query, **self.params}


EvalSource: TypeAlias = "str | os.PathLike[str] | Iterable[Mapping[str, Any] | EvalItem] | EvalItems"


def _item(raw: object, default_id: Any, where: str) -> EvalItem:
    if isinstance(raw, EvalItem):
        return raw if raw.id is not None else EvalItem(raw.query, raw.expected, default_id, raw.params)
    if not isinstance(raw, Mapping):
        raise InputValidationError(f"{where}: expected an object with 'query' and 'expected', got {type(raw).__name__}")
    fields = dict(raw)
    item_id = fields.pop("id", None)
    query = fields.pop("query", None)
    if not isinstance(query, str) or not query:
        raise InputValidationError(f"{where}: 'query' must be a non-empty string, got {query!r:.60}")
    expected = fields.pop("expected", None)
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        expected = str(expected)
    if isinstance(expected, list):
        expected = [str(e) if isinstance(e, (int, float)) and not isinstance(e, bool) else e for e in expected]
    if isinstance(expected, str):
        answers: tuple[str, ...] = (expected,)
    elif isinstance(expected, list) and expected and all(isinstance(e, str) for e in expected):
        answers = tuple(expected)
    else:
        raise InputValidationError(
            f"{where}: 'expected' must be a string or a non-empty list of strings, got {expected!r:.60}"
        )
    unknown = sorted(k for k in fields if k not in _PARAMS and k not in _PARAMS_CAMEL)
    if unknown:
        raise InputValidationError(
            f"{where}: unknown field(s) {', '.join(unknown)}; an item has id, query, expected and completion "
            f"params ({', '.join(sorted(_PARAMS))})"
        )
    if fields:
        try:
            validate_input(CompleteBody, "completion params", {"query": query, **fields})
        except InputValidationError as exc:
            raise InputValidationError(f"{where}: {exc}") from None
    if isinstance(item_id, (dict, list, float)):
        raise InputValidationError(f"{where}: 'id' must be a string or an integer, got {item_id!r:.60}")
    return EvalItem(query, answers, default_id if item_id is None else item_id, fields)


class EvalItems:
    """A validated evaluation set; iterate it as often as needed (a file is re-read each time).

    Example::

        items = load_items([{"query": "2+2=", "expected": "4"}])
        [item] = items
    """

    def __init__(self, *, path: Path | None = None, items: list[EvalItem] | None = None, count: int = 0) -> None:
        self.path = path
        self._items = items
        self._count = len(items) if items is not None else count

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[EvalItem]:
        if self._items is not None:
            return iter(self._items)
        assert self.path is not None
        return _read_file(self.path)

    def ids(self) -> Iterator[Any]:
        for item in self:
            yield item.id


def _read_file(path: Path) -> Iterator[EvalItem]:
    try:
        fh = path.open(encoding="utf-8-sig")
    except OSError as exc:
        raise InputValidationError(f"cannot read evaluation data {path}: {exc.strerror or exc}") from None
    with fh:
        try:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    data = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise InputValidationError(f"{where}: not valid JSON ({exc.msg})") from None
                yield _item(data, number, where)
        except UnicodeDecodeError as exc:
            raise InputValidationError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _key(item_id: Any) -> str:
    return json.dumps(item_id)


def load_items(data: EvalSource) -> EvalItems:
    """Validate every item of `data` (one pass), checking ids are unique; InputValidationError names the line.

    Example::

        items = load_items("eval.jsonl")
    """
    if isinstance(data, EvalItems):
        return data
    seen: set[str] = set()

    def check(item: EvalItem, where: str) -> None:
        key = _key(item.id)
        if key in seen:
            raise InputValidationError(f"{where}: duplicate id {item.id!r}; every item needs its own id")
        seen.add(key)

    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise InputValidationError(f"evaluation data not found: {path} (pass a JSONL file of query/expected items)")
        count = 0
        for item in _read_file(path):
            count += 1
            check(item, f"{path}: item {count}")
        if count == 0:
            raise InputValidationError(f"{path} has no items")
        return EvalItems(path=path, count=count)
    if isinstance(data, (bytes, Mapping)):
        raise InputValidationError("evaluation data must be a JSONL path or a list of {'query', 'expected'} items")
    items = []
    for index, raw in enumerate(data):
        item = _item(raw, index, f"item {index}")
        check(item, f"item {index}")
        items.append(item)
    if not items:
        raise InputValidationError("the evaluation data has no items")
    return EvalItems(items=items)
