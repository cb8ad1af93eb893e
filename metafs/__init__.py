"""metafs: container metadata as files (a metadata server, its client, a FUSE filesystem)."""

import sys

__version__ = "0.1.0"

# httpx imports its own command line (click, pygments, rich: ~60 ms) when they are
# installed; metafs never runs it, and every command and every mount daemon start (a
# restart's time to the first read in a container) paid for it. Unset, httpx defines a
# stub. Here, because this runs before anything of metafs imports httpx.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
