/* The always-on engine: requests stitched and aggregated in the kernel.
 *
 * Per connection (tgid, fd) the engine keeps the RESP parse state across reads, the ids of
 * the commands read but not yet answered and the batch's timestamps. Every complete command
 * is counted when it is parsed (exact, also for pipelined batches, split frames and bulk
 * payloads skipped by length); the write that completes the reply closes the batch: latency
 * and phase histograms, reply type, bytes out. A record goes to user space only for slow,
 * stalled and sampled requests, and for bytes the kernel could not parse (RT_READ with
 * RTF_ENGINE_RAW: user space counts those, so counts stay exact).
 *
 * The parse loop keeps its state in map memory (the connection's entry and a per-CPU
 * scratch), reloaded at each step: the verifier then sees one state per step at the loop
 * head instead of a path per combination of earlier branches. */

#include "rw.h"

#ifndef ENG_SLOW_NS
#define ENG_SLOW_NS 20000000ULL     /* records for requests at least this slow */
#endif
#ifndef ENG_STALL_NS
#define ENG_STALL_NS 100000000ULL   /* main-thread busy spans that make culprits and victims */
#endif
#ifndef ENG_SAMPLE
#define ENG_SAMPLE 0                /* 1-in-N batches get a record (0: none) */
#endif
#ifndef ENG_CMD_FILTER
#define ENG_CMD_FILTER 0            /* 1: records only for batches whose first command is flagged ECMD_TRACE */
#endif
#ifndef ENG_BUDGET
#define ENG_BUDGET 0                /* per instance and second, the first this many batches get a record */
#endif
#ifndef ENG_SLOT_OF
#define ENG_SLOT_OF(t) 0            /* instance slot of a tgid (user space compiles in its table) */
#endif
#ifndef ENG_STEPS
#define ENG_STEPS 8                 /* parse steps (a header with its payload) per program */
#endif
/* A read is parsed ENG_STEPS unrolled steps at a time by eng_parse, which tail-calls itself, up
 * to the kernel's 33 tail calls less those kept for eng_raw (~250 steps; a -P 32 SET batch takes
 * 128). Beyond that the rest of the read goes to user space raw, through eng_raw. Unrolled steps and tail calls instead of a loop: what bounds
 * a program here is the verifier's work (E2BIG past 1M instructions explored), and a loop's
 * iterations multiply the paths it explores. */

#define ENG_SLOTS 8                 /* instances */
#define ENG_NCMD 256                /* command ids per instance; the last one collects overflow */
#define ENG_CMD_OVERFLOW (ENG_NCMD - 1)
#define ENG_PEND 4                  /* distinct command ids kept per batch, with their counts */
#define ENG_NAME 16                 /* bytes of a command name looked up */
#define ENG_CAP 64                  /* bytes of command + key kept for a record */
#define ENG_WINBUF 128              /* scratch window (power of two) */
#define ENG_WINCOPY 96              /* bytes copied into it per refill */
#define ENG_HDR 16                  /* bytes a RESP header (`*N\r\n`, `$L\r\n`) may take */
#define ENG_SUB_BITS 4              /* 16 linear sub-buckets per power of two: <= 6.25 % wide */
#define ENG_NB 528                  /* buckets up to 2^36 ns (68 s), larger values clamped */
#define ENG_PHASES 4
#define ENG_CONNS 16384             /* connections with state: the cap (counted when hit) */

enum eng_parse_state {
    PS_CMD = 0,         /* at a command's first byte */
    PS_MB_NUM = 1,      /* in `*N\r\n` */
    PS_BULK_HDR = 2,    /* expecting `$` */
    PS_BULK_NUM = 3,    /* in `$L\r\n` */
    PS_NAME = 4,        /* copying the command name (a bulk payload) */
    PS_SKIP = 5,        /* skipping payload bytes by length */
};

enum eng_conn_flags {
    ECF_RAW = 1,        /* parse lost: this connection's bytes go to user space */
    ECF_UNSYNCED = 2,   /* opened before the engine attached: first read must start a frame */
    ECF_BATCH = 4,      /* a batch has begun (its timestamps are set) */
    ECF_RAW_REPLY = 8,  /* the last read went up whole (inline commands): its replies go up too */
};

enum eng_counter {      /* mirrored by tracer/engine/layout.py */
    ECNT_RAW_READS = 0,     /* reads sent to user space unparsed */
    ECNT_DESYNC = 1,        /* connections whose parse was lost */
    ECNT_CONN_CAP = 2,      /* connection state not created: map full */
    ECNT_PEND_OVERFLOW = 3, /* commands of a batch's 5th+ distinct command (latency under the overflow id) */
    ECNT_RECORDS = 4,       /* RT_REQ records sent */
    ECNT_LAZY_CLOSE = 5,    /* batches closed at the next read or close, not at a write */
    ECNT_UNCLASSIFIED = 6,  /* reads of fds not classified yet, sent up for classification */
    ECNT_OPEN_AT_CLOSE = 7, /* batches without a recognised reply end when their connection closed */
    ECNT_RAW_UNCAPTURED = 8,/* bytes of raw reads not sent up: beyond ENG_RAW_MAX, or no eng_raw to call */
    ECNT_READS = 9,         /* read/write/writev calls of followed fds (`count`: the probes saw them) */
    ECNT_WRITES = 10,
    ECNT_WRITEVS = 11,
    ECNT_LINKS = 12,        /* connections handed to user space at REPLCONF/PSYNC/SYNC/MONITOR */
    ECNT_MAX = 13,
};

enum eng_cmd_flags {
    ECMD_SECRET = 1,    /* never capture its arguments (AUTH, HELLO, ACL, CONFIG, MIGRATE) */
    ECMD_LINK = 2,      /* makes the connection a replica link or a MONITOR (REPLCONF, PSYNC, SYNC, MONITOR):
                         * from this command on its bytes go to user space, which follows links as --full
                         * does, so that neither they nor what Redis writes to them count as requests */
    ECMD_TRACE = 4,     /* in `trace --command`'s allow-list (with ENG_CMD_FILTER) */
};

