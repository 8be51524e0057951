"""Command table: where a command's first key is, which arguments are values, which are secrets.

`ArgAnalyzer` is fed a command's arguments one at a time, in order. Before an argument's payload
is consumed, `cls(i)` says what to do with it (keep its bytes for analysis, mask it as a value,
mask it as a secret); this decision only ever depends on the arguments before it, so it can be
made while the payload is still streaming in, split across reads. After the argument, `add(i, ...)`
updates name, subcommand, key and the masking state.

Secret-bearing commands (always masked, even with show_values): AUTH, HELLO ... AUTH user pass,
MIGRATE ... AUTH pass / AUTH2 user pass, CONFIG SET <secret param> value, ACL SETUSER user rules...,
SENTINEL SET/CONFIG SET auth-pass|auth-user|sentinel-pass... value. When an argument of such a
command was not fully captured, or the command name itself was not, every later argument is
treated as a secret.

Masking does not rely on the command's name alone: `rename-command CONFIG cfg_9f8e` makes
`cfg_9f8e SET requirepass pw` a command the table does not know. A command of unknown name whose
first argument is a subcommand word of a secret-bearing container (SET, CONFIG, SETUSER, GET,
GETUSER, LIST) is taken for a renamed CONFIG/ACL/SENTINEL: after SET/CONFIG every argument that
follows a secret parameter name is a secret, after SETUSER every rule is, and its reply is a
secret reply (`secret_reply`).
"""
from __future__ import annotations

# classification bits returned by ArgAnalyzer.cls()
KEEP, VALUE, SECRET = 1, 2, 4
KEEP_MAX = 520          # bytes of an argument kept for analysis/display (>= 128 chars of 4-byte UTF-8)
KEY_CHARS = 128         # displayed key length before "…"
NAME_CHARS = 64
SUB_CHARS = 32

# key location kinds
K_NONE, K_AT, K_EVAL, K_STREAMS, K_MIGRATE, K_SUB = range(6)
# secret kinds
S_NONE, S_ALL, S_HELLO, S_MIGRATE, S_CONFIG, S_ACL, S_SENTINEL, S_RENAMED = range(8)


class Spec:
    __slots__ = ("name", "kind", "pos", "vfrom", "secret", "container", "subkeys", "simple")

    def __init__(self, name, kind=K_AT, pos=1, vfrom=0, secret=S_NONE, container=False, subkeys=None):
        self.name = name
        self.kind = kind
        self.pos = pos if kind == K_AT else 0
        # first argument index that is a value (0: none). Fixed-position keys: the one after the key.
        self.vfrom = (pos + 1) if kind == K_AT else vfrom
        self.secret = secret
        self.container = container
        self.subkeys = subkeys      # container: subcommands (upper bytes) whose key is argv[2]; "*" = all but HELP
        self.simple = kind in (K_AT, K_NONE) and not container and secret == S_NONE

    def __repr__(self):
        return f"Spec({self.name!r}, kind={self.kind}, pos={self.pos}, vfrom={self.vfrom})"


