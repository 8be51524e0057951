/* Off-CPU time of each target's main thread (--why): the scheduler's view of a stall.
 *
 * sched_switch: the main thread leaving a CPU notes when, in which state (preempted = runnable, or
 * asleep) and, asleep outside epoll_wait, its kernel stack; coming back, one RT_OFFCPU record when it
 * waited for a CPU at least OFFCPU_MIN_NS, or was away that long outside epoll_wait (blocked). While
 * it waits for a CPU, every task that leaves that CPU after running there at least OFFCPU_MIN_NS is
 * named in an RT_RUNQ record (who ran instead). sched_wakeup notes when a sleeping main thread became
 * runnable and on which CPU. sched_process_fork: one RT_FORK record per fork by a target (not per
 * thread it starts). page_fault_user: the main thread's faults, counted per busy span (loop.c).
 *
 * Only tracepoint arguments are read (no kernel struct): prev_pid/next_pid are tids, and a target's
 * main thread is the thread whose tid is the target's tgid. Pasted before loop.c (its hooks). */

#ifndef OFFCPU_MIN_NS
#define OFFCPU_MIN_NS 1000000ULL
#endif
#define SCHED_MAX_CPUS 512
#define TASK_STATE_MASK 0xff        /* prev_state & 0x100 (TASK_REPORT_MAX) means preempted: still runnable */
#define CLONE_THREAD_FLAG 0x10000ULL

struct offcpu_state {
    __u64 out_ts;                   /* switched out (0: on a CPU) */
    __u64 wake_ts;                  /* woken after a sleep (0: not yet, or preempted) */
    __s64 state;                    /* prev_state at the switch-out */
    __s64 stack;                    /* kernel stack id (< 0: none) */
    __u32 wait_cpu;                 /* the CPU it waits for, while runnable */
    __u32 in_epoll;
};

struct cpu_waiter {                 /* a main thread runnable on this CPU but not running */
    __u64 since;
    __u32 tgid;
    __u32 pad;
};

struct fault_count {
    __u64 total;                    /* user page faults of the main thread */
    __u64 at_wake;                  /* total at the last epoll return */
};

BPF_HASH(offcpu, __u32, struct offcpu_state, 64);          /* main thread (tid == tgid) -> state */
BPF_ARRAY(cpu_waiters, struct cpu_waiter, SCHED_MAX_CPUS);
BPF_PERCPU_ARRAY(cpu_since, __u64, 1);                     /* this CPU's last switch while a main thread waited */
BPF_STACK_TRACE(kstacks, 1024);
BPF_HASH(faults, __u32, struct fault_count, 64);
BPF_HASH(fork_enter, __u32, __u64, 256);                   /* target thread -> clone entry (not threads) */

/* loop.c: faults counted from the epoll return to the epoll entry go in the LOOP record */
static __always_inline void sched_woken(__u32 tgid)
{
    struct fault_count *fc = faults.lookup(&tgid);
    if (fc)
        fc->at_wake = fc->total;
}

static __always_inline void sched_span_end(__u32 tgid, struct rt_record *r)
{
    struct fault_count *fc = faults.lookup(&tgid);
    if (fc)
        r->ev.aux_ts2 = fc->total - fc->at_wake;
}
#define SCHED_WAKE_HOOK(tgid) sched_woken(tgid)
#define SCHED_LOOP_HOOK(tgid, r) sched_span_end(tgid, r)

static __always_inline void runq_slice(struct cpu_waiter *w, __u32 prev, __u64 now)
{
    /* the task leaving this CPU ran here while a main thread waited for it (w). The CPU's last switch
     * is kept only while one waits: a slice that began before the wait counts from the wait's start,
     * so an older value does no harm. */
    int zero = 0;
    __u64 *since = cpu_since.lookup(&zero);
    __u64 slice_start = 0;
    if (since) {
        slice_start = *since;
        *since = now;
    }
    if (prev == w->tgid || prev == 0)
        return;
    __u64 from = slice_start > w->since ? slice_start : w->since;
    if (!from || now < from + OFFCPU_MIN_NS)
        return;
    __u64 id = bpf_get_current_pid_tgid();     /* still the task leaving */
    __u32 cpu = bpf_get_smp_processor_id();
    struct rt_record *r = new_record(RT_RUNQ, ((__u64)w->tgid) << 32, (__s32)cpu);
    if (!r)
        return;
    r->ev.ts_enter = from;
    r->ev.ts_exit = now;
    r->ev.ret = id >> 32;
    r->ev.aux_ts = (__u32)id;
    /* the task leaving is still current here: its comm from the helper, not from the tracepoint
     * record (a ctx pointer plus offset may not be dereferenced, and probe_read_kernel is not used) */
    bpf_get_current_comm(r->data, 16);
    r->ev.cap_len = 16;
    emit(r);
}

static __always_inline void main_out(void *ctx, __u32 tgid, __s64 prev_state, __u64 now, __u32 cpu)
{
    struct offcpu_state st = {.out_ts = now, .state = prev_state, .stack = -1, .wait_cpu = cpu};
    st.in_epoll = main_in_epoll(tgid);
    if (st.state & TASK_STATE_MASK) {
        if (!st.in_epoll)
            st.stack = kstacks.get_stackid(ctx, 0);
    } else if (cpu < SCHED_MAX_CPUS) {
        struct cpu_waiter *w = cpu_waiters.lookup(&cpu);
        if (w) {
            w->since = now;
            w->tgid = tgid;
        }
    }
    offcpu.update(&tgid, &st);
}

