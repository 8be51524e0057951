/* Compiled fast paths of tracer/decode/resp.py: whole RESP frames inside one capture.
 *
 * The pure-Python RequestParser._fast / ReplyParser._fast stay the reference: these functions
 * decode exactly the frames those decode, the same way, and return where they stopped; a frame
 * they decline (not a simple command, an error or aggregate reply) is handed back to the Python
 * code at that position, with the same window, so the output is identical by construction
 * (tests/test_native.py replays recordings and fuzzed RESP through both).
 *
 * The bytes are untrusted: every read is checked against `limit` (<= len(data)); lengths and
 * counts are parsed with an overflow cap; nothing is written outside Python objects.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "resp_native.h"

/* configure() sets these once: the Python objects the fast paths build or consult */
static PyObject *fast_specs;     /* dict: command name bytes -> (name str, key pos, vfrom) or None */
static PyObject *command_cls;    /* resp.Command */
static PyObject *reply_cls;      /* resp.Reply */
static PyObject *show_fn;        /* keyspec.show */
static PyObject *allowed_set;    /* resp.ALLOWED (frozenset of bytes) */
static PyObject *str_ok, *str_nil;
static Py_ssize_t key_chars = 128, keep_max = 520, short_len = 32, fast_args = 64;

#define NUM_CAP ((Py_ssize_t)1 << 52)

/* Position of the first "\r\n" at or after p, below limit; -1 when none. */
static Py_ssize_t find_crlf(const char *d, Py_ssize_t p, Py_ssize_t limit)
{
    while (p + 1 < limit) {
        const char *cr = memchr(d + p, '\r', (size_t)(limit - 1 - p));
        if (cr == NULL)
            return -1;
        Py_ssize_t at = cr - d;
        if (d[at + 1] == '\n')
            return at;
        p = at + 1;
    }
    return -1;
}

/* bytes.isdigit() of d[a:b] then int(): -1 when empty or not all digits; capped (huge -> NUM_CAP). */
static Py_ssize_t parse_digits(const char *d, Py_ssize_t a, Py_ssize_t b)
{
    if (a >= b)
        return -1;
    Py_ssize_t v = 0;
    for (Py_ssize_t i = a; i < b; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c < '0' || c > '9')
            return -1;
        if (v < NUM_CAP)
            v = v * 10 + (c - '0');
    }
    return v > NUM_CAP ? NUM_CAP : v;
}

static int append_span(PyObject *spans, Py_ssize_t at, Py_ssize_t len)
{
    PyObject *t = Py_BuildValue("(nn)", at, len);
    if (t == NULL)
        return -1;
    int rc = PyList_Append(spans, t);
    Py_DECREF(t);
    return rc;
}

static PyObject *py_configure(PyObject *self, PyObject *args)
{
    PyObject *specs, *cmd, *rep, *show, *allowed;
    Py_ssize_t kc, km, sh, fa;
    if (!PyArg_ParseTuple(args, "O!OOOOnnnn", &PyDict_Type, &specs, &cmd, &rep, &show, &allowed,
                          &kc, &km, &sh, &fa))
        return NULL;
    if (!PyFrozenSet_Check(allowed) && !PySet_Check(allowed)) {
        PyErr_SetString(PyExc_TypeError, "allowed must be a set");
        return NULL;
    }
    Py_XSETREF(fast_specs, Py_NewRef(specs));
    Py_XSETREF(command_cls, Py_NewRef(cmd));
    Py_XSETREF(reply_cls, Py_NewRef(rep));
    Py_XSETREF(show_fn, Py_NewRef(show));
    Py_XSETREF(allowed_set, Py_NewRef(allowed));
    key_chars = kc;
    keep_max = km;
    short_len = sh;
    fast_args = fa;
    Py_RETURN_NONE;
}

/* The key as RequestParser._fast shows it: ASCII printable and short as is, else keyspec.show(). */
static PyObject *key_of(const char *kb, Py_ssize_t ln)
{
    int plain = ln <= key_chars;
    for (Py_ssize_t i = 0; plain && i < ln; i++) {
        unsigned char c = (unsigned char)kb[i];
        if (c < 0x20 || c > 0x7e)
            plain = 0;
    }
    if (plain)
        return PyUnicode_DecodeASCII(kb, ln, NULL);
    PyObject *b = PyBytes_FromStringAndSize(kb, ln < keep_max ? ln : keep_max);
    if (b == NULL)
        return NULL;
    PyObject *r = PyObject_CallFunction(show_fn, "OnO", b, key_chars, ln <= keep_max ? Py_True : Py_False);
    Py_DECREF(b);
    return r;
}

