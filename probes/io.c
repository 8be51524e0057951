/* Socket and AOF reads and writes of the target: timing plus the first bytes
 * of each client buffer, enough for user space to decode RESP. */

#include "rw.h"

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
