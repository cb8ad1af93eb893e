"""Giving free heap back to the system after a big transient (a load document parsed, a
long list of units decoded): glibc's allocator keeps freed memory for reuse, so the RSS
of a long-running process stays at its peak unless asked (``malloc_trim``)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

#: a body this big leaves enough free heap behind to be worth handing back
TRIM_AFTER = 1 << 20


def trim() -> None:
    """Collect the cycles a big transient leaves, then hand free heap back (glibc's
    ``malloc_trim``; elsewhere nothing). ``malloc_trim`` walks the whole heap: call this
    from a worker thread (ctypes lets go of the GIL during it). A 100,000-unit load (30 MB
    of JSON) left the server at 272 MB RSS: 143 MB after ``malloc_trim`` alone, 125 MB
    with the collection first."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def use_system_allocator() -> None:
    """Re-execute this process (same pid, same argv) under glibc's ``malloc`` for every
    allocation (``PYTHONMALLOC=malloc``), unless ``PYTHONMALLOC`` says otherwise. Python's
    own small-object allocator keeps a 1 MB arena for as long as one object in it lives:
    a big load's transients spread the objects the server keeps over many arenas, and
    they stay. Load and delete a 15 MB document 30 times: 72 -> 183 MB RSS with it, flat
    at 60 MB with glibc's (whose :func:`trim` hands back any free page). Without fastbins
    (``glibc.malloc.mxfast=0``): with them, freeing one big block merged the millions of
    small ones freed before it, holding the GIL (a reader waited 130 ms beside a 15 MB
    load; 60-80 ms without). Costs ~5-10% of requests/s on the smallest GETs (wrk). Call
    before anything else runs: the process starts over."""
    if "PYTHONMALLOC" in os.environ or platform.libc_ver()[0] != "glibc" or not sys.orig_argv:
        return
    os.environ["PYTHONMALLOC"] = "malloc"
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.mxfast" not in tunables:
        os.environ["GLIBC_TUNABLES"] = ":".join(filter(None, (tunables, "glibc.malloc.mxfast=0")))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


_paused = 0
_paused_lock = threading.Lock()


@contextlib.contextmanager
def collections_paused() -> Iterator[None]:
    """No automatic cyclic collection while a big transient is built (a load document
    parsed and validated in a worker thread): a full collection over its millions of
    objects holds the GIL for seconds, and every request waits. Reference counting still
    frees what goes; :func:`trim` collects once it is gone (a few ms then)."""
    global _paused
    with _paused_lock:
        _paused += 1
        gc.disable()
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if _paused == 0:
                gc.enable()


def dismantle(*objs: object) -> None:
    """Free a big transient object graph (a parsed document, its validated model) a piece
    at a time, from a worker thread. Dropping the last reference to it frees it all in
    one uninterruptible cascade that holds the GIL (~0.15 s for a 15 MB document's, while
    every request waited); emptying its containers one item at a time gives the event
    loop its turn in between. ``objs`` themselves are emptied (the caller gives them up);
    below them, only what nothing else refers to, so an object still in use elsewhere is
    never touched. Containers are dicts, lists, sets and objects with a ``__dict__``
    (pydantic models); what has ``__slots__`` is freed whole."""
    stack: list[object] = list(objs)
    del objs
    while stack:
        obj = stack.pop()
        if isinstance(obj, dict | list | set):
            is_dict = isinstance(obj, dict)
            take: Callable[[], Any] = obj.popitem if isinstance(obj, dict) else obj.pop
            while obj:
                value = take()[1] if is_dict else take()
                if type(value) not in _ATOMS and sys.getrefcount(value) <= _OWNED:
                    stack.append(value)
                del value
        elif isinstance(fields := getattr(obj, "__dict__", None), dict):
            stack.append(fields)  # a model's fields (pydantic, a plain class)
            del fields
        del obj


#: the references an object held only by the local ``value`` shows to ``sys.getrefcount``
#: (that name, and the call's own argument)
_OWNED = 2
#: what holds no other object: freed whole
_ATOMS = frozenset({str, int, float, bool, bytes, type(None)})
