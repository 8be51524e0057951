"""The typed views that cross a layer boundary, and their JSON form.

The analysis produces them, the runtime passes them on, the views (dashboards, text reports)
read them and nothing else. `to_json()` is the JSON schema of `report --json`, `record --json-out`
and `diagnose --json` (tests/test_golden.py pins it on recorded fixtures); `from_json()` reads it
back, tolerating missing fields, so hand-built or older documents still render.

Conventions, the same in every view: durations carry their unit in the name (`_us`, `_ms`, `_s`),
shares are 0..1 (`busy_ratio`, `exec_share`), counts are ints. A field marked `optional` is left
out of the JSON when it is None: it exists in one source only (a snapshot has rates, a report has not).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

OPTIONAL = {"optional": True}
UNDECODABLE = "?"       # the command row of undecodable frames and of unknown commands Redis refused


def _json(value):
    if dataclasses.is_dataclass(value):
        return value.to_json()
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


class View:
    """to_json / from_json for a slotted dataclass; field order is the JSON key order."""

    __slots__ = ()
    JSON_NAMES: dict = {}           # attribute -> JSON key, where they differ (class -> "class")
    NESTED: dict = {}               # attribute -> (kind, View class), kind "one" | "list" | "dict"

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            out[self.JSON_NAMES.get(f.name, f.name)] = _json(value)
        extra = getattr(self, "extra", None)
        if extra:
            out.pop("extra", None)
            out.update(extra)
        return out

    @classmethod
    def from_json(cls, doc: dict | None):
        doc = dict(doc or {})
        kwargs = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for f in dataclasses.fields(cls):
            key = cls.JSON_NAMES.get(f.name, f.name)
            if f.name == "extra" or key not in doc:
                continue
            value = doc.pop(key)
            nested = cls.NESTED.get(f.name)
            if nested is not None and value is not None:
                kind, view = nested
                if kind == "one":
                    value = view.from_json(value)
                elif kind == "list":
                    value = [view.from_json(v) for v in value]
                else:
                    value = {k: view.from_json(v) for k, v in value.items()}
            kwargs[f.name] = value
        if "extra" in names:
            kwargs["extra"] = doc
        return cls(**kwargs)


# -- stalls ------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Culprit(View):
    command: str
    key: Any
    client: str
    exec_ms: float | None
    reply_bytes: int


# stalls no command made: what the views name as their culprit
NO_COMMAND_CULPRIT = {"expiry": "(key expiry)", "eviction": "(maxmemory eviction)"}


@dataclass(slots=True)
class StallFrames(View):
    """A hot path of a stall's on-CPU samples: frames outermost first, the event loop's own left out."""

    frames: list
    share: float            # 0..1 of the stall's samples ran under the last frame
    samples: int

    def describe(self, shown: int = 3) -> str:
        """`activeExpireCycle → … → dictRelease 92 %`: the first frame and the last ones."""
        frames = list(self.frames)
        if len(frames) > shown:
            frames = [frames[0], "…", *frames[-(shown - 1):]]
        return f"{' → '.join(str(f) for f in frames)} {round(float(self.share) * 100)} %"


@dataclass(slots=True)
class StallResult(View):
    """One stall as reported: times relative to the trace's first event."""

    start_s: float = 0.0
    duration_ms: float = 0.0
    command: str = ""
    key: Any = None
    client: str = ""
    victims: int = 0
    victim_added_ms: float = 0.0
    end_s: float = 0.0
    class_: str = "unknown"
    evidence: list = field(default_factory=list)
    advice: list = field(default_factory=list)
    culprits: list = field(default_factory=list)        # [Culprit], longest execution first
    victim_added_total_ms: float = 0.0
    victim_added_mean_ms: float = 0.0
    open: bool | None = field(default=None, metadata=OPTIONAL)  # live views: still joining requests
    samples: int | None = field(default=None, metadata=OPTIONAL)    # on-CPU samples of the main thread (None: not sampled)
    frames: list | None = field(default=None, metadata=OPTIONAL)    # [StallFrames], heaviest first
    folded: list | None = field(default=None, metadata=OPTIONAL)    # "root;...;leaf count" lines (flame graphs)

    JSON_NAMES = {"class_": "class"}
    NESTED = {"culprits": ("list", Culprit), "frames": ("list", StallFrames)}

    @property
    def culprit(self) -> str:
        """'DEL big:set': the main culprit's command and key; without a command, the work that made the stall."""
        cmd = self.command or NO_COMMAND_CULPRIT.get(self.class_, "?")
        return f"{cmd} {self.key}" if self.key else cmd

    @property
    def first_advice(self) -> str:
        return next((a for a in self.advice if a), "")


# -- cache patterns ------------------------------------------------------------------------------------------
PATTERN_KINDS = ("stampede", "penetration", "avalanche", "race", "hot-key", "big-value")


