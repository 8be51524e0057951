/* Compiled record decoding: tracer/kernel/events.py decode(), the same Event, the same errors.
 *
 * The layout (offsets, types) is not written here: configure() receives it from events.FIELDS,
 * the one place that knows it, and checks it is the one this code handles. Records are untrusted
 * (trace files): their length is checked before every read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#define NFIELDS 14
static PyTypeObject *event_type;
static Py_ssize_t slot_offset[NFIELDS + 1];   /* the Event slots, FIELDS order, then payload */
static Py_ssize_t field_at[NFIELDS];
static char field_code[NFIELDS];               /* Q q I i H or s (16 bytes) */
static Py_ssize_t header_size;
static Py_ssize_t cap_at = -1;
static PyObject *empty_bytes;

static int field_size(char code)
{
    switch (code) {
    case 'Q': case 'q': return 8;
    case 'I': case 'i': return 4;
    case 'H': return 2;
    case 's': return 16;
    }
    return -1;
}

/* configure(Event, fields) with fields = events.FIELDS ((code, name), ...) */
static PyObject *py_configure(PyObject *self, PyObject *args)
{
    PyObject *type, *fields;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &type, &PyTuple_Type, &fields))
        return NULL;
    if (PyTuple_GET_SIZE(fields) != NFIELDS) {
        PyErr_SetString(PyExc_ValueError, "unexpected number of record fields");
        return NULL;
    }
    Py_ssize_t at = 0;
    PyObject *dict = ((PyTypeObject *)type)->tp_dict;
    for (Py_ssize_t i = 0; i <= NFIELDS; i++) {
        const char *name, *code = "";
        if (i < NFIELDS) {
            PyObject *f = PyTuple_GET_ITEM(fields, i);
            if (!PyArg_ParseTuple(f, "ss", &code, &name))
                return NULL;
            char c = strcmp(code, "16s") == 0 ? 's' : code[0];
            if ((code[1] != '\0' && c != 's') || field_size(c) < 0) {
                PyErr_Format(PyExc_ValueError, "unsupported field code %s", code);
                return NULL;
            }
            field_code[i] = c;
            field_at[i] = at;
            if (strcmp(name, "cap_len") == 0)
                cap_at = at;
            at += field_size(c);
        } else {
            name = "payload";
        }
        PyObject *descr = PyDict_GetItemString(dict, name);
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "Event.%s is not a slot", name);
            return NULL;
        }
        PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
        if (m->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "Event.%s is not an object slot", name);
            return NULL;
        }
        slot_offset[i] = m->offset;
    }
    if (cap_at < 0 || field_code[NFIELDS - 1] != 's') {
        PyErr_SetString(PyExc_ValueError, "no cap_len field");
        return NULL;
    }
    header_size = at;
    Py_XSETREF(event_type, (PyTypeObject *)Py_NewRef(type));
    Py_RETURN_NONE;
}

static PyObject *field_value(const unsigned char *p, char code)
{
    switch (code) {
    case 'Q': { uint64_t v; memcpy(&v, p, 8); return PyLong_FromUnsignedLongLong(v); }
    case 'q': { int64_t v; memcpy(&v, p, 8); return PyLong_FromLongLong(v); }
    case 'I': { uint32_t v; memcpy(&v, p, 4); return PyLong_FromUnsignedLong(v); }
    case 'i': { int32_t v; memcpy(&v, p, 4); return PyLong_FromLong(v); }
    case 'H': { uint16_t v; memcpy(&v, p, 2); return PyLong_FromLong(v); }
    case 's': return PyBytes_FromStringAndSize((const char *)p, 16);
    }
    return NULL;
}

/* decode(record) -> Event; ValueError when the record is shorter than it says */
static PyObject *py_decode(PyObject *self, PyObject *record)
{
    if (event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return NULL;
    }
    Py_buffer buf;
    if (PyObject_GetBuffer(record, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *d = buf.buf;
    PyObject *ev = NULL;
    if (buf.len < header_size) {
        PyErr_Format(PyExc_ValueError, "record of %zd bytes is shorter than the %zd-byte header", buf.len,
                     header_size);
        goto out;
    }
    uint32_t cap;
    memcpy(&cap, d + cap_at, 4);
    if ((Py_ssize_t)cap > buf.len - header_size) {
        PyErr_Format(PyExc_ValueError, "record says %u payload bytes but holds %zd", cap, buf.len - header_size);
        goto out;
    }
    ev = event_type->tp_alloc(event_type, 0);
    if (ev == NULL)
        goto out;
    for (int i = 0; i < NFIELDS; i++) {
        PyObject *v = field_value(d + field_at[i], field_code[i]);
        if (v == NULL) {
            Py_CLEAR(ev);
            goto out;
        }
        *(PyObject **)((char *)ev + slot_offset[i]) = v;
    }
    PyObject *payload;
    if (cap == 0)
        payload = Py_NewRef(empty_bytes);
    else
        payload = PyBytes_FromStringAndSize((const char *)d + header_size, cap);
    if (payload == NULL) {
        Py_CLEAR(ev);
        goto out;
    }
    *(PyObject **)((char *)ev + slot_offset[NFIELDS]) = payload;
out:
    PyBuffer_Release(&buf);
    return ev;
}

static PyMethodDef methods[] = {
    {"configure", py_configure, METH_VARARGS, "configure(Event, FIELDS)"},
    {"decode", py_decode, METH_O, "decode(record) -> Event"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_events_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__events_native(void)
{
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    if (empty_bytes == NULL)
        return NULL;
    return PyModule_Create(&module);
}