struct eng_conn {
    __u64 b_arrival, b_wake, b_read_start, b_read_end;  /* the open batch */
    __u64 w_start, w_end;       /* its reply: first write's start, last write's end */
    __u64 total_in;             /* bytes read on the connection before the current read */
    __u64 cmd_begin;            /* total_in position where the current command began */
    __u64 batch_in;             /* request bytes of the batch */
    __u64 skip;                 /* payload bytes (with their CRLF) still to skip */
    __u64 hval;                 /* header number parsed so far */
    __u64 reply_left;           /* bytes the reply must reach to be complete (0: unknown) */
    __u64 bytes_out;
    __u64 sk;                   /* the socket (fd_socks), looked up once: 0 not yet, 1 none */
    __u64 last_name[2];         /* the last command name looked up, and its id: most connections */
    __u16 last_id, last_flags;  /* send the same commands again and again */
    __u16 first_flags;          /* the batch's first command's eng_cmd flags */
    __u16 pad2;
    __u32 args_left;            /* bulk strings left in the current multibulk */
    __u32 argc;
    __u32 arg_idx;
    __u32 npend;                /* commands of the batch */
    __u32 pend_over;            /* of them, not under one of the ENG_PEND ids */
    __u16 cur_id;
    __u16 cur_flags;
    __u8 pst, hph;              /* parse state, header phase (0 digits, 1 expecting \n) */
    __u8 name_have, name_need;
    __u8 flags;
    __u8 reply_type;
    __u8 cap_len;
    __u8 first_argc;
    __u16 pend[ENG_PEND];       /* the batch's distinct commands (a pipeline is mostly one or two) */
    __u32 pend_n[ENG_PEND];     /* and how many of each */
    __u8 name[32];              /* 16 used; room lets the verifier bound a copy at an offset */
    __u8 cap[ENG_CAP * 2];
    __u8 redirect[RQ_REDIRECT_LEN];   /* a MOVED/ASK reply's head */
};

struct eng_scratch {
    __u8 win[ENG_WINBUF];
    __u64 win_off;              /* read offset of win[0] */
    __u64 win_len;
    __u64 off;                  /* parse position in the current read */
    __u64 buf, ret;
    __u64 rd_start, rd_end, arrival, wake;
    __u64 pid_tgid;
    struct inflight call;       /* the read, for a raw record */
    struct fd_key fk;
    __u32 slot;
    __u32 done_off;             /* end of the last complete command in this read */
    __u32 hops;                 /* tail calls taken for this read (the kernel allows ENG_TAIL_CALLS) */
    __u32 raw_calls;            /* eng_raw programs run for this read */
    __u64 raw_from, raw_len;    /* the bytes eng_raw has still to send up */
    struct rt_req rec;
    __u8 rec_cap[ENG_CAP * 2];  /* the capture; a redirect's head at RQ_CAP_ROOM */
};

struct eng_name {
    __u8 n[ENG_NAME];
};

struct eng_cmd {
    __u16 id;
    __u16 flags;
};

struct eng_cmd_stats {          /* mirrored by tracer/engine/layout.py */
    __u64 count;                /* parsed: exact */
    __u64 done;                 /* latency recorded */
    __u64 sum_ns;
    __u64 max_ns;
    __u64 bytes_in;
    __u64 bytes_out;
    __u64 ok, errors, nil, moved, ask, untyped;
    __u32 buckets[ENG_NB];
};

struct eng_phase_stats {
    __u64 count;
    __u64 sum_ns;
    __u32 buckets[ENG_NB];
};

BPF_HASH(eng_conns, struct fd_key, struct eng_conn, ENG_CONNS);
BPF_HASH(eng_cmds, struct eng_name, struct eng_cmd, 1024);
BPF_ARRAY(eng_zero, struct eng_conn, 1);                   /* a blank entry (too big for the stack) */
struct eng_loop {                /* per instance slot: an array lookup, inlined by the verifier */
    __u64 wake;                 /* the main thread's last epoll return (as last_wake) */
    __u64 stall_end;            /* end of its last busy span >= ENG_STALL_NS */
    __u64 entered;              /* its epoll entry (0: returned), for the idle time */
    __u64 budget_start;         /* the second the record budget counts in */
    __u64 budget_used;          /* records given in it */
};
BPF_ARRAY(eng_loop, struct eng_loop, ENG_SLOTS);
BPF_PERCPU_ARRAY(eng_scratch, struct eng_scratch, 1);
BPF_PERCPU_ARRAY(eng_stats, struct eng_cmd_stats, ENG_SLOTS * ENG_NCMD);
struct eng_slot_phases {         /* one lookup per batch for all four phases */
    struct eng_phase_stats ph[ENG_PHASES];
};

BPF_PERCPU_ARRAY(eng_phases, struct eng_slot_phases, ENG_SLOTS);
BPF_PERCPU_ARRAY(eng_counters, __u64, ECNT_MAX);

static __always_inline void eng_count(int idx, __u64 v)
{
    __u64 *c = eng_counters.lookup(&idx);
    if (c)
        *c += v;
}

/* Log-linear bucket of a value in ns: one bucket per ns below 32, then 16 per power of two
 * (floor(log2) by an unrolled binary search: BPF has no clz). */
static __always_inline __u64 eng_bucket(__u64 v)
{
    if (v < 32)
        return v;
    if (v >= (1ULL << 36))
        v = (1ULL << 36) - 1;
    __u64 x = v;
    __u32 lg = 0;
    if (x >> 32) { x >>= 32; lg += 32; }
    if (x >> 16) { x >>= 16; lg += 16; }
    if (x >> 8) { x >>= 8; lg += 8; }
    if (x >> 4) { x >>= 4; lg += 4; }
    if (x >> 2) { x >>= 2; lg += 2; }
    if (x >> 1) { lg += 1; }
    __u64 e = lg - ENG_SUB_BITS;
    __u64 idx = (e << ENG_SUB_BITS) + (v >> e);
    /* the barrier keeps clang from checking a copy: the verifier must see the bound on idx */
    asm volatile("" : "+r"(idx));
    return idx < ENG_NB ? idx : ENG_NB - 1;
}

static __always_inline void eng_phase_add(struct eng_phase_stats *p, __u64 v, __u64 n)
{
    p->count += n;
    p->sum_ns += v * n;
    __u64 b = eng_bucket(v);
    asm volatile("" : "+r"(b));
    if (b < ENG_NB)
        p->buckets[b] += n;
}

static __always_inline struct eng_cmd_stats *eng_stats_of(__u32 slot, __u32 id)
{
    __u32 k = slot * ENG_NCMD + (id < ENG_NCMD ? id : 0);
    return eng_stats.lookup(&k);
}

/* ---- closing a batch: histograms, reply type, a record when it is worth one ---------- */

