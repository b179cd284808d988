"""``v2g-daemon`` on the communication controller (placeholder package marker).

The ISO 15118 / OCPP branch adds only new modules here: ``iso15118_secc`` (the product's
EVSE controller for Josev's SECC), ``session`` (car, CSMS and firmware limits mapped onto
the link), ``ocpp_client`` and ``csms`` (OCPP 2.1/2.0.1), ``diagnostics`` (PLC/pilot),
``firmware_model`` (a stand-in with ``LinkPeer``'s methods), ``station`` and ``demo``.
The daemon process itself comes from the link/field-bus work.
"""