@dataclass(slots=True)
class Pattern(View):
    """One cache-usage pattern found in the request stream (tracer/analyze/patterns/)."""

    kind: str = ""                  # one of PATTERN_KINDS
    keys: list = field(default_factory=list)        # the key(s), or a prefix such as "user:*"
    clients: list = field(default_factory=list)     # up to max_listed client addresses involved
    window_ms: float = 0.0          # how long the pattern took (per kind: see figures)
    count: int = 0                  # how often it happened (episodes, misses, interleavings, requests)
    evidence: list = field(default_factory=list)
    advice: list = field(default_factory=list)
    input: str = "full"             # "full": every request seen; "sampled": only sampled/slow records
    figures: dict = field(default_factory=dict)     # the kind's own numbers (missing clients, bytes, shares)


# -- figures shared by snapshots and reports ------------------------------------------------------------
@dataclass(slots=True)
class CommandStats(View):
    count: int = 0
    rps: float | None = field(default=None, metadata=OPTIONAL)          # snapshot only
    p50_us: float = 0.0
    p99_us: float = 0.0
    p999_us: float | None = field(default=None, metadata=OPTIONAL)      # snapshot only
    max_us: float = 0.0
    exec_share: float | None = field(default=None, metadata=OPTIONAL)   # snapshot only, 0..1
    spark: list | None = field(default=None, metadata=OPTIONAL)         # snapshot only
    samples: list | None = field(default=None, metadata=OPTIONAL)       # the "?" row: names it holds


@dataclass(slots=True)
class FsyncStats(View):
    count: int = 0
    main_thread: int = 0
    p99_us: float = 0.0
    max_us: float = 0.0
    aof_writes: int | None = field(default=None, metadata=OPTIONAL)     # snapshot only
    aof_write_max_us: float | None = field(default=None, metadata=OPTIONAL)


@dataclass(slots=True)
class ConnStats(View):
    accepted: int = 0
    closed: int = 0
    open: int | None = field(default=None, metadata=OPTIONAL)           # snapshot only
    accept_queue_p99_us: float | None = field(default=None, metadata=OPTIONAL)
    accept_rate: float | None = field(default=None, metadata=OPTIONAL)


@dataclass(slots=True)
class SlowRequest(View):
    client: str = ""
    command: str = "?"
    key: Any = None
    latency_us: float = 0.0
    start_s: float | None = None
    phases: list = field(default_factory=list)          # [(phase, us)] in PHASES order
    offsets_us: list = field(default_factory=list)      # where each phase starts, us from the request's start
    segments: list = field(default_factory=list)        # [(name, start us, duration us)] in time order
    reply_bytes: int = 0


@dataclass(slots=True)
class NodeRow(View):
    """One traced instance in the nodes panel."""

    pid: int = 0
    port: int | None = None
    requests: int = 0
    rps: float = 0.0
    p99_us: float | None = None
    busy_ratio: float | None = None
    stalls: int = 0


@dataclass(slots=True)
class Loss(View):
    """Records of one connection that reached neither ring buffer: where lost_events came from."""

    pid: int = 0
    fd: int = -1
    conn_id: int = 0                    # 0: no connection known for the fd
    client: str | None = None
    start_s: float | None = None        # end times of the first and last lost record
    end_s: float | None = None
    records: int = 0
    requests: int = 0                   # requests it left without a known reply (reply_type "lost")


# -- the two products of the analysis ---------------------------------------------------------------------
@dataclass(slots=True)
class Snapshot(View):
    """What a live view shows now: rates over the last seconds, the newest stalls first."""

    elapsed_s: float = 0.0
    requests: int = 0
    rps: float = 0.0
    lost_events: int = 0
    commands: dict = field(default_factory=dict)        # name -> CommandStats, busiest first
    phases_us_total: dict = field(default_factory=dict)
    busy_ratio: float | None = None
    busy_ratio_recent: float | None = None
    slowest: list = field(default_factory=list)         # [SlowRequest], slowest first
    stalls: list = field(default_factory=list)          # [StallResult], newest first
    fsync: FsyncStats = field(default_factory=FsyncStats)
    connections: ConnStats = field(default_factory=ConnStats)
    hot_keys: list = field(default_factory=list)        # [(key, requests)]
    big_keys: list = field(default_factory=list)        # [(key, largest reply bytes)]
    nodes: list = field(default_factory=list)           # [NodeRow], with several instances
    patterns: list = field(default_factory=list)        # [Pattern], by kind
    patterns_input: str = "full"    # what the pattern detectors saw: "full" (every request) or "sampled"
    mode: str | None = field(default=None, metadata=OPTIONAL)       # "engine": figures from the kernel's histograms

    NESTED = {"commands": ("dict", CommandStats), "slowest": ("list", SlowRequest),
              "stalls": ("list", StallResult), "fsync": ("one", FsyncStats), "connections": ("one", ConnStats),
              "nodes": ("list", NodeRow), "patterns": ("list", Pattern)}


@dataclass(slots=True)
class TargetInfo(View):
    pid: int = 0
    port: int | None = None
    redis_version: str = ""


