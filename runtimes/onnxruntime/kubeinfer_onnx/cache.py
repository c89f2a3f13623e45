"""A bounded LRU exact-match response cache, keyed by a hash of the request's input tensors.

Owns only the mapping and its bounds (entries and bytes, whichever is hit first); the model
decides when to look up and store, and counts hits and misses. Exact match means the same
input names, dtypes, shapes and bytes: no similarity, so a hit is always the right answer for a
deterministic model. Off by default (a model config's `cache: true` turns it on), as in Triton.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

Tensors = dict[str, npt.NDArray[Any]]


def cache_key(inputs: Mapping[str, npt.NDArray[Any]]) -> bytes:
    """A digest over every input's name, dtype, shape and bytes, in name order."""
    digest = hashlib.blake2b(digest_size=20)
    for name in sorted(inputs):
        array = inputs[name]
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        if array.dtype == np.object_:
            for item in array.reshape(-1):
                value = item if isinstance(item, bytes) else str(item).encode()
                digest.update(len(value).to_bytes(4, "little"))
                digest.update(value)
        else:
            digest.update(np.ascontiguousarray(array).data)
    return digest.digest()


class ResponseCache:
    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        self._entries: collections.OrderedDict[bytes, tuple[Tensors, int]] = (
            collections.OrderedDict()
        )
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Tensors | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: bytes, outputs: Mapping[str, npt.NDArray[Any]]) -> None:
        # Copies: the arrays handed in may be views into a whole batch's output, which would
        # keep the batch alive (and let a caller's later write change a cached answer).
        stored = {name: np.array(array, copy=True) for name, array in outputs.items()}
        size = sum(array.nbytes for array in stored.values())
        if size > self._max_bytes:
            return  # Larger than the whole cache: storing it would only evict everything.
        if key in self._entries:
            self.bytes -= self._entries.pop(key)[1]
        self._entries[key] = (stored, size)
        self.bytes += size
        while len(self._entries) > self._max_entries or self.bytes > self._max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted
