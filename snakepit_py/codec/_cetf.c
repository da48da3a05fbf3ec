/* The optional C accelerator of the ETF codec: the two frames a worker
 * handles on every call, the call envelope it reads and the {:ok, id, result}
 * it writes, and the two of every beam call (protocol 1.1): the
 * {:beam_call, ...} it writes and the {:beam_reply, ...} it reads.
 *
 * It is a shortcut, never a judge. Each function handles a common subset of
 * terms (small and 32-bit integers, floats, binaries, atoms the Python
 * decoder has already cached, proper lists, small tuples, maps, charlists)
 * and hands everything else to the pure-Python function it was configured
 * with (`configure`): any other tag, anything deeper than MAX_DEPTH, bigger
 * than MAX_FRAME, truncated, trailing or odd in any way. So whatever the
 * input, the answer -- the value, or the DecodeError / EncodeError -- is the
 * one the Python codec gives; the tests hold both to that on random and
 * damaged input. Every read is checked against the bytes that remain first.
 *
 * No user code runs while a value is encoded: only exact builtin types are
 * walked (no __hash__, __eq__ or __iter__ of a subclass is ever called).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 64        /* deeper terms go to Python (whose limit is 512) */
#define MAX_FRAME 65536     /* bigger frames go to Python: copying dominates them */
#define MAX_BINARY 4096     /* so do bigger binaries (Python checks a prefix first) */

/* Set by configure(); strong references held for the life of the process. */
static PyObject *atom_type;    /* snakepit_py.codec.Atom */
static PyObject *call_atom;    /* Atom("call") */
static PyObject *utf8_atoms;   /* the Python decoder's atom caches: bytes -> value */
static PyObject *latin1_atoms;
static PyObject *py_decode;    /* the pure-Python decode_message */
static PyObject *py_encode_ok; /* the pure-Python encode_ok */

/* ------------------------------------------------------------------ decode */

typedef struct {
    const unsigned char *p;
    Py_ssize_t pos, len;
} Reader;

static inline int has(const Reader *r, Py_ssize_t n) { return n >= 0 && r->len - r->pos >= n; }

static inline uint32_t be16(const unsigned char *p) { return ((uint32_t)p[0] << 8) | p[1]; }

static inline uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* NULL means "not here": the caller clears any error and falls back. */
static PyObject *dec(Reader *r, int depth);

static PyObject *dec_cached_atom(Reader *r, Py_ssize_t n, PyObject *cache) {
    if (!has(r, n)) return NULL;
    PyObject *key = PyBytes_FromStringAndSize((const char *)r->p + r->pos, n);
    if (key == NULL) return NULL;
    PyObject *value = PyDict_GetItemWithError(cache, key); /* borrowed */
    Py_DECREF(key);
    if (value == NULL) return NULL; /* not cached yet: Python decodes, checks and caches it */
    r->pos += n;
    Py_INCREF(value);
    return value;
}

static PyObject *dec_binary(Reader *r) {
    if (!has(r, 4)) return NULL;
    uint32_t n = be32(r->p + r->pos);
    r->pos += 4;
    if (n > MAX_BINARY || !has(r, n)) return NULL;
    const char *s = (const char *)r->p + r->pos;
    PyObject *v = PyUnicode_DecodeUTF8(s, n, "strict");
    if (v == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return NULL;
        PyErr_Clear();
        v = PyBytes_FromStringAndSize(s, n); /* not UTF-8: the binary stays bytes */
    }
    if (v != NULL) r->pos += n;
    return v;
}

/* Fills the n empty slots of a new list or tuple with decoded terms; -1 when
 * one is not for C (the slots left NULL are what their dealloc expects). */
static int dec_items(Reader *r, PyObject **items, Py_ssize_t n, int depth) {
    for (Py_ssize_t i = 0; i < n; i++)
        if ((items[i] = dec(r, depth)) == NULL) return -1;
    return 0;
}

static PyObject *dec_list(Reader *r, int depth) {
    if (!has(r, 4)) return NULL;
    uint32_t n = be32(r->p + r->pos);
    r->pos += 4;
    if ((Py_ssize_t)n >= r->len - r->pos) return NULL; /* each element and the tail take a byte */
    PyObject *list = PyList_New(n);
    if (list == NULL) return NULL;
    if (dec_items(r, PySequence_Fast_ITEMS(list), n, depth) ||
        !has(r, 1) || r->p[r->pos] != 106) { /* (not NIL: an improper list, Python builds it) */
        Py_DECREF(list);
        return NULL;
    }
    r->pos += 1;
    return list;
}

