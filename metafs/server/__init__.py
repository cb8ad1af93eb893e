"""The metadata server: the HTTP API (:mod:`.api`) over the catalog, assembled as one
ASGI application (:mod:`.app`) and run by uvicorn (:mod:`.run`). Importing this package
loads nothing: ``metafs.server.settings`` is read by the CLI without the HTTP stack."""
