/* Compiled Analyzer.on_request (tracer/analyze/analysis.py): the per-request counters.
 *
 * The Python method stays the reference; this is the same arithmetic on the same objects (the
 * analyzer's attributes, its dicts, the histogram's slots), so snapshots and reports read them
 * exactly as before. A request it does not handle — a command row not made yet, a key that is not
 * a str, a timestamp outside 0..2^63 — goes to the Python method whole, decided before anything
 * changed. Sums and comparisons of the analyzer's own counters are done on Python ints (no
 * overflow); the request's timestamps are checked to fit in int64 first.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *reference;          /* Analyzer.on_request (pure Python) */
static PyObject *undecodable;        /* schema.UNDECODABLE */
static PyObject *heappush, *heapreplace;
static PyObject *lost_type;
static PyObject *detector_type;      /* diagnosis.StallDetector: its on_request is inlined below */          /* the reply_type of a request whose reply was lost: not unanswered */
static long long ns_per_s;
static long slow_window_keep;        /* SLOW_WINDOW_S + 2 */
static long long hist_max_ns;
static long hist_sub_bits, hist_linear, hist_shift, hist_max_idx;

static PyObject *s_commands, *s_command, *s_key, *s_requests, *s_count, *s_first_ts, *s_last_ts, *s_req_secs,
    *s_secs, *s_counts, *s_add, *s_hist, *s_seq, *s_slow_secs, *s_top_n, *s_unanswered, *s_exec_ns,
    *s_exec_total_ns, *s_phase_exec_ns, *s_phase_sq_ns, *s_phase_wait_ns, *s_phase_rw_ns, *s_hot_keys,
    *s_reply_bytes, *s_big_keys, *s_floor, *s_values, *s_cap, *s_conn_id, *s_live_conns, *s_detector,
    *s_on_request, *s_reply_type, *s_open, *s_lookback, *s_now, *s_lookback_ns, *s_lookback_max, *s_popleft,
    *s_append, *s_sum, *s_min, *s_max, *s_lo, *s_hi;
static PyObject *req_ts_names[8];

static int intern_all(void)
{
#define I(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    I(s_commands, "commands"); I(s_command, "command"); I(s_key, "key"); I(s_requests, "requests");
    I(s_count, "count"); I(s_first_ts, "first_ts"); I(s_last_ts, "last_ts"); I(s_req_secs, "req_secs");
    I(s_secs, "secs"); I(s_counts, "counts"); I(s_add, "add"); I(s_hist, "hist"); I(s_seq, "seq");
    I(s_slow_secs, "slow_secs"); I(s_top_n, "top_n"); I(s_unanswered, "unanswered"); I(s_exec_ns, "exec_ns");
    I(s_exec_total_ns, "exec_total_ns"); I(s_phase_exec_ns, "phase_exec_ns"); I(s_phase_sq_ns, "phase_sq_ns");
    I(s_phase_wait_ns, "phase_wait_ns"); I(s_phase_rw_ns, "phase_rw_ns"); I(s_hot_keys, "hot_keys");
    I(s_reply_bytes, "reply_bytes"); I(s_big_keys, "big_keys"); I(s_floor, "floor"); I(s_values, "values");
    I(s_cap, "cap"); I(s_conn_id, "conn_id"); I(s_live_conns, "live_conns"); I(s_detector, "detector");
    I(s_on_request, "on_request"); I(s_reply_type, "reply_type"); I(s_open, "open"); I(s_lookback, "lookback");
    I(s_now, "now"); I(s_lookback_ns, "lookback_ns"); I(s_lookback_max, "lookback_max"); I(s_popleft, "popleft");
    I(s_append, "append"); I(s_sum, "sum"); I(s_min, "min"); I(s_max, "max"); I(s_lo, "_lo");
    I(s_hi, "_hi");
    I(req_ts_names[0], "arrival_ts"); I(req_ts_names[1], "wake_ts"); I(req_ts_names[2], "read_start_ts");
    I(req_ts_names[3], "read_end_ts"); I(req_ts_names[4], "exec_start_ts"); I(req_ts_names[5], "exec_end_ts");
    I(req_ts_names[6], "reply_start_ts"); I(req_ts_names[7], "reply_end_ts");
#undef I
    return 0;
}

