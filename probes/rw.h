/* Read/write entry and the copy of a buffer's first bytes into a record: shared by io.c
 * (every read and write) and engine.c (reads it cannot parse, writes of such connections). */
#ifndef RT_RW_H
#define RT_RW_H

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

#endif