@dataclass(slots=True)
class Report(View):
    """The analysis of a whole run (schema 1). Per instance, the same without `schema`."""

    schema: int | None = field(default=1, metadata=OPTIONAL)
    target: TargetInfo = field(default_factory=TargetInfo)
    duration_s: float = 0.0
    requests: int = 0
    lost_events: int = 0
    commands: dict = field(default_factory=dict)        # name -> CommandStats, by name
    stalls: list = field(default_factory=list)          # [StallResult], longest first
    fsync: FsyncStats = field(default_factory=FsyncStats)
    connections: ConnStats = field(default_factory=ConnStats)
    hot_keys: list = field(default_factory=list)
    big_keys: list = field(default_factory=list)
    phases_us_total: dict = field(default_factory=dict)
    unanswered: int = 0
    busy_ratio: float | None = None
    losses: list = field(default_factory=list)          # [Loss], the first MAX_LOSSES
    loss_spans: int = 0
    lost_requests: int = 0
    patterns: list = field(default_factory=list)        # [Pattern], by kind
    patterns_input: str = "full"    # what the pattern detectors saw: "full" (every request) or "sampled"
    instances: list | None = field(default=None, metadata=OPTIONAL)      # [Report], one per traced instance
    redirects: dict | None = field(default=None, metadata=OPTIONAL)
    links: list | None = field(default=None, metadata=OPTIONAL)          # per instance and overall
    mode: str | None = field(default=None, metadata=OPTIONAL)           # "engine": counts and percentiles from the
    #                                       kernel's histograms; slowest, hot/big keys and stalls from its records
    # log2 latency histograms (analyze/log2.py): {"unit", "bucket", "commands": {name: [counts]}, "phases": {...}}
    histograms: dict | None = field(default=None, metadata=OPTIONAL)
    # what a final summary adds to a run's report (never in `report --json`: a file has no wall clock)
    stall_ms: float | None = field(default=None, metadata=OPTIONAL)
    elapsed_s: float | None = field(default=None, metadata=OPTIONAL)     # wall time traced
    rps: float | None = field(default=None, metadata=OPTIONAL)
    slowest: list | None = field(default=None, metadata=OPTIONAL)        # [SlowRequest] of the last frame

    NESTED = {"target": ("one", TargetInfo), "commands": ("dict", CommandStats), "stalls": ("list", StallResult),
              "fsync": ("one", FsyncStats), "connections": ("one", ConnStats), "slowest": ("list", SlowRequest),
              "losses": ("list", Loss), "patterns": ("list", Pattern)}

    @classmethod
    def from_json(cls, doc):
        report = super(Report, cls).from_json(doc)
        if report.instances is not None:
            report.instances = [r if isinstance(r, Report) else Report.from_json(dict(r, schema=None))
                                for r in report.instances]
        return report


# -- around the analysis -------------------------------------------------------------------------------------
@dataclass(slots=True)
class ScreenHeader(View):
    """The top line of a live view: what is traced, how, and how it goes."""

    title: str = "live"
    pid: int | None = None
    port: int | None = None
    redis_version: str = ""
    io_threads: Any = None
    aof: str = ""                   # "off", "everysec", "always", "" when unknown
    probe_mode: str = ""
    stall_ms: float | None = None
    elapsed_s: float = 0.0
    rps: float = 0.0
    lost_events: int = 0


@dataclass(slots=True)
class TraceHeader(View):
    """A trace file's header: where and how it was recorded (docs/TRACE_FORMAT.md). Fields this
    version does not know are kept in `extra` and written back unchanged."""

    format_version: int | None = field(default=None, metadata=OPTIONAL)     # the writer fills these in
    tracer_version: str | None = field(default=None, metadata=OPTIONAL)
    host: str | None = field(default=None, metadata=OPTIONAL)
    kernel: str | None = field(default=None, metadata=OPTIONAL)
    pid_of_tracer: int | None = field(default=None, metadata=OPTIONAL)
    clock: dict = field(default_factory=lambda: {"mono_to_wall_ns": 0})
    targets: list = field(default_factory=list)         # one dict per traced redis-server (target_json)
    probes: list = field(default_factory=list)
    exec_probes: bool = False
    capture_max: int | None = field(default=None, metadata=OPTIONAL)
    show_values: bool = False
    stall_ms: float | None = field(default=None, metadata=OPTIONAL)
    mode: str | None = field(default=None, metadata=OPTIONAL)           # "engine"; unset: full (older files)
    # the probes' attach time in the records' clock (monotonic ns); older files: unset
    attached_ns: int | None = field(default=None, metadata=OPTIONAL)
    # their detach time: written in the trailer (unknown when the header is written), set here on reading
    detached_ns: int | None = field(default=None, metadata=OPTIONAL)
    record_header_size: int | None = field(default=None, metadata=OPTIONAL)
    extra: dict = field(default_factory=dict)

    @property
    def first_target(self) -> dict:
        t = self.targets[0] if self.targets else {}
        return t if isinstance(t, dict) else {}

    @property
    def clock_offset_ns(self) -> int:
        return int((self.clock or {}).get("mono_to_wall_ns") or 0)