/* configure(reference, UNDECODABLE, heappush, heapreplace, NS_PER_S, SLOW_WINDOW_S + 2,
 *           (SUB_BITS, MAX_NS, NBUCKETS - 1), lost reply type, StallDetector) */
static PyObject *py_configure(PyObject *self, PyObject *args)
{
    PyObject *ref, *und, *push, *replace, *lost, *dtype;
    if (!PyArg_ParseTuple(args, "OUOOLl(lLl)UO!", &ref, &und, &push, &replace, &ns_per_s, &slow_window_keep,
                          &hist_sub_bits, &hist_max_ns, &hist_max_idx, &lost, &PyType_Type, &dtype))
        return NULL;
    if (ns_per_s <= 0 || slow_window_keep < 0 || hist_sub_bits <= 0 || hist_sub_bits > 20) {
        PyErr_SetString(PyExc_ValueError, "bad constants");
        return NULL;
    }
    hist_linear = 2L << hist_sub_bits;
    hist_shift = hist_sub_bits + 1;
    Py_XSETREF(reference, Py_NewRef(ref));
    Py_XSETREF(undecodable, Py_NewRef(und));
    Py_XSETREF(heappush, Py_NewRef(push));
    Py_XSETREF(heapreplace, Py_NewRef(replace));
    Py_XSETREF(lost_type, Py_NewRef(lost));
    Py_XSETREF(detector_type, Py_NewRef(dtype));
    Py_RETURN_NONE;
}

/* obj.name += delta (Python ints) */
static int add_attr(PyObject *obj, PyObject *name, long long delta)
{
    PyObject *o = PyObject_GetAttr(obj, name);
    if (o == NULL)
        return -1;
    PyObject *d = PyLong_FromLongLong(delta);
    PyObject *s = d ? PyNumber_Add(o, d) : NULL;
    Py_DECREF(o);
    Py_XDECREF(d);
    if (s == NULL)
        return -1;
    int r = PyObject_SetAttr(obj, name, s);
    Py_DECREF(s);
    return r;
}

static int set_attr_ll(PyObject *obj, PyObject *name, long long v)
{
    PyObject *o = PyLong_FromLongLong(v);
    if (o == NULL)
        return -1;
    int r = PyObject_SetAttr(obj, name, o);
    Py_DECREF(o);
    return r;
}

/* compare obj.name with v: -1 error, else sets *cmp to -1/0/1 */
static int cmp_attr(PyObject *obj, PyObject *name, long long v, int *cmp)
{
    PyObject *o = PyObject_GetAttr(obj, name);
    if (o == NULL)
        return -1;
    PyObject *w = PyLong_FromLongLong(v);
    if (w == NULL) {
        Py_DECREF(o);
        return -1;
    }
    int lt = PyObject_RichCompareBool(o, w, Py_LT);
    int gt = lt == 0 ? PyObject_RichCompareBool(o, w, Py_GT) : 0;
    Py_DECREF(o);
    Py_DECREF(w);
    if (lt < 0 || gt < 0)
        return -1;
    *cmp = lt ? -1 : gt;
    return 0;
}

