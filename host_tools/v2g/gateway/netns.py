"""A pair of network namespaces joined by a veth pair: the car's side and the charger's.

SDP (ISO 15118's SECC discovery) is IPv6 link-local multicast, which loopback does not
carry; a veth pair between two namespaces does. Duplicate address detection is switched
off so the link-local addresses are usable at once. Needs root and iproute2's ``ip``;
``available()`` says why not where they are missing. Names carry the process id, so
parallel runs do not collide; ``close()`` deletes both namespaces (the veth goes with
them).
Context: host (tests, demo).
"""

import os
import shutil
import subprocess
import time


def available():
    """(True, "") or (False, reason)."""
    if os.geteuid() != 0:
        return False, "needs root to create network namespaces (SDP needs IPv6 multicast)"
    if shutil.which("ip") is None:
        return False, "iproute2 'ip' not found"
    return True, ""


def _run(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=20)


class VethPair:
    def __init__(self, tag=None):
        tag = tag or str(os.getpid() % 100000)
        self.ns_ev, self.ns_se = "v2gev%s" % tag, "v2gse%s" % tag
        self.if_ev, self.if_se = "v2gev%s" % tag, "v2gse%s" % tag

    def open(self):
        self.close()
        _run("ip", "netns", "add", self.ns_ev)
        _run("ip", "netns", "add", self.ns_se)
        _run("ip", "link", "add", self.if_ev, "type", "veth", "peer", "name", self.if_se)
        for ns, ifn in ((self.ns_ev, self.if_ev), (self.ns_se, self.if_se)):
            _run("ip", "link", "set", ifn, "netns", ns)
            for key in ("all", "default", ifn):
                _run("ip", "netns", "exec", ns, "sysctl", "-qw",
                     "net.ipv6.conf.%s.accept_dad=0" % key)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            _run("ip", "netns", "exec", ns, "ip", "link", "set", ifn, "up")
        # wait for both link-local addresses
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if all("fe80" in _run("ip", "netns", "exec", ns, "ip", "-6", "addr", "show",
                                  ifn).stdout
                   for ns, ifn in ((self.ns_ev, self.if_ev), (self.ns_se, self.if_se))):
                return self
            time.sleep(0.05)
        raise RuntimeError("veth link-local addresses did not appear")

    def exec_argv(self, side, argv):
        ns = self.ns_ev if side == "ev" else self.ns_se
        return ["ip", "netns", "exec", ns, *argv]

    def close(self):
        for ns in (self.ns_ev, self.ns_se):
            _run("ip", "netns", "del", ns, check=False)

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()
