"""Network namespaces for sandboxes, made ahead of need.

Each environment gets a network namespace of its own. Lamina makes it from one dedicated
thread (`unshare(CLONE_NEWNET)` moves only that thread; it `setns`es back after), and while it
is inside it opens the sockets Lamina serves there: the Runtime API on 127.0.0.1:9001 and a
relay to Lamina's own API on 127.0.0.1:<port> (the function's `AWS_ENDPOINT_URL`). The sandbox
joins the namespace with one `setns()`; creating one costs ~0.5 ms plus, with egress, the
veth (one netlink message and a few ioctls, `_rtnl.py`), which is why a few are kept ready.

Egress (the default, as on Lambda): a veth pair, the host end `lmv<N>` with 10.213.x.1/30 and
the namespace's `eth0` with .2, the default route through the host, and masquerading out.
nftables rules (table `inet lamina`, shared by every Lamina server on the host) drop what
arrives from `lmv*` for the host itself (so the host's services are out of reach) and what
would go from one sandbox to another. Every server loads the same shared table, replacing it
in one transaction (`nft -f` applies a file atomically), so a server starting never opens a
gap under one that runs. What the environments may reach beyond that (no metadata, no private
networks unless opened) is each server's own table (`_egress.py`). Without `nft`, or if that
table cannot be loaded, namespaces get loopback only.

Namespaces are held by descriptor only, never named under /run/netns: when the environment's
processes are gone and Lamina closes the descriptor (or dies), the kernel frees the namespace
and its veth, so a crash leaks nothing.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import random
import shutil
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass, field

from lamina.sandbox._egress import EgressPolicy, Firewall, set_group
from lamina.sandbox._rtnl import add_veth

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
RUNTIME_API_PORT = 9001
SUBNET = "10.213.0.0/16"
_INDEXES = 1 << 14  # /30s in the /16

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_SIOCSIFADDR = 0x8916
_SIOCSIFNETMASK = 0x891C
_SIOCADDRT = 0x890B
_IFF_UP = 0x1
_RTF_UP = 0x1
_RTF_GATEWAY = 0x2

_libc = ctypes.CDLL(None, use_errno=True)

_NFT_RULES = """
table inet lamina
delete table inet lamina
table inet lamina {
    chain input {
        type filter hook input priority -10; policy accept;
        iifname "lmv*" ct state established,related accept
        iifname "lmv*" drop
    }
    chain forward {
        type filter hook forward priority -10; policy accept;
        iifname "lmv*" oifname "lmv*" drop
        iifname "lmv*" accept
        oifname "lmv*" ct state established,related accept
        oifname "lmv*" drop
    }
    chain postrouting {
        type nat hook postrouting priority 100; policy accept;
        ip saddr 10.213.0.0/16 oifname != "lmv*" masquerade
    }
}
"""


def _sockaddr_in(address: str) -> bytes:
    return struct.pack("<H", socket.AF_INET) + b"\0\0" + socket.inet_aton(address) + b"\0" * 8


def _ifreq(name: str, payload: bytes) -> bytes:
    return name.encode().ljust(16, b"\0") + payload.ljust(24, b"\0")


class _RtEntry(ctypes.Structure):
    _fields_ = [
        ("rt_pad1", ctypes.c_ulong),
        ("rt_dst", ctypes.c_char * 16),
        ("rt_gateway", ctypes.c_char * 16),
        ("rt_genmask", ctypes.c_char * 16),
        ("rt_flags", ctypes.c_ushort),
        ("rt_pad2", ctypes.c_short),
        ("rt_pad3", ctypes.c_ulong),
        ("rt_pad4", ctypes.c_void_p),
        ("rt_metric", ctypes.c_short),
        ("rt_dev", ctypes.c_char_p),
        ("rt_mtu", ctypes.c_ulong),
        ("rt_window", ctypes.c_ulong),
        ("rt_irtt", ctypes.c_ushort),
    ]


def _link_up(ctl: socket.socket, name: str, address: str | None = None) -> None:
    if address is not None:
        fcntl.ioctl(ctl, _SIOCSIFADDR, _ifreq(name, _sockaddr_in(address)))
        fcntl.ioctl(ctl, _SIOCSIFNETMASK, _ifreq(name, _sockaddr_in("255.255.255.252")))
    flags = struct.unpack_from("<H", fcntl.ioctl(ctl, _SIOCGIFFLAGS, _ifreq(name, b"")), 16)[0]
    fcntl.ioctl(ctl, _SIOCSIFFLAGS, _ifreq(name, struct.pack("<H", flags | _IFF_UP)))


def _default_route(ctl: socket.socket, gateway: str) -> None:
    entry = _RtEntry()
    base = ctypes.addressof(entry)
    # (ctypes' char-array assignment stops at the first NUL: copy the addresses as bytes)
    for name, address in (
        ("rt_dst", "0.0.0.0"),
        ("rt_genmask", "0.0.0.0"),
        ("rt_gateway", gateway),
    ):
        ctypes.memmove(base + getattr(_RtEntry, name).offset, _sockaddr_in(address), 16)
    entry.rt_flags = _RTF_UP | _RTF_GATEWAY
    fcntl.ioctl(ctl, _SIOCADDRT, bytes(entry))


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


@dataclass
class NetNamespace:
    """One prepared network namespace and the sockets Lamina serves inside it."""

    fd: int
    runtime_api: socket.socket
    #: listens on the port of Lamina's API inside the namespace (None: no network)
    api_relay: socket.socket | None
    #: listeners on the ports of other loopback services relayed in (`--aws-endpoint`
    #: URLs on the host's loopback), by port
    extra_relays: dict[int, socket.socket] = field(default_factory=dict)
    #: the host end of the veth (None: loopback only)
    veth: str | None = None
    index: int | None = None
    closed: bool = field(default=False)

    def close(self) -> None:
        """Release Lamina's hold; the kernel frees the namespace (and veth) when the
        sandbox's processes are gone too."""
        if self.closed:
            return
        self.closed = True
        self.runtime_api.close()
        if self.api_relay is not None:
            self.api_relay.close()
        for relay in self.extra_relays.values():
            relay.close()
        os.close(self.fd)


