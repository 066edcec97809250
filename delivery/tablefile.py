"""The lookup table's stored form (D2, D3), the same in the store and in each node's copy:
sorted visitor ids searched with numpy, memory-mappable, with the rules of attachments that
have request-time conditions."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

# The table format, as stored and as kept on each node:
#   b"CMT1", header length (uint32 LE), header (JSON: campaign_id, version, width, count,
#   contents, rules, unknown), zero padding to 8 bytes, then `count` visitor ids as fixed-width
#   bytes in sorted order, their content ids as uint32 LE in the same order and, when the
#   header has rules, one uint32 LE mask per visitor: bit i set means rule i applies to them.
MAGIC = b"CMT1"
# A visitor the table knows only for its rules: without a rule that holds, the default.
DEFAULT_ID = 0xFFFFFFFF
MAX_RULES = 32


class TableFormatError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    """An attachment with request-time conditions (D3): its content, when they hold."""

    content_id: int
    conditions: dict[str, Any]


def table_encode(
    *,
    campaign_id: int,
    version: int,
    contents: Mapping[int, Any],
    visitors: Mapping[str, int],
    rules: Sequence[Rule] = (),
    masks: Mapping[str, int] | None = None,
    unknown: tuple[int | None, int] = (None, 0),
) -> bytes:
    """One table in the stored format: 1,000,000 visitors take about 1 s and 36 MB.

    `unknown` is the answer for a visitor the table does not name: a content id (None: the
    default) and the mask of rules that apply to them.
    """
    if len(rules) > MAX_RULES:
        raise ValueError(f"at most {MAX_RULES} attachments with request conditions")
    masks = masks or {}
    names = list(visitors) + [visitor for visitor in masks if visitor not in visitors]
    keys = [visitor.encode() for visitor in names]
    width = max(map(len, keys), default=1)
    ids = np.array(keys, dtype=f"S{width}") if keys else np.zeros(0, dtype="S1")
    values = np.fromiter(
        (visitors.get(visitor, DEFAULT_ID) for visitor in names), dtype="<u4", count=len(keys)
    )
    order = np.argsort(ids, kind="stable")
    parts = [ids[order].tobytes(), values[order].tobytes()]
    if rules:
        bits = np.fromiter((masks.get(visitor, 0) for visitor in names), "<u4", len(keys))
        parts.append(bits[order].tobytes())
    header = orjson.dumps(
        {
            "campaign_id": campaign_id,
            "version": version,
            "width": width,
            "count": len(keys),
            "contents": {str(ident): answer for ident, answer in contents.items()},
            "rules": [
                {"content_id": rule.content_id, "conditions": rule.conditions} for rule in rules
            ],
            "unknown": {"content_id": unknown[0], "mask": unknown[1]},
        }
    )
    header += b" " * (-(len(MAGIC) + 4 + len(header)) % 8)
    return b"".join([MAGIC, len(header).to_bytes(4, "little"), header, *parts])


class VisitorIndex(Mapping[str, int]):
    """Visitor id -> content id over a table's sorted arrays: a binary search (about 1 us for
    1,000,000 visitors) on memory that may be a shared file mapping. As a mapping it holds the
    visitors the table gives a content; `find` also sees those it names only for rules."""

    def __init__(self, ids: np.ndarray, values: np.ndarray, masks: np.ndarray | None = None):
        self._ids = ids
        self._values = values
        self._masks = masks
        self._count = len(ids)
        self._width = ids.dtype.itemsize
        self._with_content = int(np.count_nonzero(values != DEFAULT_ID))

    def find(self, visitor_id: str) -> int:
        """The visitor's row, or -1."""
        key = visitor_id.encode()
        if len(key) > self._width or not key:
            return -1
        index = int(self._ids.searchsorted(key))
        if index < self._count and self._ids[index] == key:
            return index
        return -1

    # item() gives the Python int at once: half the cost of int() over a numpy scalar.
    def content_at(self, index: int) -> int | None:
        value = self._values.item(index)
        return None if value == DEFAULT_ID else value

    def mask_at(self, index: int) -> int:
        return self._masks.item(index) if self._masks is not None else 0

    def get(self, visitor_id: str, default: Any = None) -> Any:
        index = self.find(visitor_id)
        if index < 0:
            return default
        value = self.content_at(index)
        return default if value is None else value

    def __getitem__(self, visitor_id: str) -> int:
        value = self.get(visitor_id)
        if value is None:
            raise KeyError(visitor_id)
        return value

    def __contains__(self, visitor_id: object) -> bool:
        return isinstance(visitor_id, str) and self.get(visitor_id) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return self._with_content

    def to_dict(self) -> dict[str, int]:
        return {
            key.decode(): value
            for key, value in zip(self._ids.tolist(), self._values.tolist(), strict=True)
            if value != DEFAULT_ID
        }

    def masks_dict(self) -> dict[str, int]:
        if self._masks is None:
            return {}
        return {
            key.decode(): mask
            for key, mask in zip(self._ids.tolist(), self._masks.tolist(), strict=True)
            if mask
        }


