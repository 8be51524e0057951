/* Is a target's main thread inside epoll_wait (idle, not busy)? loop.c keeps the answer: in the
 * engine's per-instance slot (LOOP_ENTERED_OF, engine.c pasted first) or as the thread's inflight
 * RT_LOOP entry (the full path). sched.c (pasted before loop.c) and sample.c (after it) ask here,
 * so both follow whichever loop.c keeps; reading only one of them missed every busy span of the
 * other mode. Pasted (bpf_session.probe_source) before the first of sched.c and loop.c, not
 * #included: bcc rewrites map calls only in the main text. */

static __always_inline int main_in_epoll(__u32 tgid)
{
#ifdef LOOP_ENTERED_OF
    __u64 *entered = LOOP_ENTERED_OF(tgid);
    return entered && *entered;
#else
    struct inflight *in = inflight.lookup(&tgid);   /* the main thread: tid == tgid */
    return in && in->kind == RT_LOOP;
#endif
}
