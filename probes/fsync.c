/* fsync/fdatasync by any thread of the target (main thread with
 * appendfsync always, the bio thread with everysec). */

static __always_inline int fsync_enter(int fd, __u16 flags)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!is_target(id >> 32))
        return 0;
    enter_syscall(RT_FSYNC, fd, 0, 0, flags);
    return 0;
}

static __always_inline int fsync_exit(long ret)
{
    struct inflight call = {};
    __u64 id = take_call(&call);
    if (!id || call.kind != RT_FSYNC)
        return 0;
    struct rt_record *r = call_record(RT_FSYNC, id, call.fd, &call, ret);
    if (!r)
        return 0;
    emit(r);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_fsync)
{
    return fsync_enter(args->fd, 0);
}

TRACEPOINT_PROBE(syscalls, sys_exit_fsync)
{
    return fsync_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_fdatasync)
{
    return fsync_enter(args->fd, RTF_FDATASYNC);
}

TRACEPOINT_PROBE(syscalls, sys_exit_fdatasync)
{
    return fsync_exit(args->ret);
}
