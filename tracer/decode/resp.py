"""Incremental RESP2/RESP3 decoding of possibly-truncated captures.

The probes copy only the first bytes of each read()/write() on a client socket, plus the real byte
count. Each parser is fed one syscall at a time: `feed(data, total)` where `data` is the captured
prefix of a syscall that moved `total` bytes. It returns the frames that END within that syscall and
the (offset, length) spans of `data` to mask before the bytes are stored or shown.

Design points
* Nothing large is buffered: bulk payloads are skipped by length (also through uncaptured bytes),
  only header lines (bounded) and inline command lines (<= 64 KiB) are kept across feeds.
* Uncaptured bytes inside a payload are skipped exactly. When a header falls in uncaptured bytes the
  request parser returns the frame it was in (complete=False) and re-synchronises on a later feed by
  looking for a request start; the reply parser becomes `desynced` until `resync()`.
* A fast path decodes whole multibulk requests and scalar replies that lie inside one capture with
  bytes.find() and int() on slices; everything else goes through the byte-exact state machine.
* Bad input never raises; every byte fed is accounted for (RequestParser: sizes of returned commands
  + ignored + undecodable + lost + bytes of the frame in progress == bytes fed).
"""
from __future__ import annotations

import re

from tracer import native
from tracer.decode.keyspec import KEEP, KEEP_MAX, KEY_CHARS, KNOWN, SECRET, SPECS, VALUE, ArgAnalyzer, show

INLINE_MAX = 64 * 1024        # Redis PROTO_INLINE_MAX_SIZE: longer inline lines are a protocol error
HDR_MAX = 32                  # digits of a *<n> / $<len> header before it is garbage
INT_MAX = 2**31 - 1           # Redis: multibulk count above INT_MAX is a protocol error
FAST_ARGS = 64                # the fast path handles frames with at most this many arguments
FAST_WINDOW = 16 * 1024       # bytes the fast path splits at once
MAX_DEPTH = 128               # reply aggregate nesting before we call it garbage
REPLY_MAX_LEN = 1 << 40       # sanity bound of reply lengths/counts
SHORT = 32                    # "short" string for Reply.head


class Command:
    """One request frame."""

    __slots__ = ("name", "sub", "key", "argc", "size", "complete", "inline")

    def __init__(self, name="?", sub=None, key=None, argc=0, size=0, complete=True, inline=False):
        self.name = name
        self.sub = sub
        self.key = key
        self.argc = argc
        self.size = size
        self.complete = complete
        self.inline = inline

    def astuple(self):
        return (self.name, self.sub, self.key, self.argc, self.size, self.complete, self.inline)

    def __eq__(self, other):
        return isinstance(other, Command) and self.astuple() == other.astuple()

    __hash__ = None

    def __repr__(self):
        return ("Command(name={!r}, sub={!r}, key={!r}, argc={}, size={}, complete={}, inline={})"
                .format(*self.astuple()))


class Reply:
    """One reply frame (attributes that precede it included)."""

    __slots__ = ("type", "error", "detail", "size", "head", "complete", "keys")

    def __init__(self, type="ok", error=None, detail=None, size=0, head=None, complete=True, keys=None):
        self.type = type
        self.error = error
        self.detail = detail
        self.size = size
        self.head = head
        self.complete = complete
        self.keys = keys        # an invalidation push (CLIENT TRACKING): the keys it invalidates

    def astuple(self):
        return (self.type, self.error, self.detail, self.size, self.head, self.complete, self.keys)

    def __eq__(self, other):
        return isinstance(other, Reply) and self.astuple() == other.astuple()

    __hash__ = None

    def __repr__(self):
        return ("Reply(type={!r}, error={!r}, detail={!r}, size={}, head={!r}, complete={}, keys={!r})"
                .format(*self.astuple()))


def _num(b) -> int | None:
    """Strict RESP integer: digits, or '-' digits."""
    if b.isdigit():
        return int(b)
    if b[:1] == b"-" and b[1:].isdigit():
        return -int(b[1:])
    return None


# -- inline commands (Redis sdssplitargs) -----------------------------------------------------
_SPACE = frozenset(b" \t\n\r\x0b\x0c")
_TOKEN_END = frozenset(b" \t\n\r")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESC = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_STRUCTURAL = b" \t\n\r\x0b\x0c\x00\"'\\"   # bytes that can change how an inline line splits
_TOK_RE = re.compile(rb"[^ \t\n\r\x0b\x0c][^ \t\n\r]*")


def split_inline(line: bytes, final: bool = True):
    """Split an inline command line like Redis's sdssplitargs.

    Returns (tokens, error): tokens = [(arg, segments, complete, end)]: segments are the
    (start, end) ranges of `line` holding the argument's content (quotes excluded), so masking
    them keeps the line's structure; end is where the token's raw bytes end. final=False: `line`
    may continue, its last token is then incomplete. error: unbalanced quotes, or a NUL byte (Redis
    looks for the newline with strchr(): it never sees a line holding NUL, and ends up closing the
    connection); the tokens are still returned, NUL counting as a space, so they can be masked."""
    nul = 0 in line
    if nul:
        line = line.replace(b"\x00", b" ")
    if 34 not in line and 39 not in line:
        toks = [(m.group(), ((m.start(), m.end()),), True, m.end()) for m in _TOK_RE.finditer(line)]
        if toks and not final and toks[-1][3] == len(line):
            t = toks[-1]
            toks[-1] = (t[0], t[1], False, t[3])
        return toks, nul
    toks, err = _split_quoted(line, final)
    return toks, err or nul


