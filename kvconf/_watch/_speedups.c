/*
 * kvconf._speedups: the watcher's cached read in C.
 *
 * ``CachedReader.get(namespace, key, default=None)`` answers from
 * ``self._views`` (``{namespace: {key: effective value}}``, swapped whole by
 * the cache on every change, never changed in place) with at most two dict
 * lookups and no Python frame; the view of the last namespace read is kept
 * until ``_views`` is set again. Any
 * other case (a view not built yet, a key no layer has, keyword arguments,
 * names that are not exact ``str``) calls ``self._get_slow`` with the same
 * arguments, which holds the full semantics. ``kvconf/_reader.py`` is the
 * pure-Python twin used when this module is not built; tests run both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *views; /* dict: namespace -> dict of effective values */
    PyObject *last_ns;   /* the namespace of the last hit (borrowed identity) */
    PyObject *last_view; /* its view in ``views`` */
} CachedReader;

static PyObject *slow_name; /* interned "_get_slow" */

static PyObject *
reader_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    CachedReader *self = (CachedReader *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->views = PyDict_New();
    if (self->views == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
reader_traverse(CachedReader *self, visitproc visit, void *arg)
{
    Py_VISIT(self->views);
    Py_VISIT(self->last_ns);
    Py_VISIT(self->last_view);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int
reader_clear(CachedReader *self)
{
    Py_CLEAR(self->views);
    Py_CLEAR(self->last_ns);
    Py_CLEAR(self->last_view);
    return 0;
}

static void
reader_dealloc(CachedReader *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    reader_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
reader_get_views(CachedReader *self, void *closure)
{
    if (self->views == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_views");
        return NULL;
    }
    return Py_NewRef(self->views);
}

static int
reader_set_views(CachedReader *self, PyObject *value, void *closure)
{
    if (value == NULL || !PyDict_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "_views must be a dict");
        return -1;
    }
    Py_CLEAR(self->last_ns);
    Py_CLEAR(self->last_view);
    Py_XSETREF(self->views, Py_NewRef(value));
    return 0;
}

static PyObject *
reader_slow(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    Py_ssize_t total = n + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *stack[8];
    if (total > 7) {
        PyErr_SetString(PyExc_TypeError, "get() takes at most 3 arguments");
        return NULL;
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < total; i++) {
        stack[i + 1] = args[i];
    }
    return PyObject_VectorcallMethod(slow_name, stack, (n + 1) | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                     kwnames);
}

static PyObject *
reader_get(CachedReader *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t given = nargs;
    if (kwnames != NULL) {
        /* only ``default=`` may be a keyword on the fast path */
        if (nargs != 2 || PyTuple_GET_SIZE(kwnames) != 1 ||
            PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "default") != 0) {
            return reader_slow((PyObject *)self, args, (size_t)nargs, kwnames);
        }
        given = 3;
    }
    if ((given == 2 || given == 3) && self->views != NULL && PyUnicode_CheckExact(args[0]) &&
        PyUnicode_CheckExact(args[1])) {
        PyObject *view;
        if (args[0] == self->last_ns) {
            /* a published views dict is never changed in place: the view of
             * the last hit holds until ``_views`` is set again */
            view = Py_NewRef(self->last_view);
        }
        else {
            /* held: a str subclass key may run Python code that swaps ``_views`` */
            PyObject *views = Py_NewRef(self->views);
            view = PyDict_GetItemWithError(views, args[0]);
            Py_XINCREF(view);
            Py_DECREF(views);
            if (view == NULL || !PyDict_CheckExact(view)) {
                Py_XDECREF(view);
                if (PyErr_Occurred()) {
                    return NULL;
                }
                return reader_slow((PyObject *)self, args, (size_t)nargs, kwnames);
            }
            PyObject *old_ns = self->last_ns, *old_view = self->last_view;
            self->last_ns = Py_NewRef(args[0]);
            self->last_view = Py_NewRef(view);
            Py_XDECREF(old_ns);
            Py_XDECREF(old_view);
        }
        /* exact str keys: the lookup runs no Python code */
        PyObject *value = PyDict_GetItemWithError(view, args[1]);
        Py_XINCREF(value);
        Py_DECREF(view);
        if (value != NULL) {
            return value;
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    return reader_slow((PyObject *)self, args, (size_t)nargs, kwnames);
}

static PyMethodDef reader_methods[] = {
    {"get", (PyCFunction)(void (*)(void))reader_get, METH_FASTCALL | METH_KEYWORDS,
     "get(namespace, key, default=None)\n--\n\n"
     "The effective value of ``key`` in ``namespace`` from the local cache."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef reader_getset[] = {
    {"_views", (getter)reader_get_views, (setter)reader_set_views,
     "Effective values by namespace (swapped whole by the cache).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot reader_slots[] = {
    {Py_tp_doc, "Base class whose ``get`` reads the watcher's cached views in C."},
    {Py_tp_new, reader_new},
    {Py_tp_dealloc, reader_dealloc},
    {Py_tp_traverse, reader_traverse},
    {Py_tp_clear, reader_clear},
    {Py_tp_methods, reader_methods},
    {Py_tp_getset, reader_getset},
    {0, NULL},
};

static PyType_Spec reader_spec = {
    .name = "kvconf._watch._speedups.CachedReader",
    .basicsize = sizeof(CachedReader),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = reader_slots,
};

static int
speedups_exec(PyObject *module)
{
    slow_name = PyUnicode_InternFromString("_get_slow");
    if (slow_name == NULL) {
        return -1;
    }
    PyObject *type = PyType_FromModuleAndSpec(module, &reader_spec, NULL);
    if (type == NULL) {
        return -1;
    }
    int rc = PyModule_AddObjectRef(module, "CachedReader", type);
    Py_DECREF(type);
    return rc;
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "kvconf._watch._speedups",
    .m_doc = "C fast path of the watcher's cached read (optional; see _reader.py).",
    .m_size = 0,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
