/* Maps and helpers shared by every probe file. Only tracepoint arguments and
 * user memory are read: no kernel struct is dereferenced, so mismatched kernel
 * headers cannot break the probes. */
#include <linux/signal.h>   /* sigset_t: bcc spells out epoll_pwait's tracepoint arguments */
#include "events.h"

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 16384         /* 64 MiB ring buffer (user space passes its own) */
#endif
#ifndef RESCUE_PAGES
#define RESCUE_PAGES 256            /* 1 MiB: only records events refused go there */
#endif
#ifndef LOOP_MIN_NS
#define LOOP_MIN_NS 1000000ULL      /* main-thread busy spans shorter than this only feed counters */
#endif
#define BPF_RB_NO_WAKEUP_FLAG 1     /* user space polls on a timer: one wake-up per batch, not per record */

struct fd_key {
    __u32 tgid;
    __s32 fd;
};

struct peer_key {                   /* the client's address as accept() returns it */
    __u16 port;
    __u16 family;
    __u8 addr[16];
};

struct sock_info {
    __u64 established_ts;           /* handshake done: start of the accept-queue wait */
    __u64 arrival_ts;               /* first request bytes not yet read by Redis */
};

struct lost_span {                  /* records of one fd neither ring took (user space reads and clears) */
    __u64 first_ts;                 /* end time of the first and of the last of them */
    __u64 last_ts;
    __u64 records;
};

struct inflight {                   /* a syscall between its enter and exit, per thread */
    __u64 ts;
    __u64 buf;                      /* user buffer, iovec array or sockaddr */
    __u64 count;
    __s32 fd;
    __u16 kind;                     /* 0 (RT_NONE): consumed by its exit, the slot is free */
    __u16 flags;
    __u32 fd_kind;                  /* enum rt_fd_kind at enter (read/write) */
    __u32 pad;
};
#define RT_NONE 0


struct rt_record {
    struct rt_event ev;
    __u8 data[CAPTURE_MAX * 2];     /* twice the capture: lets the verifier bound writev offsets */
};

BPF_HASH(targets, __u32, __u32, 64);                       /* traced tgids */
BPF_HASH(listen_ports, __u16, __u32, 64);                  /* their listening ports (softirq probes) */
BPF_HASH(fd_kinds, struct fd_key, __u8, 65536);           /* enum rt_fd_kind per fd */
BPF_HASH(fd_socks, struct fd_key, __u64, 65536);          /* accepted fd -> socket address (a key only) */
BPF_TABLE("lru_hash", __u64, struct sock_info, socks, 65536);
BPF_TABLE("lru_hash", struct peer_key, __u64, peers, 65536);
BPF_HASH(inflight, __u32, struct inflight, 16384);
BPF_HASH(last_wake, __u32, __u64, 256);                    /* main thread (tid == tgid) -> epoll return */
BPF_PERCPU_ARRAY(scratch, struct rt_record, 1);
BPF_PERCPU_ARRAY(counters, __u64, CNT_MAX);
BPF_PERCPU_ARRAY(refused_kinds, __u64, 8);                 /* refusals of events per enum rt_kind */
BPF_HASH(lost_fds, struct fd_key, struct lost_span, 1024); /* which connection lost what, and when */
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
/* events again, as a map pointer bpf_ringbuf_query() accepts (bcc rewrites only events.method()
 * calls into map references); user space stores the ring at index 0 right after loading. */
BPF_ARRAY_OF_MAPS(ring_ref, "events", 1);
BPF_RINGBUF_OUTPUT(rescue, RESCUE_PAGES);                   /* takes what events refuses */

static __always_inline void count_add(int idx, __u64 v)
{
    __u64 *c = counters.lookup(&idx);
    if (c)
        *c += v;
}

static __always_inline int is_target(__u32 tgid)
{
#ifdef TARGET_TGID_MATCH
    /* The traced tgids compiled in by user space (a handful): compares instead of a hash
     * lookup, paid on every enabled syscall of every process on the host. */
    return TARGET_TGID_MATCH(tgid);
#else
    return targets.lookup(&tgid) != NULL;
#endif
}

static __always_inline __u8 fd_kind(__u32 tgid, __s32 fd)
{
    struct fd_key k = {.tgid = tgid, .fd = fd};
    __u8 *kind = fd_kinds.lookup(&k);
    return kind ? *kind : FD_UNKNOWN;
}

static __always_inline struct rt_record *new_record(__u16 kind, __u64 id, __s32 fd)
{
    int zero = 0;
    struct rt_record *r = scratch.lookup(&zero);
    if (!r)
        return NULL;
    __builtin_memset(&r->ev, 0, sizeof(r->ev));
    r->ev.kind = kind;
    r->ev.tgid = id >> 32;
    r->ev.tid = (__u32)id;
    r->ev.fd = fd;
    return r;
}