static __always_inline void eng_emit_req(struct eng_conn *c, struct fd_key *fk, __u32 slot, __u64 flags,
                                         __u64 busy)
{
    int zero = 0;
    struct eng_scratch *s = eng_scratch.lookup(&zero);
    if (!s)
        return;
    struct rt_req *r = &s->rec;
    __u64 id = bpf_get_current_pid_tgid();
    r->read_start = c->b_read_start;
    r->write_end = c->w_end;
    r->arrival_ts = c->b_arrival;
    r->wake_ts = c->b_wake;
    r->read_end = c->b_read_end;
    r->tgid = fk->tgid;
    r->tid = (__u32)id;
    r->fd = fk->fd;
    r->kind = RT_REQ;
    r->flags = flags;
    r->cmd_id = c->pend_n[0] ? c->pend[0] : 0;
    r->ncmds = c->npend > 0xffff ? 0xffff : c->npend;
    r->write_start = c->w_start;
    r->bytes_in = c->batch_in;
    r->bytes_out = c->bytes_out;
    r->argc = c->first_argc;
    r->reply_type = c->reply_type;
    r->slot = slot;
    __u64 ms = busy / 1000000;
    r->busy_ms = ms > 0xffff ? 0xffff : ms;
    __u32 n = c->cap_len;
    if (n > ENG_CAP)
        n = ENG_CAP;
    r->cap_len = n;
    __builtin_memcpy(s->rec_cap, c->cap, ENG_CAP);
    __u32 len = sizeof(struct rt_req) + n;
    if (c->reply_type == RPL_MOVED || c->reply_type == RPL_ASK) {
        __builtin_memcpy(&s->rec_cap[RQ_CAP_ROOM], c->redirect, RQ_REDIRECT_LEN);
        r->flags |= RQF_REDIRECT;
        len = sizeof(struct rt_req) + RQ_CAP_ROOM + RQ_REDIRECT_LEN;
    }
    eng_count(ECNT_RECORDS, 1);
    /* refused: the rescue ring (emit_refused reads ts_exit, tgid, fd and kind, which struct rt_req
     * keeps at struct rt_event's offsets) */
    if (events.ringbuf_output(r, len, BPF_RB_NO_WAKEUP_FLAG) != 0)
        emit_refused((struct rt_record *)r, len);
}

static __always_inline void eng_close_batch(struct eng_conn *c, struct fd_key *fk)
{
    __u32 slot = ENG_SLOT_OF(fk->tgid);
    __u64 start = c->b_arrival && c->b_arrival <= c->b_read_start ? c->b_arrival : c->b_read_start;
    __u64 lat = c->w_end > start ? c->w_end - start : 0;
    __u32 n = c->npend;
    __u64 b = eng_bucket(lat);
    asm volatile("" : "+r"(b));
    /* Every command of a batch has the batch's latency: one histogram update per distinct command.
     * Reply type and bytes out are exact for a batch of one; in a pipelined batch the first reply
     * is classified (for the first command), the rest counted untyped, all bytes go to the first. */
#pragma unroll
    for (int i = 0; i < ENG_PEND; i++) {
        __u32 cnt = c->pend_n[i];
        if (!cnt)
            break;
        struct eng_cmd_stats *st = eng_stats_of(slot, c->pend[i]);
        if (!st)
            continue;
        st->done += cnt;
        st->sum_ns += lat * cnt;
        if (lat > st->max_ns)
            st->max_ns = lat;
        if (b < ENG_NB)
            st->buckets[b] += cnt;
        if (i == 0) {
            st->bytes_out += c->bytes_out;
            __u8 t = c->reply_type;
            if (t == RPL_OK) st->ok++;
            else if (t == RPL_ERROR) st->errors++;
            else if (t == RPL_NIL) st->nil++;
            else if (t == RPL_MOVED) { st->moved++; st->errors++; }
            else if (t == RPL_ASK) { st->ask++; st->errors++; }
            else st->untyped++;
            cnt--;
        }
        st->untyped += cnt;
    }
    __u64 flags = 0;
    if (c->pend_over) {
        __u32 over = c->pend_over;
        struct eng_cmd_stats *st = eng_stats_of(slot, ENG_CMD_OVERFLOW);
        if (st) {
            st->done += over;
            st->sum_ns += lat * over;
            if (b < ENG_NB)
                st->buckets[b] += over;
            st->untyped += over;
        }
        eng_count(ECNT_PEND_OVERFLOW, over);
        flags |= RQF_OVERFLOW;
    }
    /* phases, once per batch, weighted by its commands */
    struct eng_slot_phases *ph = eng_phases.lookup(&slot);
    if (ph) {
        if (c->b_arrival && c->b_wake >= c->b_arrival)
            eng_phase_add(&ph->ph[0], c->b_wake - c->b_arrival, n);    /* socket queue */
        if (c->b_wake && c->b_read_start >= c->b_wake)
            eng_phase_add(&ph->ph[1], c->b_read_start - c->b_wake, n); /* wait */
        if (c->w_start >= c->b_read_end)
            eng_phase_add(&ph->ph[2], c->w_start - c->b_read_end, n);  /* exec (+ others served) */
        if (c->w_end >= c->w_start)
            eng_phase_add(&ph->ph[3], c->w_end - c->w_start, n);       /* reply write */
    }

    __u64 busy = 0;
    struct eng_loop *lp = eng_loop.lookup(&slot);
    if (lp) {
        if (lp->wake && c->w_end > lp->wake)
            busy = c->w_end - lp->wake;
        if (start < lp->stall_end)
            flags |= RQF_VICTIM;
    }
    if (lat >= ENG_SLOW_NS)
        flags |= RQF_SLOW;
    if (c->reply_type == RPL_MOVED || c->reply_type == RPL_ASK)
        flags |= RQF_SAMPLED;       /* redirects are rare and each is counted and followed */
    if (busy >= ENG_STALL_NS)
        flags |= RQF_STALL;
    if (ENG_SAMPLE && bpf_get_prandom_u32() % (ENG_SAMPLE ? ENG_SAMPLE : 1) == 0)
        flags |= RQF_SAMPLED;
    /* While an instance serves few requests, every one of them goes up (the first ENG_BUDGET
     * batches of each second): what costs little at that rate makes the patterns and hot keys of
     * a quiet server exact; under load only the 1-in-ENG_SAMPLE sample goes on. The CPUs share the
     * count without a lock: a few records more or less per second. */
    if (ENG_BUDGET && lp && !(flags & RQF_SAMPLED)) {
        if (c->w_end - lp->budget_start >= 1000000000ULL) {
            lp->budget_start = c->w_end;
            lp->budget_used = 0;
        }
        if (lp->budget_used < ENG_BUDGET) {
            lp->budget_used++;
            flags |= RQF_SAMPLED;
        }
    }
    /* trace --command: no record for other commands (the aggregates still count every one);
     * after the budget, which would otherwise pick them again */
    if (ENG_CMD_FILTER && !(c->first_flags & ECMD_TRACE))
        flags &= ~(__u64)(RQF_SLOW | RQF_STALL | RQF_VICTIM | RQF_SAMPLED);
    if (flags & (RQF_SLOW | RQF_STALL | RQF_VICTIM | RQF_SAMPLED))
        eng_emit_req(c, fk, slot, flags, busy);

    c->npend = 0;
    c->pend_over = 0;
#pragma unroll
    for (int i = 0; i < ENG_PEND; i++)
        c->pend_n[i] = 0;
    c->flags &= ~ECF_BATCH;
    c->w_start = c->w_end = 0;
    c->bytes_out = 0;
    c->batch_in = 0;
    c->reply_left = 0;
    c->reply_type = RPL_NONE;
    c->cap_len = 0;
}

