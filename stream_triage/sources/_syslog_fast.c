/* Fast path for the common syslog frame: octet-counted RFC 5424 (or logplex), valid UTF-8, no token.
 *
 * scan(data, pos, limit, prefix, sources, max_sources) -> (pos, frames, lines, ts, source_of, timed)
 *
 * Starting at `pos`, takes consecutive octet-counted frames it fully understands and turns each into
 * log lines exactly as the Python path does (parse_syslog → message → split_lines), appending them
 * to the returned buffers: `lines` (UTF-8, every line terminated by "\n"), `ts` (native doubles, NaN
 * for a nil timestamp) and `source_of` (one byte per line: the index of its source name in the dict
 * `sources`, which maps names to 0, 1, 2, … in insertion order). It stops — returning the position
 * of the frame it did not take — at anything else: a frame that does not start with a digit, a bad
 * or oversized or incomplete length, a frame that is not RFC 5424 with a plain "-" or message-only
 * structured data, a timestamp outside the strict RFC 3339 subset, invalid UTF-8, a single line
 * ending in "\r" (a LineBatch cannot carry it), or a new source when `sources` already holds
 * `max_sources` names. The caller handles that frame with the exact Python path and calls again.
 * `frames` counts the frames taken, `timed` the lines that have a timestamp.
 *
 * `prefix` None: syslog mode (source "HOST/APP/PROCID", structured data after MSGID, separators
 * LF/NUL/CR between frames, frames longer than `limit` are left to the caller). `prefix` a str:
 * logplex mode (source prefix + "APP/PROCID", STRUCTURED-DATA omitted, whitespace between frames).
 *
 * Whatever is accepted here must give byte-for-byte what the Python path gives; whatever is in
 * doubt is left to Python. tests/sources/test_syslog_fast.py checks both against each other.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_LEN_DIGITS 9
#define CACHE_SLOTS 16

typedef struct {
    char *p;
    Py_ssize_t len;
    Py_ssize_t cap;
} buf_t;

static int buf_reserve(buf_t *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 16384;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Strict UTF-8 as CPython decodes it: no overlongs, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        while (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            if (v & 0x8080808080808080ULL)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c < 0xC2)
            return 0;
        if (c < 0xE0) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80)
                return 0;
            i += 2;
            continue;
        }
        if (c < 0xF0) {
            if (i + 2 >= n)
                return 0;
            unsigned char c1 = s[i + 1], c2 = s[i + 2];
            if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80)
                return 0;
            if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F))
                return 0;
            i += 3;
            continue;
        }
        if (c < 0xF5) {
            if (i + 3 >= n)
                return 0;
            unsigned char c1 = s[i + 1], c2 = s[i + 2], c3 = s[i + 3];
            if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80 || (c3 & 0xC0) != 0x80)
                return 0;
            if ((c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F))
                return 0;
            i += 4;
            continue;
        }
        return 0;
    }
    return 1;
}

static int ascii_digits(const char *s, int k, int *out) {
    int v = 0;
    for (int j = 0; j < k; j++) {
        if (s[j] < '0' || s[j] > '9')
            return 0;
        v = v * 10 + (s[j] - '0');
    }
    *out = v;
    return 1;
}

static int days_in_month(int y, int m) {
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return days[m - 1];
}

/* Days since 1970-01-01 in the proleptic Gregorian calendar (what calendar.timegm uses). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;
    const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

typedef struct {
    char key[19];
    int valid;
    int64_t base;
} ts_cache_t;

/* parse_rfc3339 for the strict subset YYYY-MM-DD[Tt]HH:MM:SS[(.|,)DIGITS](Z|z|(+|-)HH:MM), and "-" (NaN).
 * Returns 0 when the text is outside that subset (the caller then leaves the frame to Python). */
