/* Compiled Stitcher.feed_raw (tracer/stitch/stitcher.py): the per-record loop, with the common
 * READ and WRITE records stitched here.
 *
 * The Python Stitcher stays the reference and keeps every piece of state (connections, parsers,
 * pending requests): this loop works on those same objects. A READ or WRITE is stitched here only
 * when the Python code would take its plainest path — a known client connection, parsers between
 * frames, a capture holding the whole syscall and nothing but whole frames the compiled RESP fast
 * paths decode, nothing special about the connection (links, subscribers, MONITOR, replicas) —
 * and is decided before anything is changed; every other record goes to the Python handler, as an
 * Event, exactly as Stitcher.feed_raw hands it over. Records are checked against their declared
 * length before any field is read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <limits.h>
#include <string.h>

#include "../decode/resp_native.h"

static const RespNativeAPI *resp;
static PyObject *request_type, *request_template, *decode_fn, *queue_special, *absorb_names, *deque_type;
static long kind_read, kind_write, kind_fdinfo, kind_exec, st_start, r_start, r_desync;
static Py_ssize_t max_pending, fast_window, header_size;
/* record layout (from events.OFFSETS) */
static Py_ssize_t off_ts_enter, off_ts_exit, off_aux, off_aux2, off_ret, off_tgid, off_tid, off_fd, off_kind,
    off_cap;

/* Request slots (offsets of their member descriptors) */
enum { R_TGID, R_CONN_ID, R_FD, R_CLIENT, R_THREAD, R_REPLY_THREAD, R_COMMAND, R_KEY, R_ARGC, R_REQUEST_BYTES,
       R_REPLY_BYTES, R_REPLY_TYPE, R_REPLY_ERROR, R_ARRIVAL, R_WAKE, R_READ_START, R_READ_END, R_EXEC_START, R_EXEC_END,
       R_REPLY_START, R_REPLY_END, R_BATCH, R_DECODE_OK, R_NSLOTS };
static const char *request_slots[R_NSLOTS] = {
    "tgid", "conn_id", "fd", "client", "thread", "reply_thread", "command", "key", "argc", "request_bytes",
    "reply_bytes", "reply_type", "reply_error", "arrival_ts", "wake_ts", "read_start_ts", "read_end_ts",
    "exec_start_ts", "exec_end_ts", "reply_start_ts", "reply_end_ts", "batch", "decode_ok"};
static Py_ssize_t request_offset[R_NSLOTS];
static Py_ssize_t *all_offsets;      /* every Request slot, to copy the template's defaults */
static Py_ssize_t n_all_offsets;

/* interned attribute names */
static PyObject *s_conns, *s_aof_fds, *s_exec_waiting, *s_exec_queue, *s_stats, *s_dispatch, *s_main_event,
    *s_show_values, *s_mask_payloads, *s_uprobe_exec, *s_on_request, *s_last_spans, *s_first_ts, *s_last_ts,
    *s_events, *s_requests, *s_unpaired, *s_link, *s_seen, *s_rep, *s_req, *s_st, *s_infr, *s_inline_hint,
    *s_max_bulk, *s_pending, *s_frame_arrival, *s_frame_read_start, *s_frame_wake, *s_conn, *s_conn_id,
    *s_client, *s_name, *s_key, *s_argc, *s_size, *s_type, *s_subscribed, *s_monitor, *s_absorb,
    *s_reply_partial_start, *s_partial_bytes, *s_last_write_end, *s_last_write_tid, *s_close_exec,
    *s_close_exec_for, *s_append, *s_popleft, *s_extend;

#define SLOT(obj, i) (*(PyObject **)((char *)(obj) + request_offset[i]))

static int slot_offset_of(PyTypeObject *type, const char *name, Py_ssize_t *at)
{
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name);
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
        ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    *at = ((PyMemberDescrObject *)descr)->d_member->offset;
    return 0;
}

static int intern_all(void)
{
#define I(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    I(s_conns, "conns"); I(s_aof_fds, "aof_fds"); I(s_exec_waiting, "exec_waiting"); I(s_exec_queue, "exec_queue");
    I(s_stats, "stats"); I(s_dispatch, "_dispatch"); I(s_main_event, "_main_thread_event");
    I(s_show_values, "show_values"); I(s_mask_payloads, "mask_payloads"); I(s_uprobe_exec, "uprobe_exec");
    I(s_on_request, "on_request"); I(s_last_spans, "last_spans"); I(s_first_ts, "first_ts"); I(s_last_ts, "last_ts");
    I(s_events, "events"); I(s_requests, "requests"); I(s_unpaired, "unpaired_replies"); I(s_link, "link");
    I(s_seen, "seen"); I(s_rep, "rep"); I(s_req, "req"); I(s_st, "_st"); I(s_infr, "_infr");
    I(s_inline_hint, "_inline_hint"); I(s_max_bulk, "max_bulk"); I(s_pending, "pending");
    I(s_frame_arrival, "frame_arrival"); I(s_frame_read_start, "frame_read_start"); I(s_frame_wake, "frame_wake");
    I(s_conn, "conn"); I(s_conn_id, "conn_id"); I(s_client, "client"); I(s_name, "name"); I(s_key, "key");
    I(s_argc, "argc"); I(s_size, "size"); I(s_type, "type"); I(s_subscribed, "subscribed"); I(s_monitor, "monitor");
    I(s_absorb, "absorb_replies"); I(s_reply_partial_start, "reply_partial_start"); I(s_partial_bytes, "partial_bytes");
    I(s_last_write_end, "last_write_end"); I(s_last_write_tid, "last_write_tid"); I(s_close_exec, "_close_exec");
    I(s_close_exec_for, "_close_exec_for"); I(s_append, "append"); I(s_popleft, "popleft"); I(s_extend, "extend");
#undef I
    return 0;
}

