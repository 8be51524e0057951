"""Fields of a target's INFO, sampled while tracing (runtime/info_sampler.py asks; this module parses
the answer and carries it as an INFO record, so a recording holds what live mode saw).

The record's payload is "name:value" lines of the fields Redis gave (a field it lacks is left out, and
read back as None); its tgid is the target's, its ts_exit the sample's time on the probes' clock."""
from __future__ import annotations

from dataclasses import dataclass, fields

from tracer.kernel import events

SECTIONS = ("stats", "persistence", "memory")     # where Redis keeps the fields below
PAYLOAD_MAX = 1024      # bytes of a payload read back (a hostile recording cannot make it more)


@dataclass(frozen=True, slots=True)
class InfoSample:
    """What INFO said at one time; None: the field was not in the answer (older Redis, or not asked)."""

    expired_keys: int | None = None             # INFO stats: keys removed because their TTL ran out
    evicted_keys: int | None = None             # INFO stats: keys removed by maxmemory eviction
    latest_fork_usec: int | None = None         # INFO persistence (stats before 7.0): the last fork's cost
    mem_fragmentation_ratio: float | None = None    # INFO memory


_TYPES = {f.name: float if f.name == "mem_fragmentation_ratio" else int for f in fields(InfoSample)}


def parse_info(text: str) -> InfoSample:
    """The fields of an INFO answer (several sections concatenated are fine); malformed values are None."""
    found = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        convert = _TYPES.get(name)
        if sep and convert is not None:
            try:
                found[name] = convert(value.strip())
            except ValueError:
                pass
    return InfoSample(**found)


def info_record(sample: InfoSample, tgid: int, ts: int) -> bytes:
    """The sample as an INFO record, to be fed and recorded with the stream."""
    payload = "".join(f"{name}:{getattr(sample, name)}\n" for name in _TYPES
                      if getattr(sample, name) is not None).encode()
    return events.encode(events.Event(kind=events.INFO, ts_enter=ts, ts_exit=ts, tgid=tgid, tid=tgid,
                                      payload=payload))


@dataclass(frozen=True, slots=True)
class InfoAt:
    """An INFO record read back: which target, when, what."""

    tgid: int
    ts: int
    sample: InfoSample


def info_of(ev: events.Event) -> InfoAt:
    """What an INFO record (decoded) carries."""
    return InfoAt(ev.tgid, ev.ts_exit, parse_info(bytes(ev.payload[:PAYLOAD_MAX]).decode("ascii", "replace")))
