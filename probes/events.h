/* The one definition of what the probes send to user space.
 * tracer/events.py mirrors it; tests/test_event_layout.py checks they agree.
 * Every record is a struct rt_event followed by cap_len bytes copied from the
 * syscall's user buffer (only READ and WRITE carry bytes). */
#ifndef RT_EVENTS_H
#define RT_EVENTS_H

#ifndef CAPTURE_MAX
#define CAPTURE_MAX 4096            /* bytes of a read/write copied; power of two */
#endif

enum rt_kind {
    RT_ACCEPT = 1,   /* fd = new fd; peer_*; aux_ts = handshake done (0 unknown); unix: aux_ts2 = client pid, peer_addr = its comm (unixconn.c) */
    RT_READ = 2,     /* fd, ret = bytes; aux_ts = first unread arrival; aux_ts2 = thread's last epoll wake */
    RT_WRITE = 3,    /* write or writev; fd, ret = bytes */
    RT_CLOSE = 4,    /* fd of a tracked socket or file */
    RT_FSYNC = 5,    /* fsync/fdatasync; fd */
    RT_LOOP = 6,     /* main thread busy span: aux_ts = epoll wake, ts_enter = next epoll entry, ret = ready fds */
    RT_EXEC = 7,     /* uprobe on call(): ts_enter..ts_exit is one command's execution */
    RT_REQ = 8,      /* engine: one request (batch) stitched in the kernel: a struct rt_req */
    /* probes/sched.c (--why). tid is 0 in these: they are no syscall of the thread (the stitcher takes a
     * main-thread record as the end of the commands it read), and the thread is the tgid's main thread. */
    RT_OFFCPU = 9,   /* main thread off the CPU: ts_enter = switch-out, ts_exit = switch-in, aux_ts = wake-up
                      * (0: it was preempted, runnable from ts_enter), ret = prev_state at the switch-out,
                      * aux_ts2 = kernel stack id (SCF_STACK); payload (user space): the stack, folded */
    RT_RUNQ = 10,    /* while the main thread waited for a CPU another task ran there: ts_enter..ts_exit its
                      * slice, ret = its tgid, aux_ts = its tid, fd = the CPU, payload = its comm (16 bytes) */
    RT_FORK = 11,    /* a fork by the target: ts_enter = clone entry (0 unknown), ts_exit = the child exists,
                      * ret = child pid, aux_ts = forking tid, aux_ts2 = RSS bytes (user space);
                      * payload (user space): the child's command line */
    RT_SAMPLE = 12,  /* sample.c (unless --no-why): the main thread on a CPU deep in a busy span. ts_enter = the span's
                      * epoll wake, ts_exit = the sample; aux_ts = user ip, aux_ts2 = user sp, ret = user bp;
                      * payload: 256 bytes of kernel stack ips (fd = how many are valid), then the user
                      * stack copied from sp */
};

enum rt_sched_flags {     /* flags of RT_OFFCPU / RT_FORK; bit 4 (RTF_UNKNOWN_FD) is never used */
    SCF_IN_EPOLL = 1,    /* switched out inside epoll_wait: idle, unless it then waited for the CPU */
    SCF_STACK = 2,       /* aux_ts2 holds a kernel stack id */
    SCF_ANNOTATE = 128,  /* user space completes the record at the drain (stack symbols, RSS, command line) */
};

/* RT_LOOP with sched.c: aux_ts2 = the main thread's user page faults during the span */

enum rt_fd_kind {
    FD_UNKNOWN = 0,  /* not classified yet: records go up so user space can classify it */
    FD_CLIENT = 1,   /* accepted TCP connection */
    FD_AOF = 2,      /* the append-only file */
    FD_IGNORE = 3,   /* anything else: no records */
    FD_FILE = 4,     /* a file the target opened while traced (fds.c): no reads; writes flagged RTF_FILE_FD */
};

enum rt_flags {
    RTF_WRITEV = 1,      /* the write was a writev */
    RTF_FDATASYNC = 2,   /* the fsync was an fdatasync */
    RTF_UNKNOWN_FD = 4,  /* fd was not classified when the record was made */
    RTF_ACCEPT4 = 8,
    RTF_EPOLL_PWAIT = 16,
    RTF_FILE_FD = 32,    /* a write to an FD_FILE fd: user space tells the AOF from other files */
    RTF_ENGINE_RAW = 64, /* engine: bytes the kernel did not parse (user space counts them) */
    RTF_ENGINE_AT_CMD = 128, /* engine: ... and they start at a command (an inline one, a link's REPLCONF) */
};

