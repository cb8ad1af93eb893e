"""Big JSON documents decoded in a worker thread without holding up the event loop's.

``json.loads`` is one C call that holds the GIL throughout (0.25-0.5 s for 15 MB), so a
worker thread decoding a big document with it holds up the loop's thread just the same.
Two ways around it, each giving the interpreter a chance to switch threads often:

- :func:`streamed`, ijson's events (the server's request bodies, catalog/bodies.py:
  untrusted, so depth and integers are bounded; ~2.6x the CPU of ``json.loads``);
- :func:`pieces`, json's own decoder called once per member of the top levels (the
  mount's answers from the server, mount/peers.py: the CPU of ``json.loads``).
"""

from __future__ import annotations

import io
import json
import re
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


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def pieces(raw: bytes, split: int = 2) -> Any:
    """``json.loads(raw)``, each member of the top ``split`` levels of objects decoded by a
    call of its own to json's C decoder: as little CPU as ``json.loads`` (ijson's events
    cost ~2.6x), and between members the interpreter lets the other threads run, so that
    a worker thread decoding 5 MB of a service's peers holds up the loop for one peer at
    a time, not for the whole. For answers from the server (trusted: depth and integers
    as ``json.loads`` takes them)."""
    text = raw.decode("utf-8")
    value, end = _value(text, _skip(text, 0), split)
    end = _skip(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _skip(text: str, i: int) -> int:
    """Past the whitespace at ``i``."""
    return _SPACE.match(text, i).end()  # type: ignore[union-attr]  # [ \t\n\r]* always matches


def _value(text: str, i: int, split: int) -> tuple[Any, int]:
    """The value at ``i`` and where it ends: an object member by member while ``split``."""
    if split <= 0 or not text.startswith("{", i):
        return _DECODER.raw_decode(text, i)
    out: dict[str, Any] = {}
    i = _skip(text, i + 1)
    if text.startswith("}", i):
        return out, i + 1
    while True:
        if not text.startswith('"', i):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
        key, i = _DECODER.raw_decode(text, i)
        i = _skip(text, i)
        if not text.startswith(":", i):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
        out[key], i = _value(text, _skip(text, i + 1), split - 1)
        i = _skip(text, i)
        if text.startswith("}", i):
            return out, i + 1
        if not text.startswith(",", i):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
        i = _skip(text, i + 1)
