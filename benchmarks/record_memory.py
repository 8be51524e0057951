"""Peak memory of writing and reading a 1,000,000-record trace (not a unit test: ~10 s).

    .venv/bin/python benchmarks/record_memory.py [--records N]

Each phase runs in a fresh interpreter so that resource.getrusage's ru_maxrss
(a lifetime peak) belongs to that phase alone. The records are a 10,000-record
synthetic pool (benchmarks/compression.py) replayed with rising timestamps, so
the writer's input costs no memory; the reader only counts and checks records.
The figure that matters is peak minus baseline: what the writer/reader itself
holds (one ~256 KiB block plus its compressed form), independent of N.
"""
from __future__ import annotations

import argparse
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def _phase(phase: str, path: str, n: int) -> None:
    from compression import synthetic_stream
    from tracer.tracefile.recording import TraceReader, TraceWriter

    pool = synthetic_stream(10_000)
    ts = struct.Struct("<Q")
    base = _maxrss_mb()
    t0 = time.perf_counter()
    raw = 0
    if phase == "write":
        with TraceWriter(path, {"capture_max": 4096}, overwrite=True) as w:
            for i in range(n):
                r = pool[i % len(pool)]
                # a fresh record object each time, as the ring buffer hands over
                rec = ts.pack(i) + r[8:]
                raw += len(rec)
                w.write(rec)
                if i % 4096 == 0:
                    w.maybe_flush()
        extra = f"{w.blocks_written} blocks, {w.blocks_stored} stored uncompressed"
    else:
        with TraceReader(path) as rd:
            prev = -1
            for rec in rd.records():
                (t,) = ts.unpack_from(rec)
                assert t == prev + 1
                prev = t
                raw += len(rec)
            assert rd.records_read == n and not rd.warnings, (rd.records_read, rd.warnings)
        extra = f"{rd.blocks_read} blocks"
    dt = time.perf_counter() - t0
    peak = _maxrss_mb()
    print(f"{phase:<5} {n:>9,} records {raw / 1e6:7.1f} MB raw in {dt:5.2f} s ({raw / dt / 1e6:4.0f} MB/s)  "
          f"RSS baseline {base:6.1f} MB  peak {peak:6.1f} MB  (+{peak - base:.1f} MB)  {extra}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--phase", choices=["write", "read"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.phase:
        _phase(args.phase, args.path, args.records)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "memory.rtrace")
        for phase in ("write", "read"):
            subprocess.run([sys.executable, os.path.abspath(__file__), "--phase", phase, "--path", path,
                            "--records", str(args.records)], check=True)
        print(f"file: {os.path.getsize(path) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