static int parse_ts(const char *s, Py_ssize_t n, ts_cache_t *cache, double *out) {
    if (n == 1 && s[0] == '-') {
        *out = NAN;
        return 1;
    }
    if (n < 20)
        return 0;
    int64_t base;
    if (cache->valid && memcmp(cache->key, s, 19) == 0) {
        base = cache->base;
    } else {
        int y, mo, d, h, mi, sec;
        if (s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':' || (s[10] != 'T' && s[10] != 't'))
            return 0;
        if (!ascii_digits(s, 4, &y) || !ascii_digits(s + 5, 2, &mo) || !ascii_digits(s + 8, 2, &d) ||
            !ascii_digits(s + 11, 2, &h) || !ascii_digits(s + 14, 2, &mi) || !ascii_digits(s + 17, 2, &sec))
            return 0;
        if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
            return 0;
        base = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
        memcpy(cache->key, s, 19);
        cache->base = base;
        cache->valid = 1;
    }
    const char *end = s + n;
    const char *frac_end;
    int64_t offset;
    if (end[-1] == 'Z' || end[-1] == 'z') {
        offset = 0;
        frac_end = end - 1;
    } else {
        if (n < 25)
            return 0;
        const char *z = end - 6;
        int zh, zm;
        if ((z[0] != '+' && z[0] != '-') || z[3] != ':' || !ascii_digits(z + 1, 2, &zh) || !ascii_digits(z + 4, 2, &zm))
            return 0;
        offset = (int64_t)zh * 3600 + (int64_t)zm * 60;
        if (z[0] == '-')
            offset = -offset;
        frac_end = z;
    }
    const char *f = s + 19;
    if (frac_end == f) {
        *out = (double)(base - offset);
        return 1;
    }
    if (*f != '.' && *f != ',')
        return 0;
    Py_ssize_t nd = frac_end - f - 1;
    if (nd < 1 || nd > 64)
        return 0;
    int64_t digits = 0;
    for (Py_ssize_t j = 0; j < nd; j++) {
        char c = f[1 + j];
        if (c < '0' || c > '9')
            return 0;
        if (j < 15)
            digits = digits * 10 + (c - '0');
    }
    double frac;
#if FLT_EVAL_METHOD == 0
    if (nd <= 15) {
        /* Both operands are exact doubles (digits < 10^15 < 2^53, 10^nd ≤ 10^22) and IEEE division
         * rounds correctly, so this is exactly float("0." + digits) — without its strtod. */
        static const double pow10[16] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                         1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
        frac = (double)digits / pow10[nd];
    } else
#endif
    {
        char tmp[72];
        tmp[0] = '0';
        tmp[1] = '.';
        memcpy(tmp + 2, f + 1, (size_t)nd);
        tmp[2 + nd] = '\0';
        /* The conversion float("0.…") uses, so the value is identical. */
        frac = PyOS_string_to_double(tmp, NULL, NULL);
        if (frac == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
    }
    *out = (double)(base - offset) + frac;
    return 1;
}

static int contains(const char *s, Py_ssize_t n, char c) { return n > 0 && memchr(s, c, (size_t)n) != NULL; }

/* Mirrors the first step of syslog_protocol._parse_sd on text starting with "[": 1 when the text may
 * be structured data (left to Python), 0 when _parse_sd certainly rejects it (so it is message text). */
static int may_be_sd(const char *t, Py_ssize_t n) {
    const char *close = n > 1 ? memchr(t + 1, ']', (size_t)(n - 1)) : NULL;
    if (close == NULL)
        return 0;
    Py_ssize_t j = close - t;
    const char *sp = memchr(t + 1, ' ', (size_t)(j - 1));
    if (sp != NULL)
        j = sp - t;
    const char *id = t + 1;
    Py_ssize_t idn = j - 1;
    if (idn <= 0 || contains(id, idn, '=') || contains(id, idn, '"'))
        return 0;
    if (contains(id, idn, '@'))
        return 1;
    if ((idn == 11 && memcmp(id, "timeQuality", 11) == 0) || (idn == 6 && memcmp(id, "origin", 6) == 0) ||
        (idn == 4 && memcmp(id, "meta", 4) == 0))
        return 1;
    return 0;
}

typedef struct {
    const char *key;
    Py_ssize_t len;
    unsigned char index;
} src_slot_t;

typedef struct {
    PyObject *sources; /* dict: name -> index */
    PyObject *prefix;  /* None or str */
    Py_ssize_t max_sources;
    src_slot_t slots[CACHE_SLOTS];
    int used;
    int next;
} src_state_t;

static void append_field(char *out, Py_ssize_t *k, const char *s, Py_ssize_t n) {
    if (n == 0) {
        out[(*k)++] = '-';
    } else {
        memcpy(out + *k, s, (size_t)n);
        *k += n;
    }
}

/* The index of the source for fields [host,] app, procid; -1 when the dict is full (stop), -2 on error.
 * `key`/`keylen` is the raw span of those fields in the frame: equal spans mean equal names. */
static int source_index(src_state_t *st, const char *key, Py_ssize_t keylen, const char *host, Py_ssize_t hn,
                        const char *app, Py_ssize_t an, const char *procid, Py_ssize_t pn) {
    for (int i = 0; i < st->used; i++) {
        src_slot_t *slot = &st->slots[i];
        if (slot->len == keylen && memcmp(slot->key, key, (size_t)keylen) == 0)
            return slot->index;
    }
    char stackbuf[512];
    Py_ssize_t need = hn + an + pn + 8;
    char *name = need <= (Py_ssize_t)sizeof(stackbuf) ? stackbuf : PyMem_Malloc((size_t)need);
    if (name == NULL) {
        PyErr_NoMemory();
        return -2;
    }
    Py_ssize_t k = 0;
    if (st->prefix == Py_None) {
        append_field(name, &k, host, hn);
        name[k++] = '/';
    }
    append_field(name, &k, app, an);
    name[k++] = '/';
    append_field(name, &k, procid, pn);
    PyObject *tail = PyUnicode_DecodeUTF8(name, k, "strict");
    if (name != stackbuf)
        PyMem_Free(name);
    if (tail == NULL)
        return -2;
    PyObject *full = tail;
    if (st->prefix != Py_None) {
        full = PyUnicode_Concat(st->prefix, tail);
        Py_DECREF(tail);
        if (full == NULL)
            return -2;
    }
    long index;
    PyObject *found = PyDict_GetItemWithError(st->sources, full);
    if (found != NULL) {
        index = PyLong_AsLong(found);
        if (index == -1 && PyErr_Occurred()) {
            Py_DECREF(full);
            return -2;
        }
        if (index < 0 || index > 255) {
            Py_DECREF(full);
            PyErr_SetString(PyExc_ValueError, "source index out of range");
            return -2;
        }
    } else {
        if (PyErr_Occurred()) {
            Py_DECREF(full);
            return -2;
        }
        Py_ssize_t size = PyDict_Size(st->sources);
        if (size >= st->max_sources) {
            Py_DECREF(full);
            return -1;
        }
        PyObject *value = PyLong_FromSsize_t(size);
        if (value == NULL || PyDict_SetItem(st->sources, full, value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(full);
            return -2;
        }
        Py_DECREF(value);
        index = (long)size;
    }
    Py_DECREF(full);
    src_slot_t *slot = &st->slots[st->next];
    slot->key = key;
    slot->len = keylen;
    slot->index = (unsigned char)index;
    st->next = (st->next + 1) % CACHE_SLOTS;
    if (st->used < CACHE_SLOTS)
        st->used++;
    return (int)index;
}

typedef struct {
    buf_t lines;
    buf_t ts;
    buf_t src;
    Py_ssize_t timed;
} out_t;

static int emit_line(out_t *o, const char *s, Py_ssize_t n, double ts, unsigned char src) {
    if (buf_reserve(&o->lines, n + 1) < 0 || buf_reserve(&o->ts, (Py_ssize_t)sizeof(double)) < 0 ||
        buf_reserve(&o->src, 1) < 0)
        return -1;
    memcpy(o->lines.p + o->lines.len, s, (size_t)n);
    o->lines.len += n;
    o->lines.p[o->lines.len++] = '\n';
    memcpy(o->ts.p + o->ts.len, &ts, sizeof(double));
    o->ts.len += (Py_ssize_t)sizeof(double);
    o->src.p[o->src.len++] = (char)src;
    if (!isnan(ts))
        o->timed++;
    return 0;
}

enum { TAKEN = 1, LEAVE = 0, FAILED = -1 };

/* One frame (without its length prefix): TAKEN (lines emitted), LEAVE (for Python) or FAILED (exception). */
static int take_frame(const char *f, Py_ssize_t len, int logplex, ts_cache_t *cache, src_state_t *st, out_t *o) {
    if (len < 1 || f[0] != '<' || !utf8_valid((const unsigned char *)f, len))
        return LEAVE;
    /* HEADER: "<PRI>1" with PRI 0..191 written as str(int) writes it. */
    Py_ssize_t i = 1;
    int pri = 0;
    while (i < len && i <= 4 && f[i] >= '0' && f[i] <= '9') {
        pri = pri * 10 + (f[i] - '0');
        i++;
    }
    Py_ssize_t nd = i - 1;
    if (nd < 1 || nd > 3 || (nd > 1 && f[1] == '0') || pri > 191)
        return LEAVE;
    if (i + 2 >= len || f[i] != '>' || f[i + 1] != '1' || f[i + 2] != ' ')
        return LEAVE;
    /* TIMESTAMP HOSTNAME APP-NAME PROCID MSGID, as str.split(" ", 6) cuts them. */
    const char *e = f + len;
    const char *q = f + i + 3;
    const char *fs[5], *fe[5];
    const char *tail = e;
    for (int k = 0; k < 5; k++) {
        fs[k] = q;
        const char *sp = q < e ? memchr(q, ' ', (size_t)(e - q)) : NULL;
        if (sp == NULL) {
            if (k < 4)
                return LEAVE;
            fe[k] = e;
            tail = e;
            break;
        }
        fe[k] = sp;
        q = sp + 1;
        tail = q;
    }
    double ts;
    if (!parse_ts(fs[0], fe[0] - fs[0], cache, &ts))
        return LEAVE;
    const char *t = tail;
    Py_ssize_t tl = e - tail;
    if (tl > 0 && !logplex) {
        if (t[0] == '-' && (tl == 1 || t[1] == ' ')) {
            Py_ssize_t skip = tl == 1 ? 1 : 2;
            t += skip;
            tl -= skip;
        } else if (t[0] == '[' && may_be_sd(t, tl)) {
            return LEAVE;
        }
    }
    if (tl >= 3 && (unsigned char)t[0] == 0xEF && (unsigned char)t[1] == 0xBB && (unsigned char)t[2] == 0xBF) {
        t += 3;
        tl -= 3;
    }
    if (tl > 0 && t[tl - 1] == '\n') {
        while (tl > 0 && (t[tl - 1] == '\n' || t[tl - 1] == '\r'))
            tl--;
    }
    const char *nl = tl > 0 ? memchr(t, '\n', (size_t)tl) : NULL;
    if (nl == NULL && tl > 0 && t[tl - 1] == '\r')
        return LEAVE; /* RawRecord keeps a single line's trailing CR; LineBatch lines cannot end in one */
    int index;
    if (logplex)
        index = source_index(st, fs[2], fe[3] - fs[2], NULL, 0, fs[2], fe[2] - fs[2], fs[3], fe[3] - fs[3]);
    else
        index = source_index(st, fs[1], fe[3] - fs[1], fs[1], fe[1] - fs[1], fs[2], fe[2] - fs[2], fs[3],
                             fe[3] - fs[3]);
    if (index == -1)
        return LEAVE;
    if (index < 0)
        return FAILED;
    if (nl == NULL)
        return emit_line(o, t, tl, ts, (unsigned char)index) < 0 ? FAILED : TAKEN;
    /* A multi-line message: split_lines, every part without trailing CRs. */
    const char *p = t, *end = t + tl;
    while (1) {
        const char *stop = memchr(p, '\n', (size_t)(end - p));
        const char *le = stop ? stop : end;
        const char *r = le;
        while (r > p && r[-1] == '\r')
            r--;
        if (emit_line(o, p, r - p, ts, (unsigned char)index) < 0)
            return FAILED;
        if (stop == NULL)
            break;
        p = stop + 1;
    }
    return TAKEN;
}

static PyObject *scan(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, limit, max_sources;
    PyObject *prefix, *sources;
    if (!PyArg_ParseTuple(args, "y*nnOO!n", &view, &pos, &limit, &prefix, &PyDict_Type, &sources, &max_sources))
        return NULL;
    PyObject *result = NULL;
    out_t o = {{NULL, 0, 0}, {NULL, 0, 0}, {NULL, 0, 0}, 0};
    if (prefix != Py_None && !PyUnicode_Check(prefix)) {
        PyErr_SetString(PyExc_TypeError, "prefix must be None or str");
        goto done;
    }
    if (max_sources > 256)
        max_sources = 256;
    const int logplex = prefix != Py_None;
    const char *d = view.buf;
    const Py_ssize_t n = view.len;
    if (pos < 0)
        pos = 0;
    src_state_t st;
    memset(&st, 0, sizeof st);
    st.sources = sources;
    st.prefix = prefix;
    st.max_sources = max_sources;
    ts_cache_t cache;
    memset(&cache, 0, sizeof cache);
    Py_ssize_t frames = 0;
    while (pos < n) {
        Py_ssize_t p = pos;
        /* Separators between frames, as the Python framers skip them. */
        if (logplex) {
            while (p < n && (d[p] == '\n' || d[p] == '\r' || d[p] == ' ' || d[p] == '\t'))
                p++;
        } else {
            while (p < n && (d[p] == '\n' || d[p] == '\0' || d[p] == '\r'))
                p++;
        }
        if (p >= n) {
            pos = n;
            break;
        }
        pos = p;
        Py_ssize_t q = p;
        Py_ssize_t length = 0;
        while (q < n && q - p < MAX_LEN_DIGITS && d[q] >= '0' && d[q] <= '9') {
            length = length * 10 + (d[q] - '0');
            q++;
        }
        if (q == p || q >= n || d[q] != ' ' || length == 0 || length > limit || length > n - q - 1)
            break;
        int r = take_frame(d + q + 1, length, logplex, &cache, &st, &o);
        if (r == FAILED)
            goto done;
        if (r == LEAVE)
            break;
        pos = q + 1 + length;
        frames++;
    }
    {
        PyObject *lines = PyBytes_FromStringAndSize(o.lines.p, o.lines.len);
        PyObject *ts = PyBytes_FromStringAndSize(o.ts.p, o.ts.len);
        PyObject *src = PyBytes_FromStringAndSize(o.src.p, o.src.len);
        if (lines && ts && src)
            result = Py_BuildValue("nnNNNn", pos, frames, lines, ts, src, o.timed);
        else {
            Py_XDECREF(lines);
            Py_XDECREF(ts);
            Py_XDECREF(src);
        }
    }
done:
    PyMem_Free(o.lines.p);
    PyMem_Free(o.ts.p);
    PyMem_Free(o.src.p);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(data, pos, limit, prefix, sources, max_sources) -> (pos, frames, lines, ts, source_of, timed)\n\n"
     "Take the octet-counted frames at data[pos:] that the fast path understands; stop at the first other one."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_syslog_fast",
    .m_doc = "C fast path for octet-counted RFC 5424 syslog and logplex frames.",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__syslog_fast(void) { return PyModule_Create(&module); }
