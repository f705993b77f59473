/*
 * The pipeline's per-line loop in C: routing ordinary lines to their run's context ring.
 *
 * Python (triage.py) decides everything about lines that may matter — pattern hits, levels,
 * completion markers, new runs, run metadata, stack traces — and this kernel does the same work as
 * Triage.process_line for every other line, without creating a Python object per line: the line's
 * bytes are copied into its run's ring. It stops at the first line it cannot take and tells Python
 * why; Python handles that line and calls it again. The rules it applies mirror parse.LineParser
 * and Triage.process_line exactly; tests/pipeline/test_kernel.py compares the two on hostile input.
 *
 * RunState is the C half of runs.RunBuffer: the ring, the counters and the times the loop touches.
 * RunOrder is the open runs' activity order, a list threaded through the RunStates. The Kernel finds
 * runs through its own table by run id and looks a few lines ahead to overlap their cache misses.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

enum { FLAG_FULL = 1, FLAG_CAND = 2, FLAG_MARKER = 4 };
enum { BYTES_UNSAFE = 1, BYTES_HIGH = 2 };
static inline int byte_class(const unsigned char *p, Py_ssize_t n);
enum { STOP_END = 0, STOP_LINE = 1, STOP_EVENT = 2, STOP_TICK = 3 };

/* ------------------------------------------------------------------------------------ RunState */

/*
 * The ring keeps its lines as UTF-8 bytes in one circular byte buffer per run, not as str objects:
 * appending a line is a copy into memory the run owns, with no object to allocate and no old one to
 * free. With 10,000 open runs each line lands on a run that is not in cache, and every object the
 * append touches costs a cache miss; the fields a line touches sit together at the struct's start.
 */
typedef struct RunState {
    PyObject_HEAD
    /* What the per-line loop touches comes first (the lookahead prefetches the struct's first lines). */
    Py_ssize_t cap;      /* ring capacity in lines: keep + the extra lines pending collectors need */
    Py_ssize_t head;     /* slot of the oldest line */
    Py_ssize_t len;      /* lines in the ring */
    Py_ssize_t ncoll;    /* len(collectors), so the per-line test reads no other object */
    Py_ssize_t serial;   /* lines ever added: the next line's serial number */
    Py_ssize_t due;      /* with ncoll > 0: before adding line `due`, collectors are frozen */
    Py_ssize_t lines;
    Py_ssize_t checked_lines;
    double last_activity;
    double first_ts;     /* NaN: None */
    double last_ts;
    /* neighbours in its RunOrder (borrowed: the order holds a reference to every run it links) */
    struct RunState *older, *newer;
    void *order; /* the RunOrder it is linked in, or NULL */
    char is_system;
    char meta_settled;
    unsigned char *buf;  /* the lines' bytes, circular */
    uint32_t *loff;      /* per slot: offset of the line in buf, then its length (2 * cap entries) */
    Py_ssize_t bufcap;
    Py_ssize_t used;     /* bytes of the lines in the ring */
    Py_ssize_t wp;       /* where the next line's bytes go */
    Py_ssize_t hashed;
    PyObject *client_ids; /* list of str */
    /* FNV-1a 64-bit hashes of client_ids[:hashed]: the per-line "seen this client?" test touches no
       string object. A hash equal to a known name's counts as that name (odds about 2^-58 per new
       name with 32 names: a collision would leave one name out of the run's client list). */
    uint64_t client_hash[32];
    /* Only Python reads these. */
    Py_ssize_t keep;     /* lines the `ring` attribute shows (the before-context) */
    PyObject *key;
    PyObject *collectors; /* tuple of ContextCollector */
} RunState;

static PyObject *str_due, *str_freeze, *str_event, *str_run, *str_in_traceback, *str_match, *str_done, *str_trace;

static int
RunState_traverse(RunState *self, visitproc visit, void *arg)
{
    Py_VISIT(self->key);
    Py_VISIT(self->collectors);
    Py_VISIT(self->client_ids);
    return 0;
}

static int
RunState_clear(RunState *self)
{
    self->len = self->head = self->used = self->wp = 0;
    Py_CLEAR(self->key);
    Py_CLEAR(self->collectors);
    self->ncoll = 0;
    Py_CLEAR(self->client_ids);
    return 0;
}

static void
RunState_dealloc(RunState *self)
{
    PyObject_GC_UnTrack(self);
    RunState_clear(self);
    PyMem_Free(self->buf);
    PyMem_Free(self->loff);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
RunState_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    RunState *self = (RunState *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->collectors = PyTuple_New(0);
    self->client_ids = PyList_New(0);
    if (self->collectors == NULL || self->client_ids == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->first_ts = self->last_ts = NAN;
    self->key = Py_NewRef(Py_None);
    return (PyObject *)self;
}

static int
RunState_init(RunState *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", "extra", NULL};
    Py_ssize_t keep, extra = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|n", kwlist, &keep, &extra))
        return -1;
    if (keep < 0 || keep > (1 << 20) || extra < 0 || extra > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "capacity and extra must be between 0 and 1048576");
        return -1;
    }
    Py_ssize_t cap = keep + extra;
    if (self->loff != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RunState is already initialised");
        return -1;
    }
    self->loff = PyMem_Calloc(cap > 0 ? 2 * cap : 1, sizeof(uint32_t));
    if (self->loff == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->cap = cap;
    self->keep = keep;
    return 0;
}

/* Copy n bytes into the circular buffer at `at`. */
static inline void
ring_put(RunState *self, Py_ssize_t at, const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t first = self->bufcap - at < n ? self->bufcap - at : n;
    memcpy(self->buf + at, p, first);
    if (first < n)
        memcpy(self->buf, p + first, n - first);
}

/* Copy ring slot `slot` (its bytes) to `out`. */
static inline void
ring_get(const RunState *self, Py_ssize_t slot, unsigned char *out)
{
    Py_ssize_t off = self->loff[2 * slot], n = self->loff[2 * slot + 1];
    Py_ssize_t first = self->bufcap - off < n ? self->bufcap - off : n;
    memcpy(out, self->buf + off, first);
    if (first < n)
        memcpy(out + first, self->buf, n - first);
}

/* Make room for `need` bytes of lines: a bigger buffer, the lines copied oldest first from 0. */
static int
ring_grow(RunState *self, Py_ssize_t need)
{
    /* The first line sizes the buffer for a full ring of lines like it, or of 192-byte lines if it
       is shorter (a run's first line is often a short "Starting …"; its structured lines run
       120-200 bytes), so a ring usually fills without a copy to a bigger buffer; after that it
       grows by half. */
    Py_ssize_t size = need + need / 2;
    if (self->bufcap == 0) {
        Py_ssize_t guess = self->cap * (need + 32 > 192 ? need + 32 : 192);
        size = guess > 65536 ? 65536 : guess;
        if (size < need)
            size = need;
    }
    size = size < 256 ? 256 : (size + 63) & ~(Py_ssize_t)63;
    if (size > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "context ring lines too long");
        return -1;
    }
    unsigned char *buf = PyMem_Malloc(size);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i < self->len; i++) {
        Py_ssize_t slot = (self->head + i) % self->cap;
        ring_get(self, slot, buf + at);
        self->loff[2 * slot] = (uint32_t)at;
        at += self->loff[2 * slot + 1];
    }
    PyMem_Free(self->buf);
    self->buf = buf;
    self->bufcap = size;
    self->wp = at;
    return 0;
}

/* Append a line made of two pieces (the second may be empty) to the ring, dropping the oldest. */
static int
ring_push(RunState *self, const unsigned char *a, Py_ssize_t na, const unsigned char *b, Py_ssize_t nb)
{
    self->serial++;
    if (self->cap == 0)
        return 0;
    if (self->len == self->cap) {
        self->used -= self->loff[2 * self->head + 1];
        self->head = (self->head + 1) % self->cap;
        self->len--;
    }
    Py_ssize_t n = na + nb;
    if (self->bufcap == 0 && ring_grow(self, n > 0 ? n : 1) < 0)
        return -1;
    if (self->used + n > self->bufcap && ring_grow(self, self->used + n) < 0)
        return -1;
    Py_ssize_t at = self->wp;
    ring_put(self, at, a, na);
    if (nb)
        ring_put(self, (at + na) % self->bufcap, b, nb);
    Py_ssize_t slot = (self->head + self->len) % self->cap;
    self->loff[2 * slot] = (uint32_t)at;
    self->loff[2 * slot + 1] = (uint32_t)n;
    self->len++;
    self->used += n;
    self->wp = (at + n) % self->bufcap;
    return 0;
}

/* The ring's line in slot `slot` as str (UTF-8; "surrogatepass" round-trips any str added). */
static PyObject *
ring_str(const RunState *self, Py_ssize_t slot)
{
    Py_ssize_t off = self->loff[2 * slot], n = self->loff[2 * slot + 1];
    if (off + n <= self->bufcap)
        return PyUnicode_DecodeUTF8((const char *)self->buf + off, n, "surrogatepass");
    unsigned char *tmp = PyMem_Malloc(n);
    if (tmp == NULL)
        return PyErr_NoMemory();
    ring_get(self, slot, tmp);
    PyObject *s = PyUnicode_DecodeUTF8((const char *)tmp, n, "surrogatepass");
    PyMem_Free(tmp);
    return s;
}

/* The earliest `due` of the collectors in `coll` (a tuple), or -1 with an exception set. */
static Py_ssize_t
earliest_due(PyObject *coll)
{
    Py_ssize_t best = PY_SSIZE_T_MAX;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(coll); i++) {
        PyObject *v = PyObject_GetAttr(PyTuple_GET_ITEM(coll, i), str_due);
        if (v == NULL)
            return -1;
        Py_ssize_t due = PyNumber_AsSsize_t(v, PyExc_OverflowError);
        Py_DECREF(v);
        if (due == -1 && PyErr_Occurred())
            return -1;
        if (due < best)
            best = due;
    }
    return best;
}

/*
 * A collector takes its after-context from the ring, not line by line: the ring keeps `extra` more
 * lines than it shows, enough for a matched line's before- and after-context together. Before the
 * line that would push a pending collector's first line out is added, the collectors that are due
 * copy their lines (freeze()) and leave the tuple. Until then a line costs the run one compare.
 */
static int
freeze_due(RunState *self)
{
    PyObject *coll = Py_NewRef(self->collectors); /* held: freeze() runs Python code */
    Py_ssize_t n = PyTuple_GET_SIZE(coll), kept = 0;
    PyObject *keep = PyList_New(0);
    int rc = -1;
    if (keep == NULL)
        goto out;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PyTuple_GET_ITEM(coll, i);
        PyObject *v = PyObject_GetAttr(c, str_due);
        if (v == NULL)
            goto out;
        Py_ssize_t due = PyNumber_AsSsize_t(v, PyExc_OverflowError);
        Py_DECREF(v);
        if (due == -1 && PyErr_Occurred())
            goto out;
        if (due > self->serial) {
            if (PyList_Append(keep, c) < 0)
                goto out;
            kept++;
            continue;
        }
        PyObject *r = PyObject_CallMethodNoArgs(c, str_freeze);
        if (r == NULL)
            goto out;
        Py_DECREF(r);
    }
    if (kept < n) {
        PyObject *t = PyList_AsTuple(keep);
        if (t == NULL)
            goto out;
        Py_SETREF(self->collectors, t);
        self->ncoll = kept;
    }
    self->due = kept ? earliest_due(self->collectors) : 0;
    rc = self->due < 0 ? -1 : 0;