def _split_quoted(line: bytes, final: bool):
    n = len(line)
    p = 0
    toks = []
    while True:
        while p < n and line[p] in _SPACE:
            p += 1
        if p >= n:
            return toks, False
        cur = bytearray()
        segs = []
        seg = p
        inq = insq = False
        while True:
            if p >= n:
                if seg < p:
                    segs.append((seg, p))
                if inq or insq:
                    toks.append((bytes(cur), segs, False, n))
                    return toks, final
                toks.append((bytes(cur), segs, final, n))
                return toks, False
            c = line[p]
            if inq or insq:
                if inq and c == 92 and p + 3 < n and line[p + 1] == 120 and line[p + 2] in _HEX \
                        and line[p + 3] in _HEX:
                    cur.append(int(line[p + 2:p + 4], 16))
                    p += 4
                elif inq and c == 92 and p + 1 < n:
                    c2 = line[p + 1]
                    cur.append(_ESC.get(c2, c2))
                    p += 2
                elif insq and c == 92 and p + 1 < n and line[p + 1] == 39:
                    cur.append(39)
                    p += 2
                elif (inq and c == 34) or (insq and c == 39):
                    if seg < p:
                        segs.append((seg, p))
                    p += 1
                    if p < n and line[p] not in _SPACE:   # must be followed by a space or the end
                        toks.append((bytes(cur), segs, True, p))
                        return toks, True
                    # at the end of a partial line, what follows the quote is still unknown
                    toks.append((bytes(cur), segs, final or p < n, p))
                    break
                else:
                    cur.append(c)
                    p += 1
            elif c in _TOKEN_END:
                if seg < p:
                    segs.append((seg, p))
                toks.append((bytes(cur), segs, True, p))
                break
            elif c == 34 or c == 39:
                if seg < p:
                    segs.append((seg, p))
                if c == 34:
                    inq = True
                else:
                    insq = True
                p += 1
                seg = p
            else:
                cur.append(c)
                p += 1


# -- requests -------------------------------------------------------------------------------
ST_START, ST_COUNT, ST_ARG, ST_BLEN, ST_LF, ST_BODY, ST_INLINE, ST_DESYNC = range(8)
# canonical headers, for the fast paths' checks by lookup: *1..*FAST_ARGS and $0..$(_NHDR-1)
_NHDR = 4096
_BULK_HDR = [b"$%d" % i for i in range(_NHDR)]
_ARGC_OF = {b"*%d" % i: i for i in range(1, FAST_ARGS + 1)}

_MB_START = re.compile(rb"\*[1-9][0-9]{0,9}\r\n\$")
_MB_PARTIAL = re.compile(rb"\*[1-9][0-9]{0,9}(?:\r\n?)?\Z")
_INLINE_AT = re.compile(rb"([A-Za-z][A-Za-z0-9_.|:-]{0,39})(?:[ \t\r\n]|\Z)")
_INLINE_AFTER_NL = re.compile(rb"\n([A-Za-z][A-Za-z0-9_.|:-]{0,39})(?=[ \t\r\n])")
_BULK_HEADER = re.compile(rb"\$[0-9]+\r?")


def _next_line_multibulk(data: bytes, start: int) -> bool:
    """The line after the one at `start` is a $<len> or *<count> header: the candidate inline
    line is really a bulk payload."""
    nl = data.find(b"\n", start)
    return 0 <= nl < len(data) - 2 and data[nl + 1] in b"$*" and 48 <= data[nl + 2] <= 57


