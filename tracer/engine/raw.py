"""The bytes the kernel left to user space (RT_READ records flagged RTF_ENGINE_RAW: inline commands,
unparseable or over-budget batches, connections not yet classified): parsed here with the same RESP
parser as the full path, so that kernel counts plus these counts are the exact totals."""
from __future__ import annotations

from collections import Counter

from tracer.kernel import events
from tracer.decode.keyspec import KNOWN
from tracer.decode.resp import RequestParser
from tracer.schema import UNDECODABLE


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
            known = name.encode() in KNOWN
            if name and (cmd.complete or name == "?" or known):
                self.counts[(ev.tgid, name if known else UNDECODABLE)] += 1
        return spans