static PyObject *dec_string(Reader *r) {
    if (!has(r, 2)) return NULL;
    uint32_t n = be16(r->p + r->pos);
    r->pos += 2;
    if (!has(r, n)) return NULL;
    PyObject *list = PyList_New(n);
    if (list == NULL) return NULL;
    for (uint32_t i = 0; i < n; i++) {
        PyObject *item = PyLong_FromLong(r->p[r->pos + i]);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    r->pos += n;
    return list;
}

static PyObject *dec_tuple(Reader *r, Py_ssize_t n, int depth) {
    PyObject *tuple = PyTuple_New(n);
    if (tuple != NULL && dec_items(r, PySequence_Fast_ITEMS(tuple), n, depth)) Py_CLEAR(tuple);
    return tuple;
}

static PyObject *dec_map(Reader *r, int depth) {
    if (!has(r, 4)) return NULL;
    uint32_t n = be32(r->p + r->pos);
    r->pos += 4;
    if ((Py_ssize_t)n > (r->len - r->pos) / 2) return NULL; /* each key and value take a byte */
    PyObject *map = PyDict_New();
    if (map == NULL) return NULL;
    for (uint32_t i = 0; i < n; i++) {
        PyObject *key = dec(r, depth);
        if (key == NULL) goto fail;
        PyObject *value = dec(r, depth);
        if (value == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        /* An unhashable key (a list, a map) fails here: Python reports it. */
        int bad = PyDict_SetItem(map, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (bad) goto fail;
    }
    return map;
fail:
    Py_DECREF(map);
    return NULL;
}

static PyObject *dec(Reader *r, int depth) {
    if (!has(r, 1)) return NULL;
    unsigned char tag = r->p[r->pos++];
    switch (tag) {
    case 97: /* SMALL_INTEGER_EXT */
        if (!has(r, 1)) return NULL;
        return PyLong_FromLong(r->p[r->pos++]);
    case 98: { /* INTEGER_EXT */
        if (!has(r, 4)) return NULL;
        int32_t v = (int32_t)be32(r->p + r->pos);
        r->pos += 4;
        return PyLong_FromLong(v);
    }
    case 70: { /* NEW_FLOAT_EXT: an IEEE 754 double, big-endian */
        if (!has(r, 8)) return NULL;
        uint64_t bits = ((uint64_t)be32(r->p + r->pos) << 32) | be32(r->p + r->pos + 4);
        double d;
        memcpy(&d, &bits, sizeof d);
        r->pos += 8;
        return PyFloat_FromDouble(d);
    }
    case 119: /* SMALL_ATOM_UTF8_EXT */
        if (!has(r, 1)) return NULL;
        r->pos += 1;
        return dec_cached_atom(r, r->p[r->pos - 1], utf8_atoms);
    case 100: /* ATOM_EXT (latin-1, at most 255 bytes) */
        if (!has(r, 2) || r->p[r->pos] != 0) return NULL;
        r->pos += 2;
        return dec_cached_atom(r, r->p[r->pos - 1], latin1_atoms);
    case 118: /* ATOM_UTF8_EXT */
        if (!has(r, 2)) return NULL;
        r->pos += 2;
        return dec_cached_atom(r, be16(r->p + r->pos - 2), utf8_atoms);
    case 115: /* SMALL_ATOM_EXT */
        if (!has(r, 1)) return NULL;
        r->pos += 1;
        return dec_cached_atom(r, r->p[r->pos - 1], latin1_atoms);
    case 109: /* BINARY_EXT */
        return dec_binary(r);
    case 106: /* NIL_EXT */
        return PyList_New(0);
    case 107: /* STRING_EXT: a charlist */
        return dec_string(r);
    case 108: /* LIST_EXT */
        if (depth <= 0) return NULL;
        return dec_list(r, depth - 1);
    case 104: /* SMALL_TUPLE_EXT */
        if (depth <= 0 || !has(r, 1)) return NULL;
        r->pos += 1;
        if (r->p[r->pos - 1] > r->len - r->pos) return NULL;
        return dec_tuple(r, r->p[r->pos - 1], depth - 1);
    case 116: /* MAP_EXT */
        if (depth <= 0) return NULL;
        return dec_map(r, depth - 1);
    default: /* big integers, old floats, opaque terms, bad tags: Python's */
        return NULL;
    }
}

/* term_to_binary({:call, ...}): OTP 25 writes ATOM_EXT, OTP 26 SMALL_ATOM_UTF8_EXT */
static const char HEAD_OTP25[] = "\x83h\x06" "d\x00\x04" "call";
static const char HEAD_OTP26[] = "\x83h\x06" "w\x04" "call";

/* Positions r after the {:call, head; 0 when the frame has it. */
static int call_head(Reader *r) {
    if (r->len > MAX_FRAME) return -1;
    if (r->len >= 10 && memcmp(r->p, HEAD_OTP25, 10) == 0) {
        r->pos = 10;
    } else if (r->len >= 9 && memcmp(r->p, HEAD_OTP26, 9) == 0) {
        r->pos = 9;
    } else {
        return -1;
    }
    return 0;
}

static PyObject *decode_call(PyObject *data) {
    Reader r = {(const unsigned char *)PyBytes_AS_STRING(data), 0, PyBytes_GET_SIZE(data)};
    if (call_head(&r)) return NULL;
    if (!has(&r, 1) || (r.p[r.pos] != 97 && r.p[r.pos] != 98)) return NULL;
    PyObject *items[5] = {NULL, NULL, NULL, NULL, NULL};
    items[0] = dec(&r, 0); /* the id */
    if (items[0] == NULL || !has(&r, 1) || r.p[r.pos] != 109) goto fail;
    items[1] = dec(&r, 0); /* the method: a str, else Python explains */
    if (items[1] == NULL || !PyUnicode_CheckExact(items[1])) goto fail;
    for (int i = 2; i < 5; i++) { /* args, kwargs, opts */
        items[i] = dec(&r, MAX_DEPTH);
        if (items[i] == NULL) goto fail;
    }
    if (r.pos != r.len) goto fail;
    PyObject *call = PyTuple_New(6);
    if (call == NULL) goto fail;
    Py_INCREF(call_atom);
    PyTuple_SET_ITEM(call, 0, call_atom);
    for (int i = 0; i < 5; i++) PyTuple_SET_ITEM(call, i + 1, items[i]);
    return call;
fail:
    for (int i = 0; i < 5; i++) Py_XDECREF(items[i]);
    return NULL;
}

/* ----------------------------------------------------------- call fields */

enum { OPT_TIMEOUT, OPT_CREDIT, OPT_META, OPT_COUNT };
static const char *const OPT_NAMES[OPT_COUNT] = {"timeout_ms", "credit", "meta"};

/* Reads an atom (any of the four atom tags) and says which protocol opt it
 * names, or -1: anything else, even a binary with the same text. */
static int opt_key(Reader *r) {
    if (!has(r, 2)) return -1;
    unsigned char tag = r->p[r->pos];
    Py_ssize_t n;
    if (tag == 119 || tag == 115) { /* SMALL_ATOM_UTF8_EXT, SMALL_ATOM_EXT */
        n = r->p[r->pos + 1];
        r->pos += 2;
    } else if ((tag == 100 || tag == 118) && has(r, 3) && r->p[r->pos + 1] == 0) {
        n = r->p[r->pos + 2]; /* ATOM_EXT, ATOM_UTF8_EXT: names under 256 bytes */
        r->pos += 3;
    } else {
        return -1;
    }
    if (!has(r, n)) return -1;
    const char *name = (const char *)r->p + r->pos;
    r->pos += n;
    for (int k = 0; k < OPT_COUNT; k++)
        if ((size_t)n == strlen(OPT_NAMES[k]) && memcmp(name, OPT_NAMES[k], n) == 0) return k;
    return -1;
}

/* A positive timeout_ms (an integer or a float) or a non-negative credit. */
static PyObject *opt_number(Reader *r, int key) {
    if (!has(r, 1)) return NULL;
    unsigned char tag = r->p[r->pos];
    if (tag == 97 || tag == 98) {
        PyObject *v = dec(r, 0);
        if (v == NULL) return NULL;
        long x = PyLong_AsLong(v);
        if (key == OPT_TIMEOUT ? x > 0 : x >= 0) return v;
        Py_DECREF(v);
        return NULL;
    }
    if (tag == 70 && key == OPT_TIMEOUT) {
        PyObject *v = dec(r, 0);
        if (v == NULL) return NULL;
        if (PyFloat_AS_DOUBLE(v) > 0) return v; /* (NaN is not: Python refuses it) */
        Py_DECREF(v);
    }
    return NULL;
}

/* call_fields(frame) -> (id, method, args, kwargs, timeout_ms, credit, meta) or None.
 *
 * The fields of a call envelope the dispatcher would accept as well formed
 * (an id >= 0, a str method, a list of args, a map of kwargs, opts with
 * only the protocol's three atom keys, each valid; absent ones are None),
 * read straight from the bytes: no opts map is built. None for anything
 * else, which then takes decode_message and the dispatcher's own checks;
 * so a None never means the frame is bad. */
static PyObject *call_fields(PyObject *self, PyObject *data) {
    (void)self;
    if (!PyBytes_CheckExact(data)) Py_RETURN_NONE;
    Reader r = {(const unsigned char *)PyBytes_AS_STRING(data), 0, PyBytes_GET_SIZE(data)};
    PyObject *f[7] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    if (call_head(&r) || !has(&r, 1)) goto none;
    if (r.p[r.pos] == 98 && has(&r, 2) && (r.p[r.pos + 1] & 0x80)) goto none; /* id < 0 */
    if (r.p[r.pos] != 97 && r.p[r.pos] != 98) goto none;
    f[0] = dec(&r, 0);
    if (f[0] == NULL || !has(&r, 1) || r.p[r.pos] != 109) goto none;
    f[1] = dec(&r, 0);
    if (f[1] == NULL || !PyUnicode_CheckExact(f[1]) || !has(&r, 1)) goto none;
    unsigned char tag = r.p[r.pos];
    if (tag != 106 && tag != 107 && tag != 108) goto none; /* args: a list */
    f[2] = dec(&r, MAX_DEPTH);
    if (f[2] == NULL || !has(&r, 1) || r.p[r.pos] != 116) goto none;
    f[3] = dec(&r, MAX_DEPTH); /* kwargs: a map */
    if (f[3] == NULL || !has(&r, 5) || r.p[r.pos] != 116) goto none;
    uint32_t pairs = be32(r.p + r.pos + 1);
    r.pos += 5;
    if (pairs > OPT_COUNT) goto none;
    for (uint32_t i = 0; i < pairs; i++) {
        int key = opt_key(&r);
        if (key < 0 || f[4 + key] != NULL) goto none; /* unknown or repeated */
        if (key == OPT_META) {
            if (!has(&r, 1) || r.p[r.pos] != 116) goto none;
            f[6] = dec(&r, MAX_DEPTH);
        } else {
            f[4 + key] = opt_number(&r, key);
        }
        if (f[4 + key] == NULL) goto none;
    }
    if (r.pos != r.len) goto none;
    PyObject *fields = PyTuple_New(7);
    if (fields == NULL) goto none;
    for (int i = 0; i < 7; i++) {
        PyObject *v = f[i] != NULL ? f[i] : Py_None;
        if (f[i] == NULL) Py_INCREF(Py_None);
        PyTuple_SET_ITEM(fields, i, v);
    }
    return fields;
none:
    PyErr_Clear();
    for (int i = 0; i < 7; i++) Py_XDECREF(f[i]);
    Py_RETURN_NONE;
}

static PyObject *decode_message(PyObject *self, PyObject *data) {
    (void)self;
    if (py_decode == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_cetf is not configured");
        return NULL;
    }
    if (PyBytes_CheckExact(data)) {
        PyObject *call = decode_call(data);
        if (call != NULL) return call;
        PyErr_Clear();
    }
    return PyObject_CallOneArg(py_decode, data);
}

/* ------------------------------------------------------------------ encode */

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    char small[256];
} Out;

static int grow(Out *o, Py_ssize_t n) {
    if (n > PY_SSIZE_T_MAX / 2 - o->len) return -1;
    /* at least double (amortised appends), at once to what is needed (a big binary) */
    Py_ssize_t cap = o->len + n > 2 * o->cap ? o->len + n : 2 * o->cap;
    char *buf = o->buf == o->small ? PyMem_Malloc(cap) : PyMem_Realloc(o->buf, cap);
    if (buf == NULL) return -1;
    if (o->buf == o->small) memcpy(buf, o->small, o->len);
    o->buf = buf;
    o->cap = cap;
    return 0;
}

static inline int put(Out *o, const void *src, Py_ssize_t n) {
    if (o->cap - o->len < n && grow(o, n)) return -1;
    memcpy(o->buf + o->len, src, n);
    o->len += n;
    return 0;
}

static inline int put_tag32(Out *o, unsigned char tag, uint32_t n) {
    unsigned char b[5] = {tag, n >> 24, n >> 16, n >> 8, n};
    return put(o, b, 5);
}

static int enc(Out *o, PyObject *v, int depth);

static int enc_int(Out *o, PyObject *v) {
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) return -1; /* beyond 64 bits: Python's */
    if (x >= 0 && x < 256) {
        unsigned char b[2] = {97, (unsigned char)x};
        return put(o, b, 2);
    }
    if (x >= INT32_MIN && x <= INT32_MAX) return put_tag32(o, 98, (uint32_t)(int32_t)x);
    /* SMALL_BIG_EXT: byte count, sign, magnitude little-endian */
    uint64_t mag = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
    unsigned char b[11] = {110, 0, x < 0};
    int n = 0;
    while (mag) {
        b[3 + n++] = mag & 0xff;
        mag >>= 8;
    }
    b[1] = (unsigned char)n;
    return put(o, b, 3 + n);
}

static int enc_utf8(Out *o, PyObject *s, int atom) {
    Py_ssize_t n;
    const char *utf8;
    PyObject *copy = NULL;
    if (PyUnicode_IS_ASCII(s)) {
        utf8 = (const char *)PyUnicode_DATA(s);
        n = PyUnicode_GET_LENGTH(s);
    } else {
        /* a new bytes object: no UTF-8 copy left cached inside the user's str */
        copy = PyUnicode_AsUTF8String(s); /* fails on lone surrogates: Python's */
        if (copy == NULL) return -1;
        utf8 = PyBytes_AS_STRING(copy);
        n = PyBytes_GET_SIZE(copy);
    }
    int bad;
    if (atom) {
        unsigned char b[3];
        if (PyUnicode_GET_LENGTH(s) > 255) {
            bad = -1; /* Python raises EncodeError for it */
        } else if (n < 256) {
            b[0] = 119, b[1] = (unsigned char)n;
            bad = put(o, b, 2) || put(o, utf8, n);
        } else {
            b[0] = 118, b[1] = n >> 8, b[2] = n & 0xff;
            bad = put(o, b, 3) || put(o, utf8, n);
        }
    } else {
        bad = (uint64_t)n > UINT32_MAX || put_tag32(o, 109, (uint32_t)n) || put(o, utf8, n);
    }
    Py_XDECREF(copy);
    return bad ? -1 : 0;
}

static int enc_items(Out *o, PyObject *const *items, Py_ssize_t n, int depth) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (enc(o, items[i], depth)) return -1;
    return 0;
}