class RequestParser:
    """Client → server byte stream of one connection."""

    __slots__ = ("show_values", "max_bulk", "desyncs", "undecodable", "lost", "ignored", "oversized",
                 "_st", "_next", "_line", "_fsize", "_fcomplete", "_argc", "_argi", "_an",
                 "_remain", "_crlf", "_mask", "_abuf", "_alen", "_acomplete", "_fresh", "_inline_hint",
                 "_itok", "_ioff", "_itail", "_distrust")

    def __init__(self, show_values: bool = False, max_bulk: int = 512 * 1024 * 1024):
        self.show_values = show_values
        self.max_bulk = max_bulk
        self.desyncs = 0        # times the stream could not be followed and had to be re-synchronised
        self.undecodable = 0    # captured bytes skipped while looking for a request start
        self.lost = 0           # uncaptured bytes not attributable to any returned frame
        self.ignored = 0        # empty inline lines and *0 / *-1 frames (Redis ignores them)
        self.oversized = 0      # bulk lengths above max_bulk (a protocol error for Redis)
        self._st = ST_START
        self._next = ST_START
        self._line = bytearray()
        self._fsize = 0
        self._fcomplete = True
        self._argc = 0
        self._argi = 0
        self._an = None
        self._remain = 0
        self._crlf = 0
        self._mask = False
        self._abuf = None
        self._alen = 0
        self._acomplete = True
        self._fresh = False
        self._inline_hint = None    # None: no frame yet; True: only inline frames; False: multibulk seen
        self._itok = 0              # partial inline line: arguments already analysed (in self._an) ...
        self._ioff = 0              # ... and where the next one starts in self._line
        self._itail = None          # the unfinished last argument is masked (True/False) / none (None)
        self._distrust = False      # the inline line being read may not start where we think

    @property
    def pending(self) -> bool:
        return self._st != ST_START and self._st != ST_DESYNC

    @property
    def desynced(self) -> bool:
        return self._st == ST_DESYNC

    @property
    def frame_bytes(self) -> int:
        """Bytes of the frame in progress consumed so far."""
        return self._fsize if self.pending else 0

    def feed(self, data: bytes, total: int):
        if type(data) is not bytes:
            data = bytes(data)
        n = len(data)
        if total < n:
            total = n
        out = []
        spans = []
        pos = 0
        nofast = -1
        if n and self._st == ST_START and data[0] == 42:
            # the common case, whole frames in one capture: straight to the fast path
            pos = nofast = self._fast(data, 0, n, out, spans)
            if pos == total:
                return out, spans
        while pos < n:
            st = self._st
            if st == ST_START:
                if data[pos] == 42:
                    if pos != nofast:
                        q = self._fast(data, pos, n, out, spans)
                        if q != pos:
                            pos = nofast = q
                            continue
                    self._begin()
                    self._st = ST_COUNT
                    self._fsize = 1
                    pos += 1
                    continue
                nl = data.find(b"\n", pos)
                if nl >= 0:
                    self._an = None
                    self._inline_line(data[pos:nl], 0, pos, nl + 1 - pos, out, spans)
                    pos = nl + 1
                else:
                    self._begin()
                    self._st = ST_INLINE
                    self._inline_more(data, pos, n, out, spans)
                    pos = n
            elif st == ST_BODY:
                pos = self._body(data, pos, n, out, spans)
            elif st == ST_ARG:
                if data[pos] != 36:
                    self._proto_error(out)
                    continue
                pos += 1
                self._fsize += 1
                self._st = ST_BLEN
            elif st == ST_COUNT or st == ST_BLEN:
                cr = data.find(b"\r", pos)
                if cr < 0:
                    self._line += data[pos:pos + HDR_MAX + 1]
                    self._fsize += n - pos
                    pos = n
                    if len(self._line) > HDR_MAX:
                        self._proto_error(out)
                else:
                    self._line += data[pos:cr]
                    self._fsize += cr + 1 - pos
                    pos = cr + 1
                    self._header(out)
            elif st == ST_LF:
                pos += 1
                self._fsize += 1
                self._after_lf(out)
            elif st == ST_INLINE:
                nl = data.find(b"\n", pos)
                lb = len(self._line)
                if nl >= 0:
                    line = bytes(self._line) + data[pos:nl]
                    size = self._fsize + nl + 1 - pos
                    self._line = bytearray()
                    self._st = ST_START
                    self._inline_line(line, lb, pos, size, out, spans)
                    pos = nl + 1
                else:
                    self._inline_more(data, pos, n, out, spans)
                    pos = n
            else:  # ST_DESYNC
                pos = self._scan(data, pos, spans)
        if total > n:
            self._gap(total - n, out)
        elif self._st == ST_DESYNC:
            self._fresh = False
        return out, spans

    # -- fast path: whole multibulk frames inside the capture ----------------------------------
    def _fast(self, data, pos, n, out, spans) -> int:
        """Decode the run of whole multibulk frames starting at pos (a '*'); returns where it
        stopped: at the end of the data or at a frame the state machine must handle (partial,
        payload holding CRLF, malformed, many arguments)."""
        limit = pos + FAST_WINDOW
        if _native is not None:
            # the compiled fast path decodes the simple commands among these frames exactly as
            # _fast_py below does; it hands the first other one back (negative) at its position
            q = _native.request_fast(data, pos, limit, self.show_values, self.max_bulk, out, spans)
            if q >= 0:
                if q != pos:
                    self._inline_hint = False
                return q
            q = -q - 1
            if q != pos:
                self._inline_hint = False
            pos = q
        return self._fast_py(data, pos, n, out, spans, limit)

    def _fast_py(self, data, pos, n, out, spans, limit) -> int:
        """The reference fast path: whole multibulk frames from pos within the window below limit."""
        # hot path (once per request read): headers are checked against precomputed ones
        # (_ARGC_OF, _BULK_HDR: the canonical spellings); anything else takes the general check
        lines = (data if pos == 0 and n <= limit else data[pos:limit]).split(b"\r\n")
        last = len(lines) - 1           # lines[last] is not followed by CRLF: never used
        i = 0
        get = SPECS.get
        app = spans.append
        sv = self.show_values
        max_bulk = self.max_bulk
        start = pos
        argc_of = _ARGC_OF
        bulk_hdr = _BULK_HDR
        nhdr = _NHDR
        while i < last:
            h = lines[i]
            argc = argc_of.get(h)
            if argc is None:
                c = h[1:]
                if h[:1] != b"*" or not c.isdigit():
                    break
                argc = int(c)
                if argc == 0 or argc > FAST_ARGS:
                    break
            if i + 2 * argc >= last:
                break
            p = pos + len(h) + 2
            j = i + 1
            args = []
            for _ in range(argc):
                hl = lines[j]
                pl = lines[j + 1]
                ln = len(pl)
                if ln >= nhdr or hl != bulk_hdr[ln]:
                    c = hl[1:]
                    if hl[:1] != b"$" or not c.isdigit() or int(c) != ln:
                        break
                if ln > max_bulk:
                    break
                s = p + len(hl) + 2
                args.append(pl)
                args.append(s)
                p = s + ln + 2
                j += 2
            else:
                name = args[0]
                spec = get(name)
                if spec is None and len(name) <= 32:
                    spec = get(name.upper())
                if spec is not None and spec.simple:
                    kp = spec.pos
                    key = None
                    if kp and argc > kp:
                        kb = args[2 * kp]
                        try:
                            key = kb.decode("ascii")
                            if len(key) > KEY_CHARS or not key.isprintable():
                                key = show(kb[:KEEP_MAX], KEY_CHARS, len(kb) <= KEEP_MAX)
                        except UnicodeDecodeError:
                            key = show(kb[:KEEP_MAX], KEY_CHARS, len(kb) <= KEEP_MAX)
                    vf = spec.vfrom
                    if vf and argc > vf and not sv:
                        for k in range(2 * vf, 2 * argc, 2):
                            ln = len(args[k])
                            if ln:
                                app((args[k + 1], ln))
                    out.append(Command(spec.name, None, key, argc, p - pos, True, False))
                else:
                    an = ArgAnalyzer()
                    for k in range(argc):
                        pl = args[2 * k]
                        ln = len(pl)
                        m = an.cls(k)
                        if ln and (m & SECRET or (m & VALUE and not sv)):
                            app((args[2 * k + 1], ln))
                        if m & KEEP:
                            if ln <= KEEP_MAX:
                                an.add(k, pl, True, True)
                            else:
                                an.add(k, pl[:KEEP_MAX], False, True)
                        else:
                            an.add(k, None, True, True)
                    out.append(Command(an.name, an.sub, an.key, argc, p - pos, True, False))
                pos = p
                i = j
                continue
            break
        if pos != start:
            self._inline_hint = False
        return pos

    # -- slow path ---------------------------------------------------------------------------
    def _begin(self):
        self._line = bytearray()
        self._fsize = 0
        self._fcomplete = True
        self._argc = 0
        self._argi = 0
        self._an = None

    def _header(self, out):
        """A *<count> or $<len> line ended (its \\r consumed)."""
        v = _num(bytes(self._line))
        self._line = bytearray()
        if self._st == ST_COUNT:
            if v is None or v > INT_MAX:
                self._proto_error(out)
                return
            if v <= 0:
                self._next = ST_START       # Redis ignores *0 and *-1
            else:
                self._argc = v
                self._argi = 0
                self._an = ArgAnalyzer()
                self._next = ST_ARG
        else:
            if v is None or v < 0:
                self._proto_error(out)
                return
            if v > self.max_bulk:
                self.oversized += 1
                self._proto_error(out)
                return
            m = self._an.cls(self._argi)
            self._mask = bool(m & SECRET or (m & VALUE and not self.show_values))
            self._abuf = bytearray() if m & KEEP else None
            self._alen = v
            self._acomplete = True
            self._remain = v
            self._crlf = 2
            self._next = ST_BODY
        self._st = ST_LF

    def _after_lf(self, out):
        nx = self._next
        if nx == ST_START:
            self.ignored += self._fsize
            self._fsize = 0
        self._st = nx

    def _body(self, data, pos, n, out, spans) -> int:
        r = self._remain
        if r:
            k = n - pos
            if k > r:
                k = r
            if self._mask:
                spans.append((pos, k))
            ab = self._abuf
            if ab is not None and len(ab) < KEEP_MAX:
                ab += data[pos:pos + min(k, KEEP_MAX - len(ab))]
            r -= k
            self._remain = r
            pos += k
            self._fsize += k
            if r:
                return pos
        c = self._crlf
        k = n - pos
        if k > c:
            k = c
        c -= k
        self._crlf = c
        pos += k
        self._fsize += k
        if not c:
            self._arg_done(out)
        return pos

    def _arg_done(self, out):
        ab = self._abuf
        an = self._an
        i = self._argi
        complete = self._acomplete
        if ab is not None:
            an.add(i, bytes(ab), complete and self._alen <= KEEP_MAX, complete)
        else:
            an.add(i, None, complete, complete)
        self._abuf = None
        i += 1
        self._argi = i
        if i >= self._argc:
            out.append(Command(an.name, an.sub, an.key, self._argc, self._fsize, self._fcomplete, False))
            self._inline_hint = False
            self._an = None
            self._st = ST_START
        else:
            self._st = ST_ARG

    def _proto_error(self, out):
        """Redis would reply with a protocol error and close the connection: return the frame as
        "?" and look for the next request start."""
        out.append(Command("?", None, None, self._argc, self._fsize, False, False))
        self._an = None
        self._abuf = None
        self._line = bytearray()
        self._desync(False)

    def start_unsynced(self) -> None:
        """The stream may begin inside a frame (bytes handed over mid-connection): look for a request
        start first, masking what comes before it, instead of trusting the first byte."""
        self._st = ST_DESYNC
        self._fresh = True

    def _desync(self, fresh):
        self.desyncs += 1
        self._distrust = False
        self._st = ST_DESYNC
        self._fresh = fresh

    # -- inline commands -----------------------------------------------------------------------
    # A line within one capture is handled at once. A line spread over feeds is analysed as it
    # grows: complete arguments go into self._an once (self._itok of them, the rest of the line
    # from self._ioff), so each feed only tokenises the unfinished part.
    def _inline_line(self, line, lb, dpos, size, out, spans):
        """A whole inline line (without its \\n); the part from line offset lb is at data[dpos:]."""
        an = self._an
        if an is None:
            an = self._inline_analyzer()
            base = argc = 0
        else:
            base, argc = self._ioff, self._itok
        self._an = None
        trusted = not self._distrust    # else its start is a guess: not a complete decode
        self._distrust = False
        self._line = bytearray()
        if len(line) > INLINE_MAX:
            out.append(Command("?", None, None, 0, size, False, True))
            return
        toks, err = split_inline(line[base:] if base else line, True)
        argc = self._inline_args(an, toks, argc, base, lb, dpos, spans, True)
        if err:
            out.append(Command("?", None, None, argc, size, False, True))
        elif not argc:
            self.ignored += size
        else:
            out.append(Command(an.name, an.sub, an.key, argc, size, trusted, True))
            if self._inline_hint is None:
                self._inline_hint = True

    def _inline_analyzer(self):
        an = ArgAnalyzer()
        if self._distrust:
            an.sfrom = 1
        return an

    def _inline_args(self, an, toks, i, base, lb, dpos, spans, final):
        """Mask and analyse tokens (offsets relative to line offset `base`), numbering them from i.
        Not final: stop before an incomplete token, after masking what is known of it."""
        sv = self.show_values
        for tok, segs, complete, end in toks:
            m = an.cls(i)
            if m & SECRET or (m & VALUE and not sv):
                for a, b in segs:
                    a += base
                    b += base
                    if a < lb:
                        a = lb
                    if b > a:
                        spans.append((dpos + a - lb, b - a))
            if not complete and not final:
                return i
            if m & KEEP:
                an.add(i, tok[:KEEP_MAX], complete and len(tok) <= KEEP_MAX, complete)
            else:
                an.add(i, None, complete, complete)
            i += 1
            if not final:
                self._itok = i
                self._ioff = base + end
        return i

    def _inline_more(self, data, pos, n, out, spans):
        """The inline line continues past this capture: mask what is known, enforce the limit."""
        line = self._line
        self._fsize += n - pos
        if len(line) + n - pos > INLINE_MAX:
            self._proto_error(out)
            return
        line += data[pos:]
        if self._an is None:
            self._an = self._inline_analyzer()
            self._itok = self._ioff = 0
            self._itail = None
        elif self._itail is not None and len(data_part := line[len(line) - (n - pos):]) == len(
                data_part.translate(None, _STRUCTURAL)):
            # the unfinished argument just grew (no delimiter, quote, escape): same treatment
            if self._itail:
                spans.append((pos, n - pos))
            return
        base = self._ioff
        toks, _ = split_inline(bytes(line[base:]), False)
        i0 = self._itok
        i = self._inline_args(self._an, toks, i0, base, len(line) - (n - pos), pos, spans, False)
        # an unfinished last argument: remember whether it is masked
        self._itail = bool(self._an.cls(i) & (SECRET if self.show_values else SECRET | VALUE)) \
            if i < i0 + len(toks) else None

    # -- uncaptured bytes ---------------------------------------------------------------------
    def _gap(self, g, out):
        while g > 0:
            st = self._st
            if st == ST_BODY:
                self._fcomplete = False
                r = self._remain
                if r:
                    self._acomplete = False
                    k = g if g < r else r
                    r -= k
                    g -= k
                    self._fsize += k
                    self._remain = r
                    if r:
                        return
                k = g if g < self._crlf else self._crlf
                self._crlf -= k
                g -= k
                self._fsize += k
                if not self._crlf:
                    self._arg_done(out)
            elif st == ST_LF:
                g -= 1
                self._fsize += 1
                self._fcomplete = False
                self._after_lf(out)
            elif st == ST_START:
                self.lost += g
                self._desync(True)
                return
            elif st == ST_DESYNC:
                self.lost += g
                self._fresh = True
                return
            else:
                self._cut(g, out)
                return

    def _cut(self, g, out):
        """A header (or an inline line) continues in uncaptured bytes: the frame's end is unknown.
        Return it now, with everything up to the end of this read, and re-synchronise later."""
        self._fsize += g
        st = self._st
        if st == ST_INLINE:
            an, base, argc = self._an, self._ioff, self._itok
            if an is None:
                an, base, argc = ArgAnalyzer(), 0, 0
            toks, _ = split_inline(bytes(self._line[base:]), False)
            for tok, _segs, complete, _end in toks:     # the last one may be cut
                an.add(argc, tok[:KEEP_MAX] if an.cls(argc) & KEEP else None,
                       complete and len(tok) <= KEEP_MAX, complete)
                argc += 1
            if argc:
                out.append(Command(an.name, an.sub, an.key, argc, self._fsize, False, True))
            else:
                self.lost += self._fsize
        else:
            an = self._an
            if an is None:      # count not known
                out.append(Command("?", None, None, 0, self._fsize, False, False))
            else:
                out.append(Command(an.name, an.sub, an.key, self._argc, self._fsize, False, False))
        self._an = None
        self._abuf = None
        self._line = bytearray()
        self._desync(True)

    def _scan(self, data, pos, spans) -> int:
        """Lost: find the next request start in data[pos:]."""
        n = len(data)
        start = -1
        nl_before = False
        if self._fresh and pos == 0:
            if _MB_START.match(data) or _MB_PARTIAL.match(data):
                start = 0
            elif self._inline_hint is not False:    # a client that sent multibulk does not go inline
                m = _INLINE_AT.match(data)
                if m and m.group(1).upper() in KNOWN and not _next_line_multibulk(data, 0):
                    start = 0
                    self._distrust = True   # may be the middle of a line: its arguments are masked
        self._fresh = False
        if start < 0:
            m = _MB_START.search(data, pos)
            start = m.start() if m else n
            if self._inline_hint:
                for m in _INLINE_AFTER_NL.finditer(data, pos, start):
                    i = m.start()
                    if m.group(1).upper() in KNOWN and not _next_line_multibulk(data, i + 1) and \
                            not _BULK_HEADER.fullmatch(data, data.rfind(b"\n", 0, i) + 1, i):
                        start = i + 1
                        nl_before = True
                        break
        skipped = start - pos
        if skipped:
            # bytes of frames we cannot follow could be anything, secrets included: always masked
            self.undecodable += skipped
            k = skipped - 1 if nl_before else skipped       # keep the \n the inline start needs
            if k > 0:
                spans.append((pos, k))
        if start < n:
            self._st = ST_START
        return start