out:
    Py_XDECREF(keep);
    Py_DECREF(coll);
    return rc;
}

static PyObject *
RunState_add_line(RunState *self, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "add_line() takes a str");
        return NULL;
    }
    if (self->ncoll > 0 && self->serial >= self->due && freeze_due(self) < 0)
        return NULL;
    PyObject *utf8 = PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
    if (utf8 == NULL)
        return NULL;
    int rc = ring_push(self, (const unsigned char *)PyBytes_AS_STRING(utf8), PyBytes_GET_SIZE(utf8), NULL, 0);
    Py_DECREF(utf8);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
RunState_get_ring(RunState *self, void *closure)
{
    Py_ssize_t n = self->len < self->keep ? self->len : self->keep, skip = self->len - n;
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = ring_str(self, (self->head + skip + i) % self->cap);
        if (s == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, s);
    }
    return out;
}

static PyObject *
RunState_get_seq(RunState *self, void *closure)
{
    return Py_NewRef(closure ? self->client_ids : self->collectors);
}

static int
RunState_set_seq(RunState *self, PyObject *value, void *closure)
{
    if (closure) {
        if (value == NULL || !PyList_CheckExact(value)) {
            PyErr_SetString(PyExc_TypeError, "client_ids must be a list");
            return -1;
        }
        Py_SETREF(self->client_ids, Py_NewRef(value));
        self->hashed = 0;
        return 0;
    }
    /* A tuple, so it cannot change behind ncoll's back. */
    if (value == NULL || !PyTuple_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "collectors must be a tuple");
        return -1;
    }
    Py_ssize_t due = PyTuple_GET_SIZE(value) ? earliest_due(value) : 0;
    if (due < 0)
        return -1;
    Py_SETREF(self->collectors, Py_NewRef(value));
    self->ncoll = PyTuple_GET_SIZE(value);
    self->due = due;
    return 0;
}

static PyMemberDef RunState_members[] = {
    {"lines", T_PYSSIZET, offsetof(RunState, lines), 0, "Lines routed to the run."},
    {"serial", T_PYSSIZET, offsetof(RunState, serial), READONLY, "Lines added to the ring so far."},
    {"checked_lines", T_PYSSIZET, offsetof(RunState, checked_lines), 0, "Tagged head lines seen."},
    {"last_activity", T_DOUBLE, offsetof(RunState, last_activity), 0, "Pipeline time of the last line."},
    {"key", T_OBJECT, offsetof(RunState, key), 0, "The run's key in Triage.runs."},
    {"is_system", T_BOOL, offsetof(RunState, is_system), 0, "A per-source bucket for untagged lines."},
    {"meta_settled", T_BOOL, offsetof(RunState, meta_settled), 0, "Run type and stream can no longer change."},
    {NULL}};

static PyObject *
RunState_get_ts(RunState *self, void *closure)
{
    double v = closure ? self->last_ts : self->first_ts;
    if (isnan(v))
        Py_RETURN_NONE;
    return PyFloat_FromDouble(v);
}

static int
RunState_set_ts(RunState *self, PyObject *value, void *closure)
{
    double v = NAN;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete a time");
        return -1;
    }
    if (value != Py_None) {
        v = PyFloat_AsDouble(value);
        if (v == -1.0 && PyErr_Occurred())
            return -1;
    }
    if (closure)
        self->last_ts = v;
    else
        self->first_ts = v;
    return 0;
}

static PyGetSetDef RunState_getset[] = {
    {"first_ts", (getter)RunState_get_ts, (setter)RunState_set_ts, "Log time of the first line, or None.", NULL},
    {"last_ts", (getter)RunState_get_ts, (setter)RunState_set_ts, "Log time of the last line, or None.", (void *)1},
    {"ring", (getter)RunState_get_ring, NULL, "The context ring, oldest line first (a copy).", NULL},
    {"collectors", (getter)RunState_get_seq, (setter)RunState_set_seq, "Open after-context collectors (a tuple).",
     NULL},
    {"client_ids", (getter)RunState_get_seq, (setter)RunState_set_seq, "Client names seen.", (void *)1},
    {NULL}};

/* Lines with serial numbers [lo, hi) as a list of str; the caller checked they are in the ring. */
static PyObject *
RunState_context(RunState *self, PyObject *args)
{
    Py_ssize_t at, wanted;
    if (!PyArg_ParseTuple(args, "nn", &at, &wanted))
        return NULL;
    Py_ssize_t first = self->serial - self->len;
    if (at < first || at >= self->serial || wanted < 0) {
        PyErr_Format(PyExc_IndexError, "line %zd is not in the ring (it holds %zd to %zd)", at, first,
                     self->serial - 1);
        return NULL;
    }
    Py_ssize_t lo = at - self->keep < first ? first : at - self->keep;
    Py_ssize_t hi = at + 1 + wanted < self->serial ? at + 1 + wanted : self->serial;
    Py_ssize_t total = 0;
    for (Py_ssize_t s = lo; s < hi; s++)
        total += self->loff[2 * ((self->head + (s - first)) % self->cap) + 1];
    PyObject *blob = PyBytes_FromStringAndSize(NULL, total);
    PyObject *lens = PyBytes_FromStringAndSize(NULL, (hi - lo) * (Py_ssize_t)sizeof(uint32_t));
    if (blob == NULL || lens == NULL) {
        Py_XDECREF(blob);
        Py_XDECREF(lens);
        return NULL;
    }
    unsigned char *w = (unsigned char *)PyBytes_AS_STRING(blob);
    uint32_t *len = (uint32_t *)PyBytes_AS_STRING(lens);
    for (Py_ssize_t s = lo; s < hi; s++) {
        Py_ssize_t slot = (self->head + (s - first)) % self->cap;
        ring_get(self, slot, w);
        w += self->loff[2 * slot + 1];
        len[s - lo] = self->loff[2 * slot + 1];
    }
    return Py_BuildValue("(NNn)", blob, lens, at - lo);
}

/*
 * render_context(blob, lens, at) -> list of str: the lines RunState.context() packed, the one at
 * index `at` prefixed ">> " and the others "   " (ContextCollector.render).
 */
static PyObject *
render_context(PyObject *module, PyObject *args)
{
    Py_buffer blob, lens;
    Py_ssize_t at;
    if (!PyArg_ParseTuple(args, "y*y*n", &blob, &lens, &at))
        return NULL;
    Py_ssize_t n = lens.len / (Py_ssize_t)sizeof(uint32_t);
    const uint32_t *len = lens.buf;
    const unsigned char *p = blob.buf;
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        total += len[i];
    PyObject *out = total == blob.len ? PyList_New(n) : NULL;
    if (out == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "render_context(): lens do not add up to the blob");
    for (Py_ssize_t i = 0; out != NULL && i < n; p += len[i], i++) {
        const char *prefix = i == at ? ">> " : "   ";
        PyObject *v;
        if (byte_class(p, len[i]) == 0) { /* plain ASCII; the rest is decoded */
            v = PyUnicode_New(len[i] + 3, 127);
            if (v != NULL) {
                memcpy(PyUnicode_1BYTE_DATA(v), prefix, 3);
                memcpy(PyUnicode_1BYTE_DATA(v) + 3, p, len[i]);
            }
        } else {
            PyObject *text = PyUnicode_DecodeUTF8((const char *)p, len[i], "surrogatepass");
            PyObject *pre = text == NULL ? NULL : PyUnicode_FromString(prefix);
            v = pre == NULL ? NULL : PyUnicode_Concat(pre, text);
            Py_XDECREF(text);
            Py_XDECREF(pre);
        }
        if (v == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, v);
    }
    PyBuffer_Release(&blob);
    PyBuffer_Release(&lens);
    return out;
}

static PyMethodDef RunState_methods[] = {
    {"add_line", (PyCFunction)RunState_add_line, METH_O,
     "Append a (truncated) line to the ring (collectors due first take their lines from it)."},
    {"context", (PyCFunction)RunState_context, METH_VARARGS,
     "context(at, wanted) -> (blob, lens, index): line `at` (a serial number), up to `capacity` "
     "lines before it and up to `wanted` after it, as far as the ring holds them: their bytes "
     "(UTF-8, surrogatepass) end to end, their lengths (uint32), and the index of line `at`."},
    {NULL}};

static PyTypeObject RunStateType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "stream_triage.pipeline._kernel.RunState",
    .tp_doc = PyDoc_STR("Ring, counters and times of one run, shared with the C loop."),
    .tp_basicsize = sizeof(RunState),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = RunState_new,
    .tp_init = (initproc)RunState_init,
    .tp_dealloc = (destructor)RunState_dealloc,
    .tp_traverse = (traverseproc)RunState_traverse,
    .tp_clear = (inquiry)RunState_clear,
    .tp_members = RunState_members,
    .tp_getset = RunState_getset,
    .tp_methods = RunState_methods,
};

/* ------------------------------------------------------------------------------------ RunOrder */

/*
 * Open runs by last activity, oldest first: a list threaded through the RunStates themselves. A
 * move to the recent end rewrites a few pointers of the run and its neighbours, where an
 * OrderedDict's move_to_end hashes the key and probes two tables, all cold with 10,000 runs.
 */
typedef struct {
    PyObject_HEAD
    RunState *oldest, *newest; /* each linked run holds one reference owned by the order */
    Py_ssize_t count;
} RunOrder;

static PyTypeObject RunOrderType;

static void
order_unlink(RunOrder *o, RunState *r)
{
    if (r->older != NULL)
        r->older->newer = r->newer;
    else
        o->oldest = r->newer;
    if (r->newer != NULL)
        r->newer->older = r->older;
    else
        o->newest = r->older;
    r->older = r->newer = NULL;
}

/* Move `r` to the recent end (linking it, with a new reference, if it was not linked). */
static inline void
order_touch(RunOrder *o, RunState *r)
{
    if (o->newest == r)
        return;
    if (r->order != NULL) {
        order_unlink(o, r);
    } else {
        Py_INCREF(r);
        r->order = o;
        o->count++;
    }
    r->older = o->newest;
    r->newer = NULL;
    if (o->newest != NULL)
        o->newest->newer = r;
    else
        o->oldest = r;
    o->newest = r;
}

static void
order_remove(RunOrder *o, RunState *r)
{
    if (r->order == NULL)
        return;
    order_unlink(o, r);
    r->order = NULL;
    o->count--;
    Py_DECREF(r);
}

static int
RunOrder_traverse(RunOrder *o, visitproc visit, void *arg)
{
    for (RunState *r = o->oldest; r != NULL; r = r->newer)
        Py_VISIT(r);
    return 0;
}

static int
RunOrder_clear(RunOrder *o)
{
    while (o->oldest != NULL)
        order_remove(o, o->oldest);
    return 0;
}

static void
RunOrder_dealloc(RunOrder *o)
{
    PyObject_GC_UnTrack(o);
    RunOrder_clear(o);
    Py_TYPE(o)->tp_free((PyObject *)o);
}

