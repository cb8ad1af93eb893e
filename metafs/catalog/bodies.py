"""Request bodies as data: JSON, or YAML loaded safely (no tags, no aliases)."""

from __future__ import annotations

import json
from typing import Any

import yaml

from ..jsonstream import STREAM_AFTER, JSONError, streamed
from .errors import BadRequest


def parse_body(body: bytes, content_type: str, where: str) -> Any:
    """A request body as data: JSON or YAML (safe loading only)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{where}: body is not UTF-8") from None
    try:
        if "json" in content_type:
            return json.loads(text) if len(body) < STREAM_AFTER else streamed(body)
        return yaml.load(text, Loader=_SafeLoader)
    except RecursionError:
        raise BadRequest(f"{where}: nested too deeply") from None
    except (ValueError, yaml.YAMLError, JSONError) as exc:
        raise BadRequest(f"{where}: cannot parse body: {exc}".splitlines()[0]) from None


class _SafeLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that also refuses aliases: ``*a`` repeated in a list of ``*b``
    repeated ... makes a few bytes expand to billions of nodes ("billion laughs")."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed", mark)
        return super().compose_node(parent, index)  # type: ignore[arg-type]
