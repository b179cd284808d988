"""A mosquitto broker on loopback for the billing tests and demo (Debian's ``mosquitto``).

Listener on 127.0.0.1 only, TLS 1.3 only (``tls_version tlsv1.3``), a client certificate
required (``require_certificate true``) and used as the identity
(``use_identity_as_username true``: the certificate's CN is the MQTT user), no anonymous
clients, an ACL (``ACL`` below) that lets a station publish and subscribe only under its own
``v2g/<station>/`` and the ledger read records and write acks of every station.
Persistence on (``autosave_interval 1``), so a broker restart keeps the ledger's session
where it was saved; whatever it loses is sent again from the outbox.

``Broker(dir, port, ca, cert, key).start()``; ``kill9()`` / ``start()`` again for crash
tests; ``stop()``. ``mosquitto_exe()`` is None when the package is not installed.

Context: host (tests, ``make billing-demo``).
"""

import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time

ACL = """\
# the back-end ledger (certificate CN "ledger")
user ledger
topic read v2g/+/energy
topic write v2g/+/energy/ack
topic read v2g/+/telemetry
topic read v2g/+/offer
topic write v2g/+/cmd/setpoint
topic write v2g/+/demand

# the site energy manager (CN "sems", every instance): reads telemetry, writes
# setpoints, and its own lease, heartbeat and plan under v2g/_sems/
user sems
topic read v2g/+/telemetry
topic write v2g/+/cmd/setpoint
topic readwrite v2g/_sems/#

# the utility's demand signal to the SEMS (CN "utility"); it may watch the lease
user utility
topic readwrite v2g/_sems/+/demand
topic read v2g/_sems/+/lease
topic read v2g/_sems/+/heartbeat

# every station reads the SEMS heartbeat of its site
pattern read v2g/_sems/+/heartbeat

# every station only under its own v2g/<station>/ (%u: the certificate's CN)
pattern write v2g/%u/energy
pattern write v2g/%u/telemetry
pattern write v2g/%u/offer
pattern read v2g/%u/energy/ack
pattern read v2g/%u/cmd/setpoint
pattern read v2g/%u/demand
"""


def mosquitto_exe():
    """The mosquitto binary (PATH, then /usr/sbin), or None."""
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_GIVEN = set()


def listen_port(lo=20000, hi=32000):
    """A TCP port free on 127.0.0.1 now, below the kernel's ephemeral range (32768 up on
    Linux) so that the outgoing connections of a thousand stations cannot take it before
    the server that is given it binds (``free_port`` hands out ephemeral ports)."""
    start = random.randrange(lo, hi)
    for k in range(hi - lo):
        port = lo + (start - lo + k) % (hi - lo)
        if port in _GIVEN:  # handed out before, perhaps not bound yet
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _GIVEN.add(port)
            return port
    raise OSError("no free TCP port in %d..%d" % (lo, hi))


def wait_port(port, timeout=10.0, host="127.0.0.1"):
    """Wait until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Broker:
    """One mosquitto process with its config, ACL, persistence and log in ``directory``."""

    def __init__(self, directory, port, ca, cert, key):
        self.dir, self.port = str(directory), port
        os.makedirs(self.dir, exist_ok=True)
        self.log_path = os.path.join(self.dir, "mosquitto.log")
        self.conf_path = os.path.join(self.dir, "mosquitto.conf")
        acl = os.path.join(self.dir, "acl")
        with open(acl, "w") as f:
            f.write(ACL)
        os.chmod(acl, 0o600)
        user = pwd.getpwuid(os.getuid()).pw_name
        conf = [
            "per_listener_settings false",
            "user %s" % user,  # as root mosquitto would switch to 'mosquitto'
            "allow_anonymous false",
            "acl_file %s" % acl,
            "persistence true",
            "persistence_location %s/" % self.dir,
            "autosave_interval 1",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            "log_dest file %s" % self.log_path,
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "listener %d 127.0.0.1" % port,
            "cafile %s" % ca,
            "certfile %s" % cert,
            "keyfile %s" % key,
            "require_certificate true",
            "use_identity_as_username true",
            "tls_version tlsv1.3",
        ]
        with open(self.conf_path, "w") as f:
            f.write("\n".join(conf) + "\n")
        self.proc = None

    def start(self, timeout=10.0):
        exe = mosquitto_exe()
        if exe is None:
            raise RuntimeError("mosquitto is not installed (Debian package mosquitto; "
                               "`make tools` installs it)")
        self.proc = subprocess.Popen([exe, "-c", self.conf_path], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        if not wait_port(self.port, timeout):
            err = b""
            if self.proc.poll() is not None:
                err = self.proc.stderr.read()
            self.stop()
            raise RuntimeError("mosquitto did not listen on 127.0.0.1:%d: %s; log %s"
                               % (self.port, err.decode(errors="replace"), self.log_path))
        return self

    def kill9(self):
        """SIGKILL the broker (a crash: nothing saved since the last autosave)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""
