/* Optional uprobes on redis-server's call(): exact command execution time.
 * Lua scripts call call() again from inside: only the outermost call counts. */

struct exec_state {
    __u64 ts;
    __u32 depth;
};

BPF_HASH(exec_inflight, __u32, struct exec_state, 256);

int exec_start(struct pt_regs *ctx)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!is_target(id >> 32))
        return 0;
    __u32 tid = (__u32)id;
    struct exec_state *st = exec_inflight.lookup(&tid);
    if (st && st->depth > 0) {
        st->depth++;
        return 0;
    }
    if (st) {                       /* the thread's slot: rewritten in place, no map update */
        st->ts = bpf_ktime_get_ns();
        st->depth = 1;
        return 0;
    }
    struct exec_state fresh = {.ts = bpf_ktime_get_ns(), .depth = 1};
    exec_inflight.update(&tid, &fresh);
    return 0;
}

int exec_end(struct pt_regs *ctx)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!is_target(id >> 32))
        return 0;
    __u32 tid = (__u32)id;
    struct exec_state *st = exec_inflight.lookup(&tid);
    if (!st || st->depth == 0)
        return 0;
    if (--st->depth > 0)
        return 0;
    struct rt_record *r = new_record(RT_EXEC, id, -1);
    if (!r)
        return 0;
    r->ev.ts_enter = st->ts;
    r->ev.ts_exit = bpf_ktime_get_ns();
    emit(r);
    return 0;
}
