"""The daemon's stand-in car (``v2g.gateway.sim_ev``, config ``sim_ev``): SoC from the
firmware's metered energy, a BMS's floor and ceiling, and what it tells the board over the
link (EV_LIMITS, EV_SOC, SESSION start at every new link session)."""

import asyncio

import pytest
from v2g.gateway import config
from v2g.gateway.sim_ev import SimEv


def _img(export_mwh, import_mwh=0):
    return {"energy_export_wh": export_mwh // 1000, "energy_export_sub_mwh": export_mwh % 1000,
            "energy_import_wh": import_mwh // 1000, "energy_import_sub_mwh": import_mwh % 1000,
            "state": 4, "p_meas_w": -7000}


class Peer:
    """The LinkPeer calls the car makes, recorded."""

    def __init__(self):
        self.state, self.nonce, self.calls, self.image_listeners = "UP", 1, [], []

    async def ev_limits(self, *a):
        self.calls.append(("ev_limits",) + a)

    async def ev_soc(self, soc):
        self.calls.append(("ev_soc", soc))

    async def session(self, start, sid):
        self.calls.append(("session", start, sid))

    def image(self, img):
        for fn in self.image_listeners:
            fn(img)


def test_soc_follows_the_firmware_meter_and_the_bms_limits():
    ev = SimEv({"soc_pm": 500, "soc_min_pm": 200, "capacity_wh": 10000,
                "max_discharge_w": 7000})
    ev.on_image(_img(1_000_000))           # the first image is the start
    ev.on_image(_img(1_000_000 + 500_000))  # 500 Wh exported of 10 kWh: -50 permille
    assert ev.state()["soc_pm"] == pytest.approx(450.0)
    assert ev.state()["max_discharge_w"] == 7000
    ev.on_image(_img(1_000_000 + 3_000_000))  # down to the floor: no discharge offered
    st = ev.state()
    assert st["soc_pm"] == pytest.approx(200.0) and st["max_discharge_w"] == 0.0
    assert st["max_charge_w"] == 11000.0


def test_announced_on_every_new_link_session_and_soc_sent_as_it_moves():
    async def go():
        ev, peer = SimEv({"soc_pm": 800, "soc_min_pm": 300, "capacity_wh": 1000}), Peer()
        await ev.step(peer)
        assert peer.calls == [("ev_limits", 11000, 11000, 300), ("ev_soc", 800),
                              ("session", True, 1)]
        peer.calls.clear()
        peer.image(_img(0))
        peer.image(_img(2_000))  # 2 Wh of 1 kWh: -2 permille
        await ev.step(peer)
        assert peer.calls == [("ev_soc", 798)]
        peer.calls.clear()
        await ev.step(peer)
        assert peer.calls == []  # nothing changed, nothing sent
        peer.nonce = 2  # the daemon opened a new session (board restarted): again
        await ev.step(peer)
        assert peer.calls == [("ev_limits", 11000, 11000, 300), ("ev_soc", 798),
                              ("session", True, 1)]
        assert len(peer.image_listeners) == 1
    asyncio.run(go())


def _cfg(**extra):
    d = {"link": {"device": "/dev/null"}}
    d.update(extra)
    return d


def test_config_section_checked():
    cfg = config.parse(_cfg(sim_ev={"soc_pm": 700, "capacity_wh": 50000}))
    assert cfg.sim_ev == {"soc_pm": 700.0, "capacity_wh": 50000.0}
    with pytest.raises(config.ConfigError, match=r"'sim_ev.soc_pm': value 1200.0 outside"):
        config.parse(_cfg(sim_ev={"soc_pm": 1200}))
    with pytest.raises(config.ConfigError, match=r"unknown key 'sim_ev.soc'"):
        config.parse(_cfg(sim_ev={"soc": 50}))
    with pytest.raises(config.ConfigError, match=r"sim_ev.soc_min_pm': value 900.0 is above"):
        config.parse(_cfg(sim_ev={"soc_min_pm": 900, "soc_max_pm": 800}))