class NetworkFactory:
    """Makes network namespaces from one thread (setns is per thread)."""

    def __init__(
        self,
        api_port: int,
        policy: EgressPolicy | None = None,
        extra_ports: tuple[int, ...] = (),
    ) -> None:
        self._api_port = api_port
        self._policy = policy or EgressPolicy()
        self._extra_ports = tuple(p for p in extra_ports if p not in (api_port, RUNTIME_API_PORT))
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lamina-netns")
        self._host_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
        self._ip = shutil.which("ip") or "/usr/sbin/ip"
        self.egress = False
        #: this server's egress rules (None: no egress)
        self.firewall: Firewall | None = None
        self._used: set[int] = set()
        self._lock = threading.Lock()

    def setup(self) -> None:
        """Enable egress if the host allows it: forwarding, and the nftables rules."""
        nft = shutil.which("nft")
        if nft is None or not os.path.exists(self._ip):
            log.warning("nft or ip missing: sandboxes get loopback only (no egress)")
            return
        firewall = Firewall(nft, self._ip, self._policy)
        try:
            subprocess.run([nft, "-f", "-"], input=_NFT_RULES.encode(), check=True, timeout=30)
            # Fail closed: without this server's policy, its environments get no veth at all.
            firewall.install()
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write("1")
        except (OSError, subprocess.SubprocessError) as e:
            firewall.remove()
            log.warning("sandbox egress disabled: %s", e)
            return
        self.firewall = firewall
        self.egress = True
        log.info(
            "sandbox egress: table inet %s; open to every function: %s; VPCs: %s; closed "
            "host networks: %s",
            firewall.table,
            ", ".join(map(str, self._policy.allow)) or "none beyond the internet",
            ", ".join(self._policy.vpcs) or "none",
            ", ".join(map(str, firewall.facts.networks)) or "none",
        )

    def make(self, egress: bool, fd: int | None = None) -> NetNamespace:
        """A new namespace (blocking: call it off the event loop); with `fd`, one someone
        else made (a SnapStart copy makes its own, in its own user namespace), set up the
        same way and held by `fd` (taken: closed on failure)."""
        try:
            ns = self._thread.submit(self._make_inside, fd).result()
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        if egress and self.egress:
            try:
                self._add_veth(ns)
            except BaseException:
                ns.close()
                raise
        return ns

    def _make_inside(self, fd: int | None = None) -> NetNamespace:
        if fd is not None:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns: {os.strerror(err)}")
        elif _libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
        try:
            if fd is None:
                fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ctl:
                _link_up(ctl, "lo")
            api = _listen(RUNTIME_API_PORT)
            relay = _listen(self._api_port)
            extra = {port: _listen(port) for port in self._extra_ports}
            return NetNamespace(fd=fd, runtime_api=api, api_relay=relay, extra_relays=extra)
        finally:
            if _libc.setns(self._host_ns, CLONE_NEWNET) != 0:  # pragma: no cover
                os._exit(70)  # a server thread stuck in a sandbox's namespace: never go on

    def socket_in(self, ns: NetNamespace) -> socket.socket:
        """A new, non-blocking TCP socket living in `ns` (blocking: off the event loop)."""
        return self._thread.submit(self._socket_inside, ns.fd).result()

    def _socket_inside(self, fd: int) -> socket.socket:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            return sock
        finally:
            if _libc.setns(self._host_ns, CLONE_NEWNET) != 0:  # pragma: no cover
                os._exit(70)

    def _add_veth(self, ns: NetNamespace) -> None:
        assert self.firewall is not None
        group = self.firewall.default_group
        for _ in range(16):
            index = self._allocate()
            veth = f"lmv{index}"
            try:
                # One netlink message, no `ip` process: see `_rtnl`.
                add_veth(veth, group, "eth0", ns.fd)
            except OSError as e:
                self._release(index)
                if e.errno != errno.EEXIST:
                    raise
                continue  # another Lamina server on this host holds that index
            break
        else:
            raise OSError("no free sandbox network index")
        ns.veth, ns.index = veth, index
        host, inside = _addresses(index)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ctl:
            _link_up(ctl, veth, host)
        self._thread.submit(self._configure_inside, ns.fd, inside, host).result()

    def _configure_inside(self, fd: int, address: str, gateway: str) -> None:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ctl:
                _link_up(ctl, "eth0", address)
                _default_route(ctl, gateway)
        finally:
            if _libc.setns(self._host_ns, CLONE_NEWNET) != 0:  # pragma: no cover
                os._exit(70)

    def join_vpc(self, ns: NetNamespace, vpc: str) -> None:
        """Open the networks of `vpc` to this environment (its function is in that VPC).
        One netlink message, no process (blocking, briefly: call it off the event loop)."""
        if ns.veth is None or self.firewall is None:
            return
        set_group(ns.veth, self.firewall.group(vpc))

    def drop_egress(self, ns: NetNamespace) -> None:
        """Take the veth away (a function with no network); blocking."""
        if ns.veth is None:
            return
        subprocess.run([self._ip, "link", "del", ns.veth], capture_output=True, timeout=30)
        if ns.index is not None:
            self._release(ns.index)
        ns.veth = ns.index = None

    def forget(self, ns: NetNamespace) -> None:
        """The namespace is closed: its index may be reused (the kernel removes the veth)."""
        if ns.index is not None:
            self._release(ns.index)
            ns.index = None

    def _allocate(self) -> int:
        with self._lock:
            for _ in range(64):
                index = random.randrange(1, _INDEXES)
                if index not in self._used and not os.path.exists(f"/sys/class/net/lmv{index}"):
                    self._used.add(index)
                    return index
        raise OSError("no free sandbox network index")

    def _release(self, index: int) -> None:
        with self._lock:
            self._used.discard(index)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        if self.firewall is not None:
            self.firewall.remove()
        with contextlib.suppress(OSError):
            os.close(self._host_ns)


def _addresses(index: int) -> tuple[str, str]:
    base = (10 << 24) | (213 << 16) | (index << 2)
    return socket.inet_ntoa(struct.pack(">I", base | 1)), socket.inet_ntoa(
        struct.pack(">I", base | 2)
    )
