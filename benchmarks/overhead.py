"""What tracing costs Redis: redis-benchmark throughput and p99, untraced vs traced, interleaved.

    sudo .venv/bin/python benchmarks/overhead.py [--rounds 3] [--requests 100000] [--json] [--quick]

Starts its own redis-server on a free 127.0.0.1 port, then for each configuration and round runs
redis-benchmark (GET and SET, 50 clients) once untraced and once traced, in alternating order
(so drift on a shared machine hits both sides alike). "Traced" is `redis-tracer diagnose --port P
--json` (the default mode: the kernel engine; `--tracer-args=--full` for every request stitched in
user space) as a subprocess; the benchmark starts
after the tracer prints its `attached:` line, and the tracer is stopped with SIGINT after it.

Configurations: plain (-c 50), pipelined (-c 50 -P 16), each also with --why (on-CPU samples of
stalls and the sched probes, diagnose's default; plain and pipelined run --no-why), diagnose-engine and
diagnose-engine-why (`diagnose --engine`, without and with --why), and --exec-probes (uprobes on call());
engine and engine-pipelined run `python -m tracer.engine --bpf-stats` instead (requests parsed and
aggregated in the kernel) and add the kernel's BPF run time per request (BPF_ENABLE_STATS).
Prints a table: medians, min-max, traced/untraced ratios for throughput and p99, and the lost
events and requests the tracer reported; --json prints the same as one object. --quick is the CI
smoke: tiny runs, one round, the plain configuration; it fails only on crashes, never on noise.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, ROOT)

from tracer.sandbox.redis_server import RedisServer  # noqa: E402

CONFIGS = {
    "plain": {"bench": ["-c", "50"], "tracer": ["--no-why"]},
    "pipelined": {"bench": ["-c", "50", "-P", "16"], "tracer": ["--no-why"]},
    # --why (diagnose's default): cpu-clock samples of the main thread deep in busy spans (probes/sample.c)
    "why": {"bench": ["-c", "50"], "tracer": ["--why"]},
    "why-pipelined": {"bench": ["-c", "50", "-P", "16"], "tracer": ["--why"]},
    "diagnose-engine": {"bench": ["-c", "50"], "tracer": ["--engine", "--no-why"]},
    "diagnose-engine-why": {"bench": ["-c", "50"], "tracer": ["--engine", "--why"]},
    "exec-probes": {"bench": ["-c", "50"], "tracer": ["--exec-probes", "--no-why"]},
    # the always-on engine (python -m tracer.engine): parsing and histograms in the kernel
    "engine": {"bench": ["-c", "50"], "tracer": ["--bpf-stats"], "command": "engine"},
    "engine-pipelined": {"bench": ["-c", "50", "-P", "16"], "tracer": ["--bpf-stats"], "command": "engine"},
}
TESTS = ("GET", "SET")


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version()}


IGNORED_PIDS: set[int] = set()


def foreign_activity() -> list[str]:
    """Other tracers and benchmarks on this machine: any attached tracer slows every syscall on the
    host (our untraced runs too), and their CPU use is noise. Our own children are excluded."""
    mine = {os.getpid()}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine or int(entry) in IGNORED_PIDS:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
        if ppid in mine:
            continue
        text = b" ".join(argv).decode(errors="replace")
        if "redis-benchmark" in text or "-m tracer" in text or "redis-tracer" in text or "bpftrace" in text:
            found.append(f"{entry}: {text[:100]}")
    return found


def wait_quiet(limit_s: float, log) -> bool:
    """Wait up to limit_s for foreign tracers/benchmarks to finish; False if they did not."""
    deadline = time.monotonic() + limit_s
    first = True
    while True:
        busy = foreign_activity()
        if not busy:
            return True
        if time.monotonic() >= deadline:
            log(f"warning: measuring despite other activity: {busy[0]}")
            return False
        if first:
            log(f"waiting for other tracers/benchmarks to finish: {busy[0]}")
            first = False
        time.sleep(1.0)


def cpu_seconds(pid: int) -> float:
    """user+system CPU of a process so far (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rfind(b")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def run_benchmark(port: int, requests: int, extra: list[str], timeout: float) -> dict:
    """{test: {"rps": float, "p99_ms": float}} from redis-benchmark --csv."""
    exe = shutil.which("redis-benchmark")
    if not exe:
        raise SystemExit("redis-benchmark is not installed")
    cmd = [exe, "-h", "127.0.0.1", "-p", str(port), "-n", str(requests), "-t", "get,set", "--csv", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    rows = [line.replace('"', "").split(",") for line in out.stdout.splitlines() if line.strip()]
    head = rows[0]
    result = {}
    for row in rows[1:]:
        rec = dict(zip(head, row))
        name = rec.get("test", "").split()[0].upper()
        if name in TESTS:
            result[name] = {"rps": float(rec["rps"]), "p99_ms": float(rec.get("p99_latency_ms") or "nan")}
    if set(result) != set(TESTS):
        raise RuntimeError(f"unexpected redis-benchmark output: {out.stdout[:500]!r}")
    return result


class Tracer:
    """`redis-tracer diagnose --port P --json` in the background, stopped with SIGINT.
    command "count" (`redis-tracer count --json`: records decoded and counted, nothing else) gives
    the cost of the probes and the ring buffer alone."""

    def __init__(self, port: int, extra: list[str], attach_timeout: float = 120.0, command: str = "diagnose",
                 nice: int = 0):
        self.command = command
        module = ["tracer.engine"] if command == "engine" else ["tracer", command]
        cmd = [sys.executable, "-m", *module, "--port", str(port), "--json", *extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=(lambda: os.nice(nice)) if nice else None)
        self.stderr: list[str] = []
        self.attached = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if not self.attached.wait(attach_timeout) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"tracer did not attach: {''.join(self.stderr)[-1500:]}")
        self.attached_line = next((s.strip() for s in self.stderr if s.startswith("attached:")), "")

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr.append(line)
            if line.startswith("attached:"):
                self.attached.set()
        self.attached.set()

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def peak_rss_mb(self) -> float:
        """VmHWM: the tracer's peak resident memory so far (its mapped ring buffer pages included)."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except (OSError, ValueError):
            pass
        return float("nan")

    def stop(self, timeout: float = 300.0) -> dict:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # every CPU second of the tracer's life (reaped just now), start-up and catching up included
        self.total_cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        self._reader.join(5)
        if self.proc.returncode != 0:
            raise RuntimeError(f"tracer exited {self.proc.returncode}: {''.join(self.stderr)[-1500:]}")
        report = json.loads(out.strip().splitlines()[-1])
        if self.command == "count":
            counts = report.get("counts") or {}
            return {"lost_events": int(report.get("lost") or 0),
                    "requests": int(counts.get("read", 0))}   # reads: one per request without pipelining
        out = {"lost_events": int(report.get("lost_events") or 0), "requests": int(report.get("requests") or 0)}
        if "bpf_stats" in report:
            out["bpf_stats"] = report["bpf_stats"]
        return out


def _summary(values: list[float]) -> dict:
    vals = [v for v in values if v == v]
    if not vals:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def measure(rounds: int, requests: int, configs: list[str], timeout: float, log, tracer_args=(),
            tracer_command: str = "diagnose", tracer_nice: int = 0, quiet_wait: float = 0.0) -> dict:
    results = {name: {"untraced": [], "traced": [], "tracer": [], "noisy": 0} for name in configs}
    with RedisServer() as server:
        port = server.port
        run_benchmark(port, min(requests, 10_000), [], timeout)   # warm-up: keyspace, allocator
        for r in range(rounds):
            for name in configs:
                cfg = CONFIGS[name]
                order = ("untraced", "traced") if r % 2 == 0 else ("traced", "untraced")
                for side in order:
                    if quiet_wait and not wait_quiet(quiet_wait, log):
                        results[name]["noisy"] += 1
                    if side == "untraced":
                        r0 = cpu_seconds(server.pid)
                        res = run_benchmark(port, requests, cfg["bench"], timeout)
                        res["redis_cpu_s"] = cpu_seconds(server.pid) - r0
                        results[name]["untraced"].append(res)
                    else:
                        tracer = Tracer(port, cfg["tracer"] + list(tracer_args),
                                        command=cfg.get("command", tracer_command), nice=tracer_nice)
                        cpu0 = tracer.cpu_seconds()
                        r0 = cpu_seconds(server.pid)
                        try:
                            res = run_benchmark(port, requests, cfg["bench"], timeout)
                        finally:
                            cpu1 = tracer.cpu_seconds()
                            res["redis_cpu_s"] = cpu_seconds(server.pid) - r0
                            time.sleep(0.2)
                            rss = tracer.peak_rss_mb()
                            info = tracer.stop()
                        info["peak_rss_mb"] = round(rss, 1)
                        # the tracer's CPU while the benchmark ran, and after attaching in all
                        # (catching up on the ring after the benchmark included)
                        info["cpu_s"] = round(cpu1 - cpu0, 3)
                        info["cpu_total_s"] = round(tracer.total_cpu_s - cpu0, 3)
                        info["attached"] = tracer.attached_line
                        results[name]["traced"].append(res)
                        results[name]["tracer"].append(info)
                    log(f"round {r + 1} {name:<12} {side:<9} " +
                        "  ".join(f"{t} {res[t]['rps']:>9.0f}/s p99 {res[t]['p99_ms']:.3f}ms" for t in TESTS) +
                        (f"  lost {info['lost_events']} traced-requests {info['requests']}" if side == "traced" else ""))
    return results


def summarize(results: dict, requests: int) -> dict:
    out = {}
    for name, res in results.items():
        per_test = {}
        for t in TESTS:
            u_rps = [x[t]["rps"] for x in res["untraced"]]
            t_rps = [x[t]["rps"] for x in res["traced"]]
            u_p99 = [x[t]["p99_ms"] for x in res["untraced"]]
            t_p99 = [x[t]["p99_ms"] for x in res["traced"]]
            su, st = _summary(u_rps), _summary(t_rps)
            pu, pt = _summary(u_p99), _summary(t_p99)
            per_test[t] = {
                "untraced_rps": su, "traced_rps": st,
                "rps_ratio": st["median"] / su["median"] if su["median"] else None,
                "untraced_p99_ms": pu, "traced_p99_ms": pt,
                "p99_ratio": pt["median"] / pu["median"] if pu["median"] else None,
            }
        lost = [x["lost_events"] for x in res["tracer"]]
        cpu = [x.get("cpu_s", float("nan")) for x in res["tracer"]]
        cpu_total = [x.get("cpu_total_s", float("nan")) for x in res["tracer"]]
        rss = [x.get("peak_rss_mb", float("nan")) for x in res["tracer"]]
        nreq = requests * len(TESTS)
        # CPU per request: the tracer's own (user space + its share of draining), and what Redis's
        # threads spent per request (in-kernel probe cost shows up there), untraced vs traced
        redis_u = [x["redis_cpu_s"] / nreq * 1e6 for x in res["untraced"] if "redis_cpu_s" in x]
        redis_t = [x["redis_cpu_s"] / nreq * 1e6 for x in res["traced"] if "redis_cpu_s" in x]
        traced_reqs = [x["requests"] for x in res["tracer"]]
        # the kernel's run time of every probe (all processes' syscalls pass the early tgid check) per request
        bpf_us = [sum(p["run_time_ns"] for p in x["bpf_stats"].values()) / nreq / 1e3
                  for x in res["tracer"] if x.get("bpf_stats")]
        out[name] = {"tests": per_test, "lost_events": lost, "traced_requests": traced_reqs,
                     "noisy_runs": res.get("noisy", 0), "tracer_cpu_s": cpu, "tracer_cpu_total_s": cpu_total,
                     "tracer_us_per_request": _summary([c / nreq * 1e6 for c in cpu_total]),
                     "tracer_peak_rss_mb": rss,
                     "redis_us_per_request_untraced": _summary(redis_u),
                     "redis_us_per_request_traced": _summary(redis_t),
                     "bpf_us_per_request": _summary(bpf_us),
                     "expected_requests": requests * len(TESTS),
                     "attached": res["tracer"][0].get("attached", "") if res["tracer"] else ""}
    # uprobe cost: Redis's extra CPU per command with --exec-probes (one uprobe + one uretprobe hit)
    if "plain" in out and "exec-probes" in out:
        a = out["plain"]["redis_us_per_request_traced"]["median"]
        b = out["exec-probes"]["redis_us_per_request_traced"]["median"]
        if a is not None and b is not None:
            out["exec-probes"]["uprobe_us_per_call"] = b - a
    return out


def _fmt_range(s: dict, fmt: str) -> str:
    if s["median"] is None:
        return "-"
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"


def print_table(summary: dict, meta: dict) -> None:
    print(f"machine: {meta['machine']['nproc']} CPUs, {meta['machine']['cpu']}, kernel {meta['machine']['kernel']}; "
          f"{meta['rounds']} rounds x {meta['requests']} requests per test; median (min-max)")
    nice = f"nice -n {meta['tracer_nice']} " if meta.get("tracer_nice") else ""
    print(f"traced = {nice}redis-tracer {meta['tracer_command']} --port P {meta['tracer_args']}".rstrip())
    print(f"{'config':<12} {'test':<4} {'untraced req/s':>24} {'traced req/s':>24} {'ratio':>6} "
          f"{'untraced p99 ms':>20} {'traced p99 ms':>20} {'ratio':>6}")
    for name, s in summary.items():
        for t, r in s["tests"].items():
            ratio = f"{r['rps_ratio']:.3f}" if r["rps_ratio"] else "-"
            pratio = f"{r['p99_ratio']:.2f}" if r["p99_ratio"] else "-"
            print(f"{name:<12} {t:<4} {_fmt_range(r['untraced_rps'], '.0f'):>24} {_fmt_range(r['traced_rps'], '.0f'):>24} "
                  f"{ratio:>6} {_fmt_range(r['untraced_p99_ms'], '.3f'):>20} {_fmt_range(r['traced_p99_ms'], '.3f'):>20} "
                  f"{pratio:>6}")
        extra = f"  uprobe cost ~{s['uprobe_us_per_call']:.2f} us per call() (uprobe+uretprobe)" \
            if "uprobe_us_per_call" in s else ""
        noisy = f"; {s['noisy_runs']} runs measured while other tracers/benchmarks ran" if s.get("noisy_runs") else ""
        print(f"{'':<12} lost events per traced run: {s['lost_events']}; requests analysed: {s['traced_requests']} "
              f"of {s['expected_requests']}{extra}{noisy}")
        ru, rt, tu = s["redis_us_per_request_untraced"], s["redis_us_per_request_traced"], s["tracer_us_per_request"]
        if ru["median"] is not None and rt["median"] is not None:
            print(f"{'':<12} CPU per request: redis-server {ru['median']:.2f} us untraced, {rt['median']:.2f} us traced; "
                  f"tracer {tu['median']:.2f} us (CPU during the benchmark: {s['tracer_cpu_s']} s, "
                  f"in all: {s['tracer_cpu_total_s']} s); tracer peak RSS {s['tracer_peak_rss_mb']} MB")
        if s["bpf_us_per_request"]["median"] is not None:
            print(f"{'':<12} BPF run time per request (bpf_stats, all probes): "
                  f"{_fmt_range(s['bpf_us_per_request'], '.3f')} us")
    if summary:
        first = next(iter(summary.values()))
        if first.get("attached"):
            print(f"tracer: {first['attached']}")


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=100_000, help="requests per test (GET and SET) per run")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {','.join(CONFIGS)}")
    ap.add_argument("--quick", action="store_true", help="CI smoke: 2000 requests, one round, plain only")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--timeout", type=float, default=600.0, help="per redis-benchmark run")
    ap.add_argument("--tracer-args", default="", help="extra arguments for the tracer, e.g. \"--poll-ms 10\"")
    ap.add_argument("--quiet-wait", type=float, default=120.0, metavar="S",
                    help="before each run, wait up to S seconds while other tracers/benchmarks run (0: no)")
    ap.add_argument("--ignore-pid", type=int, action="append", default=[], metavar="PID",
                    help="a foreign process not to wait for (e.g. a stray benchmark you cannot stop)")
    ap.add_argument("--tracer-nice", type=int, default=0, help="start the tracer with this nice increment")
    ap.add_argument("--tracer-command", default="diagnose", choices=("diagnose", "count"),
                    help="count: probes + ring buffer + decoding only (the floor of the overhead)")
    args = ap.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        ap.error(f"unknown config(s): {', '.join(unknown)}")
    IGNORED_PIDS.update(args.ignore_pid)
    rounds, requests = args.rounds, args.requests
    if args.quick:
        rounds, requests, configs = 1, 2000, ["plain"]
    if os.geteuid() != 0:
        print("warning: not root; the tracer will likely fail to attach", file=sys.stderr)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    # SIGTERM/SIGHUP unwind like Ctrl-C: the redis-server and a running tracer are stopped
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    started = time.monotonic()
    results = measure(rounds, requests, configs, args.timeout, log, args.tracer_args.split(),
                      args.tracer_command, args.tracer_nice, 0.0 if args.quick else args.quiet_wait)
    summary = summarize(results, requests)
    meta = {"machine": machine(), "rounds": rounds, "requests": requests,
            "seconds": round(time.monotonic() - started, 1), "tracer_command": args.tracer_command, "tracer_nice": args.tracer_nice,
            "tracer_args": args.tracer_args}
    if args.json:
        print(json.dumps({"meta": meta, "configs": summary, "raw": results}, sort_keys=True))
    else:
        print_table(summary, meta)
        print(f"({meta['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