/* 0 when v was written; -1 to leave the whole value to Python. */
static int enc(Out *o, PyObject *v, int depth) {
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyLong_Type) return enc_int(o, v);
    if (t == &PyUnicode_Type) return enc_utf8(o, v, 0);
    if ((PyObject *)t == atom_type) return enc_utf8(o, v, 1);
    if (v == Py_None) return put(o, "w\x03" "nil", 5);
    if (v == Py_True) return put(o, "w\x04" "true", 6);
    if (v == Py_False) return put(o, "w\x05" "false", 7);
    if (t == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(v);
        if (!isfinite(d)) return -1; /* the BEAM has no NaN or infinity: Python says so */
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        unsigned char b[9] = {70};
        for (int i = 0; i < 8; i++) b[1 + i] = (bits >> (56 - 8 * i)) & 0xff;
        return put(o, b, 9);
    }
    if (t == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(v);
        if ((uint64_t)n > UINT32_MAX) return -1;
        return put_tag32(o, 109, (uint32_t)n) || put(o, PyBytes_AS_STRING(v), n) ? -1 : 0;
    }
    if (depth <= 0) return -1;
    if (t == &PyTuple_Type) {
        Py_ssize_t n = PyTuple_GET_SIZE(v);
        if (n < 256) {
            unsigned char b[2] = {104, (unsigned char)n};
            if (put(o, b, 2)) return -1;
        } else if ((uint64_t)n > UINT32_MAX || put_tag32(o, 105, (uint32_t)n)) {
            return -1;
        }
        return enc_items(o, &PyTuple_GET_ITEM(v, 0), n, depth - 1);
    }
    if (t == &PyList_Type) {
        Py_ssize_t n = PyList_GET_SIZE(v);
        if (n == 0) return put(o, "j", 1);
        if ((uint64_t)n > UINT32_MAX || put_tag32(o, 108, (uint32_t)n)) return -1;
        /* nothing here runs Python code, so the list cannot change meanwhile */
        if (enc_items(o, &PyList_GET_ITEM(v, 0), n, depth - 1)) return -1;
        return put(o, "j", 1);
    }
    if (t == &PyDict_Type) {
        Py_ssize_t n = PyDict_GET_SIZE(v), i = 0;
        PyObject *key, *value;
        if ((uint64_t)n > UINT32_MAX || put_tag32(o, 116, (uint32_t)n)) return -1;
        while (PyDict_Next(v, &i, &key, &value))
            if (enc(o, key, depth - 1) || enc(o, value, depth - 1)) return -1;
        return 0;
    }
    return -1; /* subclasses, opaque terms, everything else: Python's */
}