/* ---- parsing ------------------------------------------------------------------------------ */

/* A command is complete: count it now (exact whatever happens to its reply) and remember its id
 * for the batch's latency. */
static __always_inline void eng_cmd_done(struct eng_conn *c, struct eng_scratch *s, __u64 end_off)
{
    struct eng_cmd_stats *st = eng_stats_of(s->slot, c->cur_id);
    __u64 bytes = c->total_in + end_off - c->cmd_begin;
    if (st) {
        st->count++;
        st->bytes_in += bytes;
    }
    __u32 n = c->npend;
    __u16 id = c->cur_id;
    int placed = 0;
#pragma unroll
    for (int i = 0; i < ENG_PEND; i++) {
        if (placed)
            break;
        if (c->pend_n[i] == 0) {
            c->pend[i] = id;
            c->pend_n[i] = 1;
            placed = 1;
        } else if (c->pend[i] == id) {
            c->pend_n[i]++;
            placed = 1;
        }
    }
    if (!placed)
        c->pend_over++;
    if (n == 0) {
        c->first_argc = c->argc;
        c->first_flags = c->cur_flags;
    }
    c->npend = n + 1;
    c->batch_in += bytes;
    c->pst = PS_CMD;
    s->done_off = end_off;
}

/* A command begins at read offset off: the first of a batch fixes the batch's timestamps. */
static __always_inline void eng_cmd_begin(struct eng_conn *c, struct eng_scratch *s, __u64 off)
{
    c->cmd_begin = c->total_in + off;
    c->cur_id = 0;
    c->cur_flags = 0;
    c->argc = 0;
    c->arg_idx = 0;
    if (!(c->flags & ECF_BATCH)) {
        c->flags |= ECF_BATCH;
        c->b_arrival = s->arrival;
        c->b_wake = s->wake;
        c->b_read_start = s->rd_start;
        c->cap_len = 0;
    }
}

/* Copy bytes of the command's frame (from its start in this read up to `end`) as the record's
 * capture: only for the batch's first command, only when it began in this read. */
static __always_inline void eng_capture(struct eng_conn *c, struct eng_scratch *s, __u64 end)
{
    if (c->npend != 0 || c->cap_len != 0 || c->cmd_begin < c->total_in)
        return;
    __u64 from = c->cmd_begin - c->total_in;
    if (end > s->ret)
        end = s->ret;
    if (end <= from)
        return;
    __u32 n = end - from > ENG_CAP ? ENG_CAP : (__u32)(end - from);
    n &= (ENG_CAP * 2 - 1);
    if (n > ENG_CAP)
        n = ENG_CAP;
    if (bpf_probe_read_user(c->cap, n, (void *)(s->buf + from)) == 0)
        c->cap_len = n;
}

/* The window holds at least ENG_HDR bytes from off, or everything up to the read's end. */
static __always_inline void eng_window(struct eng_scratch *s, __u64 off)
{
    __u64 ret = s->ret;
    __u64 have_end = s->win_off + s->win_len;
    if (off >= s->win_off && (off + ENG_HDR <= have_end || have_end >= ret))
        return;
    __u64 n = ret - off;
    if (n > ENG_WINCOPY)
        n = ENG_WINCOPY;
    __u32 m = n;
    m &= (ENG_WINBUF - 1);
    if (m > ENG_WINCOPY)
        m = ENG_WINCOPY;
    if (bpf_probe_read_user(s->win, m, (void *)(s->buf + off)) != 0)
        m = 0;
    s->win_off = off;
    s->win_len = m;
}

static __always_inline void eng_lookup_name(struct eng_conn *c)
{
    struct eng_name key __attribute__((aligned(8))) = {};
    __u32 need = c->name_need;
#pragma unroll
    for (int i = 0; i < ENG_NAME; i++) {
        __u8 ch = c->name[i];
        if (ch >= 'a' && ch <= 'z')
            ch -= 32;
        key.n[i] = i < need ? ch : 0;
    }
    __u64 k0 = *(__u64 *)&key.n[0], k1 = *(__u64 *)&key.n[8];
    if (k0 == c->last_name[0] && k1 == c->last_name[1] && c->last_id) {
        c->cur_id = c->last_id;     /* the same command as last time: no hash lookup */
        c->cur_flags = c->last_flags;
        return;
    }
    struct eng_cmd *cmd = eng_cmds.lookup(&key);
    if (cmd) {
        c->cur_id = cmd->id;
        c->cur_flags = cmd->flags;
        c->last_name[0] = k0;
        c->last_name[1] = k1;
        c->last_id = cmd->id;
        c->last_flags = cmd->flags;
    }
}

/* One bulk string of the multibulk is done (its payload skipped). */
static __always_inline void eng_arg_done(struct eng_conn *c, struct eng_scratch *s, __u64 off)
{
    c->arg_idx++;
    if (c->args_left <= 1) {
        c->args_left = 0;
        if (c->argc == 1 && !(c->cur_flags & ECMD_SECRET))
            eng_capture(c, s, off);
        eng_cmd_done(c, s, off);
    } else {
        c->args_left--;
        c->pst = PS_BULK_HDR;
    }
}

/* A header (`*N` or `$L`) is complete with value v, the parse position at off. */
static __always_inline int eng_header_done(struct eng_conn *c, struct eng_scratch *s, __u64 v, __u64 off)
{
    if (c->pst == PS_MB_NUM) {
        if (v == 0) {               /* `*0`: Redis ignores it */
            c->pst = PS_CMD;
            s->done_off = off;
            return 0;
        }
        if (v > 1048576)
            return 1;
        c->args_left = v;
        c->argc = v;
        c->pst = PS_BULK_HDR;
        return 0;
    }
    if (v > (1ULL << 32))
        return 1;
    if (c->arg_idx == 0) {
        if (v >= 1 && v <= ENG_NAME) {
            c->name_need = v;
            c->name_have = 0;
            c->skip = 2;            /* the CRLF after the name */
            c->pst = PS_NAME;
        } else {
            c->skip = v + 2;        /* no command name is this long: id 0 */
            c->pst = PS_SKIP;
        }
        return 0;
    }
    if (c->arg_idx == 1 && !(c->cur_flags & ECMD_SECRET))
        eng_capture(c, s, off + v); /* command and key, cut at the key's end: never a value */
    c->skip = v + 2;
    c->pst = PS_SKIP;
    return 0;
}

