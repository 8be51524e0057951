"""Per-request cost of the cache-pattern detectors (tracer/analyze/patterns/), no root needed.

    .venv/bin/python benchmarks/patterns_cost.py [--requests N] [--rounds R] [--json]

Builds N stitched Requests like redis-benchmark-ish cache traffic (GET 50 % with 10 % nil replies,
SET 30 %, INCRBY/DECRBY 10 %, the rest HGET/LPUSH; keys `user:NNNNNN` from 1M, 20 % of requests on 1k hot
keys; 50 clients; a GET→DECRBY read-modify-write now and then) and times, in interleaved rounds:

* detectors: PatternDetectors.on_request alone, µs per request;
* analyzer: Analyzer.on_request with the detectors vs. with them replaced by a no-op (the rest of the
  analysis unchanged); the ratio is the analysis' slowdown from the detectors.

The garbage collector is tuned as the pipeline tunes it (tracer/runtime/tuning.py). Prints the range
over the rounds (min–max), or one JSON object with --json.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tracer.analyze.analysis import Analyzer  # noqa: E402
from tracer.analyze.patterns import PatternDetectors  # noqa: E402
from tracer.runtime.tuning import tune_gc  # noqa: E402
from tracer.stitch.model import Request  # noqa: E402

CLIENTS = 50


def requests(n: int, seed: int = 1) -> list[Request]:
    rng = random.Random(seed)
    out = []
    ts = 1_000_000_000_000
    for i in range(n):
        ts += rng.randrange(5_000, 30_000)
        r = Request()
        c = rng.randrange(CLIENTS)
        r.client, r.conn_id = f"127.0.0.1:{40000 + c}", c + 1
        key = f"user:{rng.randrange(1000)}" if rng.random() < 0.2 else f"user:{rng.randrange(1_000_000)}"
        x = rng.random()
        if x < 0.5:
            r.command, r.reply_type = "GET", ("nil" if rng.random() < 0.1 else "ok")
        elif x < 0.8:
            r.command, r.reply_type = "SET", "ok"
        elif x < 0.9:
            r.command, r.reply_type = rng.choice(("INCRBY", "DECRBY")), "ok"
        else:
            r.command, r.reply_type = rng.choice(("HGET", "LPUSH")), "ok"
        r.key = key
        r.reply_bytes = 5 if r.reply_type == "nil" else rng.choice((5, 40, 300, 20_000))
        r.arrival_ts, r.read_start_ts, r.read_end_ts = ts, ts + 2_000, ts + 3_000
        r.exec_start_ts, r.exec_end_ts = ts + 3_000, ts + 5_000
        r.reply_start_ts, r.reply_end_ts = ts + 6_000, ts + 8_000
        out.append(r)
    return out


class _NoPatterns:
    def on_request(self, req) -> None:
        return None


def _time(feed, reqs) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for r in reqs:
        feed(r)
    return (time.perf_counter() - t0) / len(reqs) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    reqs = requests(args.requests)
    tune_gc()       # as the pipeline does
    detectors, with_, without = [], [], []
    for _ in range(args.rounds):
        detectors.append(_time(PatternDetectors().on_request, reqs))
        a = Analyzer()
        with_.append(_time(a.on_request, reqs))
        b = Analyzer()
        b.patterns = _NoPatterns()
        without.append(_time(b.on_request, reqs))
    ratios = [w / o for w, o in zip(with_, without)]
    result = {"requests": args.requests, "rounds": args.rounds,
              "detectors_us": [round(min(detectors), 2), round(max(detectors), 2)],
              "analyzer_with_us": [round(min(with_), 2), round(max(with_), 2)],
              "analyzer_without_us": [round(min(without), 2), round(max(without), 2)],
              "ratio": [round(min(ratios), 2), round(max(ratios), 2)]}
    if args.json:
        print(json.dumps(result))
    else:
        for name, (lo, hi) in ((k, v) for k, v in result.items() if isinstance(v, list)):
            print(f"{name:<22} {lo:>7} – {hi}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