# -- replies --------------------------------------------------------------------------------
R_START, R_LINE, R_LF, R_BODY, R_DESYNC = range(5)

_PLUS, _MINUS, _COLON, _DOLLAR, _STAR = 43, 45, 58, 36, 42
_UNDERSCORE, _COMMA, _HASH, _PAREN, _EQ, _PERCENT, _TILDE, _PIPE, _GT, _BANG = (
    95, 44, 35, 40, 61, 37, 126, 124, 62, 33)
_TOP_TYPE = {_PLUS: "ok", _COLON: "ok", _DOLLAR: "ok", _STAR: "ok", _COMMA: "ok", _HASH: "ok", _PAREN: "ok",
             _EQ: "ok", _PERCENT: "ok", _TILDE: "ok", _UNDERSCORE: "nil", _MINUS: "error", _BANG: "error",
             _GT: "push"}
_SCALAR_LINE = frozenset((_PLUS, _MINUS, _COLON, _UNDERSCORE, _COMMA, _HASH, _PAREN))
_BULK = frozenset((_DOLLAR, _EQ, _BANG))
_AGG = frozenset((_STAR, _PERCENT, _TILDE, _GT, _PIPE))
_TYPE_BYTES = _SCALAR_LINE | _BULK | _AGG
_FLAT_AGG = frozenset((_STAR, _TILDE, _GT, _PERCENT))
_FLAT_SCALAR = frozenset((_COLON, _MINUS, _UNDERSCORE, _COMMA, _HASH, _PAREN))
LINE_KEEP = 256
# CLIENT TRACKING invalidations: a RESP3 push [invalidate, [key...]] or, on a RESP2 redirect connection,
# the pub/sub message [message, __redis__:invalidate, [key...]]. Their keys are kept like request keys
# (not masked, so a replay decodes what live decoded), at most this many per push.
INVALIDATE_CHANNEL = b"__redis__:invalidate"
INVALIDATE_KEYS_MAX = 1024
I_NONE, I_CHANNEL, I_KEYS = range(3)    # an invalidation frame: not one, its channel next, its keys next

