"""The repository's own documents (``docs/``): the parts generated from a single source.

``generate`` rewrites the marked blocks of ``docs/formats.md`` (scenario event keys from
the scenario validator, the fault table and event kinds from ``firmware/events.py``,
contactor status codes, trace columns) and the whole of ``docs/params.md`` (the parameter
table); ``--check`` fails when a committed file is stale.

May import: every subpackage below the CLI (it reads their tables). Context: host only.
"""