/* Skip payload bytes by length (they need not be copied); the argument is done at its end. */
static __always_inline void eng_skip(struct eng_conn *c, struct eng_scratch *s)
{
    __u64 off = s->off;
    __u64 n = s->ret - off;
    if (c->skip < n)
        n = c->skip;
    c->skip -= n;
    off += n;
    s->off = off;
    if (c->skip == 0)
        eng_arg_done(c, s, off);
}

/* One parse step at s->off: a header, then the payload after it (a command name is copied,
 * anything else skipped by length). Returns 1 when the bytes cannot be parsed here (protocol
 * error, an inline command: user space takes them). Each part is inlined once: the program
 * must stay within the kernel's 4096 instructions with ENG_STEPS steps. */
static __always_inline int eng_step(struct eng_conn *c, struct eng_scratch *s)
{
    __u64 off = s->off;
    __u8 st = c->pst;

    if (st <= PS_BULK_NUM) {
        eng_window(s, off);
        __u64 p = off - s->win_off;
        __u64 avail = s->win_off + s->win_len - off;
        if (avail == 0)
            return 1;
        if (avail > ENG_HDR)
            avail = ENG_HDR;
        __u64 k = 0;
        if (st == PS_CMD || st == PS_BULK_HDR) {
            __u8 c0 = s->win[p & (ENG_WINBUF - 1)];
            if (st == PS_CMD) {
                if (c0 != '*')
                    return 1;       /* inline command: named and counted in user space */
                eng_cmd_begin(c, s, off);
                c->pst = PS_MB_NUM;
            } else {
                if (c0 != '$')
                    return 1;
                c->pst = PS_BULK_NUM;
            }
            c->hval = 0;
            c->hph = 0;
            k = 1;
        }
        /* digits, then \r\n: may end with the read and continue in the next one */
        __u64 v = c->hval;
        __u32 ph = c->hph;
        __u32 used = k, done = 0, bad = 0;
#pragma unroll
        for (int j = 0; j < ENG_HDR; j++) {
            if (used >= avail)
                break;
            __u8 ch = s->win[(p + used) & (ENG_WINBUF - 1)];
            used++;
            if (ph == 0) {
                if (ch >= '0' && ch <= '9') {
                    v = v * 10 + (ch - '0');
                    continue;
                }
                if (ch == '\r') {
                    ph = 1;
                    continue;
                }
                bad = 1;
                break;
            }
            if (ch == '\n')
                done = 1;
            else
                bad = 1;
            break;
        }
        off += used;
        s->off = off;
        if (bad)
            return 1;
        if (!done) {
            c->hval = v;
            c->hph = ph;
            return 0;
        }
        if (eng_header_done(c, s, v, off))
            return 1;
    }

    if (c->pst == PS_NAME) {
        __u64 ret = s->ret;
        off = s->off;
        if (off >= ret)
            return 0;
        __u32 have = c->name_have & (ENG_NAME - 1);
        __u64 n = c->name_need - have;
        if (n > ret - off)
            n = ret - off;
        __u32 m = n & 31;
        if (m > ENG_NAME)
            m = ENG_NAME;
        __u64 w = off - s->win_off;
        if (off >= s->win_off && w + m <= s->win_len && w < ENG_WINBUF) {
            /* already in the window (it was copied with the header): no second copy */
#pragma unroll
            for (int j = 0; j < ENG_NAME; j++)
                if (j < m)
                    c->name[(have + j) & 31] = s->win[(w + j) & (ENG_WINBUF - 1)];
        } else if (bpf_probe_read_user(&c->name[have], m, (void *)(s->buf + off)) != 0) {
            return 1;
        }
        c->name_have = have + m;
        s->off = off + m;
        if (c->name_have < c->name_need)
            return 0;               /* the name continues in the next read */
        eng_lookup_name(c);
        if (c->cur_flags & ECMD_LINK) {
            /* the raw rest starts at this command (done_off): user space sees the handshake */
            c->flags |= ECF_RAW;
            eng_count(ECNT_LINKS, 1);
            return 1;
        }
        c->pst = PS_SKIP;
    }

    if (c->pst == PS_SKIP)
        eng_skip(c, s);
    return 0;
}

/* ---- syscalls -------------------------------------------------------------------------------- */

/* The read or write as io.c records it: for bytes the engine leaves to user space. */
static __always_inline void eng_emit_raw(__u16 kind, __u64 id, struct inflight *call, __u64 from, long ret,
                                         __u64 arrival, __u64 wake, __u16 flags)
{
    struct rt_record *r = new_record(kind, id, call->fd);
    if (!r)
        return;
    r->ev.ts_enter = call->ts;
    r->ev.ts_exit = bpf_ktime_get_ns();
    r->ev.ret = ret;
    r->ev.flags = call->flags | flags;
    r->ev.aux_ts = arrival;
    r->ev.aux_ts2 = wake;
    if (call->fd_kind == FD_AOF || call->fd_kind == FD_FILE)
        ;                           /* file contents are never needed */
    else if (kind == RT_WRITE && (call->flags & RTF_WRITEV))
        capture_iov(r, call->buf, call->count, ret);
    else
        capture_plain(r, call->buf + from, ret);
    asm volatile("" ::: "memory");  /* emit() reloads and bounds cap_len: keep clang from reusing its copy */
    emit(r);
}

/* Record `i` of a read's bytes from `from` for user space, in records of CAPTURE_MAX; returns 1
 * when none is left. The `last` record allowed gets all that was left as its ret, so user space
 * sees a longer rest as bytes not captured (and ECNT_RAW_UNCAPTURED counts them). */
static __always_inline int eng_emit_raw_chunk(int i, int last, __u64 id, struct inflight *call, __u64 from,
                                              __u64 len, __u64 arrival, __u64 wake)
{
    __u64 done = (__u64)i * CAPTURE_MAX;
    if (done >= len)
        return 1;
    __u64 rest = len - done;
    __u64 n = rest;
    if (rest > CAPTURE_MAX) {
        if (!last)
            n = CAPTURE_MAX;
        else
            eng_count(ECNT_RAW_UNCAPTURED, rest - CAPTURE_MAX);
    }
    eng_emit_raw(RT_READ, id, call, from + done, n, arrival, wake, RTF_ENGINE_RAW);
    return 0;
}

/* The same, inline: where eng_raw could not be tail-called (no program, or no tail call left). */
#define ENG_RAW_CHUNKS 4
static __always_inline void eng_emit_raw_read(__u64 id, struct inflight *call, __u64 from, __u64 len,
                                              __u64 arrival, __u64 wake)
{
#pragma unroll
    for (int i = 0; i < ENG_RAW_CHUNKS; i++)
        if (eng_emit_raw_chunk(i, i == ENG_RAW_CHUNKS - 1, id, call, from, len, arrival, wake))
            break;
}

