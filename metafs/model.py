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
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
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


@dataclass(frozen=True)
class Limits:
    """How much one record may hold (``metafs serve --max-labels``, ``--max-metadata-keys``):
    every unit's view carries its peers' labels and its service's metadata, so these bound
    what one write can make every reader pay."""

    labels: int = 1_000  # labels on one record
    metadata_keys: int = 10_000  # keys and list items in one service's metadata, at every depth
    view_bytes: int = 64 << 20  # the stored JSON of one service's units: what each view carries


DEFAULT_LIMITS = Limits()


def _limits(info: ValidationInfo) -> Limits:
    context = info.context
    return context.get("limits", DEFAULT_LIMITS) if isinstance(context, dict) else DEFAULT_LIMITS


def _count_entries(value: object) -> int:
    """Keys and list items of a metadata value, at every depth."""
    if isinstance(value, dict):
        return len(value) + sum(_count_entries(v) for v in value.values())
    if isinstance(value, list):
        return len(value) + sum(_count_entries(v) for v in value)
    return 0


def _few_labels(value: object, info: ValidationInfo) -> object:
    """Checked before the labels themselves: 50,000 are refused without validating each."""
    limit = _limits(info).labels
    if isinstance(value, dict) and len(value) > limit:
        raise ValueError(f"{len(value)} labels, over the limit of {limit} a record (--max-labels)")
    return value


def _few_metadata_keys(value: object, info: ValidationInfo) -> object:
    limit = _limits(info).metadata_keys
    if isinstance(value, dict | list) and (n := _count_entries(value)) > limit:
        raise ValueError(f"{n} keys and items, over the limit of {limit} a service (--max-metadata-keys)")
    return value


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
Labels = Annotated[dict[Key, LabelValue], BeforeValidator(_few_labels)]
Metadata = Annotated[dict[Key, Any], AfterValidator(_check_metadata), BeforeValidator(_few_metadata_keys)]
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


def validate(
    model: type[_Record], data: object, prefix: Iterable[str] = (), limits: Limits = DEFAULT_LIMITS
) -> _Record:
    """Validate ``data`` as ``model`` within ``limits``; raise :class:`ModelError` naming
    each bad field."""
    try:
        return model.model_validate(data, context={"limits": limits})
    except ValidationError as exc:
        raise ModelError(format_errors(exc, prefix)) from None


def validate_document(data: object, limits: Limits = DEFAULT_LIMITS) -> Document:
    """:func:`validate` of a load document, its units one at a time: in a worker thread,
    other threads get the GIL between two units (one pydantic call over 100,000 units
    holds it for seconds, and the event loop with it). The same result and errors (those
    of units last)."""
    units_at: list[tuple[tuple[str, str, str], object]] = []
    shell = _without_units(data, units_at)
    errors: list[str] = []
    doc: _Record | None = None
    try:
        doc = validate(Document, shell, limits=limits)
    except ModelError as exc:
        errors.extend(exc.details)
    validated: list[tuple[tuple[str, str, str], dict[str, Unit]]] = []
    for (a, t, s), units in units_at:
        where = ["accounts", a, "stacks", t, "services", s, "units"]
        if not isinstance(units, dict):
            errors.append(f"{'.'.join(where)}: expected a mapping")
            continue
        out: dict[str, Unit] = {}
        for uid, raw in units.items():
            try:
                check_name(uid)
                unit = validate(Unit, raw, [*where, uid], limits)
            except ModelError as exc:
                errors.extend(exc.details)
                continue
            except ValueError as exc:
                errors.append(f"{'.'.join([*where, uid])}: {exc}")
                continue
            assert isinstance(unit, Unit)
            out[uid] = unit
        validated.append(((a, t, s), out))
    if errors:
        raise ModelError(errors)
    assert isinstance(doc, Document)
    for (a, t, s), out in validated:
        doc.accounts[a].stacks[t].services[s].units = out
    return doc


def _without_units(data: object, units_at: list[tuple[tuple[str, str, str], object]]) -> object:
    """``data`` with every well-formed service's ``units`` taken out into ``units_at``
    (copies along the way; what is not a mapping is left for validation to report)."""
    if not isinstance(data, dict) or not isinstance(data.get("accounts"), dict):
        return data
    accounts = {}
    for a, acc in data["accounts"].items():
        if isinstance(acc, dict) and isinstance(acc.get("stacks"), dict):
            stacks = {}
            for t, stack in acc["stacks"].items():
                if isinstance(stack, dict) and isinstance(stack.get("services"), dict):
                    services = {}
                    for s, svc in stack["services"].items():
                        if isinstance(svc, dict) and "units" in svc:
                            units_at.append(((str(a), str(t), str(s)), svc["units"]))
                            svc = {k: v for k, v in svc.items() if k != "units"}
                        services[s] = svc
                    stack = {**stack, "services": services}
                stacks[t] = stack
            acc = {**acc, "stacks": stacks}
        accounts[a] = acc
    return {**data, "accounts": accounts}


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