/* _Secs.add(sec) as on_request inlines it: counts[sec] += 1, or the add() call for a new second */
static int count_second(PyObject *secs, PyObject *sec)
{
    PyObject *counts = PyObject_GetAttr(secs, s_counts);
    if (counts == NULL)
        return -1;
    int r = -1;
    PyObject *c = PyDict_GetItemWithError(counts, sec);
    if (c == NULL) {
        if (!PyErr_Occurred()) {
            PyObject *x = PyObject_CallMethodOneArg(secs, s_add, sec);
            r = x ? 0 : -1;
            Py_XDECREF(x);
        }
    } else {
        PyObject *one = PyLong_FromLong(1);
        PyObject *n = one ? PyNumber_Add(c, one) : NULL;
        Py_XDECREF(one);
        if (n != NULL) {
            r = PyDict_SetItem(counts, sec, n);
            Py_DECREF(n);
        }
    }
    Py_DECREF(counts);
    return r;
}

static int bit_length(unsigned long long v)
{
    return v ? 64 - __builtin_clzll(v) : 0;
}

/* LatencyHistogram.add(ns) for 0 <= ns < 2^63 */
static int hist_add(PyObject *hist, long long ns)
{
    long long idx;
    if (ns < hist_linear)
        idx = ns;
    else if (ns < hist_max_ns) {
        int e = bit_length((unsigned long long)ns) - (int)hist_shift;
        idx = ((long long)e << hist_sub_bits) + (ns >> e);
    } else
        idx = hist_max_idx;
    PyObject *counts = PyObject_GetAttr(hist, s_counts);
    if (counts == NULL)
        return -1;
    if (!PyList_Check(counts) || idx >= PyList_GET_SIZE(counts)) {
        Py_DECREF(counts);
        PyErr_SetString(PyExc_TypeError, "histogram counts are not the expected list");
        return -1;
    }
    PyObject *one = PyLong_FromLong(1);
    PyObject *n = one ? PyNumber_Add(PyList_GET_ITEM(counts, idx), one) : NULL;
    Py_XDECREF(one);
    if (n == NULL) {
        Py_DECREF(counts);
        return -1;
    }
    PyList_SetItem(counts, idx, n);   /* steals n */
    Py_DECREF(counts);
    int cmp, empty;
    PyObject *count = PyObject_GetAttr(hist, s_count);
    if (count == NULL)
        return -1;
    empty = !PyObject_IsTrue(count);
    Py_DECREF(count);
    if (cmp_attr(hist, s_min, ns, &cmp) < 0)
        return -1;
    if ((empty || cmp > 0) && set_attr_ll(hist, s_min, ns) < 0)
        return -1;
    if (cmp_attr(hist, s_max, ns, &cmp) < 0)
        return -1;
    if (cmp < 0 && set_attr_ll(hist, s_max, ns) < 0)
        return -1;
    if (add_attr(hist, s_count, 1) < 0 || add_attr(hist, s_sum, ns) < 0)
        return -1;
    if (cmp_attr(hist, s_lo, idx, &cmp) < 0)
        return -1;
    if (cmp > 0 && set_attr_ll(hist, s_lo, idx) < 0)
        return -1;
    if (cmp_attr(hist, s_hi, idx, &cmp) < 0)
        return -1;
    if (cmp < 0 && set_attr_ll(hist, s_hi, idx) < 0)
        return -1;
    return 0;
}

