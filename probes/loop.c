/* The main thread's event loop: each epoll return starts a busy span that
 * ends at the next epoll entry. Long spans are stalls; all spans feed counters. */

#ifndef ENGINE_LOOP_HOOK            /* engine.c (pasted before) keeps wakes and ends of long spans */
#define ENGINE_LOOP_HOOK(tgid, busy, now)
#endif
#ifndef LOOP_WAKE_OF                /* where the main thread's last epoll return is kept: engine.c keeps it
                                     * in its per-instance array (an inlined lookup, not a hash's) */
static __always_inline __u64 *loop_wake_of(__u32 tgid)
{
    return last_wake.lookup(&tgid);     /* bcc rewrites map calls in functions, not in macros */
}
#define LOOP_WAKE_OF(tgid) loop_wake_of(tgid)
#endif
#ifndef SCHED_LOOP_HOOK             /* sched.c (pasted before) counts page faults per span */
#define SCHED_LOOP_HOOK(tgid, r)
#define SCHED_WAKE_HOOK(tgid)
#endif

static __always_inline int loop_enter(void)
{
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32, tid = (__u32)id;
    if (tid != tgid || !is_target(tgid))
        return 0;
    __u64 now = bpf_ktime_get_ns();
    __u64 *wake = LOOP_WAKE_OF(tgid);
    if (wake && *wake) {
        __u64 busy = now - *wake;
        count_add(CNT_LOOP_BUSY_NS, busy);
        count_add(CNT_LOOPS, 1);
        ENGINE_LOOP_HOOK(tgid, busy, now);
        if (busy >= LOOP_MIN_NS) {
            struct rt_record *r = new_record(RT_LOOP, id, -1);
            if (r) {
                r->ev.aux_ts = *wake;
                r->ev.ts_enter = now;
                r->ev.ts_exit = now;
                SCHED_LOOP_HOOK(tgid, r);
                emit(r);
            }
        }
    }
#ifdef LOOP_ENTERED_OF               /* engine.c: the entry's time in the instance's slot, no hash update */
    __u64 *entered = LOOP_ENTERED_OF(tgid);
    if (entered)
        *entered = now;
#else
    enter_syscall(RT_LOOP, -1, 0, 0, 0);
#endif
    return 0;
}

static __always_inline int loop_exit(long ret)
{
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32, tid = (__u32)id;
    if (tid != tgid || !is_target(tgid))
        return 0;
    __u64 now = bpf_ktime_get_ns();
#ifdef LOOP_ENTERED_OF
    __u64 *entered = LOOP_ENTERED_OF(tgid);
    if (entered && *entered) {
        count_add(CNT_LOOP_IDLE_NS, now - *entered);
        *entered = 0;
    }
#else
    struct inflight *in = inflight_take(tid);
    if (in && in->kind == RT_LOOP) {
        count_add(CNT_LOOP_IDLE_NS, now - in->ts);
        in->kind = RT_NONE;
    }
#endif
    /* Also when the entry was not seen (attached while the thread slept in epoll_wait):
     * otherwise the first busy span after attaching, maybe a stall, would go unmeasured. */
    __u64 *wake = LOOP_WAKE_OF(tgid);
    if (wake)
        *wake = now;                /* in place: no map update on every loop iteration */
    else
        last_wake.update(&tgid, &now);
    SCHED_WAKE_HOOK(tgid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_epoll_wait)
{
    return loop_enter();
}

TRACEPOINT_PROBE(syscalls, sys_exit_epoll_wait)
{
    return loop_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_epoll_pwait)
{
    return loop_enter();
}

TRACEPOINT_PROBE(syscalls, sys_exit_epoll_pwait)
{
    return loop_exit(args->ret);
}
