"""The trial's confirmation in the supervisor (``services.update.Confirmer``): healthy for
``need_ms`` confirms; a trip first restarts the count; on a board whose flash writes
stall the energized converter's tick, a due confirmation waits for a de-energized period
and a trip meanwhile cancels it."""

import bootslot
import pytest
from services import update


@pytest.fixture
def confirms(monkeypatch):
    calls = []
    monkeypatch.setitem(bootslot.booted, "state", "trial")
    monkeypatch.setattr(update, "confirm", lambda root="": calls.append(root) or True)
    return calls


def _run(c, states, t=0, held=False):
    done = []
    for s in states:
        t += 200
        done.append(c.step(t, s, held))
    return t, done


def test_healthy_long_enough_confirms(confirms):
    c = update.Confirmer(1000)
    t, done = _run(c, ["ENERGIZED"] * 8)
    assert done.count(True) == 1 and confirms == [""] and c.done


def test_a_trip_restarts_the_count(confirms):
    c = update.Confirmer(1000)
    t, _ = _run(c, ["ENERGIZED"] * 4 + ["TRIPPED"])
    t, done = _run(c, ["ENERGIZED"] * 4, t)
    assert not any(done) and confirms == []
    _run(c, ["ENERGIZED"] * 4, t)
    assert confirms == [""]


def test_held_while_energized_then_written_de_energized(confirms):
    c = update.Confirmer(1000)
    t, done = _run(c, ["ENERGIZED"] * 20, held=True)
    assert not any(done) and confirms == []
    t, done = _run(c, ["WAIT_GRID"], t)  # the session ended: de-energized, no fault
    assert done == [True] and confirms == [""]


def test_held_then_a_trip_cancels(confirms):
    c = update.Confirmer(1000)
    t, _ = _run(c, ["ENERGIZED"] * 20, held=True)
    t, done = _run(c, ["TRIPPED", "WAIT_GRID"], t)
    assert not any(done) and confirms == [] and not c.done
