"""The parameter table's ids and names are unique: both are stable public identifiers
(Modbus register offsets, link CONFIG messages and log records use the id; config files
use the name)."""

import collections

import params


def test_ids_and_names_are_unique():
    ids = collections.Counter(r[params.PID] for r in params.TABLE)
    names = collections.Counter(r[params.NAME] for r in params.TABLE)
    assert [i for i, n in ids.items() if n > 1] == []
    assert [k for k, n in names.items() if n > 1] == []
