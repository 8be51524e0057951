/* Connections: accept/accept4, close, handshake completion and request-byte
 * arrival (sock tracepoints, which run in softirq context of any task). */

#ifndef ENGINE_ACCEPT_HOOK          /* engine.c (pasted before) keeps per-connection state */
#define ENGINE_ACCEPT_HOOK(fk)
#define ENGINE_CLOSE_HOOK(fk)
#endif
#ifndef UNIX_ACCEPT_HOOK            /* unixconn.c (pasted before, for targets with a unix socket) */
#define UNIX_ACCEPT_HOOK(r, family)
#define UNIX_QUEUED_HOOK(family)
#endif

static __always_inline int accept_enter(int fd, __u64 sockaddr, __u16 flags)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!is_target(id >> 32))
        return 0;
    enter_syscall(RT_ACCEPT, fd, sockaddr, 0, flags);
    return 0;
}

static __always_inline int accept_exit(long ret)
{
    struct inflight call = {};
    __u64 id = take_call(&call);
    if (!id || ret < 0 || call.kind != RT_ACCEPT)
        return 0;

    struct rt_record *r = call_record(RT_ACCEPT, id, (__s32)ret, &call, ret);
    if (!r)
        return 0;

    struct peer_key pk = {};
    if (call.buf) {
        __u16 family = 0, nport = 0;
        bpf_probe_read_user(&family, sizeof(family), (void *)call.buf);
        bpf_probe_read_user(&nport, sizeof(nport), (void *)(call.buf + 2));
        pk.family = family;
        pk.port = __builtin_bswap16(nport);
        if (family == 2)
            bpf_probe_read_user(pk.addr, 4, (void *)(call.buf + 4));
        else if (family == 10)
            bpf_probe_read_user(pk.addr, 16, (void *)(call.buf + 8));
    }
    r->ev.family = pk.family;
    r->ev.peer_port = pk.port;
    __builtin_memcpy(r->ev.peer_addr, pk.addr, 16);
    UNIX_ACCEPT_HOOK(r, pk.family);

    struct fd_key fk = {.tgid = id >> 32, .fd = (__s32)ret};
    __u8 kind = FD_CLIENT;
    fd_kinds.update(&fk, &kind);
    ENGINE_ACCEPT_HOOK(&fk);
    __u64 *skaddr = peers.lookup(&pk);
    if (skaddr) {
        __u64 sk = *skaddr;
        fd_socks.update(&fk, &sk);
        struct sock_info *si = socks.lookup(&sk);
        if (si)
            r->ev.aux_ts = si->established_ts;
        peers.delete(&pk);
    }
    emit(r);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept)
{
    return accept_enter(args->fd, (__u64)args->upeer_sockaddr, 0);
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept)
{
    return accept_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept4)
{
    return accept_enter(args->fd, (__u64)args->upeer_sockaddr, RTF_ACCEPT4);
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept4)
{
    return accept_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!is_target(id >> 32))
        return 0;
    struct fd_key fk = {.tgid = id >> 32, .fd = (__s32)args->fd};
    __u8 *kind = fd_kinds.lookup(&fk);
    if (!kind)
        return 0;
    __u8 k = *kind;
    ENGINE_CLOSE_HOOK(&fk);
    fd_kinds.delete(&fk);
    fd_socks.delete(&fk);
    if (k != FD_CLIENT && k != FD_AOF)
        return 0;
    struct rt_record *r = new_record(RT_CLOSE, id, fk.fd);
    if (!r)
        return 0;
    r->ev.ts_enter = r->ev.ts_exit = bpf_ktime_get_ns();
    r->ev.ret = k;
    emit(r);
    return 0;
}

/* Handshake done on a target's listening port: remember the child socket by
 * the peer address accept() will return, and when it became acceptable. */
TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != 6)
        return 0;
    __u64 sk = (__u64)args->skaddr;
    if (args->newstate == 7 /* TCP_CLOSE */) {
        socks.delete(&sk);
        return 0;
    }
    if (args->oldstate != 3 /* TCP_SYN_RECV */ || args->newstate != 1 /* TCP_ESTABLISHED */)
        return 0;
    __u16 sport = args->sport;
    if (!listen_ports.lookup(&sport))
        return 0;
    struct peer_key pk = {.port = args->dport, .family = args->family};
    if (args->family == 2)
        __builtin_memcpy(pk.addr, args->daddr, 4);
    else
        __builtin_memcpy(pk.addr, args->daddr_v6, 16);
    struct sock_info si = {.established_ts = bpf_ktime_get_ns()};
    socks.update(&sk, &si);
    peers.update(&pk, &sk);
    return 0;
}

/* Request bytes reached the socket: start of the time they wait for Redis. */
TRACEPOINT_PROBE(sock, sk_data_ready)
{
    UNIX_QUEUED_HOOK(args->family);
    __u64 sk = (__u64)args->skaddr;
    struct sock_info *si = socks.lookup(&sk);
    if (si && si->arrival_ts == 0)
        si->arrival_ts = bpf_ktime_get_ns();
    return 0;
}