/* `run` as a RunState this order may move, or NULL with an exception set. */
static RunState *
own_run(RunOrder *o, PyObject *run)
{
    if (!PyObject_TypeCheck(run, &RunStateType)) {
        PyErr_SetString(PyExc_TypeError, "expected a RunState");
        return NULL;
    }
    RunState *r = (RunState *)run;
    if (r->order != NULL && r->order != o) {
        PyErr_SetString(PyExc_ValueError, "the run belongs to another order");
        return NULL;
    }
    return r;
}

static PyObject *
RunOrder_touch(RunOrder *o, PyObject *run)
{
    RunState *r = own_run(o, run);
    if (r == NULL)
        return NULL;
    order_touch(o, r);
    Py_RETURN_NONE;
}

static PyObject *
RunOrder_remove(RunOrder *o, PyObject *run)
{
    RunState *r = own_run(o, run);
    if (r == NULL)
        return NULL;
    order_remove(o, r);
    Py_RETURN_NONE;
}

static PyObject *
RunOrder_oldest(RunOrder *o, PyObject *unused)
{
    return Py_NewRef(o->oldest != NULL ? (PyObject *)o->oldest : Py_None);
}

static Py_ssize_t
RunOrder_len(RunOrder *o)
{
    return o->count;
}

typedef struct {
    PyObject_HEAD
    RunOrder *order;
    RunState *next; /* new reference, or NULL */
} RunOrderIter;

static PyTypeObject RunOrderIterType;

static PyObject *
RunOrder_iter(RunOrder *o)
{
    RunOrderIter *it = PyObject_GC_New(RunOrderIter, &RunOrderIterType);
    if (it == NULL)
        return NULL;
    it->order = (RunOrder *)Py_NewRef(o);
    it->next = (RunState *)Py_XNewRef(o->oldest);
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

/* A run removed while the iteration stands on it ends the iteration: callers collect, then remove. */
static PyObject *
RunOrderIter_next(RunOrderIter *it)
{
    RunState *r = it->next;
    if (r == NULL)
        return NULL;
    it->next = r->order != NULL ? (RunState *)Py_XNewRef(r->newer) : NULL;
    return (PyObject *)r;
}

static int
RunOrderIter_traverse(RunOrderIter *it, visitproc visit, void *arg)
{
    Py_VISIT(it->order);
    Py_VISIT(it->next);
    return 0;
}

static void
RunOrderIter_dealloc(RunOrderIter *it)
{
    PyObject_GC_UnTrack(it);
    Py_XDECREF(it->order);
    Py_XDECREF(it->next);
    PyObject_GC_Del(it);
}

static PyTypeObject RunOrderIterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "stream_triage.pipeline._kernel.RunOrderIterator",
    .tp_basicsize = sizeof(RunOrderIter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)RunOrderIter_dealloc,
    .tp_traverse = (traverseproc)RunOrderIter_traverse,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)RunOrderIter_next,
};

static PySequenceMethods RunOrder_as_sequence = {.sq_length = (lenfunc)RunOrder_len};

static PyMethodDef RunOrder_methods[] = {
    {"touch", (PyCFunction)RunOrder_touch, METH_O, "Move a run to the recent end (adding it if new)."},
    {"remove", (PyCFunction)RunOrder_remove, METH_O, "Take a run out (no-op if it is not in)."},
    {"oldest", (PyCFunction)RunOrder_oldest, METH_NOARGS, "The least recently active run, or None."},
    {NULL}};

static PyTypeObject RunOrderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "stream_triage.pipeline._kernel.RunOrder",
    .tp_doc = PyDoc_STR("Open runs by last activity, oldest first; iterating must not remove runs."),
    .tp_basicsize = sizeof(RunOrder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)RunOrder_dealloc,
    .tp_traverse = (traverseproc)RunOrder_traverse,
    .tp_clear = (inquiry)RunOrder_clear,
    .tp_iter = (getiterfunc)RunOrder_iter,
    .tp_as_sequence = &RunOrder_as_sequence,
    .tp_methods = RunOrder_methods,
};

/* ----------------------------------------------------------------------------------- helpers */

static inline uint64_t
fnv1a(const unsigned char *p, Py_ssize_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (Py_ssize_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
/* Python's \s on an ASCII str. */
static inline int is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }

static int
digits(const unsigned char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!is_digit(p[i]))
            return 0;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 1;
}

static long long
days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    const long long era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

/*
 * An ISO time in the form parse.parse_iso_time takes from its per-second cache
 * (YYYY-MM-DDTHH:MM:SS, an optional .fraction of 1-9 digits, then Z), parsed to the same float:
 * whole seconds plus float(".ffffff"). Returns the length consumed, or 0 when the text is in any
 * other form (Python then handles the line).
 */
static Py_ssize_t
parse_iso_z(const unsigned char *p, Py_ssize_t n, double *out)
{
    int y, mo, d, h, mi, s;
    if (n < 20 || p[4] != '-' || p[7] != '-' || p[10] != 'T' || p[13] != ':' || p[16] != ':')
        return 0;
    if (!digits(p, 4, &y) || !digits(p + 5, 2, &mo) || !digits(p + 8, 2, &d) || !digits(p + 11, 2, &h) ||
        !digits(p + 14, 2, &mi) || !digits(p + 17, 2, &s))
        return 0;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 59)
        return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[mo - 1] + (mo == 2 && leap))
        return 0;
    Py_ssize_t i = 19;
    double frac = 0.0;
    if (i + 8 <= n && p[i] == '.' && p[i + 7] == 'Z' && is_digit(p[i + 1]) && is_digit(p[i + 2]) &&
        is_digit(p[i + 3]) && is_digit(p[i + 4]) && is_digit(p[i + 5]) && is_digit(p[i + 6])) {
        /* Microseconds, as Render writes them: the loop below, unrolled. */
        long v = (p[i + 1] - '0') * 100000L + (p[i + 2] - '0') * 10000L + (p[i + 3] - '0') * 1000L +
                 (p[i + 4] - '0') * 100L + (p[i + 5] - '0') * 10L + (p[i + 6] - '0');
        frac = (double)v / 1e6;
        i += 7;
    } else if (p[i] == '.') {
        Py_ssize_t j = i + 1;
        while (j < n && is_digit(p[j]))
            j++;
        Py_ssize_t nd = j - i - 1;
        if (nd < 1 || nd > 9)
            return 0;
        /* float(".dddddd") as Python computes it: both operands are exact, so IEEE division
           rounds the decimal fraction correctly, as strtod would (without its cost). */
        static const double pow10[] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6};
        Py_ssize_t keep = nd > 6 ? 6 : nd;
        long v = 0;
        for (Py_ssize_t q = 0; q < keep; q++)
            v = v * 10 + (p[i + 1 + q] - '0');
        frac = (double)v / pow10[keep];
        i = j;
    }
    if (i >= n || p[i] != 'Z')
        return 0;
    double base = (double)(days_from_civil(y, mo, d) * 86400LL + h * 3600LL + mi * 60LL + s);
    *out = i > 19 ? base + frac : base;
    return i + 1;
}

/* What p[:n] holds: BYTES_UNSAFE for an ESC, CR or NUL byte, BYTES_HIGH for a byte >= 0x80. Sixteen
   bytes at a time with SSE2 (every x86-64 has it), else eight with word tricks; a word that may hold
   one goes to the byte loop, which decides. It stops at the first unsafe byte: BYTES_HIGH may then be
   missing (no caller needs it then). */
static inline int
byte_class(const unsigned char *p, Py_ssize_t n)
{
    int cls = 0;
    Py_ssize_t j = 0;
#ifdef __SSE2__
    const __m128i zero = _mm_setzero_si128(), esc = _mm_set1_epi8(0x1b), cr = _mm_set1_epi8('\r');
    int high = 0;
    for (; j + 16 <= n; j += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + j));
        __m128i bad = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, zero), _mm_cmpeq_epi8(v, esc)),
                                   _mm_cmpeq_epi8(v, cr));
        high |= _mm_movemask_epi8(v);
        if (_mm_movemask_epi8(bad))
            return BYTES_UNSAFE | (high ? BYTES_HIGH : 0);
    }
    if (high)
        cls = BYTES_HIGH;
#else
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    const uint64_t esc = ones * 0x1b, cr = ones * '\r';
    for (; j + 8 <= n; j += 8) {
        uint64_t w;
        memcpy(&w, p + j, 8);
        uint64_t e = w ^ esc, c = w ^ cr;
        if ((((w - ones) & ~w) | ((e - ones) & ~e) | ((c - ones) & ~c)) & highs)
            break;
        if (w & highs)
            cls = BYTES_HIGH;
    }
#endif
    for (; j < n; j++) {
        unsigned char c = p[j];
        if (c >= 0x80)
            cls |= BYTES_HIGH;
        else if (c == 0x1b || c == '\r' || c == 0)
            return cls | BYTES_UNSAFE;
    }
    return cls;
}

/* No byte >= 0x80, ESC, CR or NUL. */
static inline int
plain_ascii(const unsigned char *p, Py_ssize_t n)
{
    return byte_class(p, n) == 0;
}

static int
starts_with(const unsigned char *p, Py_ssize_t n, const char *lit)
{
    size_t k = strlen(lit);
    return (size_t)n >= k && memcmp(p, lit, k) == 0;
}

/* stacktrace.is_continuation for lines the kernel takes (callers exclude the Traceback forms). */
static int
is_continuation(const unsigned char *p, Py_ssize_t n)
{
    if (n == 0)
        return 0;
    if (p[0] == ' ' || p[0] == '\t')
        return 1;
    if (starts_with(p, n, "Caused by:"))
        return 1;
    if (p[0] == '}' || p[0] == ']') {
        for (Py_ssize_t i = 1; i < n; i++)
            if (p[i] != ',' && p[i] != ';' && p[i] != ')')
                return 0;
        return 1;
    }
    return 0;
}

/*
 * runs.RunBuffer.note_client for an ASCII name. The usual case, a name the run has seen, compares
 * hashes kept in the RunState only; the list is read when the name may be new (or Python added one).
 */
static int
client_seen(RunState *run, const unsigned char *name, Py_ssize_t n)
{
    uint64_t want = fnv1a(name, n);
    for (Py_ssize_t c = 0; c < run->hashed; c++)
        if (run->client_hash[c] == want)
            return 0;
    Py_ssize_t nc = PyList_GET_SIZE(run->client_ids);
    if (nc > 32)
        nc = 32;
    if (run->hashed > nc)
        run->hashed = 0; /* the list was replaced by a shorter one: hash it again */
    int seen = 0;
    for (; run->hashed < nc; run->hashed++) {
        PyObject *have = PyList_GET_ITEM(run->client_ids, run->hashed);
        uint64_t h = PyUnicode_Check(have) && PyUnicode_KIND(have) == PyUnicode_1BYTE_KIND
                         ? fnv1a(PyUnicode_1BYTE_DATA(have), PyUnicode_GET_LENGTH(have))
                         : 0;
        run->client_hash[run->hashed] = h;
        seen |= h == want;
    }
    if (seen || PyList_GET_SIZE(run->client_ids) >= 32)
        return 0;
    PyObject *v = PyUnicode_New(n, 127);
    if (v == NULL)
        return -1;
    memcpy(PyUnicode_1BYTE_DATA(v), name, n);
    int err = PyList_Append(run->client_ids, v);
    Py_DECREF(v);
    if (err == 0 && run->hashed == nc && nc < 32)
        run->client_hash[run->hashed++] = want;
    return err;
}

