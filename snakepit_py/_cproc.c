/* Linux process controls for the guard (snakepit_py/_guard.py) and the worker
 * (snakepit_py/_lifecycle.py), in C so that a worker's start-up does not pay
 * for importing ctypes (~2 ms) and does them before :ready; and the one
 * CPython call that interrupts a call's thread (snakepit_py/_context.py), so
 * that interrupting never has to import ctypes either.
 *
 * Optional like the codec's accelerator: without it both modules fall back
 * to ctypes. Elsewhere than Linux (or glibc, for mallopt) they answer False. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifdef __linux__
#include <sys/prctl.h>
#endif
#ifdef __GLIBC__
#include <malloc.h>
#endif

static PyObject *
set_child_subreaper(PyObject *self, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
#ifdef __linux__
    if (prctl(PR_SET_CHILD_SUBREAPER, (unsigned long)on, 0UL, 0UL, 0UL) == 0)
        Py_RETURN_TRUE;
#endif
    Py_RETURN_FALSE;
}

static PyObject *
set_parent_death_signal(PyObject *self, PyObject *arg)
{
    long sig = PyLong_AsLong(arg);
    if (sig == -1 && PyErr_Occurred())
        return NULL;
    if (sig < 0 || sig > 64) {
        PyErr_SetString(PyExc_ValueError, "a signal number is 0..64");
        return NULL;
    }
#ifdef __linux__
    if (prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0UL, 0UL, 0UL) == 0)
        Py_RETURN_TRUE;
#endif
    Py_RETURN_FALSE;
}

static PyObject *
set_malloc_thresholds(PyObject *self, PyObject *args)
{
    int mmap_threshold, trim_threshold;
    if (!PyArg_ParseTuple(args, "ii:set_malloc_thresholds", &mmap_threshold, &trim_threshold))
        return NULL;
#ifdef __GLIBC__
    int ok = mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1;
    if (mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1 && ok)
        Py_RETURN_TRUE;
#endif
    Py_RETURN_FALSE;
}

static PyObject *
set_async_exc(PyObject *self, PyObject *args)
{
    unsigned long thread_id;
    PyObject *exc;
    if (!PyArg_ParseTuple(args, "kO:set_async_exc", &thread_id, &exc))
        return NULL;
    return PyLong_FromLong(PyThreadState_SetAsyncExc(thread_id, exc));
}

static PyMethodDef methods[] = {
    {"set_child_subreaper", set_child_subreaper, METH_O,
     "set_child_subreaper(on) -> bool: orphaned descendants are re-parented to this process."},
    {"set_parent_death_signal", set_parent_death_signal, METH_O,
     "set_parent_death_signal(sig) -> bool: the kernel sends sig when the parent dies."},
    {"set_async_exc", set_async_exc, METH_VARARGS,
     "set_async_exc(thread_id, exc) -> int: PyThreadState_SetAsyncExc, the threads changed."},
    {"set_malloc_thresholds", set_malloc_thresholds, METH_VARARGS,
     "set_malloc_thresholds(mmap, trim) -> bool: glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cproc", "Linux process controls for the guard and the worker.", -1, methods,
};

PyMODINIT_FUNC
PyInit__cproc(void)
{
    return PyModule_Create(&module);
}
