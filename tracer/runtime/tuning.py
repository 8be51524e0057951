"""Process-wide settings for the record/stitch/analyse hot loop.

The cyclic garbage collector is the one that matters: the pipeline allocates several container
objects per request (Event, Request, Command/Reply, tuples) and keeps tens of thousands of recent
requests alive (the stall lookback), so with CPython's default thresholds (700, 10, 10) young
collections run every few dozen requests and full collections keep re-scanning everything that
is alive -- measured at 15-20 % of the pipeline's CPU (docs/PERFORMANCE.md). Nothing in the
pipeline relies on cycles being freed promptly (its objects hold no cycles), so:

* gc.freeze() moves what exists after start-up (imported modules: rich, bcc, ...) to the
  permanent generation, where no collection scans it again;
* gen0 threshold 50 000: a young collection every ~5 000 requests instead of every ~70.
"""
from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 20, 10)

_done = False


def tune_gc() -> None:
    """Once per process (idempotent); harmless for short runs and tests."""
    global _done
    if _done:
        return
    _done = True
    gc.collect()
    gc.freeze()
    current = gc.get_threshold()
    if current[0] < GC_THRESHOLDS[0]:
        gc.set_threshold(*GC_THRESHOLDS)