_KEY1 = """
APPEND BITCOUNT BITFIELD BITFIELD_RO BITPOS BLMOVE BLPOP BRPOP BRPOPLPUSH BZPOPMAX BZPOPMIN COPY DECR DECRBY
DEL DUMP EXISTS EXPIRE EXPIREAT EXPIRETIME GEOADD GEODIST GEOHASH GEOPOS GEORADIUS GEORADIUS_RO
GEORADIUSBYMEMBER GEORADIUSBYMEMBER_RO GEOSEARCH GEOSEARCHSTORE GET GETBIT GETDEL GETEX GETRANGE GETSET
HDEL HEXISTS HEXPIRE HEXPIREAT HEXPIRETIME HGET HGETALL HGETDEL HGETEX HINCRBY HINCRBYFLOAT HKEYS HLEN HMGET
HMSET HPERSIST HPEXPIRE HPEXPIREAT HPEXPIRETIME HPTTL HRANDFIELD HSCAN HSET HSETEX HSETNX HSTRLEN HTTL HVALS
INCR INCRBY INCRBYFLOAT LCS LINDEX LINSERT LLEN LMOVE LPOP LPOS LPUSH LPUSHX LRANGE LREM LSET LTRIM MGET MOVE
MSET MSETNX PERSIST PEXPIRE PEXPIREAT PEXPIRETIME PFADD PFCOUNT PFDEBUG PFMERGE PSETEX PTTL RENAME RENAMENX
RESTORE RESTORE-ASKING RPOP RPOPLPUSH RPUSH RPUSHX SADD SCARD SDIFF SDIFFSTORE SET SETBIT SETEX SETNX
SETRANGE SINTER SINTERSTORE SISMEMBER SMEMBERS SMISMEMBER SMOVE SORT SORT_RO SPOP SRANDMEMBER SREM SSCAN
STRLEN SUBSTR SUNION SUNIONSTORE TOUCH TTL TYPE UNLINK WATCH XACK XADD XAUTOCLAIM XCLAIM XDEL XLEN XPENDING
XRANGE XREVRANGE XSETID XTRIM ZADD ZCARD ZCOUNT ZDIFFSTORE ZINCRBY ZINTERSTORE ZLEXCOUNT ZMSCORE ZPOPMAX
ZPOPMIN ZRANDMEMBER ZRANGE ZRANGEBYLEX ZRANGEBYSCORE ZRANGESTORE ZRANK ZREM ZREMRANGEBYLEX ZREMRANGEBYRANK
ZREMRANGEBYSCORE ZREVRANGE ZREVRANGEBYLEX ZREVRANGEBYSCORE ZREVRANK ZSCAN ZSCORE ZUNIONSTORE
VADD VCARD VDIM VEMB VGETATTR VINFO VLINKS VRANDMEMBER VREM VSETATTR VSIM
"""
_KEY2 = "BITOP LMPOP ZMPOP SINTERCARD ZINTERCARD ZDIFF ZINTER ZUNION"
_KEY3 = "BLMPOP BZMPOP"
_NOKEY = """
PING ECHO INFO AUTH HELLO SELECT DBSIZE FLUSHALL FLUSHDB KEYS SCAN MULTI EXEC DISCARD UNWATCH SUBSCRIBE
UNSUBSCRIBE PSUBSCRIBE PUNSUBSCRIBE SSUBSCRIBE SUNSUBSCRIBE PUBLISH SPUBLISH MONITOR SAVE BGSAVE
BGREWRITEAOF LASTSAVE SHUTDOWN TIME ROLE REPLICAOF SLAVEOF SYNC PSYNC REPLCONF QUIT RESET READONLY READWRITE
ASKING WAIT WAITAOF SWAPDB RANDOMKEY LOLWUT FAILOVER
"""
# keyless commands whose arguments from this index on are values
_NOKEY_VALUES = {"PING": 1, "ECHO": 1, "PUBLISH": 2, "SPUBLISH": 2}
_CONTAINERS = """
CONFIG CLIENT ACL CLUSTER COMMAND SCRIPT FUNCTION SLOWLOG LATENCY MODULE PUBSUB DEBUG SENTINEL
"""
_CONTAINER_KEYS = {
    "OBJECT": "*",
    "MEMORY": {b"USAGE"},
    "XINFO": {b"STREAM", b"GROUPS", b"CONSUMERS"},
    "XGROUP": {b"CREATE", b"SETID", b"DESTROY", b"CREATECONSUMER", b"DELCONSUMER"},
}
_EVAL = "EVAL EVALSHA EVAL_RO EVALSHA_RO FCALL FCALL_RO"
_SECRET = {"AUTH": S_ALL, "HELLO": S_HELLO, "MIGRATE": S_MIGRATE, "CONFIG": S_CONFIG, "ACL": S_ACL,
           "SENTINEL": S_SENTINEL}

SPECS: dict[bytes, Spec] = {}


def _add(spec: Spec) -> None:
    b = spec.name.encode()
    SPECS[b] = spec
    SPECS[b.lower()] = spec


def _build() -> None:
    for name in _KEY1.split():
        _add(Spec(name, K_AT, 1))
    for name in _KEY2.split():
        _add(Spec(name, K_AT, 2))
    for name in _KEY3.split():
        _add(Spec(name, K_AT, 3))
    for name in _NOKEY.split():
        _add(Spec(name, K_NONE, vfrom=_NOKEY_VALUES.get(name, 0), secret=_SECRET.get(name, S_NONE)))
    for name in _CONTAINERS.split():
        _add(Spec(name, K_SUB, secret=_SECRET.get(name, S_NONE), container=True))
    for name, subs in _CONTAINER_KEYS.items():
        _add(Spec(name, K_SUB, container=True, subkeys=subs))
    for name in _EVAL.split():
        _add(Spec(name, K_EVAL))
    for name in ("XREAD", "XREADGROUP"):
        _add(Spec(name, K_STREAMS))
    _add(Spec("MIGRATE", K_MIGRATE, secret=S_MIGRATE))


