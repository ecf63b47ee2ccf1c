"""The seccomp deny-list (`lamina.sandbox.zygote.seccomp`): its program, and its effect on a
real forked child of this test process.

The program is checked two ways: run through a small classic-BPF interpreter below for both
architectures (so the aarch64 program is exercised on an x86_64 machine too), and installed for
real in a forked child that then tries denied and ordinary operations and reports the errno of
each through a pipe. The privileged operations are also tried in an unfiltered child, to show
that they would succeed (or fail otherwise than with EPERM) without the filter.
"""

from __future__ import annotations

import ast
import ctypes
import errno
import json
import mmap
import os
import platform
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lamina.sandbox.zygote import seccomp

MACHINE = platform.machine()
SUPPORTED = ("x86_64", "aarch64")

needs_root_linux = pytest.mark.skipif(
    not (sys.platform == "linux" and MACHINE in SUPPORTED and os.geteuid() == 0),
    reason="installs a real seccomp filter: needs root on Linux x86_64/aarch64",
)
x86_64_only = pytest.mark.skipif(MACHINE != "x86_64", reason="x86_64's foreign ABIs")

KILL = 0x80000000
ALLOW = 0x7FFF0000
EPERM = 0x00050000 | errno.EPERM
ENOSYS = 0x00050000 | errno.ENOSYS
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_ARM = 0x40000028

# Numbers the tests use themselves (independent of the module's tables).
NR = {
    "x86_64": {"read": 0, "getpid": 39, "fork": 57, "clone": 56, "clone3": 435},
    "aarch64": {"read": 63, "getpid": 172, "clone": 220, "clone3": 435},
}