/* the slowest requests of second sec: a min-heap of (latency, -seq, req), top_n long */
static int slow_offer(PyObject *a, PyObject *sec, long long latency, PyObject *req)
{
    PyObject *slow = PyObject_GetAttr(a, s_slow_secs);
    if (slow == NULL)
        return -1;
    int r = -1;
    PyObject *heap = PyDict_GetItemWithError(slow, sec);
    PyObject *seq = NULL, *neg = NULL, *lat = NULL, *entry = NULL, *topn = NULL;
    if (heap != NULL) {
        Py_INCREF(heap);
    } else {
        if (PyErr_Occurred() || (heap = PyList_New(0)) == NULL || PyDict_SetItem(slow, sec, heap) < 0)
            goto out;
        if (PyDict_GET_SIZE(slow) > slow_window_keep) {
            PyObject *keys = PyDict_Keys(slow);
            if (keys == NULL || PyList_Sort(keys) < 0) {
                Py_XDECREF(keys);
                goto out;
            }
            Py_ssize_t drop = PyList_GET_SIZE(keys) - slow_window_keep;
            for (Py_ssize_t i = 0; i < drop; i++) {
                if (PyDict_DelItem(slow, PyList_GET_ITEM(keys, i)) < 0) {
                    Py_DECREF(keys);
                    goto out;
                }
            }
            Py_DECREF(keys);
        }
    }
    if (add_attr(a, s_seq, 1) < 0 || (seq = PyObject_GetAttr(a, s_seq)) == NULL || (neg = PyNumber_Negative(seq)) == NULL ||
        (lat = PyLong_FromLongLong(latency)) == NULL || (topn = PyObject_GetAttr(a, s_top_n)) == NULL)
        goto out;
    if (!PyList_Check(heap)) {
        PyErr_SetString(PyExc_TypeError, "slow_secs holds a non-list");
        goto out;
    }
    PyObject *len = PyLong_FromSsize_t(PyList_GET_SIZE(heap));
    int room = len ? PyObject_RichCompareBool(len, topn, Py_LT) : -1;
    Py_XDECREF(len);
    if (room < 0)
        goto out;
    PyObject *fn = NULL;
    if (room) {
        fn = heappush;
    } else {
        if (PyList_GET_SIZE(heap) == 0) {   /* top_n <= 0: heap[0] raises in Python too */
            PyErr_SetString(PyExc_IndexError, "list index out of range");
            goto out;
        }
        PyObject *head = PyList_GET_ITEM(heap, 0);
        PyObject *hl = PyTuple_Check(head) && PyTuple_GET_SIZE(head) ? PyTuple_GET_ITEM(head, 0) : NULL;
        int gt = hl ? PyObject_RichCompareBool(lat, hl, Py_GT) : -1;
        if (gt < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "slow heap entry is not a tuple");
            goto out;
        }
        if (gt)
            fn = heapreplace;
    }
    if (fn != NULL) {
        entry = PyTuple_Pack(3, lat, neg, req);
        PyObject *x = entry ? PyObject_CallFunctionObjArgs(fn, heap, entry, NULL) : NULL;
        if (x == NULL)
            goto out;
        Py_DECREF(x);
    }
    r = 0;
out:
    Py_XDECREF(entry);
    Py_XDECREF(topn);
    Py_XDECREF(lat);
    Py_XDECREF(neg);
    Py_XDECREF(seq);
    Py_XDECREF(heap);
    Py_DECREF(slow);
    return r;
}

