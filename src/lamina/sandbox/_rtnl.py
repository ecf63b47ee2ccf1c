"""The few rtnetlink requests a sandbox's veth needs, sent straight to the kernel.

A veth used to be made by running `ip -b -` (link add, addr add, link up): a process started
per environment, several milliseconds of the server's CPU and of the pool's refill time each
(what `ip` itself does is one netlink message per line). Here the same pair is made with one
RTM_NEWLINK on a netlink socket: the host end named and put in its interface group, the peer
`eth0` created directly in the environment's network namespace (by descriptor), as
`ip link add NAME group G type veth peer name eth0 netns FD` asks. The host end's address
and state are then set with the same ioctls that configure the namespace's end.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

_RTM_NEWLINK = 16
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLM_F_EXCL = 0x200
_NLM_F_CREATE = 0x400
_NLMSG_ERROR = 2
_IFLA_IFNAME = 3
_IFLA_LINKINFO = 18
_IFLA_GROUP = 27
_IFLA_NET_NS_FD = 28
_IFLA_INFO_KIND = 1
_IFLA_INFO_DATA = 2
_VETH_INFO_PEER = 1
#: struct ifinfomsg: family, pad, type, index, flags, change
_IFINFOMSG = struct.Struct("=BxHiII")
_NLMSGHDR = struct.Struct("=IHHII")


def _attr(kind: int, payload: bytes) -> bytes:
    """One rtattr (length, type, payload), padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _name(name: str) -> bytes:
    return name.encode() + b"\0"


def veth_request(name: str, group: int, peer: str, netns_fd: int, seq: int = 1) -> bytes:
    """The RTM_NEWLINK message making veth `name` (in `group`) with its peer `peer` in the
    network namespace `netns_fd`; fails with EEXIST if `name` is taken."""
    peer_info = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    peer_attrs = _attr(_IFLA_IFNAME, _name(peer)) + _attr(
        _IFLA_NET_NS_FD, struct.pack("=I", netns_fd)
    )
    info = _attr(_IFLA_INFO_KIND, b"veth") + _attr(
        _IFLA_INFO_DATA, _attr(_VETH_INFO_PEER, peer_info + peer_attrs)
    )
    body = (
        _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        + _attr(_IFLA_IFNAME, _name(name))
        + _attr(_IFLA_GROUP, struct.pack("=I", group))
        + _attr(_IFLA_LINKINFO, info)
    )
    flags = _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_EXCL
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), _RTM_NEWLINK, flags, seq, 0) + body


def add_veth(name: str, group: int, peer: str, netns_fd: int) -> None:
    """Make the veth pair (see `veth_request`); OSError (errno EEXIST if the name is taken)
    when the kernel refuses. Blocking, briefly: call it off the event loop."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
        nl.settimeout(5)
        nl.send(veth_request(name, group, peer, netns_fd))
        reply = nl.recv(65536)
    check_ack(reply, f"add veth {name}")


def check_ack(reply: bytes, what: str) -> None:
    """Raise OSError unless `reply` is a netlink acknowledgement without error."""
    if len(reply) < _NLMSGHDR.size + 4:
        raise OSError(errno.EIO, f"{what}: short netlink reply")
    _, kind, _, _, _ = _NLMSGHDR.unpack_from(reply)
    if kind != _NLMSG_ERROR:
        raise OSError(errno.EIO, f"{what}: unexpected netlink reply {kind}")
    error = struct.unpack_from("=i", reply, _NLMSGHDR.size)[0]
    if error:
        raise OSError(-error, f"{what}: {os.strerror(-error)}")