static const char OK_HEAD[] = "\x83h\x03" "w\x02" "ok";

static PyObject *encode_ok(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "encode_ok(call_id, result) takes two arguments");
        return NULL;
    }
    if (py_encode_ok == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_cetf is not configured");
        return NULL;
    }
    Out o;
    o.buf = o.small;
    o.len = 0;
    o.cap = sizeof o.small;
    PyObject *frame = NULL;
    PyObject *result = args[1];
    if (PyBytes_CheckExact(result) && PyBytes_GET_SIZE(result) > MAX_BINARY &&
        (uint64_t)PyBytes_GET_SIZE(result) <= UINT32_MAX) {
        /* A big binary result: the frame is made in one piece, one copy of it. */
        Py_ssize_t n = PyBytes_GET_SIZE(result);
        if (put(&o, OK_HEAD, sizeof OK_HEAD - 1) == 0 && enc(&o, args[0], 0) == 0 &&
            put_tag32(&o, 109, (uint32_t)n) == 0 &&
            (frame = PyBytes_FromStringAndSize(NULL, o.len + n)) != NULL) {
            memcpy(PyBytes_AS_STRING(frame), o.buf, o.len);
            memcpy(PyBytes_AS_STRING(frame) + o.len, PyBytes_AS_STRING(result), n);
        }
    } else if (put(&o, OK_HEAD, sizeof OK_HEAD - 1) == 0 && enc(&o, args[0], 0) == 0 &&
               enc(&o, result, MAX_DEPTH) == 0) {
        frame = PyBytes_FromStringAndSize(o.buf, o.len);
    }
    if (o.buf != o.small) PyMem_Free(o.buf);
    if (frame != NULL) return frame;
    PyErr_Clear();
    return PyObject_Vectorcall(py_encode_ok, args, 2, NULL);
}