_build()
KNOWN = frozenset(k for k in SPECS if k.isupper())
DEFAULT = Spec("?", K_AT, 1)                       # unknown commands: argv[1] is the key
UNKNOWN_NAME = Spec("?", K_NONE, secret=S_ALL)     # name not captured: it might have been AUTH
# an unknown command whose argv[1] is one of these is taken for a renamed CONFIG, ACL or SENTINEL
RENAMED = Spec("?", K_SUB, secret=S_RENAMED, container=True)
RENAMED_SUBS = frozenset((b"SET", b"CONFIG", b"SETUSER", b"GET", b"GETUSER", b"LIST"))
# replies that carry secrets (CONFIG GET requirepass, ACL GETUSER/LIST password hashes, SENTINEL's
# auth-pass), masked even with --show-values; "?" is a command whose name was not captured
SECRET_REPLY_COMMANDS = frozenset(("CONFIG GET", "ACL GETUSER", "ACL LIST", "?"))
_RENAMED_SECRET_REPLY_SUBS = frozenset(("GET", "GETUSER", "LIST", "CONFIG"))


def secret_reply(command: str) -> bool:
    """Does the reply to `command` ("NAME" or "NAME SUB", as traced) carry secrets?"""
    if command in SECRET_REPLY_COMMANDS or command.startswith("SENTINEL"):
        return True
    name, _, sub = command.partition(" ")
    return bool(sub) and sub in _RENAMED_SECRET_REPLY_SUBS and name.encode() not in KNOWN


def lookup(name: bytes) -> Spec | None:
    spec = SPECS.get(name)
    if spec is None:
        spec = SPECS.get(name.upper())
    return spec


# CONFIG SET / SENTINEL parameters whose value is a secret (compared lower-case)
SECRET_PARAMS = frozenset({b"requirepass", b"masterauth", b"masteruser", b"primaryauth", b"primaryuser",
                           b"tls-key-file-pass", b"tls-client-key-file-pass", b"auth-pass", b"auth-user",
                           b"sentinel-pass", b"sentinel-user"})


def secret_param(p: bytes | None) -> bool:
    if p is None:
        return True
    p = p.lower()
    return p in SECRET_PARAMS or b"pass" in p or b"auth" in p or b"user" in p or b"secret" in p