CLONE_NEW = {
    "CLONE_NEWTIME": 0x00000080,
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
CLONE_THREAD_FLAGS = 0x003D0F00  # glibc's pthread_create: VM|FS|FILES|SIGHAND|THREAD|...
CLONE_FORK_FLAGS = 0x01200000 | signal.SIGCHLD  # glibc's fork: CHILD_SETTID|CHILD_CLEARTID
ADDR_NO_RANDOMIZE = 0x0040000


# -- a classic-BPF interpreter for the subset the filter uses ---------------------------------


def run_bpf(program: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """The action `program` returns for one `struct seccomp_data`."""
    padded = (*args, *(0,) * (6 - len(args)))
    data = struct.pack("<IIQ6Q", nr & 0xFFFFFFFF, arch, 0, *padded)
    insns = list(struct.iter_unpack("=HBBI", program))
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # BPF_LD|BPF_W|BPF_ABS
            (acc,) = struct.unpack_from("<I", data, k)
            pc += 1
        elif code == 0x06:  # BPF_RET|BPF_K
            return int(k)
        elif code in (0x15, 0x35, 0x45):  # BPF_JMP|{JEQ,JGE,JSET}|BPF_K
            taken = acc == k if code == 0x15 else acc >= k if code == 0x35 else bool(acc & k)
            pc += 1 + (jt if taken else jf)
        else:
            raise AssertionError(f"unexpected opcode {code:#x} at {pc}")


# -- the program --------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", SUPPORTED)
def test_program_is_whole_sock_filters_starting_with_the_arch_check(arch: str) -> None:
    program = seccomp.build_filter(arch)
    assert len(program) % 8 == 0
    assert 0 < len(program) // 8 <= 4096
    first, second = struct.unpack_from("=HBBI", program, 0), struct.unpack_from("=HBBI", program, 8)
    assert first == (0x20, 0, 0, 4)  # load seccomp_data.arch
    assert second[0] == 0x15 and second[3] == AUDIT_ARCH[arch]


def test_default_arch_is_this_machine() -> None:
    if MACHINE not in SUPPORTED:
        with pytest.raises(ValueError, match=re.escape(repr(MACHINE))):
            seccomp.build_filter()
    else:
        assert seccomp.build_filter() == seccomp.build_filter(MACHINE)


@pytest.mark.parametrize("arch", ["i686", "armv7l", "riscv64", "ppc64le", "s390x", "", "X86_64"])
def test_unknown_arch_is_refused(arch: str) -> None:
    with pytest.raises(ValueError, match="no syscall table"):
        seccomp.build_filter(arch)


def test_denied_names_are_unique_and_known_to_some_arch() -> None:
    assert len(set(seccomp.DENIED)) == len(seccomp.DENIED)
    tables = [table for _, table in seccomp._ARCHES.values()]
    assert all(any(name in table for table in tables) for name in seccomp.DENIED)
    x86_only = {"iopl", "ioperm", "uselib"}
    assert x86_only <= set(seccomp._X86_64)
    assert not x86_only & set(seccomp._AARCH64)


@pytest.mark.parametrize("arch", SUPPORTED)
def test_denied_syscalls_get_eperm_and_others_are_allowed(arch: str) -> None:
    program = seccomp.build_filter(arch)
    table = seccomp._ARCHES[arch][1]
    native = AUDIT_ARCH[arch]
    denied = [name for name in seccomp.DENIED if name in table]
    assert len(denied) >= 45
    for name in denied:
        assert run_bpf(program, table[name], native) == EPERM, name
    for name, nr in NR[arch].items():
        if name not in ("clone", "clone3"):
            assert run_bpf(program, nr, native) == ALLOW, name
    # Every number the table does not name is allowed (a deny-list).
    named = set(table.values())
    assert all(run_bpf(program, nr, native) == ALLOW for nr in range(600) if nr not in named)


@pytest.mark.parametrize("arch", SUPPORTED)
def test_split_filters_deny_together_what_the_whole_list_denies(arch: str) -> None:
    """The zygote installs most of the list in the pool and the rest at claim: stacked (the
    most restrictive answer wins), the two refuse exactly what the single filter refuses."""
    at_claim = ("mount", "mount_setattr", "move_mount")
    ahead = seccomp.build_filter(arch, deny=[n for n in seccomp.DENIED if n not in at_claim])
    last = seccomp.build_filter(arch, deny=at_claim, arguments=False)
    whole = seccomp.build_filter(arch)
    table, native = seccomp._ARCHES[arch][1], AUDIT_ARCH[arch]
    assert run_bpf(ahead, table["mount"], native) == ALLOW
    assert run_bpf(last, table["mount"], native) == EPERM
    assert run_bpf(last, table["ptrace"], native) == ALLOW
    # without `arguments`, clone is not inspected: the filter installed ahead does that
    clone_user = (CLONE_NEW["CLONE_NEWUSER"] | signal.SIGCHLD,)
    assert run_bpf(last, NR[arch]["clone"], native, clone_user) == ALLOW
    assert run_bpf(ahead, NR[arch]["clone"], native, clone_user) == EPERM
    for nr in range(600):
        for args in ((), clone_user):
            stacked = min(run_bpf(ahead, nr, native, args), run_bpf(last, nr, native, args))
            assert stacked == run_bpf(whole, nr, native, args), nr


@pytest.mark.parametrize("arch", SUPPORTED)
def test_clone_with_a_namespace_flag_is_refused_other_clones_pass(arch: str) -> None:
    program = seccomp.build_filter(arch)
    clone, native = NR[arch]["clone"], AUDIT_ARCH[arch]
    for name, flag in CLONE_NEW.items():
        assert run_bpf(program, clone, native, (flag | signal.SIGCHLD,)) == EPERM, name
        assert run_bpf(program, clone, native, (flag | CLONE_FORK_FLAGS,)) == EPERM, name
    assert run_bpf(program, clone, native, (CLONE_THREAD_FLAGS,)) == ALLOW
    assert run_bpf(program, clone, native, (CLONE_FORK_FLAGS,)) == ALLOW
    assert run_bpf(program, clone, native, (signal.SIGCHLD,)) == ALLOW
    # The kernel reads only the low 32 bits of clone()'s flags, and so do we.
    assert run_bpf(program, clone, native, ((0x10000000 << 32) | signal.SIGCHLD,)) == ALLOW
    assert run_bpf(program, NR[arch]["clone3"], native) == ENOSYS


@pytest.mark.parametrize("arch", SUPPORTED)
def test_personality_only_queries_and_plain_personas(arch: str) -> None:
    program = seccomp.build_filter(arch)
    nr, native = seccomp._ARCHES[arch][1]["personality"], AUDIT_ARCH[arch]
    for allowed in (0xFFFFFFFF, 0, 0x8, 0x20000, 0x20008):
        assert run_bpf(program, nr, native, (allowed,)) == ALLOW, hex(allowed)
    for refused in (ADDR_NO_RANDOMIZE, 0x0400000, 0x1, 0xFFFFFFFE):
        assert run_bpf(program, nr, native, (refused,)) == EPERM, hex(refused)


@pytest.mark.parametrize("arch", SUPPORTED)
def test_foreign_abis_are_killed(arch: str) -> None:
    program = seccomp.build_filter(arch)
    getpid = NR[arch]["getpid"]
    for foreign in (
        AUDIT_ARCH_I386,
        AUDIT_ARCH_ARM,
        AUDIT_ARCH["x86_64" if arch != "x86_64" else "aarch64"],
    ):
        assert run_bpf(program, getpid, foreign) == KILL
    if arch == "x86_64":
        assert run_bpf(program, 0x40000000 | getpid, AUDIT_ARCH[arch]) == KILL  # x32
        assert run_bpf(program, 0x40000000 | 165, AUDIT_ARCH[arch]) == KILL  # x32 mount
    # nr -1 (a tracer skipping a call) is left to the kernel, which answers ENOSYS.
    assert run_bpf(program, -1, AUDIT_ARCH[arch]) == ALLOW


# Names added to Linux after 6.1, the oldest UAPI headers this test expects to read.
NEWER_THAN_HEADERS = {"open_tree_attr"}
HEADERS = {
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    "aarch64": Path("/usr/include/asm-generic/unistd.h"),
}


@pytest.mark.parametrize("arch", SUPPORTED)
def test_syscall_numbers_match_the_kernel_headers(arch: str) -> None:
    header = HEADERS[arch]
    if not header.exists():
        pytest.skip(f"{header} not installed (linux-libc-dev)")
    defined = {
        m[1]: int(m[2])
        for m in re.finditer(r"^#define __NR_(\w+)\s+(\d+)\s*$", header.read_text(), re.M)
    }
    table = seccomp._ARCHES[arch][1]
    missing = {name for name in table if name not in defined}
    assert missing <= NEWER_THAN_HEADERS
    assert {name: table[name] for name in table if name in defined} == {
        name: defined[name] for name in table if name in defined
    }


def test_source_parses_as_python_3_9_and_imports_standalone() -> None:
    """The zygote loads this file as a top-level module under any Python 3.9-3.13."""
    path = Path(seccomp.__file__)
    ast.parse(path.read_text(), feature_version=(3, 9))
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import seccomp; "
        "print(len(seccomp.build_filter('x86_64')), len(seccomp.build_filter('aarch64')))"
    )
    # -S: no site-packages, so anything but the standard library would fail to import.
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(path.parent)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(len(seccomp.build_filter(a))) for a in SUPPORTED]


