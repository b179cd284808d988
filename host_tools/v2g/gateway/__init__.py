"""``v2g-daemon``: the communication controller's side of the charger, on CPython.

One asyncio process owns the link to the real-time controller (``v2g.link.LinkPeer`` over
the UART) and serves the field bus from the register image the board mirrors:
- ``config``: the daemon's YAML config (``/etc/v2g/config.yaml``), validated with errors
  that name key and value;
- ``regmap``: the Modbus register map: the status block at protocol address 0 (register
  40001 = DC-contactor status) and the SunSpec device at 40000, generated from the SunSpec
  model JSON that pysunspec2 ships joined with the firmware's parameter table;
- ``server``: the pymodbus TCP server over that map: one updater writes the datastore,
  writes are permission-checked and become link commands;
- ``daemon``: ``v2g daemon`` (run, ``install-unit``), signals (SIGTERM stop, SIGHUP reload);
- ``modbus_cmd``: ``v2g modbus read|write|scan|map``, the host client;
- ``fuzz`` and ``bench``: the Modbus fuzzer (``make fuzz``) and the load figure;
- the car and the back end (docs/iso15118.md): ``iso15118_secc`` (the product's EVSE
  controller for Josev's SECC), ``session`` (car, CSMS and firmware limits mapped onto the
  link), ``ocpp_client`` and ``csms`` (OCPP 2.1/2.0.1; the CSMS for tests and the demo),
  ``diagnostics`` (PLC/pilot), ``firmware_model`` (a stand-in with ``LinkPeer``'s methods,
  for tests without a board), ``station`` and ``demo`` (``make v2g-demo``);
- billing (docs/billing.md): ``billing_config`` (the ``billing:``/``mqtt:`` config
  sections), ``signing`` (per-station Ed25519 key, HSM note), ``outbox`` (SQLite outbox),
  ``tls`` (TLS 1.3 contexts, ``check_tls``), ``mqtt_publisher`` (aiomqtt publisher),
  ``commands`` (setpoint/demand validation, offers), ``record_source`` (a stand-in board
  for the host-only billing demo).

Context: host (the communication controller, a Linux box). Imports ``v2g.common``,
``v2g.build`` and ``v2g.link``.
"""
