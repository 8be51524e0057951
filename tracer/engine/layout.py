"""The engine's map layouts, mirrored from probes/engine.c (tests/test_engine_layout.py checks them)."""
from __future__ import annotations

import struct

SLOTS = 8                   # ENG_SLOTS: instances
NCMD = 256                  # ENG_NCMD: command ids per instance
CMD_OVERFLOW = NCMD - 1     # ENG_CMD_OVERFLOW: latency of commands beyond ENG_PEND in one batch
NAME_LEN = 16               # ENG_NAME: bytes of a command name the kernel looks up
PHASES = 4                  # ENG_PHASES
NBUCKETS = 528              # ENG_NB
PHASE_NAMES = ("socket_queue", "wait", "exec", "reply_write")

# enum eng_counter
(ECNT_RAW_READS, ECNT_DESYNC, ECNT_CONN_CAP, ECNT_PEND_OVERFLOW, ECNT_RECORDS, ECNT_LAZY_CLOSE,
 ECNT_UNCLASSIFIED, ECNT_OPEN_AT_CLOSE, ECNT_RAW_UNCAPTURED, ECNT_READS, ECNT_WRITES, ECNT_WRITEVS, ECNT_LINKS,
 ECNT_MAX) = range(14)
COUNTER_NAMES = ("raw_reads", "desync", "conn_cap", "pend_overflow", "records", "lazy_close", "unclassified",
                 "open_at_close", "raw_uncaptured", "reads", "writes", "writevs", "links")

# enum eng_conn_flags
ECF_RAW = 1

# enum eng_cmd_flags
ECMD_SECRET = 1
ECMD_LINK = 2
ECMD_TRACE = 4         # in trace --command's allow-list (compiled with ENG_CMD_FILTER)

# struct eng_cmd_stats: 12 u64 then the buckets
CMD_STATS_FIELDS = ("count", "done", "sum_ns", "max_ns", "bytes_in", "bytes_out",
                    "ok", "errors", "nil", "moved", "ask", "untyped")
CMD_STATS = struct.Struct("<%dQ%dI" % (len(CMD_STATS_FIELDS), NBUCKETS))
# struct eng_phase_stats
PHASE_STATS_FIELDS = ("count", "sum_ns")
PHASE_STATS = struct.Struct("<%dQ%dI" % (len(PHASE_STATS_FIELDS), NBUCKETS))
