"""Hosts on one machine: network namespaces joined by veth pairs to a bridge in a namespace of its own.

Nothing is added to the machine's own namespace: the bridge lives in `<prefix>-sw`, and each host's
veth pair runs from there into the host, where it is `eth0` with an address in SUBNET. No host has
a default route, so nothing can leave these namespaces; the test process reaches them only by
joining one (`Hosts.entered`, per thread) or through Unix sockets on the shared filesystem. While
they exist, the machine's own namespace routes SUBNET to a blackhole, so that even a mistaken
connection from outside the hosts sends nothing off this machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

SUBNET = "10.199.77"  # addresses exist only inside this test's namespaces
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def unavailable() -> str | None:
    """Why hosts cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root: network namespaces and veth pairs (CI runs this suite as root)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` (Debian: apt-get install iproute2)"
    probe = f"approbe{os.getpid() % 100000}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if done.returncode:
        return f"`ip netns add` is refused here: {done.stderr.strip()}"
    return None


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@dataclass
class Hosts:
    """`names` become hosts `<prefix>-<name>` at SUBNET.2, .3, ... on one bridge."""

    prefix: str
    names: tuple[str, ...]
    address: dict[str, str] = field(default_factory=dict)

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    @property
    def switch(self) -> str:
        return self.ns("sw")

    def port(self, name: str) -> str:
        """The switch-side end of a host's cable (at most 15 characters)."""
        return f"p{self.names.index(name)}"

    def up(self) -> Hosts:
        subprocess.run(["ip", "route", "add", "blackhole", f"{SUBNET}.0/24"], capture_output=True)
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for i, name in enumerate(self.names):
            ns, port = self.ns(name), self.port(name)
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            self.address[name] = f"{SUBNET}.{i + 2}"
            ip("-n", ns, "addr", "add", f"{self.address[name]}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        return self

    def down(self) -> None:
        """Delete every namespace (their veth pairs go with them)."""
        for ns in [self.ns(n) for n in self.names] + [self.switch]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if not any(n.startswith(f"{self.prefix.rstrip('0123456789')}") for n in _netns_names()):
            subprocess.run(["ip", "route", "del", "blackhole", f"{SUBNET}.0/24"], capture_output=True)

    def cut(self, name: str) -> None:
        """Pull the host's cable: its switch port goes down, the host loses carrier."""
        ip("-n", self.switch, "link", "set", self.port(name), "down")

    def exec_prefix(self, name: str) -> list[str]:
        """The command prefix that runs a process on host `name`."""
        return ["ip", "netns", "exec", self.ns(name)]

    @contextlib.contextmanager
    def entered(self, name: str) -> Iterator[None]:
        """Run this thread on host `name` for the block: sockets made here stay on that host, and
        threads started here are born there (Linux network namespaces are per thread)."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/var/run/netns/{self.ns(name)}", os.O_RDONLY)
        try:
            _setns(target)
            yield
        finally:
            _setns(home)
            os.close(target)
            os.close(home)