static __always_inline void main_in(__u32 tgid, __u64 now)
{
    struct offcpu_state *st = offcpu.lookup(&tgid);
    if (!st || !st->out_ts)
        return;
    __u32 wcpu = st->wait_cpu;
    if (wcpu < SCHED_MAX_CPUS) {
        struct cpu_waiter *w = cpu_waiters.lookup(&wcpu);
        if (w && w->tgid == tgid)
            w->tgid = 0;
    }
    __u64 runnable_from = (st->state & TASK_STATE_MASK) ? st->wake_ts : st->out_ts;
    __u64 waited = runnable_from && now > runnable_from ? now - runnable_from : 0;
    __u64 away = now - st->out_ts;
    if (waited >= OFFCPU_MIN_NS || (!st->in_epoll && away >= OFFCPU_MIN_NS)) {
        struct rt_record *r = new_record(RT_OFFCPU, ((__u64)tgid) << 32, -1);
        if (r) {
            r->ev.ts_enter = st->out_ts;
            r->ev.ts_exit = now;
            r->ev.aux_ts = (st->state & TASK_STATE_MASK) ? st->wake_ts : 0;
            r->ev.ret = st->state;
            r->ev.flags = st->in_epoll ? SCF_IN_EPOLL : 0;
            if (st->stack >= 0) {
                r->ev.aux_ts2 = st->stack;
                r->ev.flags |= SCF_STACK | SCF_ANNOTATE;
            }
            emit(r);
        }
    }
    st->out_ts = 0;
    st->wake_ts = 0;
}

TRACEPOINT_PROBE(sched, sched_switch)
{
    /* every context switch of the host comes here: the clock is read only when a target is involved */
    __u32 cpu = bpf_get_smp_processor_id();
    __u64 now = 0;
    struct cpu_waiter *w = cpu < SCHED_MAX_CPUS ? cpu_waiters.lookup(&cpu) : NULL;
    if (w && w->tgid) {
        now = bpf_ktime_get_ns();
        runq_slice(w, args->prev_pid, now);
    }
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32;
    if ((__u32)id == tgid && is_target(tgid)) {
        if (!now)
            now = bpf_ktime_get_ns();
        main_out(args, tgid, args->prev_state, now, cpu);
    }
    __u32 next = args->next_pid;
    if (next && is_target(next))
        main_in(next, now ? now : bpf_ktime_get_ns());
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup)
{
    __u32 pid = args->pid;
    if (!is_target(pid))
        return 0;
    struct offcpu_state *st = offcpu.lookup(&pid);
    if (!st || !st->out_ts || st->wake_ts)
        return 0;
    __u64 now = bpf_ktime_get_ns();
    st->wake_ts = now;
    __u32 cpu = args->target_cpu;
    st->wait_cpu = cpu;
    if (cpu < SCHED_MAX_CPUS) {
        struct cpu_waiter *w = cpu_waiters.lookup(&cpu);
        if (w) {
            w->since = now;
            w->tgid = pid;
        }
    }
    return 0;
}

#ifdef HAVE_PAGE_FAULT_USER
TRACEPOINT_PROBE(exceptions, page_fault_user)
{
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32;
    if ((__u32)id != tgid || !is_target(tgid))
        return 0;
    struct fault_count *fc = faults.lookup(&tgid);
    if (fc) {
        fc->total += 1;
    } else {
        struct fault_count fresh = {.total = 1};
        faults.update(&tgid, &fresh);
    }
    return 0;
}
#endif

static __always_inline int fork_entered(__u64 clone_flags)
{
    __u64 id = bpf_get_current_pid_tgid();
    if (!is_target(id >> 32) || (clone_flags & CLONE_THREAD_FLAG))
        return 0;                   /* a thread is no fork */
    __u32 tid = (__u32)id;
    __u64 now = bpf_ktime_get_ns();
    fork_enter.update(&tid, &now);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone)
{
    return fork_entered(args->clone_flags);
}

#ifdef HAVE_SYS_CLONE3
TRACEPOINT_PROBE(syscalls, sys_enter_clone3)
{
    __u64 flags = 0;    /* struct clone_args starts with its flags (user memory) */
    bpf_probe_read_user(&flags, sizeof(flags), (void *)args->uargs);
    return fork_entered(flags);
}
#endif

#ifdef HAVE_SYS_FORK                /* x86: the legacy fork() syscall */
TRACEPOINT_PROBE(syscalls, sys_enter_fork)
{
    return fork_entered(0);
}
#endif

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    __u64 id = bpf_get_current_pid_tgid();      /* the parent */
    if (!is_target(id >> 32))
        return 0;
    __u32 tid = (__u32)id;
    __u64 *entered = fork_enter.lookup(&tid);
    if (!entered)
        return 0;                   /* a thread */
    struct rt_record *r = new_record(RT_FORK, id & 0xffffffff00000000ULL, -1);
    if (r) {
        r->ev.ts_enter = *entered;
        r->ev.ts_exit = bpf_ktime_get_ns();
        r->ev.ret = args->child_pid;
        r->ev.aux_ts = tid;
        r->ev.flags = SCF_ANNOTATE;
        emit(r);
    }
    fork_enter.delete(&tid);
    return 0;
}
