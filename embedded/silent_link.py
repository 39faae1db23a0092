"""A TCP link to a backing service that a test can make silent without closing it: packets are
dropped with no reset and no error, as when a NAT entry expires or a host vanishes. Root only
(network namespaces); iproute2 (``ip``). tc netem is not built into every kernel, so the link is a
veth pair whose far end is set down.

The path: the client connects to ``address`` (the veth's far end, inside a network namespace made
for the link) → a forwarder process in that namespace → the veth's near end on the host → a
forwarder process on the host → the service (``target``, e.g. 127.0.0.1:5432). ``freeze()`` sets
the namespace's end of the veth down: the host's end loses its carrier, keeps its route, and every
packet of every connection through the link is dropped silently, both ways. ``heal()`` sets it up
again; connections opened afterwards work (those that were open are dead for their client once its
keepalives give up). ``close()`` stops both forwarders by PID and deletes the namespace and the
veth, always (the tests' fixtures and bench/silent_postgres.py call it in a ``finally``).
tests/support/silent_link.py adds the tests' skip when it cannot be made here.
"""

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from embedded.polling import wait_until
from embedded.servers import free_port

FORWARDER = Path(__file__).with_name("forwarder.py")
_links = itertools.count()


def unavailable_reason() -> str | None:
    """Return why a SilentLink cannot be made here (not root, no ``ip``), or None."""
    if os.geteuid() != 0:
        return "silent links need root (network namespaces and a veth pair); CI runs as root"
    if shutil.which("ip") is None:
        return "silent links need iproute2's ip"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class SilentLink:
    """A link to ``target`` (host, port) through a veth pair; connect to ``address`` (host, port)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        n = next(_links)
        tag = f"{os.getpid() % 100000}{n}"
        self.namespace, self.near, self.far = f"fsl{tag}", f"fsln{tag}", f"fslf{tag}"
        # A /30 per link, from the pid and a counter, so parallel test runs do not collide.
        block = (os.getpid() * 7 + n) % (256 * 64)
        base = f"10.215.{block // 64}.{(block % 64) * 4}"
        prefix = base.rsplit(".", 1)[0]
        last = int(base.rsplit(".", 1)[1])
        self.near_ip, self.far_ip = f"{prefix}.{last + 1}", f"{prefix}.{last + 2}"
        self.near_port, self.far_port = free_port(), free_port()
        self.forwarders: list[subprocess.Popen] = []

    @property
    def address(self) -> tuple[str, int]:
        return self.far_ip, self.far_port

    def open(self) -> "SilentLink":
        """Make the namespace, the veth pair and both forwarders; return once a connection passes.
        Raise subprocess.CalledProcessError when ``ip`` refuses (close() still cleans up)."""
        _ip("netns", "add", self.namespace)
        _ip("link", "add", self.near, "type", "veth", "peer", "name", self.far)
        _ip("link", "set", self.far, "netns", self.namespace)
        _ip("addr", "add", f"{self.near_ip}/30", "dev", self.near)
        _ip("link", "set", self.near, "up")
        _ip("-n", self.namespace, "addr", "add", f"{self.far_ip}/30", "dev", self.far)
        _ip("-n", self.namespace, "link", "set", self.far, "up")
        _ip("-n", self.namespace, "link", "set", "lo", "up")
        self._forward([], self.near_ip, self.near_port, *self.target)
        self._forward(["ip", "netns", "exec", self.namespace], self.far_ip, self.far_port, self.near_ip, self.near_port)
        wait_until(self._passes, deadline=10, interval=0.05, message="the silent link to pass connections")
        return self

    def _forward(self, prefix: list[str], host: str, port: int, target_host: str, target_port: int) -> None:
        argv = [*prefix, sys.executable, str(FORWARDER), host, str(port), target_host, str(target_port)]
        # ip netns exec execs the command: the PID is the forwarder's own.
        self.forwarders.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True))

    def _passes(self) -> bool:
        try:
            with socket.create_connection(self.address, timeout=0.5):
                return True
        except OSError:
            return False

    def freeze(self) -> None:
        """Drop every packet through the link from now on, silently (no reset, no ICMP)."""
        _ip("-n", self.namespace, "link", "set", self.far, "down")

    def heal(self) -> None:
        """Pass packets again."""
        _ip("-n", self.namespace, "link", "set", self.far, "up")
        wait_until(self._passes, deadline=10, interval=0.05, message="the healed link to pass connections")

    def close(self) -> None:
        """Stop the forwarders (by PID) and delete the veth pair and the namespace; never raises."""
        for forwarder in self.forwarders:
            if forwarder.poll() is None:
                forwarder.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                forwarder.wait(timeout=5)
        self.forwarders.clear()
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _ip("link", "del", self.near)  # deletes its peer too
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _ip("netns", "del", self.namespace)