/* runs.RunBuffer.add_line for an ASCII line: its bytes go to the ring, no str is made. */
static int
ring_line(RunState *run, const unsigned char *p, Py_ssize_t n, Py_ssize_t chars)
{
    if (run->ncoll > 0 && run->serial >= run->due && freeze_due(run) < 0)
        return -1;
    if (n <= chars)
        return ring_push(run, p, n, NULL, 0);
    return ring_push(run, p, chars, (const unsigned char *)"\xe2\x80\xa6", 3); /* "…" */
}


/* ring_line for a line of valid UTF-8: truncated, like the str, after `chars` characters (ring_line
   cuts after a byte count: the byte where character chars + 1 starts). */
static int
ring_line_utf8(RunState *run, const unsigned char *p, Py_ssize_t n, Py_ssize_t chars)
{
    Py_ssize_t cut = 0;
    for (Py_ssize_t seen = 0; n > chars && cut < n; cut++) {
        if ((p[cut] & 0xc0) != 0x80 && seen++ == chars)
            break;
    }
    return ring_line(run, p, n, n > chars && cut < n ? cut : n);
}

/*
 * What parse.LineParser makes of the head of a line, for lines in the default format. Offsets are
 * from the line's start. HEAD_OTHER: a form the kernel leaves to Python (a non-run [tag], a time
 * prefix it does not parse, text after a time prefix).
 */
enum { HEAD_OTHER = -1, HEAD_UNTAGGED = 0, HEAD_RUN = 1 };

typedef struct {
    Py_ssize_t body;      /* after the "[ISO time] " prefix */
    Py_ssize_t message;   /* where LogLine.message starts */
    Py_ssize_t suffix, suffix_len, client, client_len, level, level_len, op, op_len;
    double ts;            /* the prefix's time, or NaN */
} Head;

/* A line's head as messages() parsed it, handed to the kernel so it does not parse it again. */
enum { HEAD_UNPARSED = -2 };
typedef struct {
    Head h;
    int kind;  /* parse_head's result, or HEAD_UNPARSED (an ESC, CR or NUL in the line) */
    int plain; /* PLAIN_* (messages() classified its bytes: no second pass) */
} HeadRec;

/* HeadRec.plain: the line holds a byte >= 0x80 or an ESC, CR or NUL; it is plain ASCII; it is a run
   line whose non-ASCII characters are all symbols in its message, valid UTF-8 (the kernel takes
   those too, its ring keeping their bytes and its truncation counting characters). */
enum { PLAIN_NO = 0, PLAIN_ASCII = 1, PLAIN_SYMBOLS = 2 };

/* The first ']' in b[e:bl], or bl. Sixteen bytes at a time where they are all inside the line:
   tags are short, so this is one compare instead of a loop that mispredicts where it stops. */
static inline Py_ssize_t
find_close(const unsigned char *b, Py_ssize_t e, Py_ssize_t bl)
{
#ifdef __SSE2__
    const __m128i close = _mm_set1_epi8(']');
    for (; e + 16 <= bl; e += 16) {
        int m = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(b + e)), close));
        if (m)
            return e + __builtin_ctz((unsigned)m);
    }
#endif
    while (e < bl && b[e] != ']')
        e++;
    return e;
}

static int
parse_head(const unsigned char *p, Py_ssize_t len, Head *h)
{
    h->body = h->message = 0;
    h->suffix = h->suffix_len = h->client = h->client_len = h->level = h->level_len = h->op = h->op_len = 0;
    h->ts = NAN;
    if (len == 0 || p[0] != '[')
        return (len >= 2 && p[0] == '2' && p[1] == '0') ? HEAD_OTHER : HEAD_UNTAGGED;
    /* [ISO time] prefix, as Render's API and viewer prefix lines */
    if (len > 6 && p[1] == '2' && p[2] == '0' && p[5] == '-') {
        Py_ssize_t m = parse_iso_z(p + 1, len - 1, &h->ts);
        if (m == 0 || 1 + m + 1 >= len || p[1 + m] != ']' || !is_space(p[2 + m]))
            return HEAD_OTHER;
        h->body = h->message = m + 3;
        if (p[h->body] != '[')
            return HEAD_OTHER;
    }
    /* [YYMMDD-HHMMSS(-suffix)?] */
    const unsigned char *b = p + h->body;
    Py_ssize_t bl = len - h->body;
    if (bl < 15 || !(is_digit(b[1]) && is_digit(b[2]) && is_digit(b[3]) && is_digit(b[4]) && is_digit(b[5]) &&
                     is_digit(b[6]) && b[7] == '-' && is_digit(b[8]) && is_digit(b[9]) && is_digit(b[10]) &&
                     is_digit(b[11]) && is_digit(b[12]) && is_digit(b[13])))
        return HEAD_OTHER;
    Py_ssize_t q = 14;
    if (b[q] == '-') {
        Py_ssize_t r = q + 1;
        r = find_close(b, r, bl);
        if (r >= bl || r == q + 1)
            return HEAD_OTHER;
        h->suffix = h->body + q + 1;
        h->suffix_len = r - q - 1;
        q = r;
    }
    if (q >= bl || b[q] != ']')
        return HEAD_OTHER;
    q++;
    /* The full format: \s*[client]\s*[operation]\s*[Level]\s? — else the run tag alone counts. */
    Py_ssize_t r = q, client = 0, client_len = 0, op = 0, op_len = 0;
    for (int f = 0; f < 2; f++) {
        while (r < bl && is_space(b[r]))
            r++;
        if (r >= bl || b[r] != '[')
            goto run_only;
        Py_ssize_t e = r + 1;
        e = find_close(b, e, bl);
        if (e >= bl)
            goto run_only;
        if (f == 0) {
            client = r + 1;
            client_len = e - r - 1;
        } else {
            op = r + 1;
            op_len = e - r - 1;
        }
        r = e + 1;
    }
    while (r < bl && is_space(b[r]))
        r++;
    {
        Py_ssize_t e = r + 1;
        while (e < bl && ((b[e] | 0x20) >= 'a' && (b[e] | 0x20) <= 'z'))
            e++;
        if (r >= bl || b[r] != '[' || e == r + 1 || e >= bl || b[e] != ']')
            goto run_only;
        h->level = h->body + r + 1;
        h->level_len = e - r - 1;
        e++;
        h->client = h->body + client;
        h->client_len = client_len;
        h->op = h->body + op;
        h->op_len = op_len;
        h->message = h->body + e + (e < bl && is_space(b[e]));
        return HEAD_RUN;
    }
run_only:
    h->message = h->body + q + (q < bl && is_space(b[q]));
    return HEAD_RUN;
}

#define AHEAD 16      /* lookahead entries (a power of two) */
#define AHEAD_SLOT 12  /* lines ahead: parse the head, prefetch the run's table slot */
#define AHEAD_RUN 8   /* lines ahead: find the run, prefetch it */
#define AHEAD_RING 4  /* lines ahead: prefetch the ring slot and bytes the line will write */

typedef struct {
    Py_ssize_t line; /* the line this entry describes, or -1 */
    int kind;        /* parse_head's result (HEAD_OTHER for lines not starting with "[") */
    Head h;
    uint64_t hash;   /* of the run id, for HEAD_RUN */
    RunState *run;   /* borrowed from the table (it holds runs until the scan returns), or NULL */
} Ahead;

/* ------------------------------------------------------------------------------------ Kernel */

typedef struct {
    unsigned char id[13];
    RunState *run; /* NULL: free slot */
} RunSlot;

typedef struct {
    PyObject_HEAD
    PyObject *runs;     /* OrderedDict run id -> RunBuffer */
    PyObject *systems;  /* dict source name -> RunBuffer */
    RunOrder *order;    /* Triage's activity order of runs */
    Py_ssize_t chars;
    Py_ssize_t meta_lines;
    Py_ssize_t max_stack;
    PyObject *levels;   /* tuple of bytes: upper-case levels (and aliases) some pattern fires on */
    /* the loaded batch */
    Py_buffer data, index, flags, source_of, ts, heads;
    int have_data, have_source_of, have_ts, have_heads;
    PyObject *sources;  /* list of _SourceState */
    PyObject *names;    /* list of source names */
    double now;         /* NaN: times come from the lines */
    /* Open runs by their 13-byte id (strong references): the per-line lookup reads one slot instead
       of building a key str and probing Triage.runs. Triage.forget() drops a run that leaves. */
    RunSlot *table;
    Py_ssize_t tmask, tcount;
    /* Lookahead of the loaded batch, kept between scans (a scan often stops after a few dozen lines,
       and a cold start would leave those lines without prefetching). Reset by load() and forget(). */
    Ahead ahead[AHEAD];
} Kernel;

static int
level_fires(PyObject *levels, const unsigned char *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(levels); i++) {
        PyObject *v = PyTuple_GET_ITEM(levels, i);
        if (PyBytes_GET_SIZE(v) != n)
            continue;
        const char *w = PyBytes_AS_STRING(v);
        Py_ssize_t j = 0;
        while (j < n && (p[j] >= 'a' && p[j] <= 'z' ? p[j] - 32 : p[j]) == (unsigned char)w[j])
            j++;
        if (j == n)
            return 1;
    }
    return 0;
}

static void
kernel_release_buffers(Kernel *k)
{
    if (k->have_data) {
        PyBuffer_Release(&k->data);
        PyBuffer_Release(&k->index);
        PyBuffer_Release(&k->flags);
        k->have_data = 0;
    }
    if (k->have_source_of) {
        PyBuffer_Release(&k->source_of);
        k->have_source_of = 0;
    }
    if (k->have_ts) {
        PyBuffer_Release(&k->ts);
        k->have_ts = 0;
    }
    if (k->have_heads) {
        PyBuffer_Release(&k->heads);
        k->have_heads = 0;
    }
    Py_CLEAR(k->sources);
    Py_CLEAR(k->names);
}

static int
Kernel_traverse(Kernel *k, visitproc visit, void *arg)
{
    Py_VISIT(k->runs);
    Py_VISIT(k->systems);
    Py_VISIT(k->order);
    Py_VISIT(k->levels);
    Py_VISIT(k->sources);
    Py_VISIT(k->names);
    for (Py_ssize_t i = 0; k->table != NULL && i <= k->tmask; i++)
        Py_VISIT(k->table[i].run);
    return 0;
}

static int
Kernel_clear(Kernel *k)
{
    kernel_release_buffers(k);
    for (Py_ssize_t i = 0; k->table != NULL && i <= k->tmask; i++)
        Py_CLEAR(k->table[i].run);
    k->tcount = 0;
    Py_CLEAR(k->runs);
    Py_CLEAR(k->systems);
    Py_CLEAR(k->order);
    Py_CLEAR(k->levels);
    return 0;
}

static void
Kernel_dealloc(Kernel *k)
{
    PyObject_GC_UnTrack(k);
    Kernel_clear(k);
    PyMem_Free(k->table);
    Py_TYPE(k)->tp_free((PyObject *)k);
}