# -- display ---------------------------------------------------------------------------------
def _escape(s: str) -> str:
    out = []
    for ch in s:
        if ch.isprintable():
            out.append(ch)
        else:
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else (f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"))
    return "".join(out)


def show(b: bytes, limit: int = KEY_CHARS, whole: bool = True) -> str:
    """Printable form of arbitrary bytes: UTF-8 where valid, \\xNN for other bytes and controls,
    at most `limit` characters followed by "…" when cut (or when `whole` is False)."""
    try:
        s = b.decode("ascii")
    except UnicodeDecodeError:
        s = b.decode("utf-8", "backslashreplace")
    if not s.isprintable():
        s = _escape(s)
    if len(s) > limit:
        return s[:limit] + "…"
    if not whole:
        return s + "…"
    return s


def show_name(b: bytes) -> str:
    return show(b.upper(), NAME_CHARS)


def _int(b) -> int | None:
    if b and b.isdigit():
        return int(b)
    return None


class ArgAnalyzer:
    """Incremental per-command argument analysis (see module docstring)."""

    __slots__ = ("spec", "name", "sub", "key", "kpos", "keepto", "vfrom", "sfrom", "sleft", "skip",
                 "scanfrom", "keynext")

    def __init__(self):
        self.spec = None
        self.name = "?"
        self.sub = None
        self.key = None
        self.kpos = 0       # fixed index of the key still awaited
        self.keepto = 0     # keep argument bytes up to this index
        self.vfrom = 0      # arguments from this index are values (0: none)
        self.sfrom = 0      # arguments from this index are secrets (0: none)
        self.sleft = 0      # the next N arguments are secrets
        self.skip = 0       # the next N arguments are keyword operands, not keywords
        self.scanfrom = 0   # keyword scanning from this index (0: off)
        self.keynext = False

    def cls(self, i: int) -> int:
        if i == 0:
            return KEEP
        if self.sleft or (self.sfrom and i >= self.sfrom):
            return SECRET
        m = VALUE if (self.vfrom and i >= self.vfrom) else 0
        if i <= self.keepto or self.keynext or (self.scanfrom and i >= self.scanfrom):
            m |= KEEP
        return m

    def add(self, i: int, content: bytes | None, whole: bool = True, complete: bool = True) -> None:
        """Argument i is over. content: its kept bytes (None when not kept); whole: content is the
        entire argument; complete: every byte of it was captured."""
        if i == 0:
            self._setup(content, whole and complete)
            return
        spec = self.spec
        if self.sleft:
            self.sleft -= 1
            if not complete and spec.secret and not self.sfrom:
                self.sfrom = i + 1
            return
        if self.sfrom and i >= self.sfrom:
            return
        if not complete and spec.secret:
            self.sfrom = i + 1          # cannot tell what follows: everything after is secret
        if i == self.kpos:
            self.kpos = 0
            if spec is DEFAULT and whole and content is not None and len(content) <= 7 and \
                    content.upper() in RENAMED_SUBS:
                self.spec = RENAMED     # a renamed CONFIG/ACL/SENTINEL: argv[1] is its subcommand
                self.vfrom = 2          # what is not a secret is still a value
                self._set_sub(content, whole)
                return
            if spec.kind == K_MIGRATE and content == b"":
                self.scanfrom = 6       # key "" : the keys follow KEYS
                self.keepto = 0
                return
            self._set_key(i, content, whole)
            if spec.kind == K_MIGRATE:
                self.scanfrom = 6       # still scan for AUTH / AUTH2
                self.keepto = 0
            return
        if self.keynext:
            self.keynext = False
            self._set_key(i, content, whole)
            return
        kind = spec.kind
        if kind == K_SUB and i == 1:
            self._set_sub(content, whole)
            return
        if kind == K_EVAL and i == 2:
            numkeys = _int(content)
            if numkeys:
                self.kpos = 3
                self.keepto = 3
            else:
                self.vfrom = 3
                self.keepto = 0
            return
        if self.scanfrom and i >= self.scanfrom:
            if self.skip:
                self.skip -= 1
                return
            self._keyword(i, content.upper() if content is not None and whole else b"")

    # -- internals -------------------------------------------------------------------------
    def _setup(self, content, whole) -> None:
        if content is None or not whole:
            self.spec = UNKNOWN_NAME
            self.sfrom = 1
            return
        spec = lookup(content)
        if spec is None:
            spec = DEFAULT
            self.name = show_name(content)
        else:
            self.name = spec.name
        self.spec = spec
        kind = spec.kind
        if kind == K_AT:
            self.kpos = self.keepto = spec.pos
        elif kind == K_NONE:
            self.vfrom = spec.vfrom
        elif kind == K_SUB:
            self.keepto = 1
        elif kind == K_EVAL:
            self.keepto = 2
        elif kind == K_STREAMS:
            self.scanfrom = 1
        elif kind == K_MIGRATE:
            self.kpos = self.keepto = 3
        secret = spec.secret
        if secret == S_ALL:
            self.sfrom = 1
        elif secret == S_HELLO:
            self.scanfrom = 1           # HELLO [protover] [AUTH user pass] [SETNAME name]

    def _set_key(self, i, content, whole) -> None:
        if content is not None:
            self.key = show(content, KEY_CHARS, whole)
        self.vfrom = i + 1
        self.keepto = 0

    def _set_sub(self, content, whole) -> None:
        spec = self.spec
        if content is None or not whole:
            if spec.secret:
                self.sfrom = 2
            self.keepto = 0
            return
        sub = content.upper()
        self.sub = show(sub, SUB_CHARS)
        self.keepto = 0
        subkeys = spec.subkeys
        if subkeys is not None and ((subkeys == "*" and sub != b"HELP") or (subkeys != "*" and sub in subkeys)):
            self.kpos = self.keepto = 2
            return
        secret = spec.secret
        if secret == S_CONFIG:
            if sub == b"SET":
                self.scanfrom = 2
        elif secret == S_ACL:
            if sub == b"SETUSER":
                self.sfrom = 3
        elif secret == S_SENTINEL:
            self.scanfrom = 2
        elif secret == S_RENAMED:
            if sub == b"SETUSER":
                self.sfrom = 3
            elif sub in (b"SET", b"CONFIG"):
                self.scanfrom = 2

    def _keyword(self, i, w: bytes) -> None:
        spec = self.spec
        kind = spec.kind
        if kind == K_STREAMS:
            if w == b"STREAMS":
                self.scanfrom = 0
                self.keynext = True
            elif w == b"GROUP":
                self.skip = 2
            elif w in (b"COUNT", b"BLOCK", b"CLAIM"):
                self.skip = 1
            return
        secret = spec.secret
        if secret == S_HELLO:
            if w == b"AUTH":
                self.sleft = 2
            elif w == b"SETNAME":
                self.skip = 1
        elif secret == S_MIGRATE:
            if w == b"AUTH":
                self.sleft = 1
            elif w == b"AUTH2":
                self.sleft = 2
            elif w == b"KEYS":
                self.scanfrom = 0
                if self.key is None:
                    self.keynext = True
        elif secret == S_CONFIG:        # CONFIG SET param value [param value ...]
            if not w or secret_param(w):
                self.sleft = 1
            else:
                self.skip = 1
        elif secret in (S_SENTINEL, S_RENAMED):
            # SENTINEL SET master opt val ... / SENTINEL CONFIG SET p v / renamed ... SET p v: no
            # pairing assumed, every secret parameter name masks the argument after it
            if not w or secret_param(w):
                self.sleft = 1
