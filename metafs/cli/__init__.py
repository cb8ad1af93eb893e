"""The ``metafs`` command line (:mod:`.main`), a module per group of commands."""