/* configure(Request, template, decode, offsets, kinds, states, QUEUE_SPECIAL, absorb_names, deque,
 *           max_pending, fast_window, header_size, resp_capsule) */
static PyObject *py_configure(PyObject *self, PyObject *args)
{
    PyObject *rtype, *templ, *dec, *offsets, *qs, *absorb, *dq, *capsule;
    if (!PyArg_ParseTuple(args, "O!OOO!(llll)(lll)OOOnnnO", &PyType_Type, &rtype, &templ, &dec, &PyDict_Type,
                          &offsets, &kind_read, &kind_write, &kind_fdinfo, &kind_exec, &st_start, &r_start,
                          &r_desync, &qs, &absorb, &dq, &max_pending, &fast_window, &header_size, &capsule))
        return NULL;
    if (!PyObject_TypeCheck(templ, (PyTypeObject *)rtype)) {
        PyErr_SetString(PyExc_TypeError, "template must be a Request");
        return NULL;
    }
    resp = PyCapsule_GetPointer(capsule, RESP_NATIVE_CAPSULE);
    if (resp == NULL)
        return NULL;
    struct { const char *name; Py_ssize_t *at; Py_ssize_t size; } fields[] = {
        {"ts_enter", &off_ts_enter, 8}, {"ts_exit", &off_ts_exit, 8}, {"aux_ts", &off_aux, 8},
        {"aux_ts2", &off_aux2, 8}, {"ret", &off_ret, 8}, {"tgid", &off_tgid, 4}, {"tid", &off_tid, 4},
        {"fd", &off_fd, 4}, {"kind", &off_kind, 2}, {"cap_len", &off_cap, 4}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        PyObject *v = PyDict_GetItemString(offsets, fields[i].name);
        if (v == NULL) {
            PyErr_Format(PyExc_KeyError, "no offset for %s", fields[i].name);
            return NULL;
        }
        *fields[i].at = PyLong_AsSsize_t(v);
        if (*fields[i].at == -1 && PyErr_Occurred())
            return NULL;
        if (*fields[i].at < 0 || *fields[i].at + fields[i].size > header_size) {
            PyErr_Format(PyExc_ValueError, "offset of %s outside the header", fields[i].name);
            return NULL;
        }
    }
    PyTypeObject *t = (PyTypeObject *)rtype;
    for (int i = 0; i < R_NSLOTS; i++)
        if (slot_offset_of(t, request_slots[i], &request_offset[i]) < 0)
            return NULL;
    PyObject *slots = PyObject_GetAttrString(rtype, "__slots__");
    if (slots == NULL)
        return NULL;
    PyObject *seq = PySequence_Fast(slots, "__slots__");
    Py_DECREF(slots);
    if (seq == NULL)
        return NULL;
    n_all_offsets = PySequence_Fast_GET_SIZE(seq);
    PyMem_Free(all_offsets);
    all_offsets = PyMem_New(Py_ssize_t, n_all_offsets);
    if (all_offsets == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n_all_offsets; i++) {
        const char *name = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq, i));
        if (name == NULL || slot_offset_of(t, name, &all_offsets[i]) < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        if (*(PyObject **)((char *)templ + all_offsets[i]) == NULL) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "the template Request has no %s", name);
            return NULL;
        }
    }
    Py_DECREF(seq);
    Py_XSETREF(request_type, Py_NewRef(rtype));
    Py_XSETREF(request_template, Py_NewRef(templ));
    Py_XSETREF(decode_fn, Py_NewRef(dec));
    Py_XSETREF(queue_special, Py_NewRef(qs));
    Py_XSETREF(absorb_names, Py_NewRef(absorb));
    Py_XSETREF(deque_type, Py_NewRef(dq));
    Py_RETURN_NONE;
}

/* A new Request with the defaults Request() gives (copied from the template). */
static PyObject *new_request(void)
{
    PyTypeObject *t = (PyTypeObject *)request_type;
    PyObject *r = t->tp_alloc(t, 0);
    if (r == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n_all_offsets; i++) {
        PyObject *v = *(PyObject **)((char *)request_template + all_offsets[i]);
        Py_XINCREF(v);
        *(PyObject **)((char *)r + all_offsets[i]) = v;
    }
    return r;
}

static void set_slot(PyObject *req, int i, PyObject *v)   /* steals v */
{
    PyObject **at = &SLOT(req, i);
    PyObject *old = *at;
    *at = v;
    Py_XDECREF(old);
}