@pytest.mark.parametrize("program", [b"", b"\0" * 7, b"\0" * 8 * 4097])
def test_install_refuses_a_malformed_program_before_any_syscall(program: bytes) -> None:
    with pytest.raises(ValueError, match="not a filter program"):
        seccomp.install(program)


# -- the filter installed in a forked child ------------------------------------------------------


def libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    return lib


def syscall(nr: int, *args: int) -> tuple[int, int]:
    """(return value, errno) of a raw system call."""
    ctypes.set_errno(0)
    rc = int(libc().syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)))
    return rc, (ctypes.get_errno() if rc == -1 else 0)


def errno_of(rc: int) -> int:
    return ctypes.get_errno() if rc == -1 else 0


def in_child(probe: Callable[[], Any], *, filtered: bool = True) -> Any:
    """Run `probe` in a forked child (after installing the filter) and return its JSON result."""
    program = seccomp.build_filter()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        status = 1
        try:
            os.close(read_end)
            if filtered:
                seccomp.install(program)
            out: dict[str, Any] = {"result": probe()}
            status = 0
        except BaseException as e:
            out = {"error": f"{type(e).__name__}: {e}"}
        try:
            os.write(write_end, json.dumps(out).encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"child died of signal {os.WTERMSIG(status)}"
    out = json.loads(data)
    assert "error" not in out, out["error"]
    assert os.WEXITSTATUS(status) == 0
    return out["result"]


def raw_clone(flags: int) -> int:
    """errno of clone(flags) as a raw syscall, fork-like (no new stack); 0 if it worked."""
    rc, err = syscall(NR[MACHINE]["clone"], flags | signal.SIGCHLD, 0, 0, 0, 0)
    if rc == 0:  # the new child, should the filter have let it through
        os._exit(0)
    if rc > 0:
        os.waitpid(rc, 0)
    return err


def privileged_calls() -> dict[str, int]:
    lib = libc()
    out = {
        # As root this would fail only on the missing mount point (ENOENT).
        "mount": errno_of(lib.mount(b"none", b"/nonexistent/lamina-seccomp", b"tmpfs", 0, None)),
        "personality_no_aslr": errno_of(lib.personality(ADDR_NO_RANDOMIZE)),
        "clone_newuser": raw_clone(CLONE_NEW["CLONE_NEWUSER"]),
        "clone3": syscall(NR[MACHINE]["clone3"], 0, 0)[1],  # EINVAL unfiltered: size 0
        "ptrace_traceme": errno_of(lib.ptrace(0, 0, None, None)),
        # Last: it moves an unfiltered child into a new user namespace.
        "unshare_newuser": errno_of(lib.unshare(CLONE_NEW["CLONE_NEWUSER"])),
    }
    return out


@needs_root_linux
def test_without_the_filter_the_privileged_calls_work() -> None:
    """The control for the next test: each call would do something (or fail otherwise)."""
    assert in_child(privileged_calls, filtered=False) == {
        "mount": errno.ENOENT,
        "personality_no_aslr": 0,
        "clone_newuser": 0,
        "clone3": errno.EINVAL,
        "ptrace_traceme": 0,
        "unshare_newuser": 0,
    }


@needs_root_linux
def test_with_the_filter_they_fail_with_eperm_even_as_root() -> None:
    assert in_child(privileged_calls) == {
        "mount": errno.EPERM,
        "personality_no_aslr": errno.EPERM,
        "clone_newuser": errno.EPERM,
        "clone3": errno.ENOSYS,
        "ptrace_traceme": errno.EPERM,
        "unshare_newuser": errno.EPERM,
    }


@needs_root_linux
def test_every_namespace_flag_is_refused_in_clone() -> None:
    def probe() -> dict[str, int]:
        return {name: raw_clone(flag) for name, flag in CLONE_NEW.items()}

    assert in_child(probe) == dict.fromkeys(CLONE_NEW, errno.EPERM)


@needs_root_linux
def test_denied_calls_raise_permission_error_in_python() -> None:
    def probe() -> dict[str, str]:
        out = {}
        for name, call in {
            "chroot": lambda: os.chroot("/"),
            "sethostname": lambda: socket.sethostname("lamina-seccomp-test"),
        }.items():
            try:
                call()
                out[name] = "worked"
            except OSError as e:
                out[name] = type(e).__name__
        return out

    assert in_child(probe) == {"chroot": "PermissionError", "sethostname": "PermissionError"}


@needs_root_linux
def test_ordinary_work_still_works(tmp_path: Path) -> None:
    def probe() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with open("/proc/self/status") as f:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        out["no_new_privs"] = status["NoNewPrivs"]
        out["seccomp"] = status["Seccomp"]

        pid = os.fork()  # glibc's fork: clone(CHILD_SETTID|CHILD_CLEARTID|SIGCHLD)
        if pid == 0:
            os._exit(7)
        out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        out["raw_clone"] = raw_clone(0)

        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(threading.get_native_id()))
        thread.start()  # pthread_create: clone3 → ENOSYS → clone(CLONE_THREAD|...)
        thread.join()
        out["thread"] = len(seen) == 1 and seen[0] != threading.get_native_id()

        out["subprocess"] = subprocess.run(["/bin/true"], check=False).returncode
        # glibc's posix_spawn also starts with clone3 and falls back to clone.
        spawned = os.posix_spawn("/bin/true", ["/bin/true"], dict(os.environ))
        out["posix_spawn"] = os.waitstatus_to_exitcode(os.waitpid(spawned, 0)[1])

        path = tmp_path / "file"
        path.write_bytes(b"hello")
        out["file"] = path.read_bytes().decode()

        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with socket.create_connection(server.getsockname(), timeout=5) as client:
                conn, _ = server.accept()
                with conn:
                    client.sendall(b"ping")
                    out["socket"] = conn.recv(4).decode()

        out["personality_query"] = errno_of(libc().personality(0xFFFFFFFF))
        out["nr_minus_one"] = syscall(-1)[1]
        return out

    assert in_child(probe) == {
        "no_new_privs": "1",
        "seccomp": "2",
        "fork": 7,
        "raw_clone": 0,
        "thread": True,
        "subprocess": 0,
        "posix_spawn": 0,
        "file": "hello",
        "socket": "ping",
        "personality_query": 0,
        "nr_minus_one": errno.ENOSYS,
    }


