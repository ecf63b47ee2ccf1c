"""The seccomp deny-list installed in every namespace sandbox, as a classic-BPF program.

Why: namespaces, dropped privileges and cgroups are the sandbox; this filter is the layer
behind them. It refuses the system calls that are the usual first step out of a container or
into a kernel bug — the mount API, new namespaces, ptrace and cross-process memory access,
BPF, keyrings, kernel modules, perf, clock and host-identity changes — so that a mistake in
the other layers (or a kernel bug reachable only through these calls) is not enough on its own.

Trade-offs, chosen on purpose:

- A deny-list, not an allow-list. Lambda runs arbitrary runtimes and native extensions; an
  allow-list breaks them in ways that are hard to see from inside a function (a missing
  syscall looks like a random I/O error). The price: a syscall the kernel adds later is
  allowed until it is named here (as `open_tree_attr`, new in Linux 6.15, has been).
- Refused calls fail with EPERM rather than killing the process, so code sees an ordinary
  `PermissionError` it can report. Only a foreign system-call ABI (32-bit `int 0x80` or x32
  on x86_64, AArch32 on arm64) kills the process: a deny-list keyed on native numbers cannot
  describe another table, and nothing in a Lambda environment needs one.
- `clone3` fails with ENOSYS: its flags sit in a struct in memory, which a seccomp filter
  cannot read, so they cannot be checked the way `clone`'s are. glibc (2.34+) and other libcs
  then fall back to `clone`, whose flags are a register we do check. Docker's default profile
  does the same.
- A bisection on the syscall number (about 85 instructions) rather than the simplest linear
  chain (about 70). Since Linux 5.11 the kernel caches, per syscall number, the verdict of a
  filter that does not look at arguments, so allowed calls skip the program at run time (only
  `clone` and `personality`, whose arguments we inspect, run it every time). But it builds
  that cache at install by running the filter once for every syscall number, so install time
  grows with the path a number takes: on an x86_64 VM the linear chain took ~215 us to
  install and the bisection ~110 us (a one-instruction filter: ~35 us), paid on every cold
  start.
- Assembled here by hand from the standard library (no libseccomp): the zygote imports this
  file as a top-level module under whichever Python 3.9-3.13 the function's runtime uses.
- Installed with prctl(2), which filters the calling thread only (no TSYNC): the sandbox
  child is single-threaded when it installs it, and every thread or process it creates
  afterwards inherits the filter.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import platform
import struct
from collections.abc import Callable, Sequence

__all__ = ["DENIED", "build_filter", "install"]

# -- constants from the kernel's UAPI headers (linux/seccomp.h, linux/filter.h, linux/audit.h)

_PR_SET_SECCOMP = 22
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_MODE_FILTER = 2

_SECCOMP_RET_KILL_PROCESS = 0x80000000
_SECCOMP_RET_ERRNO = 0x00050000
_SECCOMP_RET_ALLOW = 0x7FFF0000

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARG0_LOW = 16  # low 32 bits of args[0] on a little-endian machine (both we support)

# Classic BPF opcodes: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|{JEQ,JGE,JSET}|BPF_K, BPF_RET|BPF_K.
_LD_W_ABS = 0x20
_JEQ = 0x15
_JGE = 0x35
_JSET = 0x45
_RET = 0x06

_INSN = struct.Struct("=HBBI")  # struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }
_BPF_MAXINSNS = 4096

_X32_SYSCALL_BIT = 0x40000000
_NO_SYSCALL = 0xFFFFFFFF  # nr -1: a tracer skipping a call; the kernel answers ENOSYS

# Namespace flags refused in clone(): NEWTIME, NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
# NEWPID, NEWNET. CLONE_NEWTIME (0x80) lies in clone()'s exit-signal byte, so the kernel
# would never read it as a flag there; it is kept in the mask as belt and braces (no valid
# signal number has that bit).
_CLONE_NEW_NAMESPACES = 0x7E020080

# personality(2) values allowed (the rest, e.g. ADDR_NO_RANDOMIZE or READ_IMPLIES_EXEC,
# switch off exploit mitigations for everything the function executes): PER_LINUX,
# PER_LINUX32, UNAME26, PER_LINUX32|UNAME26 and 0xffffffff, which only queries. The same
# set as Docker's default profile. The kernel reads the argument as 32 bits, as we do.
_PERSONALITY_ALLOWED = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

DENIED: tuple[str, ...] = (
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "open_tree_attr",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "userfaultfd",
    "bpf",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "keyctl",
    "add_key",
    "request_key",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "open_by_handle_at",
    "name_to_handle_at",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "syslog",
    "lookup_dcookie",
    "vhangup",
    "sethostname",
    "setdomainname",
    "iopl",
    "ioperm",
    "uselib",
)
"""Syscalls that always fail with EPERM, where the architecture has them (`iopl`, `ioperm`
and `uselib` exist on x86_64 only). Besides these, `clone` with a namespace flag and
`personality` with a value other than the few listed fail with EPERM, and `clone3` with
ENOSYS."""

# Syscall numbers: x86_64 from arch/x86/entry/syscalls/syscall_64.tbl (asm/unistd_64.h);
# aarch64 uses the generic table (asm-generic/unistd.h, scripts/syscall.tbl since 6.11).
# A name an architecture lacks is simply absent from its table.
_X86_64 = {
    "clone": 56,
    "clone3": 435,
    "personality": 135,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "move_mount": 429,
    "open_tree": 428,
    "open_tree_attr": 467,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "unshare": 272,
    "setns": 308,
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "pidfd_getfd": 438,
    "userfaultfd": 323,
    "bpf": 321,
    "perf_event_open": 298,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "reboot": 169,
    "swapon": 167,
    "swapoff": 168,
    "acct": 163,
    "quotactl": 179,
    "quotactl_fd": 443,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "settimeofday": 164,
    "clock_settime": 227,
    "clock_adjtime": 305,
    "adjtimex": 159,
    "syslog": 103,
    "lookup_dcookie": 212,
    "vhangup": 153,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "uselib": 134,
}

_AARCH64 = {
    "clone": 220,
    "clone3": 435,
    "personality": 92,
    "mount": 40,
    "umount2": 39,
    "pivot_root": 41,
    "chroot": 51,
    "move_mount": 429,
    "open_tree": 428,
    "open_tree_attr": 467,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "unshare": 97,
    "setns": 268,
    "ptrace": 117,
    "process_vm_readv": 270,
    "process_vm_writev": 271,
    "kcmp": 272,
    "pidfd_getfd": 438,
    "userfaultfd": 282,
    "bpf": 280,
    "perf_event_open": 241,
    "kexec_load": 104,
    "kexec_file_load": 294,
    "init_module": 105,
    "finit_module": 273,
    "delete_module": 106,
    "keyctl": 219,
    "add_key": 217,
    "request_key": 218,
    "reboot": 142,
    "swapon": 224,
    "swapoff": 225,
    "acct": 89,
    "quotactl": 60,
    "quotactl_fd": 443,
    "open_by_handle_at": 265,
    "name_to_handle_at": 264,
    "settimeofday": 170,
    "clock_settime": 112,
    "clock_adjtime": 266,
    "adjtimex": 171,
    "syslog": 116,
    "lookup_dcookie": 18,
    "vhangup": 58,
    "sethostname": 161,
    "setdomainname": 162,
}

# platform.machine() → (AUDIT_ARCH_* of the native ABI, syscall table).
_ARCHES = {
    "x86_64": (0xC000003E, _X86_64),
    "aarch64": (0xC00000B7, _AARCH64),
}


class _Assembler:
    """Classic BPF with forward jumps to named labels, resolved (and range-checked) at the end."""

    def __init__(self) -> None:
        self._code: list[tuple[int, int, str | None, str | None]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self._labels[name] = len(self._code)

    def load(self, offset: int) -> None:
        self._code.append((_LD_W_ABS, offset, None, None))

    def jump(self, op: int, k: int, jt: str | None = None, jf: str | None = None) -> None:
        """Compare A with k: go to label jt if true, jf if false (None: the next instruction)."""
        self._code.append((op, k, jt, jf))

    def ret(self, k: int) -> None:
        self._code.append((_RET, k, None, None))

    def assemble(self) -> bytes:
        if len(self._code) > _BPF_MAXINSNS:
            raise ValueError(f"seccomp: {len(self._code)} instructions, over {_BPF_MAXINSNS}")
        out = bytearray()
        for pc, (code, k, jt, jf) in enumerate(self._code):
            out += _INSN.pack(code, self._offset(pc, jt), self._offset(pc, jf), k)
        return bytes(out)

    def _offset(self, pc: int, label: str | None) -> int:
        if label is None:
            return 0
        offset = self._labels[label] - pc - 1
        # Classic BPF jumps only forward, by an 8-bit offset.
        if not 0 <= offset <= 0xFF:
            raise ValueError(f"seccomp: jump from {pc} to {label!r} is out of range ({offset})")
        return offset


def _bisect(asm: _Assembler, cases: list[tuple[int, str]]) -> None:
    """Send A (a syscall number) to the label paired with it in `cases`, else to "allow".

    `cases` is sorted by number. Up to 4 cases are compared one by one; more are split in
    two around the middle number, so any number meets at most ~4 splits and 4 compares.
    """
    if len(cases) <= 4:
        for i, (nr, label) in enumerate(cases):
            asm.jump(_JEQ, nr, jt=label, jf="allow" if i == len(cases) - 1 else None)
        return
    middle = len(cases) // 2
    upper = f"nr>={cases[middle][0]}"
    asm.jump(_JGE, cases[middle][0], jt=upper)
    _bisect(asm, cases[:middle])
    asm.label(upper)
    _bisect(asm, cases[middle:])


def build_filter(
    arch: str | None = None, deny: Sequence[str] = DENIED, arguments: bool = True
) -> bytes:
    """Return the filter program for `arch` (default: this machine) as packed `sock_filter`s.

    `arch` is a `platform.machine()` name: "x86_64" or "aarch64"; any other raises ValueError.
    Build it once (in the zygote) and `install` the same bytes in every child. For this
    machine's arch it also resolves prctl(2) through ctypes, ahead of the children.

    `deny`: the syscalls refused with EPERM (default: `DENIED`). `arguments`: also apply the
    argument rules (clone's namespace flags, clone3, personality). Filters stack, the most
    restrictive answer winning, so a sandbox may install most of the list ahead and a short
    remainder (without `arguments`) last, where installing costs the least.
    """
    machine = platform.machine() if arch is None else arch
    if machine not in _ARCHES:
        raise ValueError(
            f"seccomp: no syscall table for machine {machine!r} "
            f"(supported: {', '.join(sorted(_ARCHES))})"
        )
    audit_arch, table = _ARCHES[machine]

    asm = _Assembler()
    asm.load(_OFF_ARCH)
    asm.jump(_JEQ, audit_arch, jf="kill")
    asm.load(_OFF_NR)
    if machine == "x86_64":
        # x32 calls carry the native AUDIT_ARCH with bit 30 set in the number; kill them,
        # except nr -1 (unsigned, so also >= the x32 bit), which is how a tracer skips a call.
        asm.jump(_JGE, _X32_SYSCALL_BIT, jf="native")
        asm.jump(_JEQ, _NO_SYSCALL, jt="allow", jf="kill")
        asm.label("native")
    special = {"clone": "clone", "clone3": "enosys", "personality": "personality"}
    targets = {table[name]: label for name, label in special.items()} if arguments else {}
    targets.update((table[name], "eperm") for name in deny if name in table)
    _bisect(asm, sorted(targets.items()))
    asm.label("allow")
    asm.ret(_SECCOMP_RET_ALLOW)

    asm.label("clone")
    asm.load(_OFF_ARG0_LOW)
    asm.jump(_JSET, _CLONE_NEW_NAMESPACES, jt="eperm", jf="allow_args")

    asm.label("personality")
    asm.load(_OFF_ARG0_LOW)
    for value in _PERSONALITY_ALLOWED[:-1]:
        asm.jump(_JEQ, value, jt="allow_args")
    asm.jump(_JEQ, _PERSONALITY_ALLOWED[-1], jt="allow_args", jf="eperm")

    asm.label("allow_args")
    asm.ret(_SECCOMP_RET_ALLOW)
    asm.label("eperm")
    asm.ret(_SECCOMP_RET_ERRNO | errno.EPERM)
    asm.label("enosys")
    asm.ret(_SECCOMP_RET_ERRNO | errno.ENOSYS)
    asm.label("kill")
    asm.ret(_SECCOMP_RET_KILL_PROCESS)
    program = asm.assemble()
    if machine == platform.machine():
        # Resolved here, in the zygote, so that each forked child's install() skips the dlopen,
        # the symbol lookup and the copy-on-write faults they cause: ~0.4 ms a child, measured.
        with contextlib.suppress(AttributeError, OSError):
            _prctl()
    return program


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@functools.cache
def _prctl() -> Callable[..., int]:
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def install(program: bytes) -> None:
    """Install `program` (from `build_filter`) in the calling process, for good.

    Sets no_new_privs first (required to install a filter without CAP_SYS_ADMIN, and it keeps
    an exec'd set-uid binary from gaining what the filter would deny). The filter applies to
    the calling thread and everything it creates afterwards: call it while single-threaded,
    after the last mount, pivot_root or unshare the caller itself needs. Raises OSError with
    the errno of the failing prctl(2), ValueError for a malformed program.
    """
    count, rest = divmod(len(program), _INSN.size)
    if rest or not 0 < count <= _BPF_MAXINSNS:
        raise ValueError(f"seccomp: {len(program)} bytes is not a filter program")
    prctl = _prctl()
    _check(prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(count, ctypes.addressof(buf))
    _check(
        prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0),
        "prctl(PR_SET_SECCOMP)",
    )
