/* On-CPU attribution (unless --no-why): a cpu-clock perf event opened per target main thread (pid = its tid),
 * so it ticks only while that thread runs: nothing while Redis sleeps in epoll_wait. A tick makes a
 * record only deep in a busy span (SAMPLE_AFTER_NS since the epoll wake that loop.c keeps), so
 * the ordinary short iterations of a loaded server cost one map lookup per tick and no record.
 * The record holds the kernel stack (ips) and a snapshot of the user stack from sp: Debian's
 * redis-server has no frame pointers, so user space unwinds it with .eh_frame (kernel/unwind.py),
 * as `perf --call-graph dwarf` does. */
#include <uapi/linux/bpf_perf_event.h>

#ifndef SAMPLE_AFTER_NS
#define SAMPLE_AFTER_NS 5000000ULL  /* a busy span this old is sampled (user space passes stall / 10) */
#endif
#define SAMPLE_KSTACK_BYTES 256     /* 32 kernel frames */
#define SAMPLE_USTACK_BYTES 8192    /* user stack copied from sp (perf's default dump size) */

struct rt_sample_rec {
    struct rt_event ev;
    __u8 kstack[SAMPLE_KSTACK_BYTES];
    __u8 ustack[SAMPLE_USTACK_BYTES];
};

BPF_PERCPU_ARRAY(sample_scratch, struct rt_sample_rec, 1);

int on_cpu_sample(struct bpf_perf_event_data *ctx)
{
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32, tid = (__u32)id;
    if (tid != tgid || !is_target(tgid))
        return 0;
    __u64 *wake = LOOP_WAKE_OF(tgid);      /* loop.c's: the engine keeps it in its instance slot */
    if (!wake || !*wake)
        return 0;
    __u64 now = bpf_ktime_get_ns();
    if (now < *wake + SAMPLE_AFTER_NS)
        return 0;
    if (main_in_epoll(tgid))
        return 0;                   /* inside epoll_wait: idle, not busy */
    int zero = 0;
    struct rt_sample_rec *r = sample_scratch.lookup(&zero);
    if (!r)
        return 0;
    __builtin_memset(&r->ev, 0, sizeof(r->ev));
    r->ev.kind = RT_SAMPLE;
    r->ev.tgid = tgid;
    r->ev.tid = tid;
    r->ev.ts_enter = *wake;
    r->ev.ts_exit = now;
    /* The user registers: the tick's own when it interrupted user code. In the kernel (a syscall,
     * a page fault) only the user ip is known, from the kernel's own user stack walk: the saved
     * user registers lie in kernel memory, which the probes never read. Such a sample keeps its
     * kernel stack and the user function it came from, not that function's callers. */
    __u64 ip = 0, sp = 0, bp = 0;
    if ((ctx->regs.cs & 3) == 3) {
        ip = ctx->regs.ip;
        sp = ctx->regs.sp;
        bp = ctx->regs.bp;
    } else if (bpf_get_stack(ctx, &ip, sizeof(ip), BPF_F_USER_STACK) < 0) {
        ip = 0;
    }
    r->ev.aux_ts = ip;
    r->ev.aux_ts2 = sp;
    r->ev.ret = (__s64)bp;
    long klen = bpf_get_stack(ctx, r->kstack, SAMPLE_KSTACK_BYTES, 0);
    if (klen < 0)
        klen = 0;
    r->ev.fd = klen > SAMPLE_KSTACK_BYTES ? SAMPLE_KSTACK_BYTES : klen;
    /* the main thread's stack may end less than 8 KiB above sp (main's frame is near its top):
     * a read past the mapping fails whole, so smaller snapshots are tried in turn */
    __u32 ulen = 0;
#pragma unroll
    for (int i = 0; i < 3; i++) {
        __u32 n = SAMPLE_USTACK_BYTES >> (2 * i);   /* 8 KiB, 2 KiB, 512 bytes */
        if (sp && bpf_probe_read_user(r->ustack, n, (void *)sp) == 0) {
            ulen = n;
            break;
        }
    }
    r->ev.cap_len = SAMPLE_KSTACK_BYTES + ulen;
    __u32 size = sizeof(struct rt_event) + SAMPLE_KSTACK_BYTES + ulen;
    if (size > sizeof(*r))
        return 0;
    /* a refused sample is dropped, not rescued: it costs one share point, never a connection's records */
    events.ringbuf_output(r, size, BPF_RB_NO_WAKEUP_FLAG);
    return 0;
}
