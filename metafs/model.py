"""The metadata model: accounts → stacks → services → deployment units, and hosts.

These pydantic models validate load documents and single records. They are strict (no
silent coercion of ``true`` into ``1``) and reject unknown fields, and
:func:`format_errors` turns a validation failure into lines that name the exact field
path, e.g. ``accounts.5.stacks.test1.services.s4.units.x.cardinal_value: expected an
integer``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
)

from .tree import Scalar

#: Identifiers of accounts, stacks, services, units, hosts and sidekicks. They appear
#: verbatim in URLs, file names and store keys, so they are kept to a safe alphabet.
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,127}$")
#: Label and metadata keys are free text (``io.example/role``), but never empty, never
#: longer than this, and never with control characters.
MAX_KEY_LEN = 253
MAX_VALUE_LEN = 64 * 1024
MAX_DEPTH = 16
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

JSONValue = Any


def check_name(value: str) -> str:
    """Validate an identifier (account, stack, service, unit, host, sidekick)."""
    if not NAME_RE.match(value):
        raise ValueError(
            f"invalid name {value!r}: use 1-128 characters of A-Z a-z 0-9 _ . : @ -, "
            "not starting with . : @ -"
        )
    return value


def check_key(value: str) -> str:
    """Validate a label or metadata key."""
    if not value:
        raise ValueError("empty key")
    if len(value) > MAX_KEY_LEN:
        raise ValueError(f"key longer than {MAX_KEY_LEN} characters")
    if _CONTROL.search(value):
        raise ValueError(f"key {value!r} contains a control character")
    return value


def _check_scalar(value: object) -> Scalar:
    if isinstance(value, (str, int, float, bool)):
        if isinstance(value, str):
            _check_text(value)
        return value
    raise ValueError("expected a string, number or boolean")


def _check_text(value: str) -> str:
    if len(value) > MAX_VALUE_LEN:
        raise ValueError(f"value longer than {MAX_VALUE_LEN} characters")
    if "\x00" in value:
        raise ValueError("value contains a NUL character")
    return value


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


def _check_list_item(value: str) -> str:
    _check_text(value)
    if "\n" in value:
        raise ValueError("list items cannot contain a newline (files show one item per line)")
    return value


class _NestedError(ValueError):
    """A metadata error deep inside a value; ``path`` is where, below the field."""

    def __init__(self, path: list[str], message: str) -> None:
        super().__init__(message)
        self.path = path


def _check_metadata(value: object, depth: int = 0) -> JSONValue:
    """Free-form metadata: nested maps, lists and scalars, bounded in depth."""
    if depth > MAX_DEPTH:
        raise _NestedError([], f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, (dict, list)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        out: dict[str, Any] = {}
        for k, v in items:
            try:
                if isinstance(value, dict):
                    if not isinstance(k, str):
                        raise _NestedError([], f"key {k!r} is not a string")
                    check_key(k)
                out[str(k)] = _check_metadata(v, depth + 1)
            except _NestedError as exc:
                raise _NestedError([str(k), *exc.path], str(exc)) from None
            except ValueError as exc:
                raise _NestedError([str(k)], str(exc)) from None
        return out if isinstance(value, dict) else list(out.values())
    if value is None:
        raise _NestedError([], "null is not allowed (leave the key out instead)")
    return _check_scalar(value)


Name = Annotated[StrictStr, AfterValidator(check_name)]
Key = Annotated[StrictStr, AfterValidator(check_key)]
Text = Annotated[StrictStr, AfterValidator(_check_text)]
Item = Annotated[StrictStr, AfterValidator(_check_list_item)]
IPAddress = Annotated[StrictStr, AfterValidator(_check_ip)]
LabelValue = Annotated[Any, AfterValidator(_check_scalar)]
Labels = dict[Key, LabelValue]
Metadata = Annotated[dict[Key, Any], AfterValidator(_check_metadata)]
Cardinal = Annotated[StrictInt, Field(ge=0)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Sidekick(_Record):
    """A secondary launch config of a deployment unit."""

    image: Text | None = None
    hostname: Text | None = None
    virt_ip_address: IPAddress | None = None
    ports: list[Item] | None = None
    volumes: list[Item] | None = None
    labels: Labels = {}


class Unit(_Record):
    """A deployment unit: one instance of a scaled service."""

    cardinal_value: Cardinal
    hostname: Annotated[Text, Field(min_length=1)]
    virt_ip_address: IPAddress | None = None
    ports: list[Item] | None = None
    image: Text | None = None
    volumes: list[Item] | None = None
    labels: Labels = {}
    host: Name | None = None
    sidekicks: dict[Name, Sidekick] = {}


class Service(_Record):
    service_domain: Text | None = None
    scale: Cardinal | None = None
    labels: Labels = {}
    metadata: Metadata = {}
    units: dict[Name, Unit] = {}


class Stack(_Record):
    labels: Labels = {}
    services: dict[Name, Service] = {}


class Account(_Record):
    labels: Labels = {}
    stacks: dict[Name, Stack] = {}


class Host(_Record):
    hostname: Text | None = None
    agent_ip: IPAddress | None = None
    labels: Labels = {}


class Document(_Record):
    """A load document: everything it names is created or replaced in one transaction."""

    accounts: dict[Name, Account] = {}
    hosts: dict[Name, Host] = {}


#: For each record kind, the field that holds its children (stored as separate records).
CHILDREN: dict[type[_Record], str] = {Account: "stacks", Stack: "services", Service: "units"}

_MESSAGES = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
    "string_too_short": "must not be empty",
}


class ModelError(ValueError):
    """A document or record failed validation; ``details`` has one line per problem."""

    def __init__(self, details: list[str]) -> None:
        super().__init__("; ".join(details))
        self.details = details


def format_errors(exc: ValidationError, prefix: Iterable[str] = ()) -> list[str]:
    """One ``path: message`` line per validation error, the path dotted from ``prefix``."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = [*prefix, *(str(p) for p in err["loc"] if p != "[key]")]
        kind = err["type"]
        if kind == "value_error":
            cause = err.get("ctx", {}).get("error")
            msg = str(cause or err["msg"])
            if isinstance(cause, _NestedError):
                loc.extend(cause.path)
        elif kind == "greater_than_equal":
            msg = f"must be >= {err['ctx']['ge']}"
        else:
            msg = _MESSAGES.get(kind, err["msg"][:1].lower() + err["msg"][1:])
        path = ".".join(loc) or "(document)"
        lines.append(f"{path}: {msg}")
    return lines


def validate(model: type[_Record], data: object, prefix: Iterable[str] = ()) -> _Record:
    """Validate ``data`` as ``model``; raise :class:`ModelError` naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ModelError(format_errors(exc, prefix)) from None


def duplicate_unit_ids(doc: Document) -> list[str]:
    """Unit ids must be unique server-wide; report each id a document uses twice."""
    seen: dict[str, str] = {}
    errors = []
    for a, acc in doc.accounts.items():
        for t, stack in acc.stacks.items():
            for s, svc in stack.services.items():
                for u in svc.units:
                    path = f"accounts.{a}.stacks.{t}.services.{s}.units.{u}"
                    if u in seen:
                        errors.append(f"{path}: unit id already used at {seen[u]}")
                    else:
                        seen[u] = path
    return errors