/* The fast spec of a command name: a new tuple reference, Py_None (declined) or NULL with an error. */
static PyObject *spec_of(const char *name, Py_ssize_t ln)
{
    PyObject *b = PyBytes_FromStringAndSize(name, ln);
    if (b == NULL)
        return NULL;
    PyObject *spec = PyDict_GetItemWithError(fast_specs, b);
    Py_DECREF(b);
    if (spec == NULL && PyErr_Occurred())
        return NULL;
    if (spec == NULL && ln <= 32) {
        char up[32];
        for (Py_ssize_t i = 0; i < ln; i++) {
            char c = name[i];
            up[i] = (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
        }
        b = PyBytes_FromStringAndSize(up, ln);
        if (b == NULL)
            return NULL;
        spec = PyDict_GetItemWithError(fast_specs, b);
        Py_DECREF(b);
        if (spec == NULL && PyErr_Occurred())
            return NULL;
    }
    if (spec == NULL || !PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 3)
        Py_RETURN_NONE;
    return Py_NewRef(spec);
}

/* Both fast paths: configured (`table` set by configure()), and pos..limit inside d[0:len]. */
static int window(PyObject *table, Py_ssize_t len, Py_ssize_t *pos, Py_ssize_t *limit)
{
    if (table == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return -1;
    }
    if (*limit > len)
        *limit = len;
    if (*pos < 0)
        *pos = 0;
    return 0;
}

/* request_fast: decodes whole multibulk frames of simple commands of d[0:len] from pos, below
 * limit. Returns the position where it stopped: >= 0 when the frame there is not a whole,
 * well-formed multibulk frame inside the window (the Python fast path stops there too); -(pos + 1)
 * when it is one but not a simple command (the Python fast path decodes it); RESP_FAILED with a
 * Python error set. */
static Py_ssize_t request_fast(const char *d, Py_ssize_t len, Py_ssize_t pos, Py_ssize_t limit, int sv,
                               Py_ssize_t max_bulk, PyObject *out, PyObject *spans, int tuples)
{
    if (window(fast_specs, len, &pos, &limit) < 0)
        return RESP_FAILED;
    Py_ssize_t argpos[2 * 64 + 2];  /* (start, len) of each argument */
    while (pos < limit) {
        /* "*<argc>\r\n" */
        if (d[pos] != '*')
            break;
        Py_ssize_t e = find_crlf(d, pos, limit);
        if (e < 0)
            break;
        Py_ssize_t argc = parse_digits(d, pos + 1, e);
        if (argc <= 0 || argc > fast_args || argc > 64)
            break;
        Py_ssize_t p = e + 2;
        Py_ssize_t k;
        for (k = 0; k < argc; k++) {
            if (p >= limit || d[p] != '$')
                break;
            Py_ssize_t he = find_crlf(d, p, limit);
            if (he < 0)
                break;
            Py_ssize_t declared = parse_digits(d, p + 1, he);
            if (declared < 0)
                break;
            Py_ssize_t s = he + 2;
            Py_ssize_t pe = find_crlf(d, s, limit);   /* the payload "line": up to the next CRLF */
            if (pe < 0 || pe - s != declared || declared > max_bulk)
                break;
            argpos[2 * k] = s;
            argpos[2 * k + 1] = declared;
            p = pe + 2;
        }
        if (k < argc)
            break;
        PyObject *spec = spec_of(d + argpos[0], argpos[1]);
        if (spec == NULL)
            return RESP_FAILED;
        if (spec == Py_None) {
            Py_DECREF(spec);
            return -(pos + 1);
        }
        PyObject *name = PyTuple_GET_ITEM(spec, 0);
        Py_ssize_t kp = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 1));
        Py_ssize_t vf = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 2));
        if ((kp == -1 || vf == -1) && PyErr_Occurred()) {
            Py_DECREF(spec);
            return RESP_FAILED;
        }
        PyObject *key;
        if (kp > 0 && argc > kp) {
            key = key_of(d + argpos[2 * kp], argpos[2 * kp + 1]);
            if (key == NULL) {
                Py_DECREF(spec);
                return RESP_FAILED;
            }
        } else {
            key = Py_NewRef(Py_None);
        }
        if (vf > 0 && argc > vf && !sv) {
            for (Py_ssize_t a = vf; a < argc; a++) {
                if (argpos[2 * a + 1] && append_span(spans, argpos[2 * a], argpos[2 * a + 1]) < 0) {
                    Py_DECREF(key);
                    Py_DECREF(spec);
                    return RESP_FAILED;
                }
            }
        }
        PyObject *cmd = tuples ? Py_BuildValue("(OOnn)", name, key, argc, p - pos)
                               : PyObject_CallFunction(command_cls, "OOOnnOO", name, Py_None, key, argc, p - pos,
                                                       Py_True, Py_False);
        Py_DECREF(key);
        Py_DECREF(spec);
        if (cmd == NULL)
            return RESP_FAILED;
        int rc = PyList_Append(out, cmd);
        Py_DECREF(cmd);
        if (rc < 0)
            return RESP_FAILED;
        pos = p;
    }
    return pos;
}

/* request_fast(data, pos, limit, show_values, max_bulk, out, spans) -> int (see above) */
static PyObject *py_request_fast(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t pos, limit, max_bulk;
    int sv;
    PyObject *out, *spans;
    if (!PyArg_ParseTuple(args, "y*nnpnO!O!", &buf, &pos, &limit, &sv, &max_bulk,
                          &PyList_Type, &out, &PyList_Type, &spans))
        return NULL;
    Py_ssize_t r = request_fast(buf.buf, buf.len, pos, limit, sv, max_bulk, out, spans, 0);
    PyBuffer_Release(&buf);
    return r == RESP_FAILED ? NULL : PyLong_FromSsize_t(r);
}

