"""The bytes the kernel left to user space (RT_READ records flagged RTF_ENGINE_RAW: inline commands,
unparseable or over-budget batches, connections not yet classified): parsed here with the same RESP
parser as the full path, so that kernel counts plus these counts are the exact totals."""
from __future__ import annotations

from collections import Counter

from tracer.engine.histogram import EngineHistogram
from tracer.kernel import events
from tracer.decode.keyspec import KNOWN
from tracer.decode.resp import RequestParser
from tracer.schema import UNDECODABLE


def row_name(name: str) -> str:
    """The command-table row of an upper-cased command name: itself when Redis knows it, else "?"."""
    return name if name.encode() in KNOWN else UNDECODABLE


class RawCounter:
    """Commands per (tgid, name) in the raw reads, one parser per connection."""

    def __init__(self):
        self.counts: Counter = Counter()
        self._parsers: dict = {}

    def feed(self, records) -> None:
        for raw in records:
            kind = raw[52]
            if kind == events.CLOSE:
                ev = events.decode(raw)
                self.forget(ev.tgid, ev.fd)
            elif kind == events.READ:
                ev = events.decode(raw)
                if ev.flags & events.RTF_ENGINE_RAW:
                    self.feed_event(ev)

    def forget(self, tgid: int, fd: int) -> None:
        self._parsers.pop((tgid, fd), None)

    def feed_event(self, ev) -> list:
        """Counts the commands of one raw READ event; returns the spans of its values and secrets."""
        parser = self._parsers.get((ev.tgid, ev.fd))
        if parser is None:
            # the kernel hands a connection over where its parse stopped: possibly inside a frame,
            # unless it says the bytes start at a command (an inline command: "GTE typo:key")
            parser = self._parsers[(ev.tgid, ev.fd)] = RequestParser()
            if not ev.flags & events.RTF_ENGINE_AT_CMD:
                parser.start_unsynced()
        commands, spans = parser.feed(ev.payload, ev.ret)
        for cmd in commands:
            # a command cut by bytes the kernel could not capture still counts when its name is known;
            # a line whose name Redis does not know (garbage, a typo, a protocol error) joins the "?"
            # row, as --full's analysis puts it (there from the error reply; the raw path sees none)
            name = cmd.name.upper()
            row = row_name(name)
            if name and (cmd.complete or name == "?" or row != UNDECODABLE):
                self.counts[(ev.tgid, row)] += 1
        return spans


class RawLatencies:
    """Latencies of the requests user space stitched from a connection the kernel left to it (its
    reads and writes come up whole: a lost frame, a link, a batch cut inside a command). Kept as the
    kernel keeps its own, so that merged with them they make one histogram per command: per (tgid,
    command name as RawCounter counts it) the fields and buckets of probes/engine.c, latency from
    arrival (or read start) to the end of the reply, and the batch phases as eng_close_batch times them."""

    def __init__(self):
        self.commands: dict = {}    # (tgid, name) -> ({"done", "sum_ns", "max_ns"}, EngineHistogram)
        self.phases: dict = {}      # (tgid, phase) -> ({"sum_ns"}, EngineHistogram)

    def add(self, req) -> None:
        latency = req.latency_ns
        if latency is None:
            return                  # no reply seen: counted (RawCounter) but not timed, as in the kernel
        name = row_name(req.command.split(" ", 1)[0].upper())
        fields, hist = self.commands.get((req.tgid, name)) or self.commands.setdefault(
            (req.tgid, name), ({"done": 0, "sum_ns": 0, "max_ns": 0}, EngineHistogram()))
        fields["done"] += 1
        fields["sum_ns"] += latency
        fields["max_ns"] = max(fields["max_ns"], latency)
        hist.add_value(latency)
        arrival, wake = req.arrival_ts, req.wake_ts
        read_start, read_end = req.read_start_ts, req.read_end_ts
        reply_start, reply_end = req.reply_start_ts, req.reply_end_ts
        if arrival and wake >= arrival:
            self._phase(req.tgid, "socket_queue", wake - arrival)
        if wake and read_start >= wake:
            self._phase(req.tgid, "wait", read_start - wake)
        if read_end and reply_start >= read_end:
            self._phase(req.tgid, "exec", reply_start - read_end)
        if reply_start and reply_end >= reply_start:
            self._phase(req.tgid, "reply_write", reply_end - reply_start)

    def of(self, tgid: int) -> tuple[dict, dict]:
        """({name: (fields, histogram)}, {phase: (fields, histogram)}) of one instance."""
        return ({name: row for (t, name), row in self.commands.items() if t == tgid},
                {phase: row for (t, phase), row in self.phases.items() if t == tgid})

    def _phase(self, tgid: int, phase: str, ns: int) -> None:
        fields, hist = self.phases.get((tgid, phase)) or self.phases.setdefault(
            (tgid, phase), ({"sum_ns": 0}, EngineHistogram()))
        fields["sum_ns"] += ns
        hist.add_value(ns)
