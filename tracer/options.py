"""Every setting of a traced run, with its one default and its one validation.

The CLI builds a TraceOptions once (`TraceOptions.from_args`), and that object, not the argparse
namespace, travels down to the probe session, the pipeline and the trace header. A default
written anywhere else is a bug: import it from here.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from tracer.credentials import NO_CREDENTIALS, Credentials, credentials_from_args
from tracer.errors import UsageError

STALL_MS = 50.0             # a main-thread busy span this long is a stall
SAMPLE_HZ = 499             # on-CPU samples: cpu-clock ticks per second of a main thread deep in a busy span
# Explaining stalls: on-CPU stack samples of long busy spans cost 2 ns of BPF per request and no record
# under load (docs/PERFORMANCE.md), so they are on unless --no-why; --why asks for the rest of the
# attribution (off by default in live/record/trace/demo, on in diagnose)
ONCPU = True
WHY = False
WHY_IN_DIAGNOSE = True
CAPTURE_BYTES = 4096        # bytes of each read/write copied for RESP decoding
# the probes' per-CPU scratch record holds twice the capture plus its header, and a per-CPU map value
# may not exceed 32 KiB: 16384 failed to load ("could not open bpf map: scratch")
CAPTURE_MIN, CAPTURE_MAX = 64, 8192
POLL_MS = 200               # drain interval: fewer, larger batches cost Redis less (docs/PERFORMANCE.md)
RINGBUF_PAGES = 16384       # 16384 pages of 4 KiB = 64 MiB (docs/PERFORMANCE.md)
RINGBUF_PAGES_MAX = 1 << 18  # 1 GiB
REFRESH_HZ = 2.0            # screen refreshes per second
REFRESH_MAX = 20.0
STALL_MS_MAX = 3_600_000    # beyond an hour a "stall" threshold is a typo (also bounds hostile headers)
# "full": every request's bytes go up and are stitched in user space; "engine": the kernel parses RESP and
# keeps per-command counts and histograms, only slow/stall/victim/sampled requests go up (tracer/engine).
MODES = ("full", "engine")
MODE = "engine"             # the default mode of live/diagnose/demo/record/trace: switch it here, only here
ENGINE_SAMPLE = 100         # engine mode: 1 batch in this many goes up as a record (slowest, hot keys: estimates)
ENGINE_BUDGET = 2000        # ... and every batch while an instance serves fewer than this many per second
INFO_EVERY_S = 2.0          # the INFO sampler asks each target this often (0: never; runtime/info_sampler.py)
INFO_TIMEOUT_S = 1.0        # ... and gives up sampling a target whose answer takes longer
# the sched probes (probes/sched.c: off-CPU time, who ran instead, forks; docs/PERFORMANCE.md): off by
# default in live/record/trace/demo, on in diagnose (WHY_IN_DIAGNOSE); --why / --no-why choose
WHY = False
WHY_IN_DIAGNOSE = True
AGENT_LISTEN = "127.0.0.1:9386"     # `agent`: where /metrics is served (loopback: expose it on purpose)


@dataclass(frozen=True, slots=True)
class PatternOptions:
    """Thresholds of the cache-pattern detectors (tracer/analyze/patterns/, docs/ARCHITECTURE.md)."""

    stampede_window_ms: float = 1000.0  # misses of one key this close together are one episode
    stampede_min_clients: int = 4       # distinct clients missing the same key before one SETs it
    penetration_min_misses: int = 100   # misses of never-SET keys under one prefix ...
    penetration_min_share: float = 0.5  # ... that are at least this share of the prefix's reads ...
    penetration_min_span_s: float = 1.0  # ... spread over at least this long (a steady rate)
    avalanche_min_keys: int = 20        # keys of one prefix first missing within the same second after a SET
    race_window_ms: float = 1000.0      # a write this soon after the same client's read derives from it
    hot_min_requests: int = 500         # a hot key has at least this many requests ...
    hot_min_share: float = 0.05         # ... this share of all keyed requests ...
    hot_skew: float = 5.0               # ... this many times the mean of the next keys ...
    hot_min_read_ratio: float = 2.0     # ... and this many reads per write (else a local cache cannot help)
    big_value_bytes: int = 10_000       # a reply this large is a big value ...
    big_value_min_reads: int = 20       # ... worth a pattern when read this often
    max_keys: int = 10_000              # keys each detector tracks (least recently seen evicted, counted)
    max_clients: int = 10_000           # clients tracked (race)
    max_listed: int = 5                 # patterns of one kind listed, and keys/clients per pattern


def is_power_of_two(n: int) -> bool:
    return n > 0 and not n & (n - 1)


def check_stall_ms(stall_ms: float) -> float:
    if not 0 < stall_ms <= STALL_MS_MAX:
        raise UsageError(f"--stall-ms must be positive (at most {STALL_MS_MAX}), not {stall_ms:g}")
    return stall_ms


def check_capture_bytes(n: int) -> int:
    if not is_power_of_two(n) or not CAPTURE_MIN <= n <= CAPTURE_MAX:
        raise UsageError(f"--capture-bytes {n} is not a power of two between {CAPTURE_MIN} and {CAPTURE_MAX}")
    return n


def check_ringbuf_pages(pages: int) -> int:
    if not is_power_of_two(pages) or pages > RINGBUF_PAGES_MAX:
        raise UsageError(f"--ringbuf-pages {pages} is not a power of two between 1 and {RINGBUF_PAGES_MAX}")
    return pages


def check_refresh(hz: float) -> float:
    if not 0 < hz <= REFRESH_MAX:
        raise UsageError(f"--refresh must be between 0 and {REFRESH_MAX:g} per second, not {hz:g}")
    return hz


def check_duration(duration: float | None) -> float | None:
    if duration is not None and duration <= 0:
        raise UsageError(f"--duration must be positive, not {duration:g}")
    return duration


SHOW_VALUES_NOTE = "redis-tracer: --show-values selects --full (the engine never captures values)"


def mode_of(given_mode: str | None, show_values: bool, note=lambda text: print(text, file=sys.stderr)) -> str:
    """The run's mode: the flag given, else MODE; --show-values without a flag needs every request's
    bytes, so it selects --full (said once on stderr) rather than failing an operator who only asked
    to see values. An explicit --engine with it stays an error (check_mode)."""
    if given_mode is not None:
        return given_mode
    if show_values and MODE != "full":
        note(SHOW_VALUES_NOTE)
        return "full"
    return MODE


def check_mode(mode: str, show_values: bool) -> str:
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if show_values and mode != "full":
        raise UsageError("--show-values requires --full (the engine never captures values)")
    return mode


@dataclass(frozen=True, slots=True)
class TraceOptions:
    """How to trace: which redis-servers, what the probes capture, how the run is analysed and shown."""

    pids: tuple[int, ...] = ()
    ports: tuple[int, ...] = ()
    all_instances: bool = False
    duration: float | None = None
    exec_probes: bool = False
    capture_bytes: int = CAPTURE_BYTES
    poll_ms: int = POLL_MS
    ringbuf_pages: int = RINGBUF_PAGES
    show_values: bool = False
    stall_ms: float = STALL_MS
    refresh_hz: float = REFRESH_HZ
    record_path: str | None = None
    mode: str = MODE
    slow_ms: float | None = None    # engine mode: requests this slow go up as records (None: stall_ms / 5)
    commands: tuple = ()            # trace --command: engine mode sends records only for these commands
    credentials: Credentials = NO_CREDENTIALS   # for the one query of each target before attaching
    patterns: PatternOptions = PatternOptions()
    info_every_s: float = INFO_EVERY_S
    why: bool = WHY                 # --why
    oncpu: bool = ONCPU             # on-CPU stack samples of stalls (kernel/stacks.py): off only with --no-why

    def __post_init__(self):
        check_duration(self.duration)
        check_stall_ms(self.stall_ms)
        check_capture_bytes(self.capture_bytes)
        check_ringbuf_pages(self.ringbuf_pages)
        check_refresh(self.refresh_hz)
        check_mode(self.mode, self.show_values)
        if self.slow_ms is not None and not 0 <= self.slow_ms <= STALL_MS_MAX:
            raise UsageError(f"--min-ms must be between 0 and {STALL_MS_MAX}, not {self.slow_ms:g}")

    @property
    def tick_s(self) -> float:
        return 1.0 / self.refresh_hz

    @classmethod
    def from_args(cls, args) -> "TraceOptions":
        """The one place that reads the argparse namespace; commands without an option get its default."""
        given = vars(args)

        def get(name, default):
            value = given.get(name)
            return default if value is None else value

        return cls(pids=tuple(get("pid", ())), ports=tuple(get("port", ())), all_instances=bool(get("all", False)),
                   duration=given.get("duration"), exec_probes=bool(get("exec_probes", False)),
                   capture_bytes=get("capture_bytes", CAPTURE_BYTES), poll_ms=get("poll_ms", POLL_MS),
                   ringbuf_pages=get("ringbuf_pages", RINGBUF_PAGES), show_values=bool(get("show_values", False)),
                   stall_ms=get("stall_ms", STALL_MS), refresh_hz=get("refresh", REFRESH_HZ),
                   record_path=given.get("record"),
                   mode=mode_of(given.get("mode"), bool(get("show_values", False))), slow_ms=given.get("min_ms"),
                   commands=tuple(get("commands", ())),
                   credentials=credentials_from_args(args), why=bool(get("why", WHY)),
                   oncpu=ONCPU if given.get("why") is None else bool(given["why"]))