static int
Kernel_init(Kernel *k, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"runs", "order", "systems", "chars", "meta_lines", "levels", "max_stack", NULL};
    PyObject *runs, *order, *systems, *levels;
    Py_ssize_t chars, meta_lines, max_stack;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!nnO!n", kwlist, &PyDict_Type, &runs, &RunOrderType, &order,
                                     &PyDict_Type, &systems, &chars, &meta_lines, &PyTuple_Type, &levels, &max_stack))
        return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(levels); i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(levels, i))) {
            PyErr_SetString(PyExc_TypeError, "levels must be a tuple of bytes");
            return -1;
        }
    }
    if (chars < 0) {
        PyErr_SetString(PyExc_ValueError, "chars must be >= 0");
        return -1;
    }
    Py_XSETREF(k->runs, Py_NewRef(runs));
    Py_XSETREF(k->order, (RunOrder *)Py_NewRef(order));
    Py_XSETREF(k->systems, Py_NewRef(systems));
    Py_XSETREF(k->levels, Py_NewRef(levels));
    k->chars = chars;
    k->meta_lines = meta_lines;
    k->max_stack = max_stack;
    return 0;
}

/* load(data, index, flags, sources, names, source_of, ts, now, heads=None) */
static PyObject *
Kernel_load(Kernel *k, PyObject *args)
{
    PyObject *data, *index, *flags, *sources, *names, *source_of, *ts, *heads = Py_None;
    double now;
    if (!PyArg_ParseTuple(args, "OOOO!O!OOd|O", &data, &index, &flags, &PyList_Type, &sources, &PyList_Type, &names,
                          &source_of, &ts, &now, &heads))
        return NULL;
    kernel_release_buffers(k);
    if (PyObject_GetBuffer(data, &k->data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(index, &k->index, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&k->data);
        return NULL;
    }
    if (PyObject_GetBuffer(flags, &k->flags, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&k->data);
        PyBuffer_Release(&k->index);
        return NULL;
    }
    k->have_data = 1;
    Py_ssize_t n = k->index.len / (Py_ssize_t)sizeof(Py_ssize_t) - 1;
    if (n < 0 || k->flags.len < n || PyList_GET_SIZE(sources) != PyList_GET_SIZE(names) ||
        PyList_GET_SIZE(sources) < 1) {
        kernel_release_buffers(k);
        PyErr_SetString(PyExc_ValueError, "load(): index, flags and sources do not fit together");
        return NULL;
    }
    if (source_of != Py_None) {
        if (PyObject_GetBuffer(source_of, &k->source_of, PyBUF_SIMPLE) < 0) {
            kernel_release_buffers(k);
            return NULL;
        }
        k->have_source_of = 1;
        const unsigned char *so = k->source_of.buf;
        int bad = k->source_of.len < n;
        for (Py_ssize_t i = 0; !bad && i < n; i++)
            bad = so[i] >= PyList_GET_SIZE(sources);
        if (bad) {
            kernel_release_buffers(k);
            PyErr_SetString(PyExc_ValueError, "load(): source_of does not fit the lines and sources");
            return NULL;
        }
    }
    if (ts != Py_None) {
        if (PyObject_GetBuffer(ts, &k->ts, PyBUF_SIMPLE) < 0) {
            kernel_release_buffers(k);
            return NULL;
        }
        k->have_ts = 1;
        if (k->ts.len < n * (Py_ssize_t)sizeof(double)) {
            kernel_release_buffers(k);
            PyErr_SetString(PyExc_ValueError, "load(): ts is shorter than the lines");
            return NULL;
        }
    }
    if (heads != Py_None) {
        if (PyObject_GetBuffer(heads, &k->heads, PyBUF_SIMPLE) < 0) {
            kernel_release_buffers(k);
            return NULL;
        }
        k->have_heads = 1;
        if (k->heads.len != n * (Py_ssize_t)sizeof(HeadRec)) {
            kernel_release_buffers(k);
            PyErr_SetString(PyExc_ValueError, "load(): heads do not fit the lines");
            return NULL;
        }
    }
    k->sources = Py_NewRef(sources);
    k->names = Py_NewRef(names);
    for (int a = 0; a < AHEAD; a++)
        k->ahead[a].line = -1;
    k->now = now;
    Py_RETURN_NONE;
}

static PyObject *
Kernel_release(Kernel *k, PyObject *unused)
{
    kernel_release_buffers(k);
    Py_RETURN_NONE;
}

static RunState *
table_find(Kernel *k, const unsigned char *id, uint64_t h)
{
    if (k->table == NULL)
        return NULL;
    for (Py_ssize_t i = (Py_ssize_t)(h & (uint64_t)k->tmask);; i = (i + 1) & k->tmask) {
        RunSlot *s = &k->table[i];
        if (s->run == NULL)
            return NULL;
        if (memcmp(s->id, id, 13) == 0)
            return s->run;
    }
}

static void
table_put(RunSlot *table, Py_ssize_t mask, const unsigned char *id, RunState *run)
{
    Py_ssize_t i = (Py_ssize_t)(fnv1a(id, 13) & (uint64_t)mask);
    while (table[i].run != NULL)
        i = (i + 1) & mask;
    memcpy(table[i].id, id, 13);
    table[i].run = run;
}

/* Remember `run` under `id` (a new reference); the table stays at most half full. */
static int
table_add(Kernel *k, const unsigned char *id, RunState *run)
{
    if (k->table == NULL || (k->tcount + 1) * 2 > k->tmask + 1) {
        Py_ssize_t size = k->table ? 2 * (k->tmask + 1) : 1024;
        RunSlot *t = PyMem_Calloc(size, sizeof(RunSlot));
        if (t == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; k->table != NULL && i <= k->tmask; i++)
            if (k->table[i].run != NULL)
                table_put(t, size - 1, k->table[i].id, k->table[i].run);
        PyMem_Free(k->table);
        k->table = t;
        k->tmask = size - 1;
    }
    table_put(k->table, k->tmask, id, (RunState *)Py_NewRef(run));
    k->tcount++;
    return 0;
}

/* Forget `id` (linear probing: later slots of its cluster move back, so no tombstones). */
static void
table_remove(Kernel *k, const unsigned char *id)
{
    if (k->table == NULL)
        return;
    Py_ssize_t mask = k->tmask, i = (Py_ssize_t)(fnv1a(id, 13) & (uint64_t)mask);
    while (k->table[i].run != NULL && memcmp(k->table[i].id, id, 13) != 0)
        i = (i + 1) & mask;
    RunState *gone = k->table[i].run;
    if (gone == NULL)
        return;
    for (Py_ssize_t j = (i + 1) & mask; k->table[j].run != NULL; j = (j + 1) & mask) {
        Py_ssize_t home = (Py_ssize_t)(fnv1a(k->table[j].id, 13) & (uint64_t)mask);
        /* slot j may move to the hole at i when its home is not within (i, j] (cyclically) */
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            k->table[i] = k->table[j];
            i = j;
        }
    }
    k->table[i].run = NULL;
    k->tcount--;
    Py_DECREF(gone);
}

/* forget(run_id): the run left Triage.runs; the kernel must not route lines to it any more. */
static PyObject *
Kernel_forget(Kernel *k, PyObject *key)
{
    if (!PyUnicode_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "forget() takes a str");
        return NULL;
    }
    if (PyUnicode_GET_LENGTH(key) == 13 && PyUnicode_KIND(key) == PyUnicode_1BYTE_KIND)
        table_remove(k, PyUnicode_1BYTE_DATA(key));
    for (int a = 0; a < AHEAD; a++) /* it may hold the run just dropped */
        k->ahead[a].line = -1;
    Py_RETURN_NONE;
}

/*
 * Triage._touch for a line taken: the clock advances to the line's time, the run's log times and
 * activity are recorded and it moves to the recent end of the activity order.
 */
static inline void
settle(Kernel *k, RunState *run, double ts, double *clock)
{
    double t = isnan(k->now) ? ts : k->now;
    if (!isnan(t) && t > *clock)
        *clock = t;
    run->last_activity = *clock;
    if (!isnan(ts)) {
        if (isnan(run->first_ts))
            run->first_ts = ts;
        run->last_ts = ts;
    }
    if (!run->is_system)
        order_touch(k->order, run);
}

typedef struct {
    PyObject *obj;      /* the _SourceState, borrowed from k->sources */
    PyObject *run;      /* its run (new reference), or NULL for None */
    PyObject *trace;    /* its open matched event's trace list (new reference), or NULL */
    int event_open;
    int in_traceback;
    int dirty;
} Source;

static int
source_load(Source *s, PyObject *obj)
{
    s->obj = obj;
    s->dirty = 0;
    PyObject *ev = PyObject_GetAttr(obj, str_event);
    if (ev == NULL)
        return -1;
    s->event_open = ev != Py_None;
    s->trace = NULL;
    if (s->event_open) {
        /* Stack frames join an event that matched and is not finished (Triage.process_line). */
        PyObject *match = PyObject_GetAttr(ev, str_match);
        PyObject *done = match ? PyObject_GetAttr(ev, str_done) : NULL;
        PyObject *trace = done ? PyObject_GetAttr(ev, str_trace) : NULL;
        int ok = trace != NULL && PyList_CheckExact(trace);
        if (ok && match != Py_None && done == Py_False)
            s->trace = Py_NewRef(trace);
        Py_XDECREF(match);
        Py_XDECREF(done);
        Py_XDECREF(trace);
        if (!ok) {
            Py_DECREF(ev);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "an event's trace must be a list");
            return -1;
        }
    }
    Py_DECREF(ev);
    PyObject *run = PyObject_GetAttr(obj, str_run);
    if (run == NULL)
        return -1;
    if (run == Py_None || !PyObject_TypeCheck(run, &RunStateType)) {
        /* Not a RunState: the kernel treats the source as having no run (Python handles such lines). */
        s->run = NULL;
        Py_DECREF(run);
    } else {
        s->run = run;
    }
    PyObject *tb = PyObject_GetAttr(obj, str_in_traceback);
    if (tb == NULL)
        return -1;
    s->in_traceback = PyObject_IsTrue(tb);
    Py_DECREF(tb);
    return s->in_traceback < 0 ? -1 : 0;
}

static int
source_store(Source *s)
{
    int rc = 0;
    if (s->obj != NULL && s->dirty) {
        rc = PyObject_SetAttr(s->obj, str_run, s->run ? s->run : Py_None);
        if (rc == 0)
            rc = PyObject_SetAttr(s->obj, str_in_traceback, Py_False);
    }
    Py_CLEAR(s->run);
    Py_CLEAR(s->trace);
    s->obj = NULL;
    return rc;
}

/*
 * Lookahead. With thousands of open runs, each line's run (its table slot, the RunState, the ring's
 * slot array and bytes) is rarely in cache, and each is found through the one before: four misses
 * in a row per line. A few lines ahead of the one being processed, the scan parses heads, then
 * finds runs, then touches their rings, so the memory loads of several lines overlap. The parsed
 * head and the run found are kept for when the line's turn comes.
 */

static inline void
prefetch_lines(const void *p, int lines)
{
    for (int c = 0; c < lines; c++)
        __builtin_prefetch((const char *)p + 64 * c, 1);
}

/* The head of line j (starting "["): from messages() when it parsed it, else parsed here. */
static inline int
head_of(const HeadRec *heads, Py_ssize_t j, const unsigned char *p, Py_ssize_t len, Head *h)
{
    if (heads != NULL && heads[j].kind != HEAD_UNPARSED) {
        *h = heads[j].h;
        return heads[j].kind;
    }
    return parse_head(p, len, h);
}

