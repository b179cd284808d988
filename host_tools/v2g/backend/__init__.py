"""The back end: the energy ledger (``ledger``); the site energy manager comes later.

Also the billing test bed shared by the tests and ``make billing-demo``: ``pki`` (a
throw-away CA with broker, station and ledger certificates, station signing keys),
``broker`` (a mosquitto on loopback: TLS 1.3 only, client certificates, per-station ACL),
``lossy_proxy`` (a TCP proxy that delays and cuts connections, seeded), ``testbed`` (all of
them plus the ledger and stand-in daemon processes) and ``demo``.

May import: ``v2g.gateway``, ``v2g.common``. Context: host (back end, tests).
"""