# Simple strings / head strings that are protocol words, not user data: never masked.
ALLOWED = frozenset(w.encode() for w in (
    "OK QUEUED PONG RESET CONTINUE FULLRESYNC NOKEY "
    "string list set zset hash stream none vectorset "
    "message pmessage smessage subscribe unsubscribe psubscribe punsubscribe ssubscribe sunsubscribe "
    "pong invalidate tracking-redir-broken").split()) | {INVALIDATE_CHANNEL}
_PREFIXES = frozenset(w[:i] for w in ALLOWED for i in range(len(w) + 1))


def _error_info(content: bytes):
    """(type, error prefix, detail) of an error reply's text."""
    word, _, rest = content.partition(b" ")
    error = show(word, 32)
    if word == b"MOVED" or word == b"ASK":
        return word.decode().lower(), error, show(rest.strip(), 128)
    return "error", error, None


class ReplyParser:
    """Server → client byte stream of one connection."""

    __slots__ = ("show_values", "desyncs", "_st", "_stack", "_attr", "_t", "_line", "_llen", "_lmask",
                 "_infr", "_fsize", "_ftype", "_error", "_detail", "_head", "_fcomplete", "_hwant", "_cand",
                 "_remain", "_crlf", "_bmode", "_bpos", "_bbuf", "_bcomplete", "_bmasked", "_out", "_inval", "_keys")

    def __init__(self, show_values: bool = False):
        self.show_values = show_values
        self.desyncs = 0
        self._st = R_START
        self._stack = []        # elements still expected by each open aggregate
        self._attr = []         # ... and whether it is an attribute
        self._t = 0
        self._line = bytearray()
        self._llen = 0
        self._lmask = False
        self._infr = False      # a frame is in progress
        self._fsize = 0
        self._ftype = None
        self._error = None
        self._detail = None
        self._head = None
        self._fcomplete = True
        self._hwant = False
        self._cand = False
        self._remain = 0
        self._crlf = 0
        self._bmode = 0         # body masking: 0 none, 1 all, 2 verbatim (after "fmt:"), 3 head candidate
        self._bpos = 0
        self._bbuf = None
        self._bcomplete = True
        self._bmasked = False
        self._out = None
        self._inval = I_NONE    # where this frame is in an invalidation push
        self._keys = None       # ... and the keys it named so far

    @property
    def pending(self) -> bool:
        return self._infr

    @property
    def desynced(self) -> bool:
        return self._st == R_DESYNC

    def resync(self) -> Reply | None:
        """Close a lost frame (see module docstring) so that the next feed starts a new one."""
        if self._st != R_DESYNC:
            return None
        r = Reply(self._ftype or "unknown", self._error, self._detail, self._fsize, None, False)
        self._reset()
        return r

    def _reset(self):
        self._st = R_START
        self._stack = []
        self._attr = []
        self._infr = False
        self._line = bytearray()
        self._bbuf = None

    def _begin(self):
        self._infr = True
        self._fsize = 0
        self._ftype = None
        self._error = None
        self._detail = None
        self._head = None
        self._fcomplete = True
        self._hwant = False
        self._inval = I_NONE
        self._keys = None

    def feed(self, data: bytes, total: int):
        if type(data) is not bytes:
            data = bytes(data)
        n = len(data)
        if total < n:
            total = n
        out = []
        spans = []
        self._out = out
        sv = self.show_values
        pos = 0
        nofast = -1
        if n and self._st == R_START and not self._infr:
            # the common case, whole frames in one capture: straight to the fast path
            pos = nofast = self._fast(data, 0, out, spans)
            if pos == total:
                self._out = None
                return out, spans
        while pos < n:
            st = self._st
            if st == R_START:
                if not self._infr:
                    if pos != nofast:
                        q = self._fast(data, pos, out, spans)
                        if q != pos:
                            pos = nofast = q
                            continue
                    self._begin()
                c = data[pos]
                if c not in _TYPE_BYTES:
                    self._desync()
                    continue
                depth = len(self._stack)
                if depth == 0:
                    if c != _PIPE:
                        self._ftype = _TOP_TYPE[c]
                    cand = False
                elif depth == 1 and (self._hwant or self._inval == I_CHANNEL) and c != _PIPE:
                    self._hwant = False
                    cand = c == _PLUS or c == _DOLLAR
                else:
                    cand = False
                self._cand = cand
                self._t = c
                self._line = bytearray()
                self._llen = 0
                self._lmask = False
                self._st = R_LINE
                self._fsize += 1
                pos += 1
            elif st == R_BODY:
                pos = self._body(data, pos, n, spans)
            elif st == R_LINE:
                cr = data.find(b"\r", pos)
                end = n if cr < 0 else cr
                k = end - pos
                t = self._t
                if k:
                    line = self._line
                    if t == _PLUS or t == _MINUS:
                        if len(line) < LINE_KEEP:
                            line += data[pos:pos + min(k, LINE_KEEP - len(line))]
                        self._llen += k
                        if t == _PLUS and not sv:
                            if self._lmask or self._llen > SHORT or \
                                    (bytes(line) not in (ALLOWED if cr >= 0 else _PREFIXES)):
                                self._lmask = True
                                spans.append((pos, k))
                    elif t in _SCALAR_LINE:
                        if len(line) < LINE_KEEP:
                            line += data[pos:pos + min(k, LINE_KEEP - len(line))]
                    else:
                        line += data[pos:min(end, pos + HDR_MAX + 1)]
                        if len(line) > HDR_MAX:
                            self._fsize += k
                            self._desync()
                            pos = end
                            continue
                elif t == _PLUS and cr >= 0 and not sv and not self._lmask and self._llen and \
                        bytes(self._line) not in ALLOWED:
                    self._lmask = True      # the content ended in an earlier capture: nothing left to mask
                if cr < 0:
                    self._fsize += k
                    pos = n
                else:
                    self._fsize += k + 1
                    pos = cr + 1
                    self._st = R_LF
            elif st == R_LF:
                pos += 1
                self._fsize += 1
                self._line_done()
            else:  # R_DESYNC: everything belongs to the lost frame
                k = n - pos
                self._fsize += k
                if not sv:
                    spans.append((pos, k))
                pos = n
        if total > n:
            self._gap(total - n)
        self._out = None
        return out, spans

    def _fast(self, data, pos, out, spans) -> int:
        """Decode the run of whole frames at pos that are scalars or flat aggregates (arrays, sets,
        maps, pushes of scalars) inside the capture; returns where it stopped (the state machine
        takes over there: partial frames, nesting, attributes, payloads holding CRLF...)."""
        limit = pos + FAST_WINDOW
        if _native is not None:
            # compiled: the scalar replies among these frames, exactly as _fast_py decodes them;
            # an error or aggregate reply is handed back (negative) at its position
            q = _native.reply_fast(data, pos, limit, self.show_values, out, spans)
            if q >= 0:
                return q
            pos = -q - 1
        return self._fast_py(data, pos, out, spans, limit)

    def _fast_py(self, data, pos, out, spans, limit) -> int:
        """The reference fast path: whole scalar and flat aggregate frames below limit."""
        lines = (data if pos == 0 and len(data) <= limit else data[pos:limit]).split(b"\r\n")
        last = len(lines) - 1           # lines[last] is not followed by CRLF: never used
        sv = self.show_values
        app = spans.append
        i = 0
        while i < last:
            h = lines[i]
            if not h:
                break
            t = h[0]
            if t == _PLUS:
                k = len(h) - 1
                if k and not sv and (k > SHORT or h[1:] not in ALLOWED):
                    app((pos + 1, k))
                out.append(Reply("ok", None, None, k + 3, None, True))
                pos += k + 3
                i += 1
            elif t == _DOLLAR:
                c = h[1:]
                if c.isdigit():
                    ln = int(c)
                    if i + 1 >= last or len(lines[i + 1]) != ln:
                        break
                    hl = len(h) + 2
                    if ln and not sv:
                        app((pos + hl, ln))
                    out.append(Reply("ok", None, None, hl + ln + 2, None, True))
                    pos += hl + ln + 2
                    i += 2
                elif c == b"-1":
                    out.append(Reply("nil", None, None, 5, None, True))
                    pos += 5
                    i += 1
                else:
                    break
            elif t == _COLON:
                out.append(Reply("ok", None, None, len(h) + 2, None, True))
                pos += len(h) + 2
                i += 1
            elif t == _MINUS:
                typ, err, detail = _error_info(h[1:1 + LINE_KEEP])
                out.append(Reply(typ, err, detail, len(h) + 2, None, True))
                pos += len(h) + 2
                i += 1
            elif t in _FLAT_AGG:
                c = h[1:]
                if not c.isdigit():
                    break
                cnt = int(c) * 2 if t == _PERCENT else int(c)
                j = i + 1
                p = pos + len(h) + 2
                head = None
                want = t == _STAR or t == _GT
                fspans = []
                for idx in range(cnt):
                    if j >= last:
                        break
                    e = lines[j]
                    et = e[0] if e else 0
                    if et == _DOLLAR:
                        c = e[1:]
                        if c.isdigit():
                            ln = int(c)
                            if j + 1 >= last:
                                break
                            pl = lines[j + 1]
                            if len(pl) != ln:
                                break
                            s = p + len(e) + 2
                            if want and ln <= SHORT:
                                if sv or pl in ALLOWED:
                                    head = show(pl, SHORT).lower()
                                elif ln:
                                    fspans.append((s, ln))
                            elif ln and not sv and not (idx == 1 and pl == INVALIDATE_CHANNEL and head == "message"):
                                fspans.append((s, ln))      # (the channel of an invalidation is kept)
                            p = s + ln + 2
                            j += 2
                        elif c == b"-1":
                            p += 5
                            j += 1
                        else:
                            break
                    elif et == _PLUS:
                        k = len(e) - 1
                        if want and k <= SHORT and (sv or e[1:] in ALLOWED):
                            head = show(e[1:], SHORT).lower()
                        if k and not sv and (k > SHORT or e[1:] not in ALLOWED):
                            fspans.append((p + 1, k))
                        p += k + 3
                        j += 1
                    elif et in _FLAT_SCALAR:
                        p += len(e) + 2
                        j += 1
                    else:
                        break
                    want = False
                else:
                    spans += fspans
                    out.append(Reply("push" if t == _GT else "ok", None, None, p - pos, head, True))
                    pos = p
                    i = j
                    continue
                break
            else:
                break
        return pos

    def _desync(self):
        self.desyncs += 1
        self._st = R_DESYNC
        self._fcomplete = False
        self._bbuf = None

    def _line_done(self):
        """A type byte's line ended (\\r\\n consumed)."""
        t = self._t
        depth = len(self._stack)
        line = self._line
        if t in _SCALAR_LINE:
            if depth == 0:
                if t == _MINUS:
                    self._ftype, self._error, self._detail = _error_info(bytes(line))
            elif self._cand and t == _PLUS and self._llen <= SHORT and \
                    (self.show_values or not self._lmask and bytes(line) in ALLOWED):
                self._got_head(bytes(line))
            elif self._inval == I_CHANNEL and depth == 1:
                self._inval = I_NONE
            self._elem_done()
            return
        v = _num(bytes(line))
        if v is None or v < -1 or v > REPLY_MAX_LEN:
            self._desync()
            return
        if t in _BULK:
            if v == -1:
                if depth == 0:
                    self._ftype = "nil"
                self._elem_done()
                return
            self._remain = v
            self._crlf = 2
            self._bpos = 0
            self._bcomplete = True
            self._bmasked = False
            self._bbuf = None
            sv = self.show_values
            if t == _BANG:
                self._bmode = 0
                self._bbuf = bytearray()
            elif t == _EQ:
                self._bmode = 0 if sv else 2
            elif self._inval == I_KEYS and depth == 2 and t == _DOLLAR:
                self._bmode = 4     # a key: kept like a request's key, not masked
                self._bbuf = bytearray()
            elif self._cand and v <= SHORT and (self._inval != I_CHANNEL or v == len(INVALIDATE_CHANNEL)):
                self._bmode = 0 if sv else 3
                self._bbuf = bytearray()
            else:
                self._bmode = 0 if sv else 1
            self._st = R_BODY
            return
        # aggregates
        if v == -1:
            if depth == 0:
                self._ftype = "nil"
            self._elem_done()
            return
        if v == 0:
            if t == _PIPE:
                self._st = R_START
            else:
                self._elem_done()
            return
        if depth >= MAX_DEPTH:
            self._desync()
            return
        self._stack.append(v * 2 if t == _PERCENT or t == _PIPE else v)
        self._attr.append(t == _PIPE)
        if depth == 0 and (t == _STAR or t == _GT):
            self._hwant = True
        self._st = R_START

    def _body(self, data, pos, n, spans) -> int:
        # The tail (remaining bytes, then the CRLF) mirrors RequestParser._body on purpose: both run
        # per captured chunk in the hot loop, and what differs (arguments kept and masked there, a
        # reply's line and value masking here) sits between the shared steps; a shared helper would
        # cost a call and attribute traffic per chunk (benchmarks/resp_bench.py).
        r = self._remain
        if r:
            k = n - pos
            if k > r:
                k = r
            mode = self._bmode
            bb = self._bbuf
            if bb is not None:
                keep = KEEP_MAX if mode == 4 else LINE_KEEP
                if len(bb) < keep:
                    bb += data[pos:pos + min(k, keep - len(bb))]
            if mode == 1:
                spans.append((pos, k))
            elif mode == 2:
                a = 4 - self._bpos
                if a < k:
                    if a < 0:
                        a = 0
                    spans.append((pos + a, k - a))
            elif mode == 3:
                if self._bmasked or (bytes(bb) not in (ALLOWED if k == r else _PREFIXES)):
                    self._bmasked = True
                    spans.append((pos, k))
            r -= k
            self._remain = r
            self._bpos += k
            pos += k
            self._fsize += k
            if r:
                return pos
        c = self._crlf
        k = n - pos
        if k > c:
            k = c
        c -= k
        self._crlf = c
        pos += k
        self._fsize += k
        if not c:
            self._body_done()
        return pos

    def _body_done(self):
        t = self._t
        bb = self._bbuf
        self._bbuf = None
        if t == _BANG:
            if not self._stack and bb is not None:
                self._ftype, self._error, self._detail = _error_info(bytes(bb))
        elif self._bmode == 4 and bb is not None:
            keys = self._keys
            if keys is None:
                keys = self._keys = []
            if len(keys) < INVALIDATE_KEYS_MAX:
                whole = self._bcomplete and self._bpos <= KEEP_MAX
                keys.append(show(bytes(bb), KEY_CHARS, whole))
        elif self._cand and bb is not None and self._bcomplete and \
                (self.show_values or not self._bmasked and bytes(bb) in ALLOWED):
            self._got_head(bytes(bb))
        elif self._inval == I_CHANNEL and len(self._stack) == 1:
            self._inval = I_NONE
        self._elem_done()

    def _got_head(self, word: bytes) -> None:
        """The first element of a top-level array/push, or the channel of a message, is a protocol word."""
        if self._inval == I_CHANNEL:
            self._inval = I_KEYS if word == INVALIDATE_CHANNEL else I_NONE
            return
        head = self._head = show(word, SHORT).lower()
        if head == "invalidate" and self._ftype == "push":
            self._inval = I_KEYS
        elif head == "message":
            self._inval = I_CHANNEL

    def _elem_done(self):
        stack = self._stack
        while stack:
            stack[-1] -= 1
            if stack[-1]:
                self._st = R_START
                return
            stack.pop()
            if self._attr.pop():
                self._st = R_START     # an attribute is not an element: its parent keeps waiting
                return
        # a top-level value is complete
        self._st = R_START
        if self._ftype is None:         # only attributes so far: the value follows
            return
        self._out.append(Reply(self._ftype, self._error, self._detail, self._fsize, self._head, self._fcomplete,
                               self._keys))
        self._infr = False

    def _gap(self, g):
        while g > 0:
            st = self._st
            if st == R_BODY:
                self._fcomplete = False
                r = self._remain
                if r:
                    self._bcomplete = False
                    k = g if g < r else r
                    r -= k
                    g -= k
                    self._remain = r
                    self._bpos += k
                    self._fsize += k
                    if r:
                        return
                k = g if g < self._crlf else self._crlf
                self._crlf -= k
                g -= k
                self._fsize += k
                if not self._crlf:
                    self._body_done()
            elif st == R_LF:
                g -= 1
                self._fsize += 1
                self._fcomplete = False
                self._line_done()
            elif st == R_DESYNC:
                self._fsize += g
                return
            else:
                if not self._infr:
                    self._begin()       # replies we cannot see at all
                elif st == R_LINE and self._t == _MINUS and not self._stack:
                    self._ftype, self._error, self._detail = _error_info(bytes(self._line))
                self._fsize += g
                self._desync()
                return


def _configure_native(mod) -> None:
    # name -> (shown name, key position, values from) for the commands _fast_py decodes without
    # ArgAnalyzer; None marks a known command that needs it (the compiled path hands it back)
    fast_specs = {name: (spec.name, spec.pos, spec.vfrom) if spec.simple else None for name, spec in SPECS.items()}
    mod.configure(fast_specs, Command, Reply, show, ALLOWED, KEY_CHARS, KEEP_MAX, SHORT, FAST_ARGS)


# the compiled fast paths, or None on the reference path
_native = native.load("tracer.decode._resp_native", _configure_native)