struct rt_event {
    __u64 ts_enter;      /* CLOCK_MONOTONIC ns */
    __u64 ts_exit;
    __u64 aux_ts;
    __u64 aux_ts2;
    __s64 ret;
    __u32 tgid;
    __u32 tid;
    __s32 fd;
    __u16 kind;
    __u16 flags;
    __u32 cap_len;
    __u16 peer_port;     /* host byte order */
    __u16 family;        /* AF_INET / AF_INET6, 0 when unknown */
    __u8 peer_addr[16];  /* IPv4 in the first 4 bytes */
};

/* The engine's per-request record (probes/engine.c): made only for slow, stalled, sampled
 * requests. tgid/tid/fd/kind/flags sit at the offsets they have in struct rt_event, so code
 * that peeks at raw records (bpf_session.drain) reads them the same way; cap_len bytes of
 * the command and its key follow (never values). A pipelined batch is one record: ncmds
 * commands, cmd_id/argc/cap of the first. */
struct rt_req {
    __u64 read_start;    /* the first read holding the batch's first command */
    __u64 write_end;     /* the write that completed the reply */
    __u64 arrival_ts;    /* bytes reached the socket (0 unknown) */
    __u64 wake_ts;       /* main thread's epoll return before that read */
    __u64 read_end;      /* the last read contributing to the batch */
    __u32 tgid;
    __u32 tid;
    __s32 fd;
    __u16 kind;          /* RT_REQ */
    __u16 flags;         /* enum rt_req_flags */
    __u32 cap_len;
    __u16 cmd_id;        /* the engine's command table id (0: not in the table) */
    __u16 ncmds;         /* commands in the batch */
    __u64 write_start;   /* first write of the reply */
    __u32 bytes_in;      /* request bytes of the batch */
    __u32 bytes_out;     /* reply bytes written */
    __u32 argc;
    __u8 reply_type;     /* enum rt_reply of the first reply */
    __u8 slot;           /* instance slot */
    __u16 busy_ms;       /* main thread's busy span at the reply (ms, saturating) */
};

enum rt_req_flags {      /* bit 4 is RTF_UNKNOWN_FD in struct rt_event: never used here */
    RQF_SLOW = 1,        /* latency >= the slow threshold */
    RQF_SAMPLED = 2,     /* the 1-in-N sample */
    RQF_STALL = 8,       /* replied during a main-thread busy span >= the stall threshold */
    RQF_VICTIM = 16,     /* arrived before such a span ended */
    RQF_OVERFLOW = 32,   /* more commands in the batch than the kernel keeps ids for */
    RQF_REDIRECT = 128,  /* a MOVED/ASK reply: its first RQ_REDIRECT_LEN bytes follow the capture, at
                          * RQ_CAP_ROOM after the header (slot and node, to follow the client there) */
};

#define RQ_CAP_ROOM 64
#define RQ_REDIRECT_LEN 48

enum rt_reply {
    RPL_NONE = 0,        /* not classified */
    RPL_OK = 1,          /* anything but an error or a nil */
    RPL_ERROR = 2,
    RPL_NIL = 3,         /* $-1, *-1, _ */
    RPL_MOVED = 4,
    RPL_ASK = 5,
};

/* Counters user space reads from the `counters` per-CPU array. */
enum rt_counter {
    CNT_LOST = 0,          /* records neither events nor the rescue ring took: gone */
    CNT_LOOP_BUSY_NS = 1,  /* main thread time between epoll wake and next epoll entry */
    CNT_LOOP_IDLE_NS = 2,  /* main thread time inside epoll_wait */
    CNT_LOOPS = 3,
    CNT_REFUSED_FULL = 4,  /* events refused a record and had no room for it */
    CNT_REFUSED_ROOM = 5,  /* events refused a record although it had room (its lock failed) */
    CNT_RESCUED = 6,       /* refused records the rescue ring took */
    CNT_REFUSED_AVAIL_MAX = 7, /* most unconsumed bytes in events at a refusal (a maximum, not a sum) */
    CNT_REFUSED_NS_MAX = 8,    /* longest from a refused record's end time to its refusal (a maximum):
                                * about the reserve's wait, which tells a lock timeout from a deadlock */
    CNT_REFUSED_CONS_POS = 9,  /* events' consumer and producer positions at the last refusal (per CPU) */
    CNT_REFUSED_PROD_POS = 10,
    CNT_MAX = 11,
};

#endif
