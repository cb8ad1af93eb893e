"""Request bodies as data: JSON, or YAML loaded safely (no tags, no aliases)."""

from __future__ import annotations

import io
import json
from typing import Any

import ijson  # type: ignore[import-untyped]
import yaml
from ijson.common import ObjectBuilder  # type: ignore[import-untyped]

from .errors import BadRequest


def parse_body(body: bytes, content_type: str, where: str) -> Any:
    """A request body as data: JSON or YAML (safe loading only)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{where}: body is not UTF-8") from None
    try:
        if "json" in content_type:
            return json.loads(text) if len(body) < STREAM_AFTER else _json_streamed(body)
        return yaml.load(text, Loader=_SafeLoader)
    except RecursionError:
        raise BadRequest(f"{where}: nested too deeply") from None
    except (ValueError, yaml.YAMLError, ijson.JSONError) as exc:
        raise BadRequest(f"{where}: cannot parse body: {exc}".splitlines()[0]) from None


#: a JSON body this big is parsed event by event: ``json.loads`` is one C call that holds
#: the GIL throughout (0.25-0.5 s for 15 MB), so every request waited on the thread
#: parsing it; between events the interpreter lets the event loop's thread run (a 15 MB
#: document: ~0.8 s to parse, the loop never held up more than a few ms by it)
STREAM_AFTER = 1 << 20


def _json_streamed(body: bytes) -> Any:
    """``json.loads`` for a big body, built event by event (the same values: floats as
    floats, the last of repeated keys). Run it with automatic collection paused (see
    :func:`metafs.heap.collections_paused`), or a full collection holds the GIL anyway."""
    builder = ObjectBuilder()
    event, depth = builder.event, 0
    for name, value in ijson.basic_parse(io.BytesIO(body), use_float=True):
        if name in _OPENS:
            depth += 1
            if depth > MAX_DEPTH:  # json.loads stops at the recursion limit; so do we
                raise RecursionError
        elif name in _CLOSES:
            depth -= 1
        event(name, value)
    return builder.value


_OPENS = frozenset({"start_map", "start_array"})
_CLOSES = frozenset({"end_map", "end_array"})
#: nesting deeper than this is refused, as ``json.loads`` refuses it (a load document
#: is a few levels deep; metadata may nest, not this far)
MAX_DEPTH = 500


class _SafeLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that also refuses aliases: ``*a`` repeated in a list of ``*b``
    repeated ... makes a few bytes expand to billions of nodes ("billion laughs")."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed", mark)
        return super().compose_node(parent, index)  # type: ignore[arg-type]