static inline void
look_ahead(Kernel *k, Ahead *ahead, const unsigned char *data, const Py_ssize_t *starts, const HeadRec *heads,
           Py_ssize_t i, Py_ssize_t n)
{
    Py_ssize_t j = i + AHEAD_SLOT;
    if (j < n) {
        Ahead *a = &ahead[j & (AHEAD - 1)];
        const unsigned char *p = data + starts[j];
        Py_ssize_t len = starts[j + 1] - 1 - starts[j];
        a->line = j;
        a->kind = HEAD_OTHER;
        a->run = NULL;
        if (len > 0 && p[0] == '[') {
            a->kind = head_of(heads, j, p, len, &a->h);
            if (a->kind == HEAD_RUN && k->table != NULL) {
                a->hash = fnv1a(p + a->h.body + 1, 13);
                __builtin_prefetch(&k->table[a->hash & (uint64_t)k->tmask]);
            }
        }
    }
    j = i + AHEAD_RUN;
    if (j < n) {
        Ahead *a = &ahead[j & (AHEAD - 1)];
        if (a->line == j && a->kind == HEAD_RUN && k->table != NULL) {
            a->run = table_find(k, data + starts[j] + a->h.body + 1, a->hash);
            if (a->run != NULL) /* its hot fields and a dozen client hashes */
                prefetch_lines(a->run, 5);
        }
    }
    j = i + AHEAD_RING;
    if (j < n) {
        Ahead *a = &ahead[j & (AHEAD - 1)];
        RunState *r = a->line == j ? a->run : NULL;
        if (r != NULL) /* read when the line names a client new to the run */
            __builtin_prefetch(r->client_ids);
        if (r != NULL && r->buf != NULL && r->cap > 0) {
            /* The slot and every cache line the line's bytes will be written to (up to the end of
               the buffer; a wrapped line's start is the buffer's first line, rarely cold). */
            Py_ssize_t slot = r->len < r->cap ? (r->head + r->len) % r->cap : r->head;
            __builtin_prefetch(&r->loff[2 * slot], 1);
            Py_ssize_t bytes = starts[j + 1] - 1 - starts[j], room = r->bufcap - r->wp;
            if (bytes > k->chars)
                bytes = k->chars + 3;
            if (bytes > room)
                bytes = room;
            if (bytes > 8 * 64) /* a hint: the first lines of a long one */
                bytes = 8 * 64;
            Py_ssize_t misalign = (Py_ssize_t)((uintptr_t)(r->buf + r->wp) & 63);
            prefetch_lines(r->buf + r->wp - misalign, (int)((misalign + bytes + 63) / 64));
        }
    }
}

/*
 * scan(pos, clock, last_tick, every) -> (pos, reason, clock, fast_lines)
 *
 * Processes lines from `pos` until one needs Python: reason STOP_LINE (process that line in full),
 * STOP_EVENT (the line's source has an open event: finish it, then scan again from the same line),
 * STOP_TICK (the line before `pos`, taken, moved the clock `every` seconds past `last_tick`: tick,
 * then scan on) or STOP_END. Times of the lines taken are applied before returning.
 */
static PyObject *
Kernel_scan(Kernel *k, PyObject *args)
{
    Py_ssize_t pos;
    double clock, last_tick, every;
    if (!PyArg_ParseTuple(args, "nddd", &pos, &clock, &last_tick, &every))
        return NULL;
    if (!k->have_data) {
        PyErr_SetString(PyExc_RuntimeError, "scan() before load()");
        return NULL;
    }
    const unsigned char *data = k->data.buf;
    const Py_ssize_t *starts = k->index.buf;
    Py_ssize_t n = k->index.len / (Py_ssize_t)sizeof(Py_ssize_t) - 1;
    const unsigned char *flags = k->flags.buf;
    const unsigned char *source_of = k->have_source_of ? k->source_of.buf : NULL;
    const double *tsv = k->have_ts ? k->ts.buf : NULL;
    const HeadRec *heads = k->have_heads ? k->heads.buf : NULL;
    const Py_ssize_t chars = k->chars;
    Source src = {NULL, NULL, NULL, 0, 0, 0};
    int cur = -1;
    int reason = STOP_END;
    Py_ssize_t fast = 0;
    Py_ssize_t i = pos < 0 ? 0 : pos;
    int failed = 0;
    /* At STOP_EVENT, Triage.process_line would have advanced the clock to the line's time before
       finishing the event (which takes its time from the clock when its line has none). */
    double stop_t = NAN;
    Ahead *ahead = k->ahead;

    for (; i < n; i++) {
        look_ahead(k, ahead, data, starts, heads, i, n);
        if (flags[i] & (FLAG_FULL | FLAG_CAND)) {
            reason = STOP_LINE;
            break;
        }
        int s = source_of ? source_of[i] : 0;
        if (s != cur) {
            if (source_store(&src) < 0 || source_load(&src, PyList_GET_ITEM(k->sources, s)) < 0) {
                failed = 1;
                break;
            }
            cur = s;
        }
        const unsigned char *p = data + starts[i];
        Py_ssize_t len = starts[i + 1] - 1 - starts[i];
        if (len < 0)
            len = 0;
        /* Non-ASCII text, escapes and carriage returns: Python's parse and Unicode regexes decide. */
        if (heads != NULL ? !heads[i].plain : !plain_ascii(p, len)) {
            reason = STOP_LINE;
            break;
        }
        double ts = tsv ? tsv[i] : NAN;
        if (len > 0 && p[0] == '[') {
            Ahead *seen = &ahead[i & (AHEAD - 1)];
            Head h;
            if (seen->line == i) {
                if (seen->kind != HEAD_RUN) {
                    reason = STOP_LINE;
                    break;
                }
                h = seen->h;
            } else if (head_of(heads, i, p, len, &h) != HEAD_RUN) {
                reason = STOP_LINE;
                break;
            }
            if (h.level_len > 0 && level_fires(k->levels, p + h.level, h.level_len)) {
                reason = STOP_LINE; /* a level-only pattern fires on it */
                break;
            }
            if (isnan(ts))
                ts = h.ts;
            const unsigned char *b = p + h.body;
            Py_ssize_t bl = len - h.body;
            Py_ssize_t suffix = h.suffix - h.body, suffix_len = h.suffix_len;
            Py_ssize_t client = h.client - h.body, client_len = h.client_len;
            RunState *run = seen->line == i && seen->run != NULL ? seen->run : table_find(k, b + 1, fnv1a(b + 1, 13));
            if (run == NULL) {
                PyObject *key = PyUnicode_New(13, 127);
                if (key == NULL) {
                    failed = 1;
                    break;
                }
                memcpy(PyUnicode_1BYTE_DATA(key), b + 1, 13);
                PyObject *found = PyDict_GetItemWithError(k->runs, key);
                Py_DECREF(key);
                if (found == NULL) {
                    if (PyErr_Occurred())
                        failed = 1;
                    else
                        reason = STOP_LINE; /* a new run (or one to reopen): Python creates it */
                    break;
                }
                if (!PyObject_TypeCheck(found, &RunStateType)) {
                    reason = STOP_LINE;
                    break;
                }
                run = (RunState *)found;
                if (table_add(k, b + 1, run) < 0) {
                    failed = 1;
                    break;
                }
            }
            if (!run->meta_settled && run->checked_lines < k->meta_lines) {
                reason = STOP_LINE; /* run type / stream may still be announced */
                break;
            }
            if (src.event_open) {
                reason = STOP_EVENT;
                stop_t = isnan(k->now) ? ts : k->now;
                break;
            }
            if ((heads != NULL && heads[i].plain == PLAIN_SYMBOLS ? ring_line_utf8(run, b, bl, chars)
                                                                  : ring_line(run, b, bl, chars)) < 0) {
                failed = 1;
                break;
            }
            /* note_client(run_suffix or client), client "SYSTEM" meaning none */
            const unsigned char *name = NULL;
            Py_ssize_t name_len = 0;
            if (suffix_len) {
                name = b + suffix;
                name_len = suffix_len;
            } else if (client_len && !(client_len == 6 && memcmp(b + client, "SYSTEM", 6) == 0)) {
                name = b + client;
                name_len = client_len;
            }
            if (name != NULL && client_seen(run, name, name_len) < 0) {
                failed = 1;
                break;
            }
            run->lines++;
            run->checked_lines++;
            settle(k, run, ts, &clock);
            Py_XSETREF(src.run, (PyObject *)Py_NewRef(run));
            src.in_traceback = 0;
            src.dirty = 1;
            goto taken;
        }
        /* Untagged: a continuation of the source's last event, or a head line of its system bucket. */
        if (src.in_traceback || (len > 0 && is_digit(p[0])) || starts_with(p, len, "Traceback (") ||
            starts_with(p, len, "During handling") || starts_with(p, len, "The above exception")) {
            reason = STOP_LINE;
            break;
        }
        RunState *run;
        if (src.run != NULL && is_continuation(p, len)) {
            if (src.trace != NULL && PyList_GET_SIZE(src.trace) < k->max_stack) {
                /* a frame of an issue's stack trace: kept whole, not cut like the ring's copy */
                PyObject *frame = PyUnicode_New(len, 127);
                int err = frame == NULL;
                if (!err) {
                    memcpy(PyUnicode_1BYTE_DATA(frame), p, len);
                    err = PyList_Append(src.trace, frame) < 0;
                    Py_DECREF(frame);
                }
                if (err) {
                    failed = 1;
                    break;
                }
            }
            run = (RunState *)src.run;
        } else {
            if (src.event_open) {
                reason = STOP_EVENT;
                stop_t = isnan(k->now) ? ts : k->now;
                break;
            }
            PyObject *found = PyDict_GetItemWithError(k->systems, PyList_GET_ITEM(k->names, cur));
            if (found == NULL || !PyObject_TypeCheck(found, &RunStateType)) {
                if (PyErr_Occurred())
                    failed = 1;
                else
                    reason = STOP_LINE;
                break;
            }
            run = (RunState *)found;
            Py_XSETREF(src.run, (PyObject *)Py_NewRef(run));
            src.in_traceback = 0;
            src.dirty = 1;
        }
        if (ring_line(run, p, len, chars) < 0) {
            failed = 1;
            break;
        }
        run->lines++;
        settle(k, run, ts, &clock);
    taken:
        fast++;
        /* Triage._maybe_tick after the line: the clock reached the next tick, so Python ticks (runs
           may time out) before the next line, as it would feeding lines one by one. */
        if (clock - last_tick >= every) {
            i++;
            reason = STOP_TICK;
            break;
        }
    }
    if (source_store(&src) < 0)
        failed = 1;
    if (!isnan(stop_t) && stop_t > clock)
        clock = stop_t;
    if (failed)
        return NULL;
    return Py_BuildValue("nidn", i, reason, clock, fast);
}

static PyMethodDef Kernel_methods[] = {
    {"forget", (PyCFunction)Kernel_forget, METH_O, "forget(run_id): the run left Triage.runs."},
    {"load", (PyCFunction)Kernel_load, METH_VARARGS,
     "load(data, index, flags, sources, names, source_of, ts, now, heads=None): the batch to scan."},
    {"scan", (PyCFunction)Kernel_scan, METH_VARARGS,
     "scan(pos, clock, last_tick, every) -> (pos, reason, clock, fast_lines): take lines until one needs "
     "Python or the clock reaches the next tick."},
    {"release", (PyCFunction)Kernel_release, METH_NOARGS, "Drop the loaded batch."},
    {NULL}};

