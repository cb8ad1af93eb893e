"""metafs: container metadata as files (a metadata server, its client, a FUSE filesystem)."""

__version__ = "0.1.0"
