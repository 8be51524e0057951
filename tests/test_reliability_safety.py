"""Safety of the traced Redis: the probes only read (never write user memory, never signal, never
override a return, never sleep), and attaching/detaching under heavy load costs Redis nothing."""
from __future__ import annotations

import glob
import os
import re
import subprocess
import threading
import time

import pytest

from tracer_proc import REPO

from reliability_util import cli

PROBES = sorted(glob.glob(os.path.join(REPO, "probes", "*.[ch]")))
# Every BPF helper and map operation the probes may use: all read-only or on their own maps.
# bpf_ringbuf_query reads a ring's positions (only when the ring refused a record: its fill at that moment);
# bpf_get_prandom_u32 draws the engine's 1-in-N sample; `call` is a tail call into the engine's own parser
# bpf_get_stack (sample.c, --why): the current thread's kernel stack and its user ip, walked by the kernel;
# unixconn.c reads a connecting client's socket path (bpf_probe_read_user_str, user memory) and its comm
# (bpf_get_current_comm), and queues them in its own queue maps (push/pop); sched.c keys who ran instead
# of the main thread by CPU (bpf_get_smp_processor_id: a number, no memory read)
ALLOWED_HELPERS = {"bpf_probe_read_user", "bpf_get_current_pid_tgid", "bpf_ktime_get_ns", "bpf_ringbuf_query",
                   "bpf_get_prandom_u32", "bpf_get_stack", "bpf_probe_read_user_str", "bpf_get_current_comm",
                   "bpf_get_smp_processor_id"}
# get_stackid (sched.c, --why): the kernel stack of the main thread as it is switched out, walked by the
# kernel into the probes' own stack map
ALLOWED_MAP_OPS = {"lookup", "update", "delete", "ringbuf_output", "call", "push", "pop", "get_stackid"}
FORBIDDEN = ("bpf_probe_write_user", "bpf_override_return", "bpf_send_signal", "bpf_send_signal_thread",
             "bpf_sys_bpf", "bpf_sys_close", "bpf_copy_from_user", "bpf_probe_read_kernel", "bpf_probe_read(",
             "bpf_probe_read_str", "bpf_d_path", "bpf_set_retval", "bpf_override", "bpf_loop", "sleepable",
             "BPF_F_SLEEPABLE", "kprobe", "KFUNC_PROBE", "LSM_PROBE", "fmod_ret", "bpf_trace_printk",
             "bpf_get_current_task")


def probe_text() -> str:
    assert len(PROBES) >= 6
    parts = []
    for path in PROBES:
        with open(path) as f:
            # comments may mention anything: only code counts
            text = re.sub(r"/\*.*?\*/|//[^\n]*", "", f.read(), flags=re.S)
        parts.append(text)
    return "\n".join(parts)


def test_probes_only_read_and_never_block():
    text = probe_text()
    for word in FORBIDDEN:
        assert word not in text, word
    helpers = set(re.findall(r"\bbpf_[a-z_0-9]+(?=\s*\()", text))
    assert helpers <= ALLOWED_HELPERS, helpers - ALLOWED_HELPERS
    ops = set(re.findall(r"\b[a-z_]+\.([a-z_]+)\s*\(", text))
    assert ops <= ALLOWED_MAP_OPS, ops - ALLOWED_MAP_OPS
    # attach points: syscall and sock tracepoints (plus the uprobes exec.c asks bcc for), and for --why
    # the scheduler's and the user page-fault tracepoints (sched.c)
    points = set(re.findall(r"TRACEPOINT_PROBE\((\w+),", text))
    assert points <= {"syscalls", "sock", "sched", "exceptions"}, points
    # the only writes are into the probes' own record buffer (scratch map / ring buffer), and
    # pipe2()'s two new fd numbers into the stack (fds.c)
    # (engine.c's 8 copy into its own maps and the stack: the parse window, a command name, the
    # record's command+key bytes, a reply head, a MOVED/ASK reply's first 48 bytes, a writev's iovecs,
    # one byte to check a frame start/end;
    # sample.c's 1: the user stack above sp into its own per-CPU record;
    # unixconn.c's 1: a connecting client's address family into the stack;
    # sched.c's 1: clone3()'s flags, the first word of the caller's struct clone_args, into the stack)
    assert text.count("bpf_probe_read_user(") == 19


@pytest.mark.bpf
def test_attach_detach_five_times_under_load_costs_redis_nothing(redis_server):
    port = str(redis_server.port)
    n, clients, cycles = 300_000, 20, 5
    runs: list[subprocess.CompletedProcess] = []
    done = threading.Event()

    def bench():
        # back-to-back bounded runs for as long as the tracer cycles last (at most 20 runs / 300 s)
        deadline = time.monotonic() + 300
        while not done.is_set() and len(runs) < 20 and time.monotonic() < deadline:
            runs.append(subprocess.run(
                ["redis-benchmark", "-h", "127.0.0.1", "-p", port, "-n", str(n), "-c", str(clients),
                 "-t", "set,get", "-d", "64", "-r", "100000", "-q"], capture_output=True, text=True, timeout=300))

    t = threading.Thread(target=bench, daemon=True)
    t.start()
    time.sleep(1.0)                                  # the load is on before the first attach
    results = []
    try:
        for _ in range(cycles):
            proc = cli("trace", "--port", port, "--duration", "1", timeout=240)
            results.append(proc)
    finally:
        done.set()  # also when a cycle fails: no benchmark loop outlives the test
    t.join(360)
    assert not t.is_alive()
    for proc in results:
        err = proc.stderr.decode()
        assert proc.returncode == 0 and "Traceback" not in err, err
        assert err.startswith("attached: ") and "traced: " in err
        assert len(proc.stdout.splitlines()) > 100         # it really traced the load
    assert runs and len(runs) >= 1
    for r in runs:
        assert r.returncode == 0, r.stderr
        out = r.stdout + r.stderr
        assert "rror" not in out and "reset" not in out.lower(), out
        assert re.search(r"SET: [\d.]+ requests per second", out) and re.search(r"GET: [\d.]+ requests", out), out
    info = subprocess.run(["redis-cli", "-p", port, "INFO", "stats"], capture_output=True, text=True,
                          timeout=30).stdout
    stats = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    assert int(stats["rejected_connections"]) == 0
    assert int(stats["total_commands_processed"]) >= len(runs) * 2 * n
    assert int(stats.get("total_error_replies", "0")) == 0
    assert int(stats["total_connections_received"]) >= len(runs) * clients