/* the hot and big keys */
static int count_key(PyObject *a, PyObject *key, PyObject *req)
{
    PyObject *hot = PyObject_GetAttr(a, s_hot_keys);
    if (hot == NULL)
        return -1;
    PyObject *counts = PyObject_GetAttr(hot, s_counts);
    int r = -1;
    if (counts == NULL) {
        Py_DECREF(hot);
        return -1;
    }
    PyObject *c = PyDict_GetItemWithError(counts, key);
    if (c == NULL) {
        PyObject *x = PyErr_Occurred() ? NULL : PyObject_CallMethodOneArg(hot, s_add, key);
        r = x ? 0 : -1;
        Py_XDECREF(x);
    } else {
        PyObject *one = PyLong_FromLong(1);
        PyObject *n = one ? PyNumber_Add(c, one) : NULL;
        Py_XDECREF(one);
        r = n ? PyDict_SetItem(counts, key, n) : -1;
        Py_XDECREF(n);
    }
    Py_DECREF(counts);
    Py_DECREF(hot);
    if (r < 0)
        return -1;
    PyObject *rb = PyObject_GetAttr(req, s_reply_bytes);
    if (rb == NULL)
        return -1;
    int any = PyObject_IsTrue(rb);
    if (any <= 0) {
        Py_DECREF(rb);
        return any;
    }
    r = -1;
    PyObject *big = PyObject_GetAttr(a, s_big_keys), *floor = NULL, *values = NULL, *cap = NULL, *len = NULL;
    if (big == NULL || (floor = PyObject_GetAttr(big, s_floor)) == NULL || (values = PyObject_GetAttr(big, s_values)) == NULL ||
        (cap = PyObject_GetAttr(big, s_cap)) == NULL)
        goto out;
    Py_ssize_t nvalues = PyObject_Length(values);
    if (nvalues < 0 || (len = PyLong_FromSsize_t(nvalues)) == NULL)
        goto out;
    int above = PyObject_RichCompareBool(rb, floor, Py_GT);
    int room = above == 0 ? PyObject_RichCompareBool(len, cap, Py_LT) : 0;
    if (above < 0 || room < 0)
        goto out;
    if (above || room) {
        PyObject *x = PyObject_CallMethodObjArgs(big, s_add, key, rb, NULL);
        if (x == NULL)
            goto out;
        Py_DECREF(x);
    } else {
        PyObject *v = PyDict_Check(values) ? PyDict_GetItemWithError(values, key) : NULL;
        if (v == NULL && PyErr_Occurred())
            goto out;
        if (v != NULL) {
            int gt = PyObject_RichCompareBool(rb, v, Py_GT);
            if (gt < 0 || (gt && PyDict_SetItem(values, key, rb) < 0))
                goto out;
        }
    }
    r = 0;
out:
    Py_XDECREF(len);
    Py_XDECREF(cap);
    Py_XDECREF(values);
    Py_XDECREF(floor);
    Py_XDECREF(big);
    Py_DECREF(rb);
    return r;
}

/* StallDetector.on_request(req, t) with no stall open (the common case): the request joins the
 * lookback window, which is trimmed to lookback_ns and lookback_max. With stalls open, the method. */
static PyObject *detector_on_request(PyObject *detector, PyObject *req, PyObject *t)
{
    if (!Py_IS_TYPE(detector, (PyTypeObject *)detector_type))
        return PyObject_CallMethodObjArgs(detector, s_on_request, req, t, NULL);
    int open = 0;
    PyObject *o = PyObject_GetAttr(detector, s_open);
    if (o == NULL || (open = PyObject_IsTrue(o)) != 0) {
        Py_XDECREF(o);
        return open < 0 ? NULL : PyObject_CallMethodObjArgs(detector, s_on_request, req, t, NULL);
    }
    Py_DECREF(o);
    PyObject *result = NULL, *entry = NULL, *now = NULL, *span = NULL, *limit = NULL, *max = NULL;
    PyObject *lookback = PyObject_GetAttr(detector, s_lookback);
    if (lookback == NULL || (entry = PyTuple_Pack(2, t, req)) == NULL)
        goto out;
    PyObject *x = PyObject_CallMethodOneArg(lookback, s_append, entry);
    if (x == NULL)
        goto out;
    Py_DECREF(x);
    if ((now = PyObject_GetAttr(detector, s_now)) == NULL)
        goto out;
    int later = PyObject_RichCompareBool(t, now, Py_GT);
    if (later < 0)
        goto out;
    if (later) {
        if (PyObject_SetAttr(detector, s_now, t) < 0)
            goto out;
        Py_SETREF(now, Py_NewRef(t));
    }
    if ((span = PyObject_GetAttr(detector, s_lookback_ns)) == NULL || (limit = PyNumber_Subtract(now, span)) == NULL ||
        (max = PyObject_GetAttr(detector, s_lookback_max)) == NULL)
        goto out;
    for (;;) {
        Py_ssize_t n = PyObject_Length(lookback);
        if (n < 0)
            goto out;
        if (n == 0)
            break;
        PyObject *len = PyLong_FromSsize_t(n);
        int over = len ? PyObject_RichCompareBool(len, max, Py_GT) : -1;
        Py_XDECREF(len);
        if (over < 0)
            goto out;
        if (!over) {
            PyObject *head = PySequence_GetItem(lookback, 0);
            PyObject *ht = head ? PySequence_GetItem(head, 0) : NULL;
            over = ht ? PyObject_RichCompareBool(ht, limit, Py_LT) : -1;
            Py_XDECREF(ht);
            Py_XDECREF(head);
            if (over < 0)
                goto out;
        }
        if (!over)
            break;
        x = PyObject_CallMethodNoArgs(lookback, s_popleft);
        if (x == NULL)
            goto out;
        Py_DECREF(x);
    }
    result = Py_NewRef(Py_None);
out:
    Py_XDECREF(max);
    Py_XDECREF(limit);
    Py_XDECREF(span);
    Py_XDECREF(now);
    Py_XDECREF(entry);
    Py_XDECREF(lookback);
    return result;
}

