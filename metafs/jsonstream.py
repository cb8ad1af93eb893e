"""JSON decoded event by event, for big documents. ``json.loads`` is one C call that holds
the GIL throughout (0.25-0.5 s for 15 MB), so a worker thread decoding a big document
with it holds up the event loop's thread just the same; between ijson's events the
interpreter lets the other threads run (a 15 MB document: ~0.8 s to decode, the loop
never held up more than a few ms by it). The server decodes big request bodies this way
(catalog/bodies.py), the mount big answers (mount/peers.py)."""

from __future__ import annotations

import io
from typing import Any

import ijson  # type: ignore[import-untyped]
from ijson.common import ObjectBuilder  # type: ignore[import-untyped]

#: a request body this big is decoded event by event (smaller ones are quick either way)
STREAM_AFTER = 1 << 20
#: nesting deeper than this is refused, as ``json.loads`` refuses it (a load document
#: is a few levels deep; metadata may nest, not this far)
MAX_DEPTH = 500
#: what a document that is not JSON raises here, beside json's own ValueError
JSONError = ijson.JSONError

_OPENS = frozenset({"start_map", "start_array"})
_CLOSES = frozenset({"end_map", "end_array"})


def streamed(raw: bytes) -> Any:
    """``json.loads``, built event by event (the same values: floats as floats, the last of
    repeated keys; RecursionError past :data:`MAX_DEPTH`; integers past 64 bits refused).
    Call it from a worker thread, with automatic collection paused for a big document
    (:func:`metafs.heap.collections_paused`: a full collection holds the GIL anyway)."""
    builder = ObjectBuilder()
    event, depth = builder.event, 0
    for name, value in ijson.basic_parse(io.BytesIO(raw), use_float=True):
        if name in _OPENS:
            depth += 1
            if depth > MAX_DEPTH:  # json.loads stops at the recursion limit; so do we
                raise RecursionError
        elif name in _CLOSES:
            depth -= 1
        event(name, value)
    return builder.value