/* ------------------------------------------------------ beam call frames */

/* A beam call's two frames (protocol 1.1, snakepit_py/_beam.py), the same
 * shortcut: whatever is not for C gives None, and the caller takes the
 * Python road, which gives the answer (or the error) the codec gives. */

static const char BEAM_CALL_HEAD[] = "\x83h\x05" "w\x09" "beam_call";
static const char CALL_ID_KEY[] = "w\x07" "call_id";
static const char TIMEOUT_MS_KEY[] = "w\x0a" "timeout_ms";

/* beam_call_frame(ref, name, args, call_id, timeout_ms) -> bytes or None.
 *
 * The bytes of etf.encode((Atom("beam_call"), ref, name, list(args), opts)),
 * opts being %{call_id: call_id} and, unless timeout_ms is None,
 * timeout_ms: timeout_ms (in that order). None when any part is not for C:
 * the caller encodes it in Python (and an argument the codec cannot carry
 * raises EncodeError there). */
static PyObject *beam_call_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "beam_call_frame(ref, name, args, call_id, timeout_ms) takes five arguments");
        return NULL;
    }
    PyObject *ref = args[0], *name = args[1], *items = args[2], *call_id = args[3];
    PyObject *timeout_ms = args[4];
    PyObject *const *item;
    Py_ssize_t n;
    if (PyTuple_CheckExact(items)) {
        n = PyTuple_GET_SIZE(items);
        item = &PyTuple_GET_ITEM(items, 0);
    } else if (PyList_CheckExact(items)) {
        n = PyList_GET_SIZE(items);
        item = &PyList_GET_ITEM(items, 0);
    } else {
        Py_RETURN_NONE;
    }
    if (!PyLong_CheckExact(ref) || !PyUnicode_CheckExact(name) || atom_type == NULL)
        Py_RETURN_NONE;
    Out o;
    o.buf = o.small;
    o.len = 0;
    o.cap = sizeof o.small;
    PyObject *frame = NULL;
    /* nothing below runs Python code, so a list of args cannot change meanwhile */
    int bad = put(&o, BEAM_CALL_HEAD, sizeof BEAM_CALL_HEAD - 1) || enc(&o, ref, 0) ||
              enc_utf8(&o, name, 0);
    if (!bad) {
        if (n == 0)
            bad = put(&o, "j", 1);
        else
            bad = (uint64_t)n > UINT32_MAX || put_tag32(&o, 108, (uint32_t)n) ||
                  enc_items(&o, item, n, MAX_DEPTH - 1) || put(&o, "j", 1);
    }
    if (!bad)
        bad = put_tag32(&o, 116, timeout_ms == Py_None ? 1 : 2) ||
              put(&o, CALL_ID_KEY, sizeof CALL_ID_KEY - 1) || enc(&o, call_id, 0);
    if (!bad && timeout_ms != Py_None)
        bad = put(&o, TIMEOUT_MS_KEY, sizeof TIMEOUT_MS_KEY - 1) || enc(&o, timeout_ms, 0);
    if (!bad) frame = PyBytes_FromStringAndSize(o.buf, o.len);
    if (o.buf != o.small) PyMem_Free(o.buf);
    if (frame != NULL) return frame;
    PyErr_Clear();
    Py_RETURN_NONE;
}

