/* Fds the target creates that are not connections: files (openat/open/creat), pipes, eventfds.
 * They are marked in fd_kinds as they are made, so their reads never reach user space: a read
 * recorded for an unmarked fd is classified from /proc later, when the fd number may already
 * belong to a client socket (Redis opens /proc/self/stat 10 times a second, on the lowest free
 * number, the one the next accept() gets), and its bytes were decoded as a request.
 * socket() clears whatever mark its number carries, so a mark left by a close the tracer did
 * not see cannot make a new socket a client; close() deletes every mark (conn.c).
 * These syscalls are rare in Redis (and in most processes), so the probes cost little. */

BPF_HASH(pipe_fds, __u32, __u64, 1024);   /* thread -> its pipe2()/pipe() int[2], enter to exit */

static __always_inline void mark_new_fd(long fd, __u8 kind)
{
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (fd < 0 || !is_target(tgid))
        return;
    struct fd_key k = {.tgid = tgid, .fd = (__s32)fd};
    fd_kinds.update(&k, &kind);
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat)
{
    mark_new_fd(args->ret, FD_FILE);
    return 0;
}

#ifdef HAVE_SYS_OPEN                /* x86: musl's open() and old programs use them */
TRACEPOINT_PROBE(syscalls, sys_exit_open)
{
    mark_new_fd(args->ret, FD_FILE);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_creat)
{
    mark_new_fd(args->ret, FD_FILE);
    return 0;
}
#endif

TRACEPOINT_PROBE(syscalls, sys_exit_eventfd2)
{
    mark_new_fd(args->ret, FD_IGNORE);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_socket)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (args->ret < 0 || !is_target(id >> 32))
        return 0;
    struct fd_key k = {.tgid = id >> 32, .fd = (__s32)args->ret};
    fd_kinds.delete(&k);
    fd_socks.delete(&k);
    return 0;
}

static __always_inline int pipe_enter(__u64 fds)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!is_target(id >> 32))
        return 0;
    __u32 tid = (__u32)id;
    pipe_fds.update(&tid, &fds);
    return 0;
}

static __always_inline int pipe_exit(long ret)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!is_target(id >> 32))
        return 0;
    __u32 tid = (__u32)id;
    __u64 *ptr = pipe_fds.lookup(&tid);
    if (!ptr)
        return 0;
    __u64 user = *ptr;
    pipe_fds.delete(&tid);
    int fds[2] = {-1, -1};
    if (ret != 0 || bpf_probe_read_user(fds, sizeof(fds), (void *)user) != 0)
        return 0;
    mark_new_fd(fds[0], FD_IGNORE);
    mark_new_fd(fds[1], FD_IGNORE);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_pipe2)
{
    return pipe_enter((__u64)args->fildes);
}

TRACEPOINT_PROBE(syscalls, sys_exit_pipe2)
{
    return pipe_exit(args->ret);
}

#ifdef HAVE_SYS_PIPE
TRACEPOINT_PROBE(syscalls, sys_enter_pipe)
{
    return pipe_enter((__u64)args->fildes);
}

TRACEPOINT_PROBE(syscalls, sys_exit_pipe)
{
    return pipe_exit(args->ret);
}
#endif