/* on_request(analyzer, req) */
static PyObject *py_on_request(PyObject *self, PyObject *args)
{
    PyObject *a, *req;
    if (!PyArg_ParseTuple(args, "OO", &a, &req))
        return NULL;
    if (reference == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return NULL;
    }
    /* -- decide: everything read, nothing changed yet -- */
    long long ts[8];
    for (int i = 0; i < 8; i++) {
        PyObject *v = PyObject_GetAttr(req, req_ts_names[i]);
        if (v == NULL)
            return NULL;
        int overflow = 0;
        ts[i] = PyLong_Check(v) ? PyLong_AsLongLongAndOverflow(v, &overflow) : -1;
        Py_DECREF(v);
        if (ts[i] == -1 && PyErr_Occurred())
            return NULL;
        if (overflow || ts[i] < 0)
            return PyObject_CallFunctionObjArgs(reference, a, req, NULL);
    }
    PyObject *name = PyObject_GetAttr(req, s_command);
    if (name == NULL)
        return NULL;
    int truthy = PyObject_IsTrue(name);
    if (truthy < 0) {
        Py_DECREF(name);
        return NULL;
    }
    if (!truthy)
        Py_SETREF(name, Py_NewRef(undecodable));
    PyObject *commands = PyObject_GetAttr(a, s_commands);
    PyObject *cmd = commands && PyDict_Check(commands) ? PyDict_GetItemWithError(commands, name) : NULL;
    Py_XINCREF(cmd);
    Py_XDECREF(commands);
    Py_DECREF(name);
    if (cmd == NULL && PyErr_Occurred())
        return NULL;
    PyObject *key = PyObject_GetAttr(req, s_key);
    if (key == NULL) {
        Py_XDECREF(cmd);
        return NULL;
    }
    if (cmd == NULL || (key != Py_None && !PyUnicode_CheckExact(key))) {
        Py_XDECREF(cmd);
        Py_DECREF(key);
        return PyObject_CallFunctionObjArgs(reference, a, req, NULL);   /* a new row, or an odd key */
    }
    long long arr = ts[0], wake = ts[1], rs = ts[2], re_ = ts[3], xs = ts[4], xe = ts[5], ps = ts[6], pe = ts[7];
    PyObject *sec = NULL, *secs = NULL, *tobj = NULL;
    PyObject *result = NULL;
    /* -- the counters -- */
    if (add_attr(a, s_requests, 1) < 0 || add_attr(cmd, s_count, 1) < 0)
        goto out;
    long long start = arr ? arr : rs;
    long long t = pe ? pe : (re_ ? re_ : start);
    long long first = start ? start : t;
    int cmp;
    if (first) {
        PyObject *f = PyObject_GetAttr(a, s_first_ts);
        if (f == NULL)
            goto out;
        int unset = !PyObject_IsTrue(f);
        Py_DECREF(f);
        if (cmp_attr(a, s_first_ts, first, &cmp) < 0)
            goto out;
        if ((unset || cmp > 0) && set_attr_ll(a, s_first_ts, first) < 0)
            goto out;
    }
    if (cmp_attr(a, s_last_ts, t, &cmp) < 0)
        goto out;
    if (cmp < 0 && set_attr_ll(a, s_last_ts, t) < 0)
        goto out;
    if ((sec = PyLong_FromLongLong(t / ns_per_s)) == NULL)
        goto out;
    if ((secs = PyObject_GetAttr(a, s_req_secs)) == NULL || count_second(secs, sec) < 0)
        goto out;
    Py_CLEAR(secs);
    if ((secs = PyObject_GetAttr(cmd, s_secs)) == NULL || count_second(secs, sec) < 0)
        goto out;
    if (pe && start) {
        long long latency = pe > start ? pe - start : 0;
        PyObject *hist = PyObject_GetAttr(cmd, s_hist);
        if (hist == NULL)
            goto out;
        int rc = hist_add(hist, latency);
        Py_DECREF(hist);
        if (rc < 0 || slow_offer(a, sec, latency, req) < 0)
            goto out;
    }
    if (!pe) {
        PyObject *rt = PyObject_GetAttr(req, s_reply_type);
        int not_lost = rt ? PyObject_RichCompareBool(rt, lost_type, Py_NE) : -1;
        Py_XDECREF(rt);
        if (not_lost < 0 || (not_lost && add_attr(a, s_unanswered, 1) < 0))
            goto out;
    }
    if (xs && xe) {
        long long ex = xe > xs ? xe - xs : 0;
        if (add_attr(cmd, s_exec_ns, ex) < 0 || add_attr(a, s_exec_total_ns, ex) < 0 ||
            add_attr(a, s_phase_exec_ns, ex) < 0)
            goto out;
    }
    if (rs) {
        long long wait = 0;
        if (arr) {
            if (arr <= wake && wake <= rs) {
                if (add_attr(a, s_phase_sq_ns, wake - arr) < 0)
                    goto out;
                wait = rs - wake;
            } else if (rs > arr) {
                if (add_attr(a, s_phase_sq_ns, rs - arr) < 0)
                    goto out;
            }
        }
        if (xs && re_ && xs > re_)
            wait += xs - re_;
        if (ps && xe && ps > xe)
            wait += ps - xe;
        if (add_attr(a, s_phase_wait_ns, wait) < 0)
            goto out;
    }
    if (ps && pe && pe > ps && add_attr(a, s_phase_rw_ns, pe - ps) < 0)
        goto out;
    if (key != Py_None && count_key(a, key, req) < 0)
        goto out;
    PyObject *conn_id = PyObject_GetAttr(req, s_conn_id);
    if (conn_id == NULL)
        goto out;
    int has_conn = PyObject_IsTrue(conn_id);
    if (has_conn > 0) {
        PyObject *live = PyObject_GetAttr(a, s_live_conns);
        has_conn = live ? PySet_Add(live, conn_id) : -1;
        Py_XDECREF(live);
    }
    Py_DECREF(conn_id);
    if (has_conn < 0)
        goto out;
    PyObject *detector = PyObject_GetAttr(a, s_detector);
    if (detector == NULL || (tobj = PyLong_FromLongLong(t)) == NULL) {
        Py_XDECREF(detector);
        goto out;
    }
    result = detector_on_request(detector, req, tobj);
    Py_DECREF(detector);
out:
    Py_XDECREF(tobj);
    Py_XDECREF(secs);
    Py_XDECREF(sec);
    Py_DECREF(key);
    Py_DECREF(cmd);
    return result;
}

static PyMethodDef methods[] = {
    {"configure", py_configure, METH_VARARGS, "configure(...): see analysis._load_native"},
    {"on_request", py_on_request, METH_VARARGS, "on_request(analyzer, req): Analyzer.on_request"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_analysis_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__analysis_native(void)
{
    if (intern_all() < 0)
        return NULL;
    return PyModule_Create(&module);
}
