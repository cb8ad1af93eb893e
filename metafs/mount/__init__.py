"""The mount side: the FUSE daemon (:mod:`.daemon`) that shows unit views as files
(:mod:`.fs` over the views it holds, :mod:`.viewcache`, with :mod:`.peers` and
:mod:`.watcher`; :mod:`.inodes`, :mod:`.notify`), its mountpoint
(:mod:`.mountpoint`), status endpoint (:mod:`.status`), anchors for containers
(:mod:`.anchors`) and OCI hook (:mod:`.ocihook`). It talks to the server only through
:mod:`metafs.client`."""