static int is_allowed(const char *s, Py_ssize_t ln, int *answer)
{
    PyObject *b = PyBytes_FromStringAndSize(s, ln);
    if (b == NULL)
        return -1;
    int r = PySet_Contains(allowed_set, b);
    Py_DECREF(b);
    if (r < 0)
        return -1;
    *answer = r;
    return 0;
}

static int append_reply(PyObject *out, PyObject *type, Py_ssize_t size, int tuples)
{
    PyObject *r = tuples ? Py_BuildValue("(On)", type, size)
                         : PyObject_CallFunction(reply_cls, "OOOnOO", type, Py_None, Py_None, size, Py_None, Py_True);
    if (r == NULL)
        return -1;
    int rc = PyList_Append(out, r);
    Py_DECREF(r);
    return rc;
}

/* reply_fast: decodes whole scalar replies (+, $, $-1, :) of d[0:len] from pos, below limit; the
 * same return convention as request_fast: -(pos + 1) hands an error or aggregate reply to the
 * Python fast path. */
static Py_ssize_t reply_fast(const char *d, Py_ssize_t len, Py_ssize_t pos, Py_ssize_t limit, int sv,
                             PyObject *out, PyObject *spans, int tuples)
{
    if (window(reply_cls, len, &pos, &limit) < 0)
        return RESP_FAILED;
    while (pos < limit) {
        Py_ssize_t e = find_crlf(d, pos, limit);
        if (e < 0 || e == pos)
            break;
        char t = d[pos];
        if (t == '+') {
            Py_ssize_t k = e - pos - 1;
            if (k && !sv) {
                int ok = 0;
                if (k <= short_len && is_allowed(d + pos + 1, k, &ok) < 0)
                    return RESP_FAILED;
                if (!ok && append_span(spans, pos + 1, k) < 0)
                    return RESP_FAILED;
            }
            if (append_reply(out, str_ok, k + 3, tuples) < 0)
                return RESP_FAILED;
            pos += k + 3;
        } else if (t == '$') {
            Py_ssize_t ln = parse_digits(d, pos + 1, e);
            if (ln >= 0) {
                Py_ssize_t s = e + 2;
                Py_ssize_t pe = find_crlf(d, s, limit);
                if (pe < 0 || pe - s != ln)
                    break;
                Py_ssize_t hl = e - pos + 2;
                if (ln && !sv && append_span(spans, s, ln) < 0)
                    return RESP_FAILED;
                if (append_reply(out, str_ok, hl + ln + 2, tuples) < 0)
                    return RESP_FAILED;
                pos = pe + 2;
            } else if (e - pos == 3 && d[pos + 1] == '-' && d[pos + 2] == '1') {
                if (append_reply(out, str_nil, 5, tuples) < 0)
                    return RESP_FAILED;
                pos += 5;
            } else {
                break;
            }
        } else if (t == ':') {
            if (append_reply(out, str_ok, e - pos + 2, tuples) < 0)
                return RESP_FAILED;
            pos = e + 2;
        } else {
            return -(pos + 1);
        }
    }
    return pos;
}

/* reply_fast(data, pos, limit, show_values, out, spans) -> int (see above) */
static PyObject *py_reply_fast(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t pos, limit;
    int sv;
    PyObject *out, *spans;
    if (!PyArg_ParseTuple(args, "y*nnpO!O!", &buf, &pos, &limit, &sv, &PyList_Type, &out, &PyList_Type, &spans))
        return NULL;
    Py_ssize_t r = reply_fast(buf.buf, buf.len, pos, limit, sv, out, spans, 0);
    PyBuffer_Release(&buf);
    return r == RESP_FAILED ? NULL : PyLong_FromSsize_t(r);
}

static PyMethodDef methods[] = {
    {"configure", py_configure, METH_VARARGS, "configure(fast_specs, Command, Reply, show, ALLOWED, key_chars, "
                                              "keep_max, short, fast_args)"},
    {"request_fast", py_request_fast, METH_VARARGS, "whole simple multibulk requests from pos"},
    {"reply_fast", py_reply_fast, METH_VARARGS, "whole scalar replies from pos"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_resp_native", NULL, -1, methods};

/* For the compiled stitcher (tracer/stitch/_stitch_native.c): the same two functions, called
 * without building Python arguments, through the capsule resp_native.h describes. */
static RespNativeAPI api = {request_fast, reply_fast};

PyMODINIT_FUNC PyInit__resp_native(void)
{
    str_ok = PyUnicode_InternFromString("ok");
    str_nil = PyUnicode_InternFromString("nil");
    if (str_ok == NULL || str_nil == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *capsule = PyCapsule_New(&api, RESP_NATIVE_CAPSULE, NULL);
    if (capsule == NULL || PyModule_AddObject(m, "C_API", capsule) < 0) {
        Py_XDECREF(capsule);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
