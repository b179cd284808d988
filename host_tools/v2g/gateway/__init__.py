"""``v2g-daemon`` on the communication controller (minimal placeholder on the billing branch).

Billing modules here: ``billing_config`` (the ``billing:``/``mqtt:`` config sections),
``signing`` (per-station Ed25519 key, HSM note), ``outbox`` (SQLite outbox), ``tls``
(TLS 1.3 contexts, ``check_tls``), ``mqtt_publisher`` (aiomqtt publisher), ``commands``
(setpoint/demand validation, offers), ``record_source`` (the stand-in board).

Context: host (the communication controller). Imports ``v2g.common`` (and ``v2g.link``).
"""