static __always_inline struct eng_conn *eng_new_conn(struct fd_key *fk)
{
    int zero = 0;
    struct eng_conn *blank = eng_zero.lookup(&zero);
    if (!blank)
        return NULL;
    eng_conns.update(fk, blank);
    return eng_conns.lookup(fk);
}

#define ENG_PROG_PARSE 0
#define ENG_PROG_READ 1
#define ENG_PROG_RAW 2
BPF_PROG_ARRAY(eng_progs, 3);                  /* eng_parse, eng_read_body, eng_raw (user space fills it) */
#define ENG_TAIL_CALLS 33                      /* the kernel's MAX_TAIL_CALL_CNT per chain */

/* A read's raw rest goes up through eng_raw: ENG_RAW_PER_CALL records per program (the verifier
 * explores a loop of more as E2BIG), which tail-calls itself up to ENG_RAW_CALLS times: 256 KiB at
 * the default 4 KiB capture. Redis reads as much as its query buffer has room for (~20 KiB once it
 * has grown), more than eng_parse's inline records could hold. Beyond the bound the rest is counted
 * in ECNT_RAW_UNCAPTURED. eng_parse leaves the chain the tail calls its rest needs. */
#define ENG_RAW_PER_CALL 8
#define ENG_RAW_CALLS 8
#define ENG_RAW_CALL_BYTES ((__u64)ENG_RAW_PER_CALL * CAPTURE_MAX)

/* The read's bytes [from, from + len) for user space: eng_raw when it can be tail-called (it does
 * not return then), else ENG_RAW_CHUNKS records inline. The caller's state updates come first. */
static __always_inline void eng_raw_rest(void *ctx, struct eng_scratch *s, __u64 from, __u64 len)
{
    s->raw_from = from;
    s->raw_len = len;
    s->raw_calls = 0;
    eng_progs.call(ctx, ENG_PROG_RAW);
    struct inflight call = s->call;
    eng_emit_raw_read(s->pid_tgid, &call, from, len, s->arrival, s->wake);
}

/* The end of a read's parse: what was not parsed goes to user space, with the connection. */
static __always_inline void eng_read_done(void *ctx, struct eng_conn *c, struct eng_scratch *s, int lost)
{
    __u64 ret = s->ret;
    if (c->npend)
        c->b_read_end = s->rd_end;
    c->total_in += ret;
    if (lost || s->off < ret) {
        __u64 from = s->done_off;
        /* The rest of the read goes up raw from the end of the last command counted: an inline
         * command (not `*` at a command start), or the parse budget spent. When that rest starts at
         * a command and the read ends a line, the next read starts a command: the connection stays
         * parsed. Anything else lost the frame: the connection goes to user space. */
        __u8 last = 0;
        if (c->pst == PS_CMD || c->cmd_begin >= c->total_in - ret + from) {
            bpf_probe_read_user(&last, 1, (void *)(s->buf + ret - 1));
            s->call.flags |= RTF_ENGINE_AT_CMD;     /* user space parses it from a command's start */
        }
        if (last != '\n') {
            c->flags |= ECF_RAW;
            eng_count(ECNT_DESYNC, 1);
        }
        c->pst = PS_CMD;
        if (!c->npend) {
            c->flags &= ~ECF_BATCH;     /* the command begun here is user space's now */
            /* every command of this read is user space's, and so are their replies: the writes
             * until the next read go up whole, so user space times them (an inline PING) */
            if (from < ret)
                c->flags |= ECF_RAW_REPLY;
        }
        eng_count(ECNT_RAW_READS, 1);
        if (from < ret)
            eng_raw_rest(ctx, s, from, ret - from);
    }
}

/* A tail-called part of a read: the read's scratch and its connection's state. */
static __always_inline struct eng_conn *eng_continued(struct eng_scratch **sp)
{
    int zero = 0;
    struct eng_scratch *s = eng_scratch.lookup(&zero);
    *sp = s;
    if (!s)
        return NULL;
    struct fd_key fk = s->fk;
    return eng_conns.lookup(&fk);
}

/* Parse ENG_STEPS steps of the read in the scratch, then hand over to itself (a tail call). */
int eng_parse(void *ctx)
{
    struct eng_scratch *s;
    struct eng_conn *c = eng_continued(&s);
    if (!c)
        return 0;
    s->hops++;
    int lost = 0;
#pragma unroll
    for (int i = 0; i < ENG_STEPS; i++) {
        if (s->off >= s->ret)
            break;
        if (eng_step(c, s)) {
            lost = 1;
            break;
        }
    }
    /* the chain's last tail calls are kept for eng_raw: as many as the rest would need now (it only
     * shrinks as the parse goes on) */
    if (!lost && s->off < s->ret) {
        __u64 raw_calls = (s->ret - s->done_off + ENG_RAW_CALL_BYTES - 1) / ENG_RAW_CALL_BYTES;
        if (raw_calls > ENG_RAW_CALLS)
            raw_calls = ENG_RAW_CALLS;
        if (s->hops + 1 + raw_calls <= ENG_TAIL_CALLS)
            eng_progs.call(ctx, ENG_PROG_PARSE);
    }
    eng_read_done(ctx, c, s, lost); /* done, lost, or out of tail calls (then off < ret) */
    return 0;
}