static PyTypeObject KernelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "stream_triage.pipeline._kernel.Kernel",
    .tp_doc = PyDoc_STR("Kernel(runs, order, systems, chars, meta_lines, levels, max_stack): the per-line loop of one Triage."),
    .tp_basicsize = sizeof(Kernel),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Kernel_init,
    .tp_dealloc = (destructor)Kernel_dealloc,
    .tp_traverse = (traverseproc)Kernel_traverse,
    .tp_clear = (inquiry)Kernel_clear,
    .tp_methods = Kernel_methods,
};

/* ------------------------------------------------------------------------------------ module */

/* index_lines(data) -> bytes: native Py_ssize_t start offsets of each line, plus one past the end. */
static PyObject *
index_lines(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const char *p = view.buf, *end = p + view.len;
    Py_ssize_t count = 0;
    for (const char *q = p; (q = memchr(q, '\n', end - q)) != NULL; q++)
        count++;
    Py_ssize_t lines = count + (view.len > 0 && p[view.len - 1] != '\n');
    PyObject *out = PyBytes_FromStringAndSize(NULL, (lines + 1) * sizeof(Py_ssize_t));
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t *starts = (Py_ssize_t *)PyBytes_AS_STRING(out);
    Py_ssize_t k = 0;
    starts[k++] = 0;
    for (const char *q = p; k <= lines && (q = memchr(q, '\n', end - q)) != NULL; q++)
        starts[k++] = q - p + 1;
    if (k <= lines)
        starts[k++] = view.len + 1; /* the last line has no newline */
    PyBuffer_Release(&view);
    return out;
}


/* Verdicts on non-ASCII code points: does the pattern engine count it as a word or space character?
   A small direct-mapped cache in front of a Python callable, for one messages() call. */
typedef struct {
    PyObject *word_or_space; /* callable(str) -> truthy when the character is \w or \s */
    uint32_t cp[64];
    signed char verdict[64]; /* -1: empty slot, 0: neither, 1: word or space */
} SymbolCache;

/* 1: a symbol (neither word nor space), 0: not, -1: error. */
static int
is_symbol(SymbolCache *c, uint32_t cp)
{
    int slot = (int)((cp * 2654435761u) >> 26);
    if (c->verdict[slot] >= 0 && c->cp[slot] == cp)
        return !c->verdict[slot];
    PyObject *ch = PyUnicode_FromOrdinal((int)cp);
    PyObject *r = ch == NULL ? NULL : PyObject_CallOneArg(c->word_or_space, ch);
    Py_XDECREF(ch);
    if (r == NULL)
        return -1;
    int yes = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (yes < 0)
        return -1;
    c->cp[slot] = cp;
    c->verdict[slot] = (signed char)yes;
    return !yes;
}

/*
 * Write p[:n] (valid UTF-8 required) to out with each non-ASCII character as one \x01 byte, as
 * PatternSet.candidates rewrites a message for its ASCII scan. Returns the bytes written, -2 when
 * the text is not strictly valid UTF-8 or holds a non-ASCII word or space character (the pattern
 * verdicts may then differ from the rewritten text's), -1 on error.
 */
static Py_ssize_t
symbols_to_ascii(const unsigned char *p, Py_ssize_t n, unsigned char *out, SymbolCache *c)
{
    Py_ssize_t w = 0;
    for (Py_ssize_t i = 0; i < n;) {
        unsigned char b = p[i];
        if (b < 0x80) {
            out[w++] = b;
            i++;
            continue;
        }
        uint32_t cp;
        int k;
        if (b >= 0xc2 && b <= 0xdf) {
            cp = b & 0x1f;
            k = 1;
        } else if (b >= 0xe0 && b <= 0xef) {
            cp = b & 0x0f;
            k = 2;
        } else if (b >= 0xf0 && b <= 0xf4) {
            cp = b & 0x07;
            k = 3;
        } else {
            return -2;
        }
        if (i + k >= n)
            return -2;
        for (int j = 1; j <= k; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return -2;
            cp = (cp << 6) | (p[i + j] & 0x3f);
        }
        /* overlong forms, UTF-16 surrogates, beyond U+10FFFF: "replace" would decode them otherwise */
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
            return -2;
        int sym = is_symbol(c, cp);
        if (sym < 0)
            return -1;
        if (!sym)
            return -2;
        out[w++] = 0x01;
        i += k + 1;
    }
    return w;
}

/*
 * messages(data, index) -> (messages, index, scanned): each line's message (after its time prefix,
 * run tag, client, operation and level), one per line, newline-terminated, with its own line index.
 * Lines whose message is not their bytes as they stand (escapes, CR, NUL, forms only Python reads)
 * contribute an empty message and scanned[i] = 0; the kernel never takes those. Scanned with
 * MULTILINE expressions that cannot match a newline, every hit lies within one message, and ^ and $
 * anchor where they do on LogLine.message.
 */
static PyObject *
messages(PyObject *module, PyObject *args)
{
    Py_buffer data, index;
    SymbolCache cache;
    cache.word_or_space = Py_None;
    if (!PyArg_ParseTuple(args, "y*y*|O", &data, &index, &cache.word_or_space))
        return NULL;
    memset(cache.verdict, -1, sizeof(cache.verdict));
    int symbols = cache.word_or_space != Py_None;
    Py_ssize_t n = index.len / (Py_ssize_t)sizeof(Py_ssize_t) - 1;
    if (n < 0)
        n = 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, data.len + n + 1);
    PyObject *mindex = PyBytes_FromStringAndSize(NULL, (n + 1) * sizeof(Py_ssize_t));
    PyObject *scanned = PyBytes_FromStringAndSize(NULL, n);
    PyObject *heads = PyBytes_FromStringAndSize(NULL, n * sizeof(HeadRec));
    PyObject *result = NULL;
    if (out != NULL && mindex != NULL && scanned != NULL && heads != NULL) {
        HeadRec *hr = (HeadRec *)PyBytes_AS_STRING(heads);
        const Py_ssize_t *starts = index.buf;
        unsigned char *q = (unsigned char *)PyBytes_AS_STRING(out);
        Py_ssize_t *mstarts = (Py_ssize_t *)PyBytes_AS_STRING(mindex);
        unsigned char *ok = (unsigned char *)PyBytes_AS_STRING(scanned);
        const unsigned char *p = data.buf;
        Py_ssize_t w = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t s = starts[i], len = starts[i + 1] - 1 - s;
            mstarts[i] = w;
            ok[i] = 0;
            hr[i].kind = HEAD_UNPARSED;
            hr[i].plain = 0;
            int cls = s >= 0 && len >= 0 && s + len <= data.len ? byte_class(p + s, len) : BYTES_UNSAFE;
            if (!(cls & BYTES_UNSAFE)) {
                Head *h = &hr[i].h;
                hr[i].plain = cls == 0 ? PLAIN_ASCII : PLAIN_NO;
                hr[i].kind = parse_head(p + s, len, h);
                if (hr[i].kind != HEAD_OTHER) {
                    const unsigned char *m = p + s + h->message;
                    Py_ssize_t mlen = len - h->message, got = -2;
                    /* A run line whose only non-ASCII characters, all in its message, are symbols
                       (emoji, arrows, dashes): scanned as PatternSet.candidates would scan it. */
                    if (cls == BYTES_HIGH && symbols && hr[i].kind == HEAD_RUN && !(byte_class(p + s, h->message) & BYTES_HIGH)) {
                        got = symbols_to_ascii(m, mlen, q + w, &cache);
                        if (got == -1)
                            goto fail;
                    }
                    if (got >= 0) {
                        w += got;
                        hr[i].plain = PLAIN_SYMBOLS;
                    } else {
                        memcpy(q + w, m, mlen);
                        w += mlen;
                    }
                    ok[i] = 1;
                }
            }
            q[w++] = '\n';
        }
        mstarts[n] = w;
        if (_PyBytes_Resize(&out, w) == 0)
            result = PyTuple_Pack(4, out, mindex, scanned, heads);
    }
fail:
    Py_XDECREF(heads);
    Py_XDECREF(out);
    Py_XDECREF(mindex);
    Py_XDECREF(scanned);
    PyBuffer_Release(&data);
    PyBuffer_Release(&index);
    return result;
}

/* ----------------------------------------------------------------------------------- HitSink */

/*
 * A Hyperscan match handler implemented in C: it only records (expression, start, end), so a batch
 * with many hits costs no Python frame per hit. classify() turns the hits into per-line flags.
 */
typedef struct {
    unsigned int id;
    Py_ssize_t start, end;
} Hit;

typedef struct {
    PyObject_HEAD
    Hit *hits;
    Py_ssize_t n, cap;
} HitSink;

static void
HitSink_dealloc(HitSink *self)
{
    PyMem_Free(self->hits);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
HitSink_call(HitSink *self, PyObject *args, PyObject *kwds)
{
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) < 3) {
        PyErr_SetString(PyExc_TypeError, "HitSink(id, start, end, ...)");
        return NULL;
    }
    unsigned long id = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(args, 0));
    Py_ssize_t start = PyLong_AsSsize_t(PyTuple_GET_ITEM(args, 1));
    Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GET_ITEM(args, 2));
    if (PyErr_Occurred())
        return NULL;
    if (self->n == self->cap) {
        Py_ssize_t cap = self->cap ? self->cap * 2 : 256;
        Hit *h = PyMem_Realloc(self->hits, cap * sizeof(Hit));
        if (h == NULL)
            return PyErr_NoMemory();
        self->hits = h;
        self->cap = cap;
    }
    self->hits[self->n].id = (unsigned int)id;
    self->hits[self->n].start = start;
    self->hits[self->n].end = end;
    self->n++;
    Py_RETURN_NONE;
}

static PyObject *
HitSink_clear(HitSink *self, PyObject *unused)
{
    self->n = 0;
    Py_RETURN_NONE;
}

static Py_ssize_t
HitSink_len(HitSink *self)
{
    return self->n;
}

static PySequenceMethods HitSink_as_sequence = {.sq_length = (lenfunc)HitSink_len};

static PyMethodDef HitSink_methods[] = {
    {"clear", (PyCFunction)HitSink_clear, METH_NOARGS, "Forget the recorded hits."},
    {NULL}};

static PyTypeObject HitSinkType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "stream_triage.pipeline._kernel.HitSink",
    .tp_doc = PyDoc_STR("Records Hyperscan hits (pass it as match_event_handler)."),
    .tp_basicsize = sizeof(HitSink),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)HitSink_dealloc,
    .tp_call = (ternaryfunc)HitSink_call,
    .tp_as_sequence = &HitSink_as_sequence,
    .tp_methods = HitSink_methods,
};

static int
cmp_u64(const void *a, const void *b)
{
    unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
    return (x > y) - (x < y);
}

