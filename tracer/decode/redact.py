"""Masking of captured payloads with the spans the RESP parsers return.

Spans are (offset, length) ranges of one captured buffer. Masking overwrites them with b"*" of the
same length, so a parser fed the masked bytes decodes exactly the same frames (lengths and
structure are untouched; the parsers never span headers, command names or keys).
"""
from __future__ import annotations

import re

MASK = 0x2A  # b"*"


def redact_spans(buf: bytes, spans) -> bytes:
    """buf with every (offset, length) span overwritten by b'*' (clipped to buf; length preserved)."""
    if not spans:
        return bytes(buf)
    out = bytearray(buf)
    n = len(out)
    for off, length in spans:
        if length <= 0:
            continue
        start = off if off > 0 else 0
        end = off + length
        if end > n:
            end = n
        if start < end:
            out[start:end] = b"*" * (end - start)
    return bytes(out)


def merge_spans(spans) -> list[tuple[int, int]]:
    """Sorted, non-overlapping, adjacent ranges joined (for compact storage)."""
    merged: list[list[int]] = []
    for off, length in sorted(s for s in spans if s[1] > 0):
        if merged and off <= merged[-1][0] + merged[-1][1]:
            end = max(merged[-1][0] + merged[-1][1], off + length)
            merged[-1][1] = end - merged[-1][0]
        else:
            merged.append([off, length])
    return [(o, n) for o, n in merged]


# An error line of a reply: "-CODE text\r\n" at the start of a capture or after a CRLF. Redis echoes
# arguments in error texts ("ACL SETUSER modifier '<password'", "unknown command ... with args
# beginning with: 'value'"), and nothing the tracer shows uses the text (only the code, and the
# detail of MOVED/ASK), so the text is always masked. Only bytes between the code and the CR are
# touched: a match inside a bulk payload keeps its length, so framing never changes.
_ERROR_LINE = re.compile(rb"(?:\A|(?<=\r\n))-([^\r\n ]*) ([^\r\n]+)")
_KEEP_ERROR_TEXT = frozenset((b"MOVED", b"ASK"))


def error_text_spans(payload: bytes) -> list[tuple[int, int]]:
    """Spans of the texts of the error lines in a reply capture (codes and MOVED/ASK kept)."""
    if payload[:1] != b"-" and b"\r\n-" not in payload:
        return []
    return [(m.start(2), m.end(2) - m.start(2)) for m in _ERROR_LINE.finditer(payload)
            if m.group(1) not in _KEEP_ERROR_TEXT]