static __always_inline void eng_read(void *ctx, __u64 id, struct inflight *call, long ret, struct eng_conn *c)
{
    __u32 tgid = id >> 32;
    struct fd_key fk = {.tgid = tgid, .fd = call->fd};
    __u64 arrival = 0, wake = 0;
    int zero = 0;
    struct eng_scratch *s;
    __u32 slot = ENG_SLOT_OF(tgid);
    struct eng_loop *lp = eng_loop.lookup(&slot);
    if (lp)
        wake = lp->wake;

    if (!c && call->fd_kind != FD_CLIENT) {   /* not classified yet: user space classifies and counts */
        eng_count(ECNT_UNCLASSIFIED, 1);
        goto raw;
    }
    if (!c) {
        /* a connection older than the engine: parsed once a read starts a frame */
        c = eng_new_conn(&fk);
        if (c)
            c->flags = ECF_UNSYNCED;
        else {
            eng_count(ECNT_CONN_CAP, 1);
            eng_count(ECNT_RAW_READS, 1);
            goto raw;
        }
    }
    if (c->flags & ECF_RAW_REPLY)
        c->flags &= ~ECF_RAW_REPLY;     /* the replies of the read before were the writes before */
    /* the socket's first unread arrival (sk_data_ready), through the socket cached per connection */
    if (!c->sk) {
        __u64 *skp = fd_socks.lookup(&fk);
        c->sk = skp ? *skp : 1;
    }
    if (c->sk > 1) {
        __u64 sk = c->sk;
        struct sock_info *si = socks.lookup(&sk);
        if (si) {
            arrival = si->arrival_ts;
            si->arrival_ts = 0;
        }
    }
    s = eng_scratch.lookup(&zero);
    if (!s)
        goto raw;
    s->off = 0;
    s->win_off = 0;
    s->win_len = 0;
    s->buf = call->buf;
    s->ret = ret;
    s->rd_start = call->ts;
    s->rd_end = bpf_ktime_get_ns();
    s->arrival = arrival;
    s->wake = wake;
    s->slot = slot;
    s->pid_tgid = id;
    s->call = *call;
    s->fk = fk;
    s->done_off = 0;
    s->hops = 0;
    /* straight to the parser unless a batch is to be closed first or the connection is not parsed */
    if ((c->npend && c->w_end) || (c->flags & (ECF_UNSYNCED | ECF_RAW)))
        eng_progs.call(ctx, ENG_PROG_READ);
    else
        eng_progs.call(ctx, ENG_PROG_PARSE);
    eng_count(ECNT_RAW_READS, 1);   /* no program to continue with */
    eng_raw_rest(ctx, s, 0, ret);
    return;
raw:
    s = eng_scratch.lookup(&zero);
    if (!s) {
        eng_emit_raw_read(id, call, 0, ret, arrival, wake);
        return;
    }
    s->pid_tgid = id;
    s->call = *call;
    s->arrival = arrival;
    s->wake = wake;
    s->hops = 0;
    eng_raw_rest(ctx, s, 0, ret);
}

/* The read continued (a tail call: closing a batch does not fit in the read's own program). */
int eng_read_body(void *ctx)
{
    struct eng_scratch *s;
    struct eng_conn *c = eng_continued(&s);
    if (!c)
        return 0;
    s->hops++;
    struct fd_key fk = s->fk;
    /* A reply was written but its end was not recognised (a big or multi-part reply): it ended
     * with the last write before this read. */
    if (c->npend && c->w_end) {
        eng_count(ECNT_LAZY_CLOSE, 1);
        eng_close_batch(c, &fk);
    }
    if (c->flags & ECF_UNSYNCED) {
        __u8 c0 = 0;
        bpf_probe_read_user(&c0, 1, (void *)s->buf);
        if (c0 == '*')
            c->flags &= ~ECF_UNSYNCED;
        else
            c->flags |= ECF_RAW;
    }
    if (!(c->flags & ECF_RAW))
        eng_progs.call(ctx, ENG_PROG_PARSE);
    /* raw connection, or no parser program */
    eng_count(ECNT_RAW_READS, 1);
    c->total_in += s->ret;
    eng_raw_rest(ctx, s, 0, s->ret);
    return 0;
}

/* A read's raw bytes (s->raw_from, s->raw_len): ENG_RAW_PER_CALL records of CAPTURE_MAX, then
 * itself again for the rest (a program of its own, so that eng_parse's verifier budget is spared). */
int eng_raw(void *ctx)
{
    int zero = 0;
    struct eng_scratch *s = eng_scratch.lookup(&zero);
    if (!s)
        return 0;
    s->hops++;
    s->raw_calls++;
    struct inflight call = s->call;
    __u64 id = s->pid_tgid, from = s->raw_from, len = s->raw_len, arrival = s->arrival, wake = s->wake;
    /* the last program of the chain: its last record takes all that is left */
    int final = s->raw_calls >= ENG_RAW_CALLS || s->hops >= ENG_TAIL_CALLS || len <= ENG_RAW_CALL_BYTES;
#pragma clang loop unroll(disable)
    for (int i = 0; i < ENG_RAW_PER_CALL; i++)
        if (eng_emit_raw_chunk(i, final && i == ENG_RAW_PER_CALL - 1, id, &call, from, len, arrival, wake))
            break;
    if (final)
        return 0;
    s->raw_from = from + ENG_RAW_CALL_BYTES;
    s->raw_len = len - ENG_RAW_CALL_BYTES;
    eng_progs.call(ctx, ENG_PROG_RAW);
    eng_count(ECNT_RAW_UNCAPTURED, len - ENG_RAW_CALL_BYTES);  /* no tail call left after all */
    return 0;
}

/* Reply head: type and, for a bulk string, the reply's full length. */
static __always_inline void eng_reply_head(struct eng_conn *c, __u64 buf)
{
    __u8 h[ENG_HDR] = {};
    if (bpf_probe_read_user(h, sizeof(h), (void *)buf) != 0)
        return;
    __u8 t = RPL_OK;
    if (h[0] == '-') {
        if (h[1] == 'M' && h[2] == 'O' && h[3] == 'V' && h[4] == 'E' && h[5] == 'D' && h[6] == ' ')
            t = RPL_MOVED;
        else if (h[1] == 'A' && h[2] == 'S' && h[3] == 'K' && h[4] == ' ')
            t = RPL_ASK;
        else
            t = RPL_ERROR;
    } else if (h[0] == '_' || ((h[0] == '$' || h[0] == '*') && h[1] == '-' && h[2] == '1')) {
        t = RPL_NIL;
    }
    c->reply_type = t;
    c->reply_left = 0;
    if (t == RPL_MOVED || t == RPL_ASK)     /* rare: the slot and node it names go up with the record */
        if (bpf_probe_read_user(c->redirect, RQ_REDIRECT_LEN, (void *)buf) != 0)
            __builtin_memset(c->redirect, 0, RQ_REDIRECT_LEN);
    if (h[0] != '$' || c->npend != 1)
        return;
    /* one bulk string: complete once `$L\r\n` + L + 2 bytes are out (a 5 MB GET takes many writes) */
    __u64 v = 0;
    __u32 done = 0;
#pragma unroll
    for (int j = 1; j < ENG_HDR - 1; j++) {
        __u8 ch = h[j];
        if (ch >= '0' && ch <= '9') {
            v = v * 10 + (ch - '0');
            continue;
        }
        if (ch == '\r')
            done = j + 2;           /* `$L\r\n`: Redis writes it well-formed */
        break;
    }
    if (done)
        c->reply_left = done + v + 2;
}

