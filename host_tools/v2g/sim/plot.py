"""Plot a scenario trace: voltages, currents, PLL angle error, frequency, power, state.

Context: host only (matplotlib, Agg backend: no display needed).
"""

import numpy as np


def load_trace(path):
    """Trace CSV -> dict of column name -> numpy array (``state`` stays text)."""
    with open(path) as f:
        header = f.readline().strip().split(",")
        rows = [line.rstrip("\n").split(",") for line in f if line.strip()]
    cols = {}
    for j, name in enumerate(header):
        vals = [r[j] for r in rows]
        if name == "state":
            cols[name] = np.array(vals)
        else:
            cols[name] = np.array([float(v) for v in vals])
    return cols


def draw(trace_path, png_path, result=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = load_trace(trace_path)
    t = c["t_s"]
    err = np.degrees(np.angle(np.exp(1j * (c["theta_rad"] - c["grid_theta_rad"]))))
    err[c["locked"] == 0] = np.nan
    fig, ax = plt.subplots(6, 1, sharex=True, figsize=(11, 13))
    for ph in "abc":
        ax[0].plot(t, c["v_" + ph], lw=0.7, label="v_" + ph)
        ax[1].plot(t, c["i_" + ph], lw=0.7, label="i_" + ph)
    ax[0].set_ylabel("V")
    ax[1].set_ylabel("A")
    ax[2].plot(t, err, lw=0.8)
    ax[2].set_ylabel("PLL error (deg)")
    ax[3].plot(t, c["f_hz"], lw=0.8)
    ax[3].set_ylabel("f (Hz)")
    ax[4].plot(t, c["p_w"] / 1000, lw=0.8, label="P (kW, >0 import)")
    ax[4].plot(t, c["q_var"] / 1000, lw=0.8, label="Q (kvar, >0 absorb)")
    ax[4].set_ylabel("power")
    states = list(dict.fromkeys(c["state"].tolist()))
    ax[5].step(t, [states.index(s) for s in c["state"]], where="post")
    ax[5].set_yticks(range(len(states)))
    ax[5].set_yticklabels(states, fontsize=7)
    ax[5].set_xlabel("t (s)")
    for a in ax:
        a.grid(alpha=0.3)
    for a in (ax[0], ax[1], ax[4]):
        a.legend(loc="upper right", fontsize=7)
    title = "scenario"
    if result:
        title = "%s: first trip %s, export %.2f Wh" % (result.get("scenario"),
                                                        result.get("first_trip_s"),
                                                        result["energy_wh"]["export"])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
