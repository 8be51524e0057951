"""Can this machine trace Redis? Each check is one line: what was found and the exact fix.

Every probe of the system goes through SystemProbes, so tests can replace any of
them; run_checks() only interprets the answers. bpf_unavailable_reason() is the
short form the test suite uses to skip (or fail) BPF tests.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import platform
import struct
import tempfile
from dataclasses import asdict, dataclass

from tracer import native
from tracer.kernel import headers as headers_mod
from tracer.credentials import NO_CREDENTIALS, Credentials, explain_refusal
from tracer.kernel.elfsyms import ElfError, find_function
from tracer.errors import TracerError
from tracer.kernel.privileges import missing_privileges, privilege_fix, read_cap_eff

ERROR, WARN, INFO = "error", "warn", "info"  # how much a failed check matters
BOOTSTRAP = "sudo scripts/bootstrap"

# Every tracepoint probes/*.c attaches to. Syscall ones are required (enter and exit).
SYSCALL_TRACEPOINTS = ("accept", "accept4", "read", "write", "writev", "epoll_wait", "epoll_pwait",
                       "fsync", "fdatasync", "close", "openat", "pipe2", "eventfd2", "socket")
# The sock ones only add the kernel-side arrival and handshake times.
SOCK_TRACEPOINTS = {
    "inet_sock_set_state": "accept-queue wait will be unknown",
    "sk_data_ready": "request arrival in the kernel will be unknown: latency starts at the read",
}
TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
UPROBE_SYMBOL = "call"

# bpf(2) numbers per machine; elsewhere the direct check is skipped and bcc's load decides.
BPF_SYSCALL_NR = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
BPF_PROG_LOAD, BPF_PROG_TYPE_TRACEPOINT = 5, 5


@dataclass
class Check:
    name: str
    ok: bool
    level: str      # error | warn | info: what a failure of this check means
    detail: str
    fix: str = ""

    @property
    def blocking(self) -> bool:
        return not self.ok and self.level == ERROR

    def symbol(self, unicode: bool = True) -> str:
        if self.ok:
            return "✓" if unicode else "OK"
        return {ERROR: "✗" if unicode else "FAIL", WARN: "!" if unicode else "WARN"}.get(self.level, "-")

    def line(self, unicode: bool = True) -> str:
        fix = f" (fix: {self.fix})" if self.fix and not self.ok else ""
        return f"{self.symbol(unicode)} {self.name}: {self.detail}{fix}"

    def to_json(self) -> dict:
        return asdict(self)


# --- system probes -----------------------------------------------------------------------------

@contextlib.contextmanager
def _stderr_to(fileobj):
    """Send fd 2 (where libbcc's C++ prints compiler errors) to fileobj for the duration."""
    saved = os.dup(2)
    try:
        os.dup2(fileobj.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _errno_text(code: int) -> str:
    return f"{errno.errorcode.get(code, code)}: {os.strerror(code)}"


class SystemProbes:
    """The real machine. Tests subclass this and override single methods."""

    proc = "/proc"
    modules_root = "/lib/modules"
    mounts_path = "/proc/mounts"

    def euid(self) -> int:
        return os.geteuid()

    def cap_eff(self) -> int:
        return read_cap_eff(f"{self.proc}/self/status")

    def machine(self) -> str:
        return platform.machine()

    def import_bcc(self):
        """(module, None) or (None, why not)."""
        try:
            import bcc
        except Exception as err:  # ImportError, or OSError when libbcc.so is missing
            return None, f"{type(err).__name__}: {err}"
        return bcc, None

    def bpf_prog_load(self) -> int:
        """Load the smallest tracepoint program with bpf(2): 0, or the errno; -1 when not checkable."""
        nr = BPF_SYSCALL_NR.get(self.machine())
        if nr is None:
            return -1
        insns = struct.pack("=BBhiBBhi", 0xB7, 0, 0, 0, 0x95, 0, 0, 0)  # r0 = 0; exit
        insns_buf = ctypes.create_string_buffer(insns, len(insns))
        license_buf = ctypes.create_string_buffer(b"GPL")
        attr = ctypes.create_string_buffer(128)
        struct.pack_into("=IIQQ", attr, 0, BPF_PROG_TYPE_TRACEPOINT, 2,
                         ctypes.addressof(insns_buf), ctypes.addressof(license_buf))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        fd = libc.syscall(ctypes.c_long(nr), ctypes.c_int(BPF_PROG_LOAD), attr, ctypes.c_uint(len(attr)))
        if fd < 0:
            return ctypes.get_errno() or errno.EINVAL
        os.close(fd)
        return 0

    def bcc_compile(self) -> str | None:
        """Compile (against the kernel headers) and load a trivial program with bcc; None or the error."""
        from bcc import BPF

        with tempfile.TemporaryFile() as err_file:
            try:
                with _stderr_to(err_file):
                    prog = BPF(text="int rt_doctor(void *ctx) { return 0; }")
                    try:
                        prog.load_func("rt_doctor", BPF.TRACEPOINT)
                    finally:
                        prog.cleanup()
            except Exception as err:
                err_file.seek(0)
                lines = [ln for ln in err_file.read().decode("utf-8", "replace").splitlines() if ln.strip()]
                first_error = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "")
                return f"{err}".strip() + (f" [{first_error.strip()}]" if first_error else "")
        return None

    def tracefs(self) -> str | None:
        """The mounted tracefs directory that has events/, or None."""
        mounted = set()
        try:
            with open(self.mounts_path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    cols = line.split()
                    if len(cols) >= 3 and cols[2] == "tracefs":
                        mounted.add(cols[1])
        except OSError:
            pass
        for path in TRACEFS_CANDIDATES:
            if path in mounted or os.path.isdir(os.path.join(path, "events")):
                return path
        return next(iter(sorted(mounted)), None)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def readable_dir(self, path: str) -> bool:
        return os.access(path, os.R_OK | os.X_OK)

    def headers(self) -> headers_mod.HeadersStatus:
        return headers_mod.resolve_headers(os.uname().release, self.modules_root)

    def find_target(self, pid: int | None, port: int | None, socket: str | None = None):
        from tracer.kernel.target import find_target

        return find_target(pid=pid, port=port, proc=self.proc, socket=socket)

    def ping(self, endpoint, credentials: Credentials) -> str | None:
        """None when PING and INFO answer within 2 s, else why not (the error reply's text)."""
        from tracer.kernel.target import ping_redis

        return ping_redis(endpoint, credentials)

    def function_symbol(self, pid: int, name: str):
        return find_function(f"{self.proc}/{pid}/exe", name)


# --- checks ------------------------------------------------------------------------------------

def check_privileges(p: SystemProbes) -> Check:
    euid = p.euid()
    missing = missing_privileges(euid, p.cap_eff())
    if missing:
        return Check("privileges", False, ERROR, missing, privilege_fix(euid, ["redis-tracer", "doctor"]))
    return Check("privileges", True, ERROR, "root" if euid == 0 else f"uid {euid} with CAP_BPF+CAP_PERFMON")


def check_bcc(p: SystemProbes) -> Check:
    bcc, why = p.import_bcc()
    if bcc is None:
        return Check("bcc python module", False, ERROR, f"not importable ({why})",
                     f"apt-get install python3-bpfcc, and use the .venv that {BOOTSTRAP} makes (it links bcc in)")
    if not hasattr(bcc, "BPF"):
        # The PyPI project called "bcc" is unrelated and shadows the real one.
        return Check("bcc python module", False, ERROR, f"{getattr(bcc, '__file__', '?')} is not BCC (no bcc.BPF)",
                     f"pip uninstall bcc, then re-run {BOOTSTRAP}")
    version = getattr(bcc, "__version__", "unknown version")
    return Check("bcc python module", True, ERROR, f"bcc {version} ({os.path.dirname(bcc.__file__)})")


def check_bpf_syscall(p: SystemProbes) -> Check:
    name = "bpf() syscall"
    code = p.bpf_prog_load()
    if code == 0:
        return Check(name, True, ERROR, "loaded a minimal tracepoint program")
    if code < 0:
        return Check(name, True, INFO, f"direct check not implemented for {p.machine()}; see the bcc load check")
    if code == errno.ENOSYS:
        return Check(name, False, ERROR, "kernel has no bpf() (CONFIG_BPF_SYSCALL off)",
                     "boot a distro kernel (Debian/Ubuntu kernels have BPF)")
    if code in (errno.EPERM, errno.EACCES):
        euid = p.euid()
        if missing_privileges(euid, p.cap_eff()):
            fix = privilege_fix(euid, ["redis-tracer", "doctor"])
        else:  # privileged yet refused: a seccomp profile or a lockdown LSM
            fix = "run on the host or in a container started with --privileged (seccomp blocks bpf())"
        return Check(name, False, ERROR, f"BPF_PROG_LOAD refused ({_errno_text(code)})", fix)
    return Check(name, False, ERROR, f"BPF_PROG_LOAD failed ({_errno_text(code)})",
                 "use a kernel with BPF tracepoint programs (4.7+, Debian/Ubuntu default)")


def tracefs_events(p: SystemProbes, root: str | None) -> tuple[str | None, str]:
    """(the readable events/ directory, or None and why not)."""
    if root is None:
        return None, "tracefs is not mounted"
    events = os.path.join(root, "events")
    if not p.readable_dir(events):
        return None, f"{events} is not readable"
    return events, ""


def check_tracefs(p: SystemProbes, root: str | None) -> Check:
    events, why = tracefs_events(p, root)
    if root is None:
        return Check("tracefs", False, ERROR, "not mounted",
                     f"mount -t tracefs nodev /sys/kernel/tracing (or run {BOOTSTRAP})")
    if events is None:
        return Check("tracefs", False, ERROR, why, privilege_fix(p.euid(), ["redis-tracer", "doctor"]))
    return Check("tracefs", True, ERROR, f"mounted at {root}")


def check_headers(p: SystemProbes) -> Check:
    status = p.headers()
    if status.status == headers_mod.EXACT:
        return Check("kernel headers", True, ERROR, f"exact: {status.detail}")
    if status.status == headers_mod.SUBSTITUTED:
        return Check("kernel headers", False, WARN, f"substituted: {status.detail}", status.fix)
    return Check("kernel headers", False, ERROR, f"missing: {status.detail}", status.fix)


def check_bcc_compile(p: SystemProbes, bcc_ok: bool) -> Check:
    name = "bcc compile and load"
    if not bcc_ok:
        return Check(name, False, ERROR, "skipped: bcc is not importable", "fix the bcc check first")
    error = p.bcc_compile()
    if error:
        return Check(name, False, ERROR, error, f"fix the checks above; {BOOTSTRAP} sets up headers and tracefs")
    return Check(name, True, ERROR, "compiled and loaded a trivial program")


def check_tracepoints(p: SystemProbes, root: str | None) -> list[Check]:
    checks = []
    events, why = tracefs_events(p, root)
    for call in SYSCALL_TRACEPOINTS:
        name = f"tracepoint syscalls:sys_{{enter,exit}}_{call}"
        if events is None:
            checks.append(Check(name, False, ERROR, f"unknown: {why}", "fix the tracefs check"))
            continue
        absent = [f"sys_{side}_{call}" for side in ("enter", "exit")
                  if not p.exists(os.path.join(events, "syscalls", f"sys_{side}_{call}"))]
        if absent:
            checks.append(Check(name, False, ERROR, f"missing {', '.join(absent)}",
                                "use a kernel with CONFIG_FTRACE_SYSCALLS (Debian/Ubuntu kernels have it)"))
        else:
            checks.append(Check(name, True, ERROR, "present"))
    for event, loss in SOCK_TRACEPOINTS.items():
        name = f"tracepoint sock:{event}"
        if events is None:
            checks.append(Check(name, False, WARN, f"unknown: {why}", "fix the tracefs check"))
        elif p.exists(os.path.join(events, "sock", event)):
            checks.append(Check(name, True, WARN, "present"))
        else:
            checks.append(Check(name, False, WARN, f"absent: {loss}", "a newer kernel has it"))
    return checks


def check_probe_types(p: SystemProbes, root: str | None) -> list[Check]:
    events, why = tracefs_events(p, root)
    if events is None:
        return [Check("uprobes", False, WARN, f"unknown: {why}", "fix the tracefs check"),
                Check("kprobes", False, INFO, f"unknown: {why} (not needed)")]
    uprobes = p.exists(os.path.join(root, "uprobe_events"))
    kprobes = p.exists(os.path.join(root, "kprobe_events"))
    return [
        Check("uprobes", uprobes, WARN, "available" if uprobes else
              "unavailable: command execution time will be inferred, not measured",
              "use a kernel with CONFIG_UPROBE_EVENTS"),
        Check("kprobes", kprobes, INFO, "available (not used)" if kprobes else
              "not available (not needed: the probes use tracepoints and uprobes)"),
    ]


def check_ping(p: SystemProbes, endpoint, credentials: Credentials) -> Check:
    where = endpoint.describe() if hasattr(endpoint, "describe") else f"port {endpoint}"
    why = p.ping(endpoint, credentials)
    if why is None:
        return Check("PING", True, WARN, f"{where} answered")
    refusal = explain_refusal(why, credentials)
    if refusal is not None:
        return Check("PING", False, WARN, f"{where} {refusal[0]} (tracing works without)", refusal[1])
    return Check("PING", False, WARN, f"{where}: {why}", _connection_fix(why, credentials))


def _connection_fix(why: str, credentials: Credentials) -> str:
    """What to do about a connection that failed before any reply: TLS trouble, or Redis itself."""
    if "CERTIFICATE_VERIFY_FAILED" in why:
        return "pass --tls-ca with the CA that signed the server's certificate"
    if credentials.tls is None and ("reset by peer" in why or "Connection closed by server" in why):
        return "if it listens with tls-port, pass --tls (and --tls-ca)"
    return "tracing still works; check requirepass/ACL or whether Redis is stuck"


def check_unix_clients(target) -> Check:
    """What the tracer can tell about the unix-socket clients of a target that has a unix socket."""
    return Check("unix-socket clients", False, INFO,
                 f"{target.unix_socket}: clients named by pid (their connect(), checked with pidfd_getfd: "
                 "CAP_SYS_PTRACE); their arrival time "
                 "is unknown (no tracepoint gives it for AF_UNIX without reading kernel structs), so latency "
                 "starts at Redis's read and socket_queue is not measured")


def check_target(p: SystemProbes, pid: int | None, port: int | None,
                 credentials: Credentials = NO_CREDENTIALS) -> list[Check]:
    try:
        target = p.find_target(pid, port, credentials.socket)
    except TracerError as err:
        return [Check("target", False, ERROR, str(err), err.fix)]
    found = f"; {target.note}" if getattr(target, "note", "") else ""
    checks = [Check("target", True, ERROR,
                    f"redis-server {target.describe()} ({target.exe or 'exe unknown'}){found}")]
    endpoint = target.endpoint(credentials) if hasattr(target, "endpoint") else target.port
    if endpoint:
        checks.append(check_ping(p, endpoint, credentials))
    else:
        checks.append(Check("PING", False, WARN, "target listens on no TCP port or unix socket",
                            "pass --port or --socket"))
    if getattr(target, "unix_socket", None):
        checks.append(check_unix_clients(target))
    try:
        sym = p.function_symbol(target.pid, UPROBE_SYMBOL)
    except (OSError, ElfError) as err:
        return checks + [Check(f"uprobe symbol {UPROBE_SYMBOL}()", False, WARN, f"cannot read the binary: {err}",
                               "run as root so /proc/<pid>/exe is readable")]
    if sym is None:
        checks.append(Check(f"uprobe symbol {UPROBE_SYMBOL}()", False, WARN,
                            "not in .symtab/.dynsym (stripped build): execution time will be inferred",
                            "use a redis-server built with symbols (Debian/Ubuntu packages export call)"))
    else:
        checks.append(Check(f"uprobe symbol {UPROBE_SYMBOL}()", True, WARN,
                            f"exported in {sym.table} at {sym.value:#x}: exact execution time"))
    return checks


def check_hot_path() -> Check:
    """Which implementation decodes and parses records: compiled, or the pure-Python reference."""
    active, detail = native.status()
    if active or native.forced_pure():
        return Check("hot path", True, INFO, detail)
    return Check("hot path", False, WARN, detail + "; the same output, slower",
                 "apt-get install build-essential python3-dev, then rerun scripts/bootstrap")


def run_checks(pid: int | None = None, port: int | None = None, probes: SystemProbes | None = None,
               credentials: Credentials = NO_CREDENTIALS) -> list[Check]:
    p = probes or SystemProbes()
    root = p.tracefs()
    checks = [check_privileges(p), check_bcc(p), check_bpf_syscall(p), check_tracefs(p, root), check_headers(p)]
    checks.append(check_bcc_compile(p, checks[1].ok))
    checks += check_tracepoints(p, root)
    checks += check_probe_types(p, root)
    checks.append(check_hot_path())
    if pid is not None or port is not None or credentials.socket:
        checks += check_target(p, pid, port, credentials)
    return checks


def tracing_ok(checks: list[Check]) -> bool:
    return not any(c.blocking for c in checks)


def bpf_unavailable_reason(probes: SystemProbes | None = None) -> str | None:
    """Why BPF tracing cannot run here (no root, bcc, tracefs, headers or bpf()), or None.

    The cheap subset of run_checks: no compile, no target.
    """
    if probes is None:
        return _system_unavailable_reason()
    p = probes
    checks = [check_privileges(p), check_bcc(p), check_tracefs(p, p.tracefs()), check_headers(p),
              check_bpf_syscall(p)]
    failed = next((c for c in checks if c.blocking), None)
    return f"{failed.name}: {failed.detail}" if failed else None


@functools.lru_cache(maxsize=1)
def _system_unavailable_reason() -> str | None:
    return bpf_unavailable_reason(SystemProbes())