static __always_inline void eng_write(__u64 id, struct inflight *call, long ret, struct eng_conn *c)
{
    struct fd_key fk = {.tgid = id >> 32, .fd = call->fd};
    if (!c)
        return;
    if (c->flags & (ECF_RAW | ECF_RAW_REPLY)) {
        eng_emit_raw(RT_WRITE, id, call, 0, ret, 0, 0, RTF_ENGINE_RAW);
        return;
    }
    if (!c->npend)
        return;                     /* pub/sub pushes, replies to commands not seen */
    __u64 now = bpf_ktime_get_ns();
    __u64 requested = call->count;
    __u64 first = call->buf;
    if (call->flags & RTF_WRITEV) {
        /* the bytes asked for: the sum of up to 8 iovecs (more: unknown, closed lazily) */
        struct rt_iovec iov[8] = {};
        __u64 cnt = call->count;
        __u32 sz = (cnt & 15) * sizeof(iov[0]);
        if (sz > sizeof(iov))
            sz = sizeof(iov);
        requested = 0;
        if (cnt >= 1 && cnt <= 8 && bpf_probe_read_user(iov, sz, (void *)call->buf) == 0) {
#pragma unroll
            for (int i = 0; i < 8; i++)
                if (i < cnt)
                    requested += iov[i].len;
        }
        first = iov[0].base;
    }
    if (!c->w_start) {
        c->w_start = call->ts;
        if (first)
            eng_reply_head(c, first);
    }
    c->bytes_out += ret;
    c->w_end = now;
    int complete;
    if (c->reply_left)
        complete = c->bytes_out >= c->reply_left;
    else
        complete = requested && (__u64)ret == requested;
    if (complete)
        eng_close_batch(c, &fk);
}

/* The fd's kind and the flags io_enter would have given, for an fd without engine state (the
 * entry does not look it up: a connection the engine holds is a client). 0: no record for it. */
static __always_inline int eng_classify(struct inflight *call, __u32 tgid)
{
    __u8 fk = fd_kind(tgid, call->fd);
    if (fk == FD_IGNORE || (call->kind == RT_READ && (fk == FD_AOF || fk == FD_FILE)))
        return 0;
    if (fk == FD_UNKNOWN)
        call->flags |= RTF_UNKNOWN_FD;
    else if (fk == FD_FILE)
        call->flags |= RTF_UNKNOWN_FD | RTF_FILE_FD;
    call->fd_kind = fk;
    return 1;
}

static __always_inline int eng_exit(void *ctx, long ret, __u16 kind)
{
    struct inflight call;
    __u64 id = take_call(&call);
    if (!id)
        return 0;
    if (ret < 0 || call.kind != kind)
        return 0;
    /* the fd's kind was not looked up at entry (eng_enter): a connection with engine state is a client */
    struct fd_key fk = {.tgid = id >> 32, .fd = call.fd};
    struct eng_conn *c = eng_conns.lookup(&fk);
    if (c)
        call.fd_kind = FD_CLIENT;
    else if (!eng_classify(&call, id >> 32))
        return 0;
    if (kind == RT_READ) {
#ifdef ENG_COUNT_SYSCALLS               /* `count` only: a per-CPU slot per call costs every request */
        eng_count(ECNT_READS, 1);   /* 0: the peer closed (as `count --full` counts it) */
#endif
        if (ret > 0)
            eng_read(ctx, id, &call, ret, c);
        return 0;
    }
    if (ret == 0)
        return 0;
#ifdef ENG_COUNT_SYSCALLS
    eng_count(call.flags & RTF_WRITEV ? ECNT_WRITEVS : ECNT_WRITES, 1);
#endif
    if (call.fd_kind == FD_CLIENT)
        eng_write(id, &call, ret, c);
    else    /* the AOF, a file (maybe the AOF), an fd not classified yet: as io.c records it */
        eng_emit_raw(RT_WRITE, id, &call, 0, ret, 0, 0, 0);
    return 0;
}

/* Hooks the connection and loop probes call (conn.c, loop.c). */
static __always_inline void eng_conn_opened(struct fd_key *fk)
{
    if (!eng_new_conn(fk))
        eng_count(ECNT_CONN_CAP, 1);
}

static __always_inline void eng_conn_closed(struct fd_key *fk)
{
    struct eng_conn *c = eng_conns.lookup(fk);
    if (!c)
        return;
    if (c->npend && c->w_end) {     /* its reply's end was not recognised: it ended with the last write */
        eng_count(ECNT_LAZY_CLOSE, 1);
        eng_close_batch(c, fk);
    } else if (c->npend) {
        eng_count(ECNT_OPEN_AT_CLOSE, 1);   /* counted, never answered: no latency */
    }
    eng_conns.delete(fk);
}

static __always_inline void eng_busy_span(__u32 tgid, __u64 busy, __u64 now)
{
    __u32 slot = ENG_SLOT_OF(tgid);
    struct eng_loop *lp = eng_loop.lookup(&slot);
    if (lp && busy >= ENG_STALL_NS)
        lp->stall_end = now;
}

/* The main thread's last epoll return, in its instance's slot (loop.c reads and writes it there). */
static __always_inline __u64 *eng_wake_of(__u32 tgid)
{
    __u32 slot = ENG_SLOT_OF(tgid);
    struct eng_loop *lp = eng_loop.lookup(&slot);
    return lp ? &lp->wake : NULL;
}

static __always_inline __u64 *eng_entered_of(__u32 tgid)
{
    __u32 slot = ENG_SLOT_OF(tgid);
    struct eng_loop *lp = eng_loop.lookup(&slot);
    return lp ? &lp->entered : NULL;
}

#define ENGINE_ACCEPT_HOOK(fk) eng_conn_opened(fk)
#define ENGINE_CLOSE_HOOK(fk) eng_conn_closed(fk)
#define ENGINE_LOOP_HOOK(tgid, busy, now) eng_busy_span(tgid, busy, now)
#define LOOP_WAKE_OF(tgid) eng_wake_of(tgid)
#define LOOP_ENTERED_OF(tgid) eng_entered_of(tgid)

/* Entry: the call only. Its fd's kind is decided at the exit, where the connection's engine state
 * is looked up anyway (one hash lookup per read and write less than io_enter). */
static __always_inline int eng_enter(__u16 kind, int fd, __u64 buf, __u64 count, __u16 flags)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!is_target(id >> 32))
        return 0;
    enter_syscall_kind(kind, fd, buf, count, flags, FD_UNKNOWN);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_read)
{
    return eng_enter(RT_READ, args->fd, (__u64)args->buf, args->count, 0);
}

TRACEPOINT_PROBE(syscalls, sys_exit_read)
{
    return eng_exit(args, args->ret, RT_READ);
}

TRACEPOINT_PROBE(syscalls, sys_enter_write)
{
    return eng_enter(RT_WRITE, args->fd, (__u64)args->buf, args->count, 0);
}

TRACEPOINT_PROBE(syscalls, sys_exit_write)
{
    return eng_exit(args, args->ret, RT_WRITE);
}

TRACEPOINT_PROBE(syscalls, sys_enter_writev)
{
    return eng_enter(RT_WRITE, args->fd, (__u64)args->vec, args->vlen, RTF_WRITEV);
}

TRACEPOINT_PROBE(syscalls, sys_exit_writev)
{
    return eng_exit(args, args->ret, RT_WRITE);
}