/* The header fields of one record. */
typedef struct {
    uint64_t ts_enter, ts_exit, aux, aux2;
    int64_t ret;
    uint32_t tgid, tid, cap;
    int32_t fd;
    uint16_t kind;
    const char *payload;
} Rec;

static void read_rec(const unsigned char *d, Rec *r)
{
    memcpy(&r->ts_enter, d + off_ts_enter, 8);
    memcpy(&r->ts_exit, d + off_ts_exit, 8);
    memcpy(&r->aux, d + off_aux, 8);
    memcpy(&r->aux2, d + off_aux2, 8);
    memcpy(&r->ret, d + off_ret, 8);
    memcpy(&r->tgid, d + off_tgid, 4);
    memcpy(&r->tid, d + off_tid, 4);
    memcpy(&r->fd, d + off_fd, 4);
    memcpy(&r->kind, d + off_kind, 2);
    memcpy(&r->cap, d + off_cap, 4);
    r->payload = (const char *)d + header_size;
}

/* attribute as a C long (ints and bools); -1 with an error set when it is neither */
static int get_long(PyObject *obj, PyObject *name, long *v)
{
    PyObject *o = PyObject_GetAttr(obj, name);
    if (o == NULL)
        return -1;
    *v = PyLong_AsLong(o);
    Py_DECREF(o);
    return (*v == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int is_none_attr(PyObject *obj, PyObject *name)
{
    PyObject *o = PyObject_GetAttr(obj, name);
    if (o == NULL)
        return -1;
    int r = o == Py_None;
    Py_DECREF(o);
    return r;
}

static int truthy_attr(PyObject *obj, PyObject *name)
{
    PyObject *o = PyObject_GetAttr(obj, name);
    if (o == NULL)
        return -1;
    int r = PyObject_IsTrue(o);
    Py_DECREF(o);
    return r;
}

static int set_attr_u64(PyObject *obj, PyObject *name, uint64_t v)
{
    PyObject *o = PyLong_FromUnsignedLongLong(v);
    if (o == NULL)
        return -1;
    int r = PyObject_SetAttr(obj, name, o);
    Py_DECREF(o);
    return r;
}

static int add_attr(PyObject *obj, PyObject *name, long n)
{
    PyObject *o = PyObject_GetAttr(obj, name);
    if (o == NULL)
        return -1;
    PyObject *d = PyLong_FromLong(n);
    PyObject *s = d ? PyNumber_Add(o, d) : NULL;
    Py_DECREF(o);
    Py_XDECREF(d);
    if (s == NULL)
        return -1;
    int r = PyObject_SetAttr(obj, name, s);
    Py_DECREF(s);
    return r;
}

typedef struct {
    PyObject *stitcher, *conns, *aof_fds, *exec_waiting, *stats;
    int mask_payloads, show_values;
} Ctx;

/* 1 = stitched here, 0 = leave it to the Python handler (nothing changed), -1 = error */
static int fast_read(Ctx *c, const Rec *r, PyObject *key)
{
    int rc = PySet_Contains(c->aof_fds, key);
    if (rc != 0)
        return rc < 0 ? -1 : 1;        /* the AOF: _on_read ignores it */
    PyObject *state = PyDict_GetItemWithError(c->conns, key);   /* borrowed */
    if (state == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (r->ret <= 0 || r->cap == 0 || (int64_t)r->cap != r->ret || r->payload[0] != '*')
        return 0;
    Py_INCREF(state);
    PyObject *reqp = NULL, *rep = NULL, *out = NULL, *spans = NULL, *pending = NULL, *conn = NULL, *conn_id = NULL,
             *client = NULL, *new = NULL;
    int result = -1;
    long v;
    int t;
    if ((t = is_none_attr(state, s_link)) <= 0 || (t = truthy_attr(state, s_seen)) <= 0) {
        result = t < 0 ? -1 : 0;
        goto out;
    }
    if ((rep = PyObject_GetAttr(state, s_rep)) == NULL || get_long(rep, s_st, &v) < 0)
        goto out;
    if (v == r_desync) {
        result = 0;
        goto out;
    }
    if ((reqp = PyObject_GetAttr(state, s_req)) == NULL || get_long(reqp, s_st, &v) < 0)
        goto out;
    if (v != st_start) {
        result = 0;
        goto out;
    }
    long max_bulk;
    if (get_long(reqp, s_max_bulk, &max_bulk) < 0)
        goto out;
    if ((out = PyList_New(0)) == NULL || (spans = PyList_New(0)) == NULL)
        goto out;
    Py_ssize_t end = resp->request_fast(r->payload, r->cap, 0, fast_window, c->show_values, max_bulk, out, spans, 1);
    if (end == RESP_FAILED)
        goto out;
    if (end != (Py_ssize_t)r->cap) {
        result = 0;
        goto out;
    }
    if ((pending = PyObject_GetAttr(state, s_pending)) == NULL)
        goto out;
    Py_ssize_t npending = PyObject_Length(pending);
    Py_ssize_t batch = PyList_GET_SIZE(out);
    if (npending < 0)
        goto out;
    if (npending + batch > max_pending) {
        result = 0;
        goto out;
    }
    for (Py_ssize_t i = 0; i < batch; i++) {
        PyObject *name = PyTuple_GET_ITEM(PyList_GET_ITEM(out, i), 0);     /* (name, key, argc, size) */
        int special = PySet_Contains(queue_special, name);
        int unknown = PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, "?") == 0;
        if (special < 0)
            goto out;
        if (special || unknown) {
            result = 0;
            goto out;
        }
    }
    /* decided: from here on this is _on_read's common path */
    if (set_attr_u64(state, s_last_ts, r->ts_exit) < 0 || PyObject_SetAttr(reqp, s_inline_hint, Py_False) < 0)
        goto out;
    if (c->mask_payloads && PyObject_SetAttr(c->stitcher, s_last_spans, spans) < 0)
        goto out;
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL)
        goto out;
    rc = PyObject_SetAttr(state, s_frame_arrival, zero) | PyObject_SetAttr(state, s_frame_read_start, zero) |
         PyObject_SetAttr(state, s_frame_wake, zero);
    Py_DECREF(zero);
    if (rc < 0)
        goto out;
    if ((conn = PyObject_GetAttr(state, s_conn)) == NULL || (conn_id = PyObject_GetAttr(conn, s_conn_id)) == NULL ||
        (client = PyObject_GetAttr(conn, s_client)) == NULL || (new = PyList_New(batch)) == NULL)
        goto out;
    for (Py_ssize_t i = 0; i < batch; i++) {
        PyObject *cmd = PyList_GET_ITEM(out, i);
        PyObject *req = new_request();
        if (req == NULL)
            goto out;
        PyList_SET_ITEM(new, i, req);
        PyObject *vals[] = {
            PyLong_FromUnsignedLong(r->tgid), Py_NewRef(conn_id), PyLong_FromLong(r->fd), Py_NewRef(client),
            PyLong_FromUnsignedLong(r->tid), Py_NewRef(PyTuple_GET_ITEM(cmd, 0)), Py_NewRef(PyTuple_GET_ITEM(cmd, 1)),
            Py_NewRef(PyTuple_GET_ITEM(cmd, 2)), Py_NewRef(PyTuple_GET_ITEM(cmd, 3)), Py_NewRef(Py_True),
            PyLong_FromUnsignedLongLong(r->aux), PyLong_FromUnsignedLongLong(r->ts_enter),
            PyLong_FromUnsignedLongLong(r->aux2), PyLong_FromUnsignedLongLong(r->ts_exit), PyLong_FromSsize_t(batch)};
        int which[] = {R_TGID, R_CONN_ID, R_FD, R_CLIENT, R_THREAD, R_COMMAND, R_KEY, R_ARGC, R_REQUEST_BYTES,
                       R_DECODE_OK, R_ARRIVAL, R_READ_START, R_WAKE, R_READ_END, R_BATCH};
        int failed = 0;
        for (size_t k = 0; k < sizeof which / sizeof which[0]; k++) {
            if (vals[k] == NULL)
                failed = 1;
            else
                set_slot(req, which[k], vals[k]);
        }
        if (failed)
            goto out;
        PyObject *ok = PyObject_CallMethodOneArg(pending, s_append, req);
        if (ok == NULL)
            goto out;
        Py_DECREF(ok);
    }
    PyObject *tgid = PyLong_FromUnsignedLong(r->tgid);
    if (tgid == NULL)
        goto out;
    int uprobe = truthy_attr(c->stitcher, s_uprobe_exec);
    PyObject *ok = NULL;
    if (uprobe > 0) {
        PyObject *queues = PyObject_GetAttr(c->stitcher, s_exec_queue);
        PyObject *q = queues ? PyDict_GetItemWithError(queues, tgid) : NULL;
        if (q != NULL) {
            Py_INCREF(q);
        } else if (queues != NULL && !PyErr_Occurred()) {
            q = PyObject_CallNoArgs(deque_type);
            if (q != NULL && PyDict_SetItem(queues, tgid, q) < 0)
                Py_CLEAR(q);
        }
        if (q != NULL)
            ok = PyObject_CallMethodOneArg(q, s_extend, new);
        Py_XDECREF(q);
        Py_XDECREF(queues);
    } else if (uprobe == 0) {
        PyObject *w = PyDict_GetItemWithError(c->exec_waiting, tgid);
        if (w != NULL) {
            Py_INCREF(w);
        } else if (!PyErr_Occurred()) {
            w = PyList_New(0);
            if (w != NULL && PyDict_SetItem(c->exec_waiting, tgid, w) < 0)
                Py_CLEAR(w);
        }
        PyObject *entry = w ? Py_BuildValue("(KOO)", (unsigned long long)r->ts_exit,
                                            r->tid == r->tgid ? Py_True : Py_False, new) : NULL;
        if (entry != NULL && PyList_Append(w, entry) == 0)
            ok = Py_NewRef(Py_None);
        Py_XDECREF(entry);
        Py_XDECREF(w);
    }
    Py_DECREF(tgid);
    if (ok == NULL)
        goto out;
    Py_DECREF(ok);
    result = 1;
out:
    Py_XDECREF(new);
    Py_XDECREF(client);
    Py_XDECREF(conn_id);
    Py_XDECREF(conn);
    Py_XDECREF(pending);
    Py_XDECREF(spans);
    Py_XDECREF(out);
    Py_XDECREF(reqp);
    Py_XDECREF(rep);
    Py_DECREF(state);
    return result;
}

/* 1 = stitched here, 0 = leave it to the Python handler (nothing changed), -1 = error */
static int fast_write(Ctx *c, const Rec *r, PyObject *key)
{
    int rc = PySet_Contains(c->aof_fds, key);
    if (rc != 0)
        return rc < 0 ? -1 : 0;        /* an AOF write: the Python handler reports the sync */
    PyObject *state = PyDict_GetItemWithError(c->conns, key);
    if (state == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (r->ret <= 0 || r->cap == 0 || (int64_t)r->cap != r->ret || (c->show_values && c->mask_payloads))
        return 0;
    Py_INCREF(state);
    PyObject *rep = NULL, *out = NULL, *spans = NULL, *pending = NULL, *conn = NULL, *on_request = NULL;
    int result = -1, t;
    long v;
    if ((t = is_none_attr(state, s_link)) <= 0 || (t = truthy_attr(state, s_seen)) <= 0 ||
        (t = truthy_attr(state, s_subscribed)) != 0 || (t = truthy_attr(state, s_monitor)) != 0 ||
        (t = truthy_attr(state, s_absorb)) != 0) {
        result = t < 0 ? -1 : 0;
        goto out;
    }
    if ((rep = PyObject_GetAttr(state, s_rep)) == NULL || get_long(rep, s_st, &v) < 0)
        goto out;
    if (v != r_start || (t = truthy_attr(rep, s_infr)) != 0) {
        result = t < 0 ? -1 : 0;
        goto out;
    }
    if ((out = PyList_New(0)) == NULL || (spans = PyList_New(0)) == NULL)
        goto out;
    Py_ssize_t end = resp->reply_fast(r->payload, r->cap, 0, fast_window, c->show_values, out, spans, 1);
    if (end == RESP_FAILED)
        goto out;
    if (end != (Py_ssize_t)r->cap) {
        result = 0;
        goto out;
    }
    /* decided: _on_write's common path, with _pair's for scalar replies */
    if (set_attr_u64(state, s_last_ts, r->ts_exit) < 0)
        goto out;
    if (c->mask_payloads && PyObject_SetAttr(c->stitcher, s_last_spans, spans) < 0)
        goto out;
    PyObject *partial_start = PyObject_GetAttr(state, s_reply_partial_start);
    if (partial_start == NULL)
        goto out;
    int has_partial = PyObject_IsTrue(partial_start);
    PyObject *start = has_partial > 0 ? partial_start : PyLong_FromUnsignedLongLong(r->ts_enter);
    if (has_partial > 0)
        Py_INCREF(start);
    Py_DECREF(partial_start);
    if (has_partial < 0 || start == NULL) {
        Py_XDECREF(start);
        goto out;
    }
    if ((pending = PyObject_GetAttr(state, s_pending)) == NULL || (conn = PyObject_GetAttr(state, s_conn)) == NULL ||
        (on_request = PyObject_GetAttr(c->stitcher, s_on_request)) == NULL) {
        Py_DECREF(start);
        goto out;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(out); i++) {
        PyObject *reply = PyList_GET_ITEM(out, i);
        Py_ssize_t npending = PyObject_Length(pending);
        if (npending < 0) {
            Py_DECREF(start);
            goto out;
        }
        if (npending == 0) {
            if (add_attr(c->stats, s_unpaired, 1) < 0) {
                Py_DECREF(start);
                goto out;
            }
        } else {
            PyObject *req = PyObject_CallMethodNoArgs(pending, s_popleft);
            if (req == NULL) {
                Py_DECREF(start);
                goto out;
            }
            int ok = 0;
            /* a (un)subscribe command: its extra confirmations are absorbed */
            PyObject *cmd = SLOT(req, R_COMMAND);
            int absorb = cmd ? PySet_Contains(absorb_names, cmd) : 0;
            if (absorb < 0)
                ok = -1;
            if (absorb > 0) {
                long argc = PyLong_AsLong(SLOT(req, R_ARGC));
                if ((argc == -1 && PyErr_Occurred()) || add_attr(state, s_absorb, argc > 2 ? argc - 2 : 0) < 0)
                    ok = -1;
            }
            PyObject *size = ok == 0 ? Py_NewRef(PyTuple_GET_ITEM(reply, 1)) : NULL;   /* (type, size) */
            PyObject *type = size ? Py_NewRef(PyTuple_GET_ITEM(reply, 0)) : NULL;
            PyObject *end_ts = type ? PyLong_FromUnsignedLongLong(r->ts_exit) : NULL;
            PyObject *tid = end_ts ? PyLong_FromUnsignedLong(r->tid) : NULL;
            if (tid == NULL) {
                Py_XDECREF(size);
                Py_XDECREF(type);
                Py_XDECREF(end_ts);
                ok = -1;
            } else {
                set_slot(req, R_REPLY_BYTES, size);
                set_slot(req, R_REPLY_TYPE, type);
                set_slot(req, R_REPLY_ERROR, Py_NewRef(Py_None));
                set_slot(req, R_REPLY_START, Py_NewRef(start));
                set_slot(req, R_REPLY_END, end_ts);
                set_slot(req, R_REPLY_THREAD, tid);
            }
            if (ok == 0) {
                int ended = PyObject_IsTrue(SLOT(req, R_EXEC_END));
                if (ended < 0) {
                    ok = -1;
                } else if (!ended && PyDict_GET_SIZE(c->exec_waiting)) {
                    PyObject *x = PyObject_CallMethodObjArgs(c->stitcher, s_close_exec_for, req, start, NULL);
                    if (x == NULL)
                        ok = -1;
                    Py_XDECREF(x);
                }
            }
            if (ok == 0 && (add_attr(conn, s_requests, 1) < 0 || add_attr(c->stats, s_requests, 1) < 0))
                ok = -1;
            if (ok == 0) {
                PyObject *x = PyObject_CallOneArg(on_request, req);
                if (x == NULL)
                    ok = -1;
                Py_XDECREF(x);
            }
            Py_DECREF(req);
            if (ok < 0) {
                Py_DECREF(start);
                goto out;
            }
        }
        Py_DECREF(start);
        start = PyLong_FromUnsignedLongLong(r->ts_enter);
        if (start == NULL)
            goto out;
    }
    Py_DECREF(start);
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL || PyObject_SetAttr(state, s_reply_partial_start, zero) < 0) {
        Py_XDECREF(zero);
        goto out;
    }
    t = truthy_attr(state, s_partial_bytes);
    if (t < 0 || (t > 0 && PyObject_SetAttr(state, s_partial_bytes, zero) < 0)) {
        Py_DECREF(zero);
        goto out;
    }
    Py_DECREF(zero);
    if (set_attr_u64(state, s_last_write_end, r->ts_exit) < 0 || set_attr_u64(state, s_last_write_tid, r->tid) < 0)
        goto out;
    result = 1;
out:
    Py_XDECREF(on_request);
    Py_XDECREF(conn);
    Py_XDECREF(pending);
    Py_XDECREF(spans);
    Py_XDECREF(out);
    Py_XDECREF(rep);
    Py_DECREF(state);
    return result;
}

/* Stitcher._close_exec(tgid, end_ts): the batches read before end_ts on the main thread executed up
 * to it, split evenly (the same float arithmetic as the Python code). 1: done; 0: an entry this code
 * does not compute with (a gap of 2^53 ns or more), nothing changed, call the Python method. */
static int close_exec(Ctx *c, PyObject *tgid, uint64_t end_ts)
{
    PyObject *waiting = PyDict_GetItemWithError(c->exec_waiting, tgid);
    if (waiting == NULL)
        return PyErr_Occurred() ? -1 : 1;
    if (!PyList_Check(waiting))
        return 0;
    Py_ssize_t n = PyList_GET_SIZE(waiting);
    for (Py_ssize_t i = 0; i < n; i++) {   /* check every entry before changing anything */
        PyObject *e = PyList_GET_ITEM(waiting, i);
        if (!PyTuple_Check(e) || PyTuple_GET_SIZE(e) != 3 || !PyLong_Check(PyTuple_GET_ITEM(e, 0)) ||
            !PyList_Check(PyTuple_GET_ITEM(e, 2)) || PyList_GET_SIZE(PyTuple_GET_ITEM(e, 2)) == 0)
            return 0;
        int overflow;
        long long read_end = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(e, 0), &overflow);
        if (overflow || read_end < 0 || (end_ts >= (uint64_t)read_end && end_ts - (uint64_t)read_end >= (1ULL << 53)) ||
            end_ts > (uint64_t)LLONG_MAX)
            return 0;
    }
    Py_INCREF(waiting);
    if (PyDict_DelItem(c->exec_waiting, tgid) < 0) {
        Py_DECREF(waiting);
        return -1;
    }
    int rc = 1;
    for (Py_ssize_t i = 0; i < n && rc > 0; i++) {
        PyObject *e = PyList_GET_ITEM(waiting, i);
        PyObject *read_end_obj = PyTuple_GET_ITEM(e, 0), *batch = PyTuple_GET_ITEM(e, 2);
        long long read_end = PyLong_AsLongLong(read_end_obj);
        int on_main = PyObject_IsTrue(PyTuple_GET_ITEM(e, 1));
        if (on_main < 0) {
            rc = -1;
            break;
        }
        if (!on_main || !end_ts || (long long)end_ts < read_end)
            continue;   /* read by an IO thread: execution happened later on the main thread */
        Py_ssize_t nb = PyList_GET_SIZE(batch);
        double step = nb > 1 ? (double)((long long)end_ts - read_end) / (double)nb : 0.0;
        for (Py_ssize_t k = 0; k < nb; k++) {
            PyObject *req = PyList_GET_ITEM(batch, k);
            if (!PyObject_TypeCheck(req, (PyTypeObject *)request_type)) {
                PyErr_SetString(PyExc_TypeError, "exec_waiting holds a non-Request");
                rc = -1;
                break;
            }
            int ended = PyObject_IsTrue(SLOT(req, R_EXEC_END));
            if (ended < 0) {
                rc = -1;
                break;
            }
            if (ended)
                continue;
            PyObject *xs, *xe;
            if (nb == 1) {
                xs = Py_NewRef(read_end_obj);
                xe = PyLong_FromUnsignedLongLong(end_ts);
            } else {
                double base = (double)read_end;   /* int + float in Python: the int as a double */
                xs = PyLong_FromDouble(base + (double)k * step);
                xe = PyLong_FromDouble(base + (double)(k + 1) * step);
            }
            if (xs == NULL || xe == NULL) {
                Py_XDECREF(xs);
                Py_XDECREF(xe);
                rc = -1;
                break;
            }
            set_slot(req, R_EXEC_START, xs);
            set_slot(req, R_EXEC_END, xe);
        }
    }
    Py_DECREF(waiting);
    return rc;
}

