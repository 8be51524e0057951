/* Socket and AOF reads and writes of the target: timing plus the first bytes
 * of each client buffer, enough for user space to decode RESP. */

struct rt_iovec {
    __u64 base;
    __u64 len;
};

#define WRITEV_IOVS 4               /* iovecs copied per writev: Redis's first reply blocks */

static __always_inline int io_enter(__u16 kind, int fd, __u64 buf, __u64 count, __u16 flags)
{
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32;
    if (!is_target(tgid))
        return 0;
    __u8 fk = fd_kind(tgid, fd);
    /* Files are never read for clients: a read of /proc/self/stat (Redis, 10 times a second)
     * must not reach user space, where it could meet a socket that reused its fd number. */
    if (fk == FD_IGNORE || (kind == RT_READ && (fk == FD_AOF || fk == FD_FILE)))
        return 0;
    if (fk == FD_UNKNOWN)
        flags |= RTF_UNKNOWN_FD;
    else if (fk == FD_FILE)
        flags |= RTF_UNKNOWN_FD | RTF_FILE_FD;
    enter_syscall_kind(kind, fd, buf, count, flags, fk);
    return 0;
}

static __always_inline void capture_plain(struct rt_record *r, __u64 buf, long ret)
{
    __u32 n = ret > CAPTURE_MAX ? CAPTURE_MAX : (__u32)ret;
    n &= (CAPTURE_MAX * 2 - 1);
    if (n > CAPTURE_MAX)
        n = CAPTURE_MAX;
    if (bpf_probe_read_user(r->data, n, (void *)buf) == 0)
        r->ev.cap_len = n;
}

static __always_inline void capture_iov(struct rt_record *r, __u64 iov_ptr, __u64 iovcnt, long ret)
{
    __u32 off = 0;
    __u64 left = ret;
#pragma unroll
    for (int i = 0; i < WRITEV_IOVS; i++) {
        if (i >= iovcnt || left == 0 || off >= CAPTURE_MAX)
            break;
        struct rt_iovec iov = {};
        if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(iov_ptr + i * sizeof(iov))) != 0)
            break;
        __u64 n = iov.len < left ? iov.len : left;
        __u32 room = CAPTURE_MAX - off;
        if (n > room)
            n = room;
        /* The barriers hide what clang knows of the ranges, so it keeps the masks
         * the verifier needs to bound &data[o] + m within data[]. */
        __u32 o = off;
        __u32 m = n;
        asm volatile("" : "+r"(o), "+r"(m));
        o &= (CAPTURE_MAX - 1);
        m &= (CAPTURE_MAX * 2 - 1);
        if (m > CAPTURE_MAX)
            m = CAPTURE_MAX;
        if (bpf_probe_read_user(&r->data[o], m, (void *)iov.base) != 0)
            break;
        off += m;
        left -= m;
    }
    r->ev.cap_len = off > CAPTURE_MAX ? CAPTURE_MAX : off;
}

static __always_inline int io_exit(long ret)
{
    struct inflight call = {};
    __u64 id = take_call(&call);
    if (!id || (call.kind != RT_READ && call.kind != RT_WRITE))
        return 0;
    /* EAGAIN and friends carry nothing; 0 from a read is the peer closing. */
    if (ret < 0 || (ret == 0 && call.kind == RT_WRITE))
        return 0;

    struct rt_record *r = call_record(call.kind, id, call.fd, &call, ret);
    if (!r)
        return 0;

    __u32 tgid = id >> 32;
    __u32 fk = call.fd_kind;        /* looked up at enter: one map lookup less per record */
    if (fk != FD_AOF && fk != FD_FILE) {   /* file contents are never needed */
        if (call.flags & RTF_WRITEV)
            capture_iov(r, call.buf, call.count, ret);
        else
            capture_plain(r, call.buf, ret);
    }
    if (call.kind == RT_READ) {
        struct fd_key k = {.tgid = tgid, .fd = call.fd};
        __u64 *sk = fd_socks.lookup(&k);
        if (sk) {
            struct sock_info *si = socks.lookup(sk);
            if (si) {
                r->ev.aux_ts = si->arrival_ts;
                si->arrival_ts = 0;
            }
        }
        __u64 *wake = last_wake.lookup(&tgid);
        if (wake)
            r->ev.aux_ts2 = *wake;
    }
    emit(r);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_read)
{
    return io_enter(RT_READ, args->fd, (__u64)args->buf, args->count, 0);
}

TRACEPOINT_PROBE(syscalls, sys_exit_read)
{
    return io_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_write)
{
    return io_enter(RT_WRITE, args->fd, (__u64)args->buf, args->count, 0);
}

TRACEPOINT_PROBE(syscalls, sys_exit_write)
{
    return io_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_writev)
{
    return io_enter(RT_WRITE, args->fd, (__u64)args->vec, args->vlen, RTF_WRITEV);
}

TRACEPOINT_PROBE(syscalls, sys_exit_writev)
{
    return io_exit(args->ret);
}
