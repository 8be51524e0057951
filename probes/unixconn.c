/* Unix-socket clients named by the process that connected (pasted before conn.c, whose
 * accept and sk_data_ready probes call the hooks below).
 *
 * accept() gives no address for a unix client, and nothing in Redis's context names it. The
 * client's own connect() does: sys_enter_connect of any process reads the sockaddr_un from user
 * memory and looks its path up among the targets' socket paths (unix_paths, filled by user space);
 * the sk_data_ready that connect() then raises on the listener, in the client's context, is the
 * moment the connection is queued: its pid and comm are appended to the target's queue. Redis
 * accepts queued connections in order, so each unix accept takes the oldest entry: pid in aux_ts2,
 * comm in peer_addr. No kernel struct is read. User space checks the pairing against SO_PEERCRED
 * while the connection is open, and starts the queue over if they disagree (kernel/unixpeer.py). */

#define UNIX_PATH_LEN 108
#define UNIX_QUEUE 1024             /* connections queued and not yet accepted, per target */
#define UNIX_SLOTS 4                /* targets with a unix socket (user space names at most these) */

struct unix_path_key {
    char path[UNIX_PATH_LEN];
};

struct unix_peer {
    __u32 pid;
    __u32 pad;
    char comm[16];
};

BPF_HASH(unix_paths, struct unix_path_key, __u32, 16);  /* socket path -> the target's slot */
BPF_HASH(unix_slots, __u32, __u32, 16);                 /* target tgid -> its slot */
BPF_HASH(unix_connecting, __u32, __u32, 1024);          /* client tid in connect() -> slot */
/* one FIFO per slot (a queue map pushes and pops atomically; BPF_EXIST: a full one drops its oldest) */
BPF_QUEUE(unix_queue0, struct unix_peer, UNIX_QUEUE);
BPF_QUEUE(unix_queue1, struct unix_peer, UNIX_QUEUE);
BPF_QUEUE(unix_queue2, struct unix_peer, UNIX_QUEUE);
BPF_QUEUE(unix_queue3, struct unix_peer, UNIX_QUEUE);
#define UNIX_BPF_EXIST 2

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    __u16 family = 0;
    if (args->addrlen <= 2 || bpf_probe_read_user(&family, sizeof(family), (void *)args->uservaddr) != 0 ||
        family != 1 /* AF_UNIX */)
        return 0;
    struct unix_path_key k = {};
    if (bpf_probe_read_user_str(k.path, sizeof(k.path), (void *)args->uservaddr + 2) <= 1)
        return 0;
    __u32 *slot = unix_paths.lookup(&k);
    if (!slot)
        return 0;
    __u32 tid = (__u32)bpf_get_current_pid_tgid();
    __u32 s = *slot;
    unix_connecting.update(&tid, &s);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
    __u32 tid = (__u32)bpf_get_current_pid_tgid();
    unix_connecting.delete(&tid);
    return 0;
}

/* sk_data_ready of an AF_UNIX socket: when the current thread is connecting to a target's socket,
 * this is its connection being queued on the listener. */
static __always_inline void unix_queued(void)
{
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tid = (__u32)id;
    __u32 *slot = unix_connecting.lookup(&tid);
    if (!slot)
        return;
    __u32 s = *slot;
    unix_connecting.delete(&tid);
    struct unix_peer peer = {.pid = id >> 32};
    bpf_get_current_comm(peer.comm, sizeof(peer.comm));
    if (s == 0)
        unix_queue0.push(&peer, UNIX_BPF_EXIST);
    else if (s == 1)
        unix_queue1.push(&peer, UNIX_BPF_EXIST);
    else if (s == 2)
        unix_queue2.push(&peer, UNIX_BPF_EXIST);
    else if (s == 3)
        unix_queue3.push(&peer, UNIX_BPF_EXIST);
}

/* A unix accept of the target: the oldest queued connection's process, when there is one. */
static __always_inline void unix_accepted(struct rt_record *r)
{
    __u32 tgid = r->ev.tgid;
    __u32 *slot = unix_slots.lookup(&tgid);
    if (!slot)
        return;
    struct unix_peer peer = {};
    long err = -1;      /* bcc declares pop() as returning a pointer: it is the helper's int */
    if (*slot == 0)
        err = (long)unix_queue0.pop(&peer);
    else if (*slot == 1)
        err = (long)unix_queue1.pop(&peer);
    else if (*slot == 2)
        err = (long)unix_queue2.pop(&peer);
    else if (*slot == 3)
        err = (long)unix_queue3.pop(&peer);
    if (err != 0)
        return;
    r->ev.aux_ts2 = peer.pid;
    __builtin_memcpy(r->ev.peer_addr, peer.comm, 16);
}

#define UNIX_QUEUED_HOOK(family) if ((family) == 1) unix_queued()
#define UNIX_ACCEPT_HOOK(r, family) if ((family) == 1) unix_accepted(r)