/* Stitcher._main_thread_event for a READ or WRITE record, without an Event. */
static int main_thread_event(Ctx *c, const Rec *r)
{
    PyObject *tgid = PyLong_FromUnsignedLong(r->tgid);
    if (tgid == NULL)
        return -1;
    PyObject *waiting = PyDict_GetItemWithError(c->exec_waiting, tgid);
    if (waiting == NULL || !PyList_Check(waiting) || PyList_GET_SIZE(waiting) == 0) {
        Py_DECREF(tgid);
        if (PyErr_Occurred())
            return -1;
        if (waiting == NULL || PyList_Check(waiting))
            return 0;
        return 1;   /* not the list the Python code keeps: let it decide */
    }
    int slept = 0;
    if (r->kind == kind_read && r->aux2) {
        PyObject *last = PyList_GET_ITEM(waiting, PyList_GET_SIZE(waiting) - 1);
        PyObject *aux2 = PyLong_FromUnsignedLongLong(r->aux2);
        PyObject *read_end = PyTuple_Check(last) && PyTuple_GET_SIZE(last) > 0 ? PyTuple_GET_ITEM(last, 0) : NULL;
        slept = (aux2 && read_end) ? PyObject_RichCompareBool(aux2, read_end, Py_GT) : -1;
        Py_XDECREF(aux2);
        if (slept < 0) {
            Py_DECREF(tgid);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "exec_waiting entry is not (read_end, on_main, batch)");
            return -1;
        }
    }
    int done = close_exec(c, tgid, slept ? 0 : r->ts_enter);
    if (done == 0) {    /* the Python method, for what close_exec() does not compute with */
        PyObject *end = PyLong_FromUnsignedLongLong(slept ? 0 : r->ts_enter);
        PyObject *x = end ? PyObject_CallMethodObjArgs(c->stitcher, s_close_exec, tgid, end, NULL) : NULL;
        Py_XDECREF(end);
        done = x ? 1 : -1;
        Py_XDECREF(x);
    }
    Py_DECREF(tgid);
    return done < 0 ? -1 : 0;
}

