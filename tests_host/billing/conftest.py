"""Fixtures for the billing tests that need a broker: ``bed`` (a fresh ``Testbed`` with
mosquitto running on a free loopback port) and ``figures`` (appends measured figures to
``out/billing/figures.jsonl`` for the report).

mosquitto comes from Debian (``make tools`` installs it when missing); without it these
tests skip, saying so. ``V2G_BILLING_SWEEP=full`` (``make billing-sweep``) selects the full
sweeps.
"""

import json
import os
import time

import pytest

from v2g.backend.broker import mosquitto_exe
from v2g.backend.testbed import Testbed
from v2g.common import paths

FULL = os.environ.get("V2G_BILLING_SWEEP") == "full"
FIGURES = paths.REPO_ROOT / "out" / "billing" / "figures.jsonl"


@pytest.fixture
def bed(tmp_path):
    if mosquitto_exe() is None:
        pytest.skip("mosquitto not installed (Debian package mosquitto; `make tools` installs "
                    "it with apt-get, which was unavailable or failed)")
    b = Testbed(tmp_path)
    b.start_broker()
    yield b
    b.close()


@pytest.fixture
def figures(request):
    def record(**kw):
        kw["test"] = request.node.name
        kw["t"] = round(time.time(), 1)
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        with open(FIGURES, "a") as f:
            f.write(json.dumps(kw) + "\n")
    return record