static __always_inline void count_max(int idx, __u64 v)
{
    __u64 *c = counters.lookup(&idx);
    if (c && *c < v)
        *c = v;
}

/* events refused a record. Its reserve fails with room to spare when its lock does: since 6.15
 * the ring takes a resilient spinlock that gives up on a suspected deadlock or a timeout instead
 * of spinning (docs/PERFORMANCE.md). The record goes to the rescue ring, which has a lock of its
 * own; each refusal is counted by cause, with the unconsumed bytes seen, so that "full" and
 * "lock failed" can be told apart. */
static __always_inline void emit_refused(struct rt_record *r, __u32 len)
{
    int zero = 0;
    void *ring = ring_ref.lookup(&zero);
    __u64 avail = 0, size = 1ULL << 62;     /* unknown (not stored yet): counted as "with room" */
    if (ring) {
        avail = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA);
        size = bpf_ringbuf_query(ring, BPF_RB_RING_SIZE);
        int cons = CNT_REFUSED_CONS_POS, prod = CNT_REFUSED_PROD_POS;
        __u64 *c = counters.lookup(&cons);
        if (c)
            *c = bpf_ringbuf_query(ring, BPF_RB_CONS_POS);
        __u64 *p = counters.lookup(&prod);
        if (p)
            *p = bpf_ringbuf_query(ring, BPF_RB_PROD_POS);
    }
    count_max(CNT_REFUSED_AVAIL_MAX, avail);
    __u64 now = bpf_ktime_get_ns();
    if (r->ev.ts_exit && now > r->ev.ts_exit)
        count_max(CNT_REFUSED_NS_MAX, now - r->ev.ts_exit);
    int kind = r->ev.kind & 7;
    __u64 *per_kind = refused_kinds.lookup(&kind);
    if (per_kind)
        *per_kind += 1;
    __u64 need = (len + 8 + 7) & ~7ULL;     /* header and padding: the kernel's own test below */
    count_add(avail + need > size - 1 ? CNT_REFUSED_FULL : CNT_REFUSED_ROOM, 1);
    if (rescue.ringbuf_output(r, len, BPF_RB_NO_WAKEUP_FLAG) == 0) {
        count_add(CNT_RESCUED, 1);
        return;
    }
    count_add(CNT_LOST, 1);
    /* gone: remember whose record it was, so the requests around it are not silently miscounted */
    struct fd_key k = {.tgid = r->ev.tgid, .fd = r->ev.fd};
    __u64 ts = r->ev.ts_exit;
    struct lost_span *span = lost_fds.lookup(&k);
    if (span) {
        span->last_ts = ts;
        span->records += 1;
    } else {
        struct lost_span fresh = {.first_ts = ts, .last_ts = ts, .records = 1};
        lost_fds.update(&k, &fresh);
    }
}

static __always_inline void emit(struct rt_record *r)
{
    __u32 n = r->ev.cap_len;
    if (n > CAPTURE_MAX)
        n = CAPTURE_MAX;
    if (events.ringbuf_output(r, sizeof(struct rt_event) + n, BPF_RB_NO_WAKEUP_FLAG) != 0)
        emit_refused(r, sizeof(struct rt_event) + n);
}

/* A thread keeps its inflight slot: enter rewrites it in place and exit marks it consumed
 * (kind RT_NONE), so the common path is one hash lookup per enter and per exit instead of a
 * map update and a delete (measured: the bulk of the probes' cost is map operations). Slots
 * of the target's exited threads stay; the map holds 16384. */
static __always_inline struct inflight *inflight_take(__u32 tid)
{
    struct inflight *in = inflight.lookup(&tid);
    if (!in || in->kind == RT_NONE)
        return NULL;
    return in;
}

static __always_inline void enter_syscall_kind(__u16 kind, __s32 fd, __u64 buf, __u64 count, __u16 flags,
                                               __u32 fdk)
{
    __u32 tid = (__u32)bpf_get_current_pid_tgid();
    __u64 now = bpf_ktime_get_ns();
    struct inflight *cur = inflight.lookup(&tid);
    if (cur) {
        cur->ts = now;
        cur->buf = buf;
        cur->count = count;
        cur->fd = fd;
        cur->flags = flags;
        cur->fd_kind = fdk;
        cur->kind = kind;
        return;
    }
    struct inflight in = {.ts = now, .buf = buf, .count = count, .fd = fd, .kind = kind, .flags = flags,
                          .fd_kind = fdk};
    inflight.update(&tid, &in);
}

static __always_inline void enter_syscall(__u16 kind, __s32 fd, __u64 buf, __u64 count, __u16 flags)
{
    enter_syscall_kind(kind, fd, buf, count, flags, FD_UNKNOWN);
}