/* feed_batch(stitcher, records): Stitcher.feed_raw */
static PyObject *py_feed_batch(PyObject *self, PyObject *args)
{
    PyObject *stitcher, *records;
    if (!PyArg_ParseTuple(args, "OO", &stitcher, &records))
        return NULL;
    if (request_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return NULL;
    }
    Ctx c = {stitcher, NULL, NULL, NULL, NULL, 0, 0};
    PyObject *dispatch = NULL, *main_event = NULL, *it = NULL, *raw = NULL, *first = NULL, *last = NULL;
    long events = 0, stitched = 0;
    int failed = 1;
    uint64_t first_ts = 0, last_ts = 0;
    if ((c.conns = PyObject_GetAttr(stitcher, s_conns)) == NULL ||
        (c.aof_fds = PyObject_GetAttr(stitcher, s_aof_fds)) == NULL ||
        (c.exec_waiting = PyObject_GetAttr(stitcher, s_exec_waiting)) == NULL ||
        (c.stats = PyObject_GetAttr(stitcher, s_stats)) == NULL ||
        (dispatch = PyObject_GetAttr(stitcher, s_dispatch)) == NULL ||
        (main_event = PyObject_GetAttr(stitcher, s_main_event)) == NULL ||
        (first = PyObject_GetAttr(stitcher, s_first_ts)) == NULL || (last = PyObject_GetAttr(stitcher, s_last_ts)) == NULL)
        goto out;
    if (!PyDict_Check(c.conns) || !PyAnySet_Check(c.aof_fds) || !PyDict_Check(c.exec_waiting) ||
        !PyDict_Check(dispatch)) {
        PyErr_SetString(PyExc_TypeError, "unexpected Stitcher state");
        goto out;
    }
    first_ts = PyLong_AsUnsignedLongLong(first);
    last_ts = PyLong_AsUnsignedLongLong(last);
    if (PyErr_Occurred())
        goto out;
    if ((c.mask_payloads = truthy_attr(stitcher, s_mask_payloads)) < 0 ||
        (c.show_values = truthy_attr(stitcher, s_show_values)) < 0)
        goto out;
    if ((it = PyObject_GetIter(records)) == NULL)
        goto out;
    while ((raw = PyIter_Next(it)) != NULL) {
        Py_buffer buf;
        if (PyObject_GetBuffer(raw, &buf, PyBUF_SIMPLE) < 0)
            goto out;
        Rec r;
        int valid = buf.len >= header_size;
        if (valid) {
            read_rec(buf.buf, &r);
            valid = (Py_ssize_t)r.cap <= buf.len - header_size;
        }
        int handled = 0;      /* 1: stitched here */
        int main_done = 0;    /* _main_thread_event's part is done (or had nothing to do) */
        if (valid) {
            /* feed_raw's bookkeeping (an invalid record makes decode() raise before it) */
            events++;
            uint64_t ts = r.ts_exit ? r.ts_exit : r.ts_enter;
            if (ts > last_ts) {
                last_ts = ts;
                if (!first_ts)
                    first_ts = r.ts_enter ? r.ts_enter : ts;
            }
            if (r.kind == kind_read || r.kind == kind_write) {
                main_done = 1;
                if (PyDict_GET_SIZE(c.exec_waiting) && r.tid == r.tgid) {
                    int rc = main_thread_event(&c, &r);
                    if (rc < 0) {
                        PyBuffer_Release(&buf);
                        goto out;
                    }
                    main_done = rc == 0;   /* 1: unexpected state, the Python code does it all */
                }
                if (main_done) {
                    PyObject *key = Py_BuildValue("(kl)", (unsigned long)r.tgid, (long)r.fd);
                    if (key == NULL) {
                        PyBuffer_Release(&buf);
                        goto out;
                    }
                    handled = r.kind == kind_read ? fast_read(&c, &r, key) : fast_write(&c, &r, key);
                    Py_DECREF(key);
                    if (handled < 0) {
                        PyBuffer_Release(&buf);
                        goto out;
                    }
                }
            }
        }
        PyBuffer_Release(&buf);
        stitched += handled == 1;
        if (handled != 1) {
            /* the Python path for this record, as Stitcher.feed_raw takes it */
            PyObject *ev = PyObject_CallOneArg(decode_fn, raw);
            if (ev == NULL)
                goto out;       /* the ValueError of a record shorter than it says */
            if (!valid) {
                Py_DECREF(ev);
                PyErr_SetString(PyExc_ValueError, "record rejected by the compiled loop but not by decode()");
                goto out;
            }
            PyObject *kind = PyLong_FromLong(r.kind);
            PyObject *handler = kind ? PyDict_GetItemWithError(dispatch, kind) : NULL;
            Py_XDECREF(kind);
            if (handler == NULL && PyErr_Occurred()) {
                Py_DECREF(ev);
                goto out;
            }
            if (handler != NULL) {
                Py_INCREF(handler);
                PyObject *x = Py_NewRef(Py_None);
                if (!main_done && PyDict_GET_SIZE(c.exec_waiting) && r.kind < kind_fdinfo && r.kind != kind_exec &&
                    r.tid == r.tgid) {
                    Py_DECREF(x);
                    x = PyObject_CallOneArg(main_event, ev);
                }
                if (x != NULL) {
                    Py_DECREF(x);
                    x = PyObject_CallOneArg(handler, ev);
                }
                Py_DECREF(handler);
                if (x == NULL) {
                    Py_DECREF(ev);
                    goto out;
                }
                Py_DECREF(x);
            }
            Py_DECREF(ev);
        }
        Py_CLEAR(raw);
    }
    if (!PyErr_Occurred())
        failed = 0;
out:
    Py_XDECREF(raw);
    /* what was counted so far is kept, error or not (as the Python loop keeps it) */
    if (c.stats != NULL && events) {
        PyObject *err_t, *err_v, *err_tb;
        PyErr_Fetch(&err_t, &err_v, &err_tb);
        if (add_attr(c.stats, s_events, events) < 0 || set_attr_u64(stitcher, s_first_ts, first_ts) < 0 ||
            set_attr_u64(stitcher, s_last_ts, last_ts) < 0)
            failed = 1;
        if (err_t != NULL)
            PyErr_Restore(err_t, err_v, err_tb);
    }
    Py_XDECREF(it);
    Py_XDECREF(first);
    Py_XDECREF(last);
    Py_XDECREF(main_event);
    Py_XDECREF(dispatch);
    Py_XDECREF(c.stats);
    Py_XDECREF(c.exec_waiting);
    Py_XDECREF(c.aof_fds);
    Py_XDECREF(c.conns);
    if (failed)
        return NULL;
    return PyLong_FromLong(stitched);
}

static PyMethodDef methods[] = {
    {"configure", py_configure, METH_VARARGS, "configure(...): see stitcher._load_native"},
    {"feed_batch", py_feed_batch, METH_VARARGS, "feed_batch(stitcher, records) -> records stitched in C (the rest went to the Python handlers)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_stitch_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__stitch_native(void)
{
    if (intern_all() < 0)
        return NULL;
    return PyModule_Create(&module);
}