/* term_to_binary({:beam_reply, ...}): OTP 25's ATOM_EXT, OTP 26's SMALL_ATOM_UTF8_EXT */
static const char REPLY_OTP25[] = "\x83h\x03" "d\x00\x0a" "beam_reply";
static const char REPLY_OTP26[] = "\x83h\x03" "w\x0a" "beam_reply";

/* beam_reply_fields(frame) -> (ref, ok, value) or None.
 *
 * A well-formed ETF {:beam_reply, ref, {:ok | :error, value}} with a ref of
 * 0..2**31-1 read from its bytes, the value decoded as the codec decodes it.
 * None for anything else or anything not for C (a value with a term C leaves
 * to Python, deeper than MAX_DEPTH, a frame bigger than MAX_FRAME): the
 * caller then reads it in Python; so a None never means the frame is bad. */
static PyObject *beam_reply_fields(PyObject *self, PyObject *data) {
    (void)self;
    if (!PyBytes_CheckExact(data) || utf8_atoms == NULL) Py_RETURN_NONE;
    Reader r = {(const unsigned char *)PyBytes_AS_STRING(data), 0, PyBytes_GET_SIZE(data)};
    if (r.len > MAX_FRAME) Py_RETURN_NONE;
    if (r.len >= 16 && memcmp(r.p, REPLY_OTP25, 16) == 0) {
        r.pos = 16;
    } else if (r.len >= 15 && memcmp(r.p, REPLY_OTP26, 15) == 0) {
        r.pos = 15;
    } else {
        Py_RETURN_NONE;
    }
    long ref;
    if (has(&r, 2) && r.p[r.pos] == 97) { /* SMALL_INTEGER_EXT */
        ref = r.p[r.pos + 1];
        r.pos += 2;
    } else if (has(&r, 5) && r.p[r.pos] == 98 && !(r.p[r.pos + 1] & 0x80)) { /* INTEGER_EXT >= 0 */
        ref = (long)be32(r.p + r.pos + 1);
        r.pos += 5;
    } else {
        Py_RETURN_NONE;
    }
    /* {:ok, _} or {:error, _}: the tuple head and the atom in either encoding */
    int ok;
    const unsigned char *p = r.p + r.pos;
    Py_ssize_t left = r.len - r.pos;
    if (left >= 7 && memcmp(p, "h\x02" "d\x00\x02" "ok", 7) == 0) {
        ok = 1, r.pos += 7;
    } else if (left >= 6 && memcmp(p, "h\x02" "w\x02" "ok", 6) == 0) {
        ok = 1, r.pos += 6;
    } else if (left >= 10 && memcmp(p, "h\x02" "d\x00\x05" "error", 10) == 0) {
        ok = 0, r.pos += 10;
    } else if (left >= 9 && memcmp(p, "h\x02" "w\x05" "error", 9) == 0) {
        ok = 0, r.pos += 9;
    } else {
        Py_RETURN_NONE;
    }
    PyObject *value = dec(&r, MAX_DEPTH);
    if (value == NULL || r.pos != r.len) {
        PyErr_Clear();
        Py_XDECREF(value);
        Py_RETURN_NONE;
    }
    PyObject *ref_obj = PyLong_FromLong(ref);
    if (ref_obj == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    PyObject *flag = ok ? Py_True : Py_False;
    Py_INCREF(flag);
    PyObject *fields = PyTuple_New(3);
    if (fields == NULL) {
        Py_DECREF(ref_obj);
        Py_DECREF(flag);
        Py_DECREF(value);
        return NULL;
    }
    PyTuple_SET_ITEM(fields, 0, ref_obj);
    PyTuple_SET_ITEM(fields, 1, flag);
    PyTuple_SET_ITEM(fields, 2, value);
    return fields;
}

/* ------------------------------------------------------------------ module */

static PyObject *configure(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *a, *c, *u, *l, *d, *e;
    if (!PyArg_ParseTuple(args, "OOO!O!OO:configure", &a, &c, &PyDict_Type, &u, &PyDict_Type, &l,
                          &d, &e))
        return NULL;
    if (!PyType_Check(a) || !PyCallable_Check(d) || !PyCallable_Check(e)) {
        PyErr_SetString(PyExc_TypeError, "configure(Atom, call, utf8, latin1, decode, encode_ok)");
        return NULL;
    }
    PyObject **slots[6] = {&atom_type, &call_atom, &utf8_atoms, &latin1_atoms, &py_decode,
                           &py_encode_ok};
    PyObject *values[6] = {a, c, u, l, d, e};
    for (int i = 0; i < 6; i++) {
        Py_INCREF(values[i]);
        Py_XSETREF(*slots[i], values[i]);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(Atom, call_atom, utf8_atoms, latin1_atoms, decode_message, encode_ok):\n"
     "the Python codec's types, atom caches and the functions to fall back to."},
    {"call_fields", call_fields, METH_O,
     "call_fields(frame): a well-formed call's (id, method, args, kwargs, timeout_ms, credit,\n"
     "meta), or None to leave the frame to decode_message and the dispatcher."},
    {"decode_message", decode_message, METH_O,
     "decode_message(data): the call envelope decoded in C, anything else by the fallback."},
    {"encode_ok", (PyCFunction)(void (*)(void))encode_ok, METH_FASTCALL,
     "encode_ok(call_id, result): {:ok, call_id, result} encoded in C, or by the fallback."},
    {"beam_call_frame", (PyCFunction)(void (*)(void))beam_call_frame, METH_FASTCALL,
     "beam_call_frame(ref, name, args, call_id, timeout_ms): {:beam_call, ...} encoded in C,\n"
     "or None to leave it to the Python encoder."},
    {"beam_reply_fields", beam_reply_fields, METH_O,
     "beam_reply_fields(frame): a well-formed {:beam_reply}'s (ref, ok, value), or None to\n"
     "leave the frame to the Python road."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_cetf",
    .m_doc = "C shortcuts for the ETF codec's hottest frames.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__cetf(void) { return PyModule_Create(&module); }