@needs_root_linux
def test_install_reports_the_kernel_errno() -> None:
    def probe() -> list[Any]:
        bad_opcode = struct.pack("=HBBI", 0xFFFF, 0, 0, 0)
        try:
            seccomp.install(bad_opcode)
        except OSError as e:
            return [e.errno, "PR_SET_SECCOMP" in str(e)]
        return ["installed"]

    assert in_child(probe, filtered=False) == [errno.EINVAL, True]


# -- what kills: foreign ABIs on x86_64 ---------------------------------------------------------


def getpid_via_x32() -> None:
    syscall(0x40000000 | NR["x86_64"]["getpid"])


def getpid_via_int80() -> None:
    """getpid through the 32-bit `int 0x80` gate (i386 number 20), from executable memory."""
    code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20; int 0x80; ret
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    if ctypes.CFUNCTYPE(ctypes.c_int)(address)() != os.getpid():
        raise AssertionError("int 0x80 getpid returned something else")


def exit_status(action: Callable[[], None], *, filtered: bool) -> int:
    """os.waitstatus_to_exitcode of a child that runs `action` then exits 0 (1 if it raised)."""
    program = seccomp.build_filter()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            libc().prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no core file from SIGSYS
            if filtered:
                seccomp.install(program)
            action()
            status = 0
        finally:
            os._exit(status)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@needs_root_linux
@x86_64_only
@pytest.mark.parametrize("action", [getpid_via_x32, getpid_via_int80], ids=["x32", "int80"])
def test_foreign_abi_kills_the_process(action: Callable[[], None]) -> None:
    assert exit_status(action, filtered=False) == 0  # the control: the call returns
    assert exit_status(action, filtered=True) == -signal.SIGSYS
