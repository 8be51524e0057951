/* The compiled RESP fast paths as C functions (tracer/decode/_resp_native.c exports them in the
 * capsule "tracer.decode._resp_native.C_API"). Both decode d[0:len] from pos, below limit, append
 * Command / Reply objects (or, with `tuples`, (name, key, argc, size) / (type, size) tuples: the
 * fields the compiled stitcher reads) to out and (offset, length) spans to spans, and return where they stopped:
 * >= 0 at a frame the Python fast path would stop at too, -(pos + 1) at a frame they hand to the
 * Python fast path, RESP_FAILED with a Python error set. */
#ifndef RESP_NATIVE_H
#define RESP_NATIVE_H

#define RESP_NATIVE_CAPSULE "tracer.decode._resp_native.C_API"
#define RESP_FAILED PY_SSIZE_T_MIN

typedef struct {
    Py_ssize_t (*request_fast)(const char *d, Py_ssize_t len, Py_ssize_t pos, Py_ssize_t limit, int show_values,
                               Py_ssize_t max_bulk, PyObject *out, PyObject *spans, int tuples);
    Py_ssize_t (*reply_fast)(const char *d, Py_ssize_t len, Py_ssize_t pos, Py_ssize_t limit, int show_values,
                             PyObject *out, PyObject *spans, int tuples);
} RespNativeAPI;

#endif