@dataclass(frozen=True, eq=False)
class Table:
    campaign_id: int
    version: int
    contents: dict[int, dict[str, Any] | None]
    visitors: VisitorIndex
    rules: tuple[Rule, ...] = ()
    unknown_content: int | None = None
    unknown_mask: int = 0

    def row(self, visitor_id: str) -> tuple[int | None, int]:
        """The visitor's content id (None: the placement's default) and rule bits; a visitor
        the table does not name gets its newcomers' answer."""
        index = self.visitors.find(visitor_id)
        if index < 0:
            return self.unknown_content, self.unknown_mask
        return self.visitors.content_at(index), self.visitors.mask_at(index)

    def rules_in(self, mask: int) -> list[Rule]:
        """The rules whose bits are set, first to be tried first."""
        return [rule for position, rule in enumerate(self.rules) if mask >> position & 1]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Table):
            return NotImplemented
        return (
            self.campaign_id,
            self.version,
            self.contents,
            self.rules,
            self.unknown_content,
            self.unknown_mask,
        ) == (
            other.campaign_id,
            other.version,
            other.contents,
            other.rules,
            other.unknown_content,
            other.unknown_mask,
        ) and dict(self.visitors.items()) == dict(other.visitors.items())


def table_decode(buffer: Any) -> Table:
    """A table over a buffer in the stored format (bytes, or a memory map: nothing is copied
    but the header); raises TableFormatError for anything else."""
    view = memoryview(buffer)
    if bytes(view[:4]) != MAGIC or len(view) < 8:
        raise TableFormatError("not a coremetrics table")
    length = int.from_bytes(view[4:8], "little")
    try:
        header = orjson.loads(bytes(view[8 : 8 + length]))
        width, count = int(header["width"]), int(header["count"])
        rules = tuple(Rule(rule["content_id"], rule["conditions"]) for rule in header["rules"])
        unknown = header["unknown"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise TableFormatError(f"unreadable table header: {error}") from None
    start = 8 + length
    if len(view) != start + count * (width + 4 + (4 if rules else 0)):
        raise TableFormatError("table is truncated")
    ids = np.frombuffer(buffer, dtype=f"S{width}", count=count, offset=start)
    values = np.frombuffer(buffer, dtype="<u4", count=count, offset=start + count * width)
    masks = None
    if rules:
        masks = np.frombuffer(buffer, dtype="<u4", count=count, offset=start + count * (width + 4))
    return Table(
        campaign_id=int(header["campaign_id"]),
        version=int(header["version"]),
        contents={int(ident): answer for ident, answer in header["contents"].items()},
        visitors=VisitorIndex(ids, values, masks),
        rules=rules,
        unknown_content=unknown["content_id"],
        unknown_mask=int(unknown["mask"]),
    )


def table_map(path: Path) -> Table:
    """A table file mapped read-only: its pages are shared by every process mapping it."""
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            raise TableFormatError("empty table file")
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    return table_decode(mapped)