/* The line holding byte `off`: the last i with starts[i] <= off. */
static Py_ssize_t
line_of(const Py_ssize_t *starts, Py_ssize_t n, Py_ssize_t off)
{
    Py_ssize_t lo = 0, hi = n; /* starts[lo] <= off < starts[hi] */
    while (hi - lo > 1) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (starts[mid] <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

enum { ROLE_FULL = 0, ROLE_PATTERN = 1, ROLE_UNLESS = 2 };

/*
 * classify(sink, index, roles, patterns, exact) -> (flags, candidates, matched)
 *
 * The hits come from a scan of messages(data): every hit lies within one line's message; index is
 * the messages' own line index.
 * roles[id]: ROLE_FULL (completion markers: the line takes the full path), ROLE_PATTERN (a pattern's
 * expression) or ROLE_UNLESS (its exclusion, matched exactly). patterns[id]: the pattern index
 * (uint16). exact[id]: EXACT_NO when Hyperscan may report more than the expression matches,
 * EXACT_TEXT when it matches exactly but the pattern also has level conditions, EXACT_SETTLES when
 * an exact hit alone means the pattern fires.
 * A line with an exact hit of a pattern is FLAG_FULL (EXACT_TEXT: FLAG_CAND, the level is checked in
 * Python) unless the same pattern's exclusion matched too; an inexact hit makes the line FLAG_CAND.
 * (line, pattern) pairs: `candidates` may match, `matched` do (exact hit, no exclusion; their level
 * conditions aside); together, all a scanned message can match.
 */
enum { EXACT_NO = 0, EXACT_SETTLES = 1, EXACT_TEXT = 2 };
static PyObject *
classify(PyObject *module, PyObject *args)
{
    PyObject *sink_obj;
    Py_buffer index, roles, patterns, exact;
    if (!PyArg_ParseTuple(args, "O!y*y*y*y*", &HitSinkType, &sink_obj, &index, &roles, &patterns, &exact))
        return NULL;
    HitSink *sink = (HitSink *)sink_obj;
    PyObject *flags = NULL, *cands = NULL, *exacts = NULL, *result = NULL;
    unsigned long long *found = NULL, *excluded = NULL;
    unsigned char *found_flag = NULL;
    const Py_ssize_t *starts = index.buf;
    Py_ssize_t n = index.len / (Py_ssize_t)sizeof(Py_ssize_t) - 1;
    Py_ssize_t nroles = roles.len;
    if (n < 0 || patterns.len < 2 * nroles || exact.len < nroles) {
        PyErr_SetString(PyExc_ValueError, "classify(): arguments do not fit together");
        goto done;
    }
    flags = PyByteArray_FromStringAndSize(NULL, n);
    cands = PyList_New(0);
    exacts = PyList_New(0);
    found = PyMem_Malloc((sink->n + 1) * sizeof(unsigned long long));
    found_flag = PyMem_Malloc(sink->n + 1);
    excluded = PyMem_Malloc((sink->n + 1) * sizeof(unsigned long long));
    if (flags == NULL || cands == NULL || exacts == NULL || found == NULL || found_flag == NULL || excluded == NULL) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    unsigned char *fl = (unsigned char *)PyByteArray_AS_STRING(flags);
    memset(fl, 0, n);
    const unsigned char *role = roles.buf, *ex = exact.buf;
    const unsigned short *pat = patterns.buf;
    Py_ssize_t nfound = 0, nexcluded = 0;
    for (Py_ssize_t h = 0; h < sink->n && n > 0; h++) {
        Hit hit = sink->hits[h];
        if (hit.id >= nroles || hit.end <= 0)
            continue;
        Py_ssize_t line = line_of(starts, n, hit.end - 1);
        unsigned long long key = ((unsigned long long)line << 16) | pat[hit.id];
        switch (role[hit.id]) {
        case ROLE_FULL: /* a completion marker may be in the line */
            fl[line] |= FLAG_FULL | FLAG_MARKER;
            break;
        case ROLE_PATTERN:
            if (ex[hit.id] != EXACT_NO) {
                found_flag[nfound] = ex[hit.id] == EXACT_TEXT ? FLAG_CAND : FLAG_FULL;
                found[nfound++] = key;
            } else {
                fl[line] |= FLAG_CAND;
                PyObject *pair = Py_BuildValue("(nH)", line, pat[hit.id]);
                if (pair == NULL || PyList_Append(cands, pair) < 0) {
                    Py_XDECREF(pair);
                    goto done;
                }
                Py_DECREF(pair);
            }
            break;
        case ROLE_UNLESS:
            excluded[nexcluded++] = key;
            break;
        }
    }
    if (nexcluded > 1)
        qsort(excluded, nexcluded, sizeof(unsigned long long), cmp_u64);
    for (Py_ssize_t j = 0; j < nfound; j++) {
        if (nexcluded && bsearch(&found[j], excluded, nexcluded, sizeof(unsigned long long), cmp_u64))
            continue;
        fl[found[j] >> 16] |= found_flag[j];
        PyObject *pair = Py_BuildValue("(nH)", (Py_ssize_t)(found[j] >> 16), (unsigned short)(found[j] & 0xffff));
        if (pair == NULL || PyList_Append(exacts, pair) < 0) {
            Py_XDECREF(pair);
            goto done;
        }
        Py_DECREF(pair);
    }
    result = PyTuple_Pack(3, flags, cands, exacts);
done:
    Py_XDECREF(flags);
    Py_XDECREF(cands);
    Py_XDECREF(exacts);
    PyMem_Free(found);
    PyMem_Free(found_flag);
    PyMem_Free(excluded);
    PyBuffer_Release(&index);
    PyBuffer_Release(&roles);
    PyBuffer_Release(&patterns);
    PyBuffer_Release(&exact);
    return result;
}

static PyObject *
ascii_or_none(const unsigned char *p, Py_ssize_t n)
{
    if (n <= 0)
        Py_RETURN_NONE;
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL)
        memcpy(PyUnicode_1BYTE_DATA(s), p, n);
    return s;
}

/*
 * line_fields(data, index, heads, i) -> (text, message, run_id, suffix, client, operation, level, ts)
 * or None: what parse.LineParser makes of line i (level upper-cased, aliases not applied; client
 * "SYSTEM" as None; ts the line's own time prefix or None), for a plain-ASCII line whose head
 * messages() parsed as a run tag. None: LineParser must parse it.
 */
static PyObject *
line_fields(PyObject *module, PyObject *args)
{
    Py_buffer data, index, heads;
    Py_ssize_t i;
    if (!PyArg_ParseTuple(args, "y*y*y*n", &data, &index, &heads, &i))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = index.len / (Py_ssize_t)sizeof(Py_ssize_t) - 1;
    const Py_ssize_t *starts = index.buf;
    if (i < 0 || i >= n || heads.len != n * (Py_ssize_t)sizeof(HeadRec) || starts[i + 1] > data.len + 1) {
        PyErr_SetString(PyExc_ValueError, "line_fields(): arguments do not fit together");
        goto done;
    }
    const HeadRec *hr = (const HeadRec *)heads.buf + i;
    const unsigned char *p = (const unsigned char *)data.buf + starts[i];
    Py_ssize_t len = starts[i + 1] - 1 - starts[i];
    if (hr->kind != HEAD_RUN || len < 0 || hr->h.level_len >= 64 || hr->plain != PLAIN_ASCII) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    const Head *h = &hr->h;
    const unsigned char *b = p + h->body;
    int system = h->client_len == 6 && memcmp(p + h->client, "SYSTEM", 6) == 0;
    unsigned char level[64];
    Py_ssize_t level_len = h->level_len;
    for (Py_ssize_t j = 0; j < level_len; j++)
        level[j] = p[h->level + j] >= 'a' && p[h->level + j] <= 'z' ? p[h->level + j] - 32 : p[h->level + j];
    PyObject *items[8] = {
        ascii_or_none(b, len - h->body),
        NULL,
        ascii_or_none(b + 1, 13),
        ascii_or_none(p + h->suffix, h->suffix_len),
        system ? Py_NewRef(Py_None) : ascii_or_none(p + h->client, h->client_len),
        ascii_or_none(p + h->op, h->op_len),
        ascii_or_none(level, level_len),
        isnan(h->ts) ? Py_NewRef(Py_None) : PyFloat_FromDouble(h->ts),
    };
    items[1] = h->message >= len ? PyUnicode_New(0, 127) : ascii_or_none(p + h->message, len - h->message);
    if (items[0] == Py_None) /* an empty body is "", not None */
        Py_SETREF(items[0], PyUnicode_New(0, 127));
    int ok = 1;
    for (int j = 0; j < 8; j++)
        ok &= items[j] != NULL;
    if (ok)
        result = PyTuple_Pack(8, items[0], items[1], items[2], items[3], items[4], items[5], items[6], items[7]);
    for (int j = 0; j < 8; j++)
        Py_XDECREF(items[j]);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&index);
    PyBuffer_Release(&heads);
    return result;
}

static PyMethodDef module_methods[] = {
    {"line_fields", line_fields, METH_VARARGS,
     "line_fields(data, index, heads, i): line i's parse as LineParser makes it, or None."},
    {"index_lines", index_lines, METH_O,
     "index_lines(data) -> bytes: start offsets (native ssize_t) of each line and one past the end."},
    {"classify", classify, METH_VARARGS,
     "classify(sink, index, roles, patterns, exact) -> (flags, candidates, matched): per-line flags from hits."},
    {"render_context", render_context, METH_VARARGS,
     "render_context(blob, lens, at) -> list of str: RunState.context()'s lines, line `at` marked \">> \"."},
    {"messages", messages, METH_VARARGS,
     "messages(data, index) -> (messages, index, scanned): each line's message, newline-terminated."},
    {NULL}};

static struct PyModuleDef kernel_module = {
    PyModuleDef_HEAD_INIT, "stream_triage.pipeline._kernel",
    "The pipeline's per-line loop in C (see triage.py).", -1, module_methods};

PyMODINIT_FUNC
PyInit__kernel(void)
{
    if (PyType_Ready(&RunStateType) < 0 || PyType_Ready(&RunOrderType) < 0 || PyType_Ready(&RunOrderIterType) < 0 ||
        PyType_Ready(&KernelType) < 0 || PyType_Ready(&HitSinkType) < 0)
        return NULL;
    str_due = PyUnicode_InternFromString("due");
    str_freeze = PyUnicode_InternFromString("freeze");
    str_event = PyUnicode_InternFromString("event");
    str_run = PyUnicode_InternFromString("run");
    str_in_traceback = PyUnicode_InternFromString("in_traceback");
    str_match = PyUnicode_InternFromString("match");
    str_done = PyUnicode_InternFromString("done");
    str_trace = PyUnicode_InternFromString("trace");
    if (!str_due || !str_freeze || !str_event || !str_run || !str_in_traceback || !str_match || !str_done ||
        !str_trace)
        return NULL;
    PyObject *m = PyModule_Create(&kernel_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "RunState", (PyObject *)&RunStateType) < 0 ||
        PyModule_AddObjectRef(m, "RunOrder", (PyObject *)&RunOrderType) < 0 ||
        PyModule_AddObjectRef(m, "Kernel", (PyObject *)&KernelType) < 0 ||
        PyModule_AddObjectRef(m, "HitSink", (PyObject *)&HitSinkType) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_FULL", FLAG_FULL) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_CAND", FLAG_CAND) < 0 ||
        PyModule_AddIntConstant(m, "STOP_END", STOP_END) < 0 ||
        PyModule_AddIntConstant(m, "STOP_LINE", STOP_LINE) < 0 ||
        PyModule_AddIntConstant(m, "STOP_EVENT", STOP_EVENT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
