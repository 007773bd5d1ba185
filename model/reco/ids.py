"""Unbounded user and item ids to rows of an embedding table.

:class:`IdTable` maps raw ids (any value; compared as text) to dense row numbers,
either *growing* (every distinct id its own row, the table grows with the stream) or
*hashed* into a fixed number of ``buckets`` (the embeddings' memory bounded, the
index of ids seen is not; two ids may share a row). A hashed table measures its
collisions: ``collisions`` counts the distinct ids that landed on a row an earlier
distinct id held. The hash is stable (BLAKE2b of the id's text), so every worker and
every run maps an id alike. A batch is mapped by its distinct ids only (Arrow's
dictionary encoding), then gathered.

>>> table = IdTable()
>>> table.rows(["ann", "bob", "ann"]).tolist(), table.size
([0, 1, 0], 2)
>>> hashed = IdTable(buckets=4)
>>> rows = hashed.rows([str(i) for i in range(10)])
>>> int(rows.max()) < 4, hashed.distinct, hashed.collisions >= 6
(True, 10, True)
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FEW = 16  # ids (strings) looked up one by one: a query's, not a batch's


def fingerprint(text: str) -> int:
    """A stable 64-bit hash of ``text`` (BLAKE2b), never 0."""
    value = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return value or 1


class IdTable:
    """Ids to rows; see the module docstring. ``buckets=None``: growing."""

    def __init__(self, buckets: int | None = None) -> None:
        if buckets is not None and buckets < 1:
            msg = f"buckets must be >= 1 or None, got {buckets!r}"
            raise ValueError(msg)
        self.buckets = buckets
        self._rows: dict[str, int] = {}  # growing: id -> row; hashed: id -> row, seen
        self._owner: dict[int, int] = {}  # hashed: row -> fingerprint of its first id
        self.names: dict[int, str] = {}  # row -> the first id that took it
        self.collisions = 0

    @property
    def size(self) -> int:
        """Rows in use (growing: distinct ids; hashed: buckets touched)."""
        return len(self._rows) if self.buckets is None else len(self._owner)

    @property
    def distinct(self) -> int:
        """Distinct ids seen."""
        return len(self._rows)

    def rows(self, ids: Any, *, add: bool = True) -> np.ndarray:
        """Row of each id (int64). ``add=False``: ids not seen yet get -1 (nothing is
        added; in a hashed table too, so an unknown id never borrows a bucket's row)."""
        if isinstance(ids, list | tuple) and len(ids) <= FEW and all(type(i) is str for i in ids):
            return np.array([self._row(i, add) for i in ids], dtype=np.int64)  # (a query's)
        array = ids if isinstance(ids, pa.Array | pa.ChunkedArray) else pa.array(ids)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
            array = pc.cast(array, pa.string())
        encoded = pc.dictionary_encode(array)
        distinct = encoded.dictionary.to_pylist()
        mapped = np.fromiter(
            (self._row(str(d), add) for d in distinct), dtype=np.int64, count=len(distinct)
        )
        return mapped[encoded.indices.to_numpy(zero_copy_only=False)]

    def _row(self, key: str, add: bool) -> int:
        row = self._rows.get(key)
        if row is not None:
            return row
        if not add:
            return -1
        if self.buckets is None:
            row = len(self._rows)
        else:
            print_ = fingerprint(key)
            row = print_ % self.buckets
            owner = self._owner.setdefault(row, print_)
            if owner != print_:
                self.collisions += 1
        self._rows[key] = row
        self.names.setdefault(row, key)
        return row

    def snapshot(self) -> dict[str, Any]:
        return {"buckets": self.buckets, "rows": dict(self._rows),
                "owner": dict(self._owner), "collisions": self.collisions}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        if state["buckets"] != self.buckets:
            msg = f"a table of {state['buckets']} buckets cannot restore into {self.buckets}"
            raise ValueError(msg)
        self._rows = dict(state["rows"])
        self._owner = {int(k): int(v) for k, v in state["owner"].items()}
        self.names = {}
        for key, row in self._rows.items():
            self.names.setdefault(row, key)
        self.collisions = int(state["collisions"])
