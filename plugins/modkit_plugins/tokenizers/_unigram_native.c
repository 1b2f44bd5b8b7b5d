/* SentencePiece's Unigram Viterbi pass and its normaliser's fast path, compiled: the
 * Viterbi pass of spm_unigram.Unigram._viterbi (Lattice) and the one-character replacements
 * and whitespace handling of spm_normalize.Normalizer.normalize (Translator), each with the
 * same results as the Python it replaces. The Viterbi pass keeps the same trie, the same
 * arithmetic (each candidate a double sum, rounded to a float where path scores are kept in
 * float32, as sentencepiece keeps them, with sentencepiece's reset of large sums) and the
 * same tie rule (a later candidate wins only when strictly better). The module is optional:
 * without it modkit runs the Python; tests/plugins/test_spm_native.py holds the two to each
 * other.
 *
 * The trie is a hash table of (node, code point) -> child node, built from the flat arrays
 * that spm_unigram.flatten_trie makes of the Python trie. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define NATIVE_VERSION 5 /* spm_unigram checks it: a stale build is ignored, not trusted */

typedef struct {
    PyObject_HEAD
    uint64_t *keys; /* (parent + 1) << 21 | code point; 0 marks an empty slot */
    int32_t *children;
    int shift;      /* 64 - log2(slots) */
    uint64_t mask;
    int32_t *piece_ids; /* per node: the piece ending there, or -1 */
    double *scores;     /* per node: that piece's score */
    int32_t root[128];  /* the root's children for ASCII, -1 where none: most first steps */
    int32_t unk_id;
    double unk_score;
    int float32;
    float reset_at;         /* 0: never (see VITERBI) */
    int has_bytes;          /* byte fallback: an unknown character is the ids of its UTF-8 bytes */
    int32_t byte_ids[256];  /* else a run of unknown characters is one unk id */
    /* scratch reused by every call (the GIL is held throughout) */
    Py_ssize_t capacity;
    double *best_d;
    float *best_f;
    Py_ssize_t *starts;
    int32_t *ids;
} Lattice;

static inline uint64_t slot_of(uint64_t key, int shift) {
    return (key * 0x9E3779B97F4A7C15ULL) >> shift;
}

static inline int32_t child_of(const Lattice *l, int32_t node, Py_UCS4 cp) {
    if (node < 0 && cp < 128) return l->root[cp];
    uint64_t key = ((uint64_t)(node + 1) << 21) | cp;
    uint64_t at = slot_of(key, l->shift);
    for (;;) {
        uint64_t found = l->keys[at];
        if (found == key) return l->children[at];
        if (found == 0) return -1;
        at = (at + 1) & l->mask;
    }
}

static void Lattice_dealloc(Lattice *l) {
    PyMem_Free(l->keys);
    PyMem_Free(l->children);
    PyMem_Free(l->piece_ids);
    PyMem_Free(l->scores);
    PyMem_Free(l->best_d);
    PyMem_Free(l->best_f);
    PyMem_Free(l->starts);
    PyMem_Free(l->ids);
    Py_TYPE(l)->tp_free((PyObject *)l);
}

/* Lattice(parents, chars, piece_ids, scores, unk_id, unk_score, float32, reset_at,
 * byte_ids=None): node k + 1 is the child of node parents[k] (-1: the root) under code point
 * chars[k]; piece_ids[k + 1] and scores[k + 1] describe node k + 1, index 0 the root.
 * reset_at: the magnitude past which float32 sums start again from 0 (spm_unigram.RESET_AT;
 * 0: never). byte_ids: the id of each byte value's piece, for byte fallback. */
static int Lattice_init(Lattice *l, PyObject *args, PyObject *kwds) {
    PyObject *parents, *chars, *piece_ids, *scores, *byte_ids = Py_None;
    int unk_id, float32;
    double unk_score;
    float reset_at;
    if (!PyArg_ParseTuple(args, "OOOOidpf|O", &parents, &chars, &piece_ids, &scores, &unk_id, &unk_score, &float32,
                          &reset_at, &byte_ids))
        return -1;
    if (l->keys) {
        PyErr_SetString(PyExc_RuntimeError, "a Lattice is built once");
        return -1;
    }
    PyObject *p = PySequence_Fast(parents, "parents: a sequence"), *c = PySequence_Fast(chars, "chars: a sequence");
    PyObject *ids = PySequence_Fast(piece_ids, "piece_ids: a sequence"), *s = PySequence_Fast(scores, "scores: a sequence");
    int ok = -1;
    if (!p || !c || !ids || !s) goto done;
    Py_ssize_t edges = PySequence_Fast_GET_SIZE(p), nodes = edges + 1;
    if (PySequence_Fast_GET_SIZE(c) != edges || PySequence_Fast_GET_SIZE(ids) != nodes ||
        PySequence_Fast_GET_SIZE(s) != nodes) {
        PyErr_SetString(PyExc_ValueError, "a trie's arrays differ in length");
        goto done;
    }
    if (edges >= (1LL << 40)) {
        PyErr_SetString(PyExc_ValueError, "a trie too large");
        goto done;
    }
    uint64_t slots = 16;
    int bits = 4;
    while (slots < 2 * (uint64_t)edges + 2) { slots <<= 1; bits++; }
    l->shift = 64 - bits;
    l->mask = slots - 1;
    l->keys = PyMem_Calloc(slots, sizeof(uint64_t));
    l->children = PyMem_Calloc(slots, sizeof(int32_t));
    l->piece_ids = PyMem_Calloc(nodes, sizeof(int32_t));
    l->scores = PyMem_Calloc(nodes, sizeof(double));
    if (!l->keys || !l->children || !l->piece_ids || !l->scores) { PyErr_NoMemory(); goto done; }
    for (int k = 0; k < 128; k++) l->root[k] = -1;
    for (Py_ssize_t k = 0; k < nodes; k++) {
        l->piece_ids[k] = (int32_t)PyLong_AsLong(PySequence_Fast_GET_ITEM(ids, k));
        l->scores[k] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(s, k));
    }
    for (Py_ssize_t k = 0; k < edges; k++) {
        long parent = PyLong_AsLong(PySequence_Fast_GET_ITEM(p, k));
        long cp = PyLong_AsLong(PySequence_Fast_GET_ITEM(c, k));
        if (PyErr_Occurred()) goto done;
        if (parent < -1 || parent >= (long)nodes - 1 || cp < 0 || cp > 0x10FFFF) {
            PyErr_SetString(PyExc_ValueError, "a trie edge out of range");
            goto done;
        }
        /* nodes are numbered from 0 here (the root is -1): node k + 1 of the arrays is k */
        if (parent == -1 && cp < 128) l->root[cp] = (int32_t)k;
        uint64_t key = ((uint64_t)(parent + 1) << 21) | (uint64_t)cp;
        uint64_t at = slot_of(key, l->shift);
        while (l->keys[at] != 0 && l->keys[at] != key) at = (at + 1) & l->mask;
        l->keys[at] = key;
        l->children[at] = (int32_t)k;
    }
    if (PyErr_Occurred()) goto done;
    /* per node from 0: drop the root's entry so that node k reads index k */
    memmove(l->piece_ids, l->piece_ids + 1, edges * sizeof(int32_t));
    memmove(l->scores, l->scores + 1, edges * sizeof(double));
    l->unk_id = unk_id;
    l->unk_score = unk_score;
    l->float32 = float32;
    l->reset_at = reset_at;
    if (byte_ids != Py_None) {
        PyObject *b = PySequence_Fast(byte_ids, "byte_ids: a sequence");
        if (!b) goto done;
        if (PySequence_Fast_GET_SIZE(b) != 256) {
            Py_DECREF(b);
            PyErr_SetString(PyExc_ValueError, "byte_ids: one id for each of the 256 byte values");
            goto done;
        }
        for (int k = 0; k < 256; k++) l->byte_ids[k] = (int32_t)PyLong_AsLong(PySequence_Fast_GET_ITEM(b, k));
        Py_DECREF(b);
        if (PyErr_Occurred()) goto done;
        l->has_bytes = 1;
    }
    ok = 0;
done:
    Py_XDECREF(p);
    Py_XDECREF(c);
    Py_XDECREF(ids);
    Py_XDECREF(s);
    return ok;
}

static int reserve(Lattice *l, Py_ssize_t n) {
    if (n + 1 <= l->capacity) return 0;
    Py_ssize_t want = n + 1 > 2 * l->capacity ? n + 1 : 2 * l->capacity;
    PyMem_Free(l->best_d);
    PyMem_Free(l->best_f);
    PyMem_Free(l->starts);
    PyMem_Free(l->ids);
    l->best_d = PyMem_Malloc(want * sizeof(double));
    l->best_f = PyMem_Malloc(want * sizeof(float));
    l->starts = PyMem_Malloc(want * sizeof(Py_ssize_t));
    l->ids = PyMem_Malloc(want * sizeof(int32_t));
    if (!l->best_d || !l->best_f || !l->starts || !l->ids) {
        l->capacity = 0;
        PyErr_NoMemory();
        return -1;
    }
    l->capacity = want;
    return 0;
}

/* One Viterbi pass, leaving the best path in starts/ids. The two arithmetics are written
 * out twice so that the inner loop holds no test of which one is in use. The reset: as
 * sentencepiece (0.2.3) does in float32, where the score a position was reached with passes
 * reset_at in magnitude, every score from there to the farthest position reached so far
 * is taken down by it (a float subtraction each), so that sums stay small. */
#define VITERBI(TYPE, BEST, ROUND)                                                        \
    do {                                                                                  \
        TYPE *best = BEST;                                                                \
        const TYPE reset_at = l->reset_at;                                                \
        best[0] = 0;                                                                      \
        for (Py_ssize_t k = 1; k <= n; k++) best[k] = -INFINITY;                          \
        Py_ssize_t frontier = 0;                                                          \
        for (Py_ssize_t i = 0; i < n; i++) {                                              \
            if (reset_at > 0 && (best[i] < -reset_at || best[i] > reset_at)) {            \
                TYPE offset = best[i];                                                    \
                for (Py_ssize_t k = i; k <= frontier; k++) best[k] -= offset;             \
                best[i] = 0;                                                              \
            }                                                                             \
            double here = best[i];                                                        \
            int32_t node = -1;                                                            \
            int single = 0;                                                               \
            for (Py_ssize_t j = i; j < n; j++) {                                          \
                node = child_of(l, node, PyUnicode_READ(kind, data, j));                  \
                if (node < 0) break;                                                      \
                int32_t piece = l->piece_ids[node];                                       \
                if (piece < 0) continue;                                                  \
                if (j + 1 > frontier) frontier = j + 1;                                   \
                TYPE candidate = (TYPE)ROUND(l->scores[node] + here);                     \
                if (candidate > best[j + 1]) {                                            \
                    best[j + 1] = candidate;                                              \
                    starts[j + 1] = i;                                                    \
                    ids[j + 1] = piece;                                                   \
                }                                                                         \
                if (j == i) single = 1;                                                   \
            }                                                                             \
            if (!single) {                                                                \
                if (i + 1 > frontier) frontier = i + 1;                                   \
                TYPE candidate = (TYPE)ROUND(l->unk_score + here);                        \
                if (candidate > best[i + 1]) {                                            \
                    best[i + 1] = candidate;                                              \
                    starts[i + 1] = i;                                                    \
                    ids[i + 1] = l->unk_id;                                               \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
    } while (0)

#define AS_FLOAT(x) ((float)(x))
#define AS_DOUBLE(x) (x)

/* The number of pieces of the best path of `text`, or -1 with an exception set. */
static Py_ssize_t solve(Lattice *l, PyObject *text) {
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "text: a str");
        return -1;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) return -1; /* a legacy string's code points, before 3.12 */
#endif
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (reserve(l, n) < 0) return -1;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t *starts = l->starts;
    int32_t *ids = l->ids;
    if (l->float32)
        VITERBI(float, l->best_f, AS_FLOAT);
    else
        VITERBI(double, l->best_d, AS_DOUBLE);
    Py_ssize_t count = 0;
    for (Py_ssize_t end = n; end > 0; end = starts[end]) count++;
    return count;
}

static int utf8_bytes(Py_UCS4 cp, unsigned char *out) {
    if (cp < 0x80) { out[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { out[0] = 0xC0 | (cp >> 6); out[1] = 0x80 | (cp & 0x3F); return 2; }
    if (cp < 0x10000) {
        out[0] = 0xE0 | (cp >> 12); out[1] = 0x80 | ((cp >> 6) & 0x3F); out[2] = 0x80 | (cp & 0x3F);
        return 3;
    }
    out[0] = 0xF0 | (cp >> 18); out[1] = 0x80 | ((cp >> 12) & 0x3F);
    out[2] = 0x80 | ((cp >> 6) & 0x3F); out[3] = 0x80 | (cp & 0x3F);
    return 4;
}

/* ids(text): the ids of the best segmentation as sentencepiece writes them: a run of
 * unknown characters one unk id, or with byte fallback each one the ids of its UTF-8
 * bytes. None where a lone surrogate would need bytes (it has none: the caller says so). */
static PyObject *Lattice_ids(Lattice *l, PyObject *text) {
    Py_ssize_t count = solve(l, text);
    if (count < 0) return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    /* the path forward, in ids[] slots 0..count-1 of a second pass over starts */
    Py_ssize_t *ends = PyMem_Malloc((count + 1) * sizeof(Py_ssize_t));
    if (!ends) return PyErr_NoMemory();
    Py_ssize_t k = count;
    for (Py_ssize_t end = n; end > 0; end = l->starts[end]) ends[--k] = end;
    PyObject *out = PyList_New(0);
    if (!out) goto fail;
    int32_t last = -1;
    for (k = 0; k < count; k++) {
        Py_ssize_t end = ends[k];
        int32_t piece = l->ids[end];
        if (piece != l->unk_id) {
            PyObject *id = PyLong_FromLong(piece);
            if (!id || PyList_Append(out, id) < 0) { Py_XDECREF(id); goto fail; }
            Py_DECREF(id);
            last = piece;
            continue;
        }
        if (!l->has_bytes) {
            if (last == l->unk_id) continue; /* one unk for the run */
            PyObject *id = PyLong_FromLong(piece);
            if (!id || PyList_Append(out, id) < 0) { Py_XDECREF(id); goto fail; }
            Py_DECREF(id);
            last = piece;
            continue;
        }
        for (Py_ssize_t at = l->starts[end]; at < end; at++) {
            Py_UCS4 cp = PyUnicode_READ(kind, data, at);
            if (cp >= 0xD800 && cp <= 0xDFFF) {
                PyMem_Free(ends);
                Py_DECREF(out);
                Py_RETURN_NONE;
            }
            unsigned char bytes[4];
            int size = utf8_bytes(cp, bytes);
            for (int b = 0; b < size; b++) {
                PyObject *id = PyLong_FromLong(l->byte_ids[bytes[b]]);
                if (!id || PyList_Append(out, id) < 0) { Py_XDECREF(id); goto fail; }
                Py_DECREF(id);
            }
        }
        last = piece;
    }
    PyMem_Free(ends);
    return out;
fail:
    PyMem_Free(ends);
    Py_XDECREF(out);
    return NULL;
}

/* segment(text): (start, end, id) of each piece of the best segmentation. */
static PyObject *Lattice_segment(Lattice *l, PyObject *text) {
    Py_ssize_t count = solve(l, text);
    if (count < 0) return NULL;
    PyObject *out = PyList_New(count);
    if (!out) return NULL;
    Py_ssize_t k = count;
    for (Py_ssize_t end = PyUnicode_GET_LENGTH(text); end > 0; end = l->starts[end]) {
        PyObject *span = Py_BuildValue("(nnl)", l->starts[end], end, (long)l->ids[end]);
        if (!span) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, --k, span);
    }
    return out;
}

static PyMethodDef Lattice_methods[] = {
    {"ids", (PyCFunction)Lattice_ids, METH_O, "The ids of the best segmentation, unknown characters fused or as bytes."},
    {"segment", (PyCFunction)Lattice_segment, METH_O, "(start, end, id) of each piece of the best segmentation."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LatticeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "modkit_plugins.tokenizers._unigram_native.Lattice",
    .tp_basicsize = sizeof(Lattice),
    .tp_dealloc = (destructor)Lattice_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A Unigram model's pieces as a trie, segmented by Viterbi.",
    .tp_methods = Lattice_methods,
    .tp_init = (initproc)Lattice_init,
    .tp_new = PyType_GenericNew,
};

/* -- the normaliser's fast path ---------------------------------------------------- */

/* A set or map of code points: open addressing, 0xFFFFFFFF marking an empty slot, and a
 * direct table for ASCII. */
typedef struct {
    uint32_t *keys;
    int32_t *values;
    uint64_t mask;
    int shift;
    int32_t ascii[128];
} CpMap;

static void cpmap_free(CpMap *m) {
    PyMem_Free(m->keys);
    PyMem_Free(m->values);
    m->keys = NULL;
    m->values = NULL;
}

static int cpmap_init(CpMap *m, Py_ssize_t size) {
    uint64_t slots = 16;
    int bits = 4;
    while (slots < 2 * (uint64_t)size + 2) { slots <<= 1; bits++; }
    m->keys = PyMem_Malloc(slots * sizeof(uint32_t));
    m->values = PyMem_Malloc(slots * sizeof(int32_t));
    if (!m->keys || !m->values) { PyErr_NoMemory(); return -1; }
    memset(m->keys, 0xFF, slots * sizeof(uint32_t));
    m->mask = slots - 1;
    m->shift = 64 - bits;
    for (int k = 0; k < 128; k++) m->ascii[k] = -1;
    return 0;
}

static void cpmap_put(CpMap *m, uint32_t cp, int32_t value) {
    if (cp < 128) m->ascii[cp] = value;
    uint64_t at = slot_of(cp + 1, m->shift);
    while (m->keys[at] != 0xFFFFFFFFu && m->keys[at] != cp) at = (at + 1) & m->mask;
    m->keys[at] = cp;
    m->values[at] = value;
}

static inline int32_t cpmap_get(const CpMap *m, Py_UCS4 cp) {
    if (cp < 128) return m->ascii[cp];
    uint64_t at = slot_of(cp + 1, m->shift);
    for (;;) {
        uint32_t found = m->keys[at];
        if (found == cp) return m->values[at];
        if (found == 0xFFFFFFFFu) return -1;
        at = (at + 1) & m->mask;
    }
}

/* Normalizer.normalize's fast path (spm_normalize.py), compiled: each character through the
 * one-character replacements, then spaces as the spec says. */
typedef struct {
    PyObject_HEAD
    CpMap table;        /* code point -> index of its replacement */
    Py_UCS4 *repl;      /* the replacements, end to end */
    Py_ssize_t *starts; /* replacement k is repl[starts[k]:starts[k + 1]] */
    Py_ssize_t longest; /* the longest replacement */
    CpMap firsts, seconds; /* a longer key may start where a second follows a first */
    int has_longer, remove_extra, escape, dummy;
} Translator;

static void Translator_dealloc(Translator *t) {
    cpmap_free(&t->table);
    cpmap_free(&t->firsts);
    cpmap_free(&t->seconds);
    PyMem_Free(t->repl);
    PyMem_Free(t->starts);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static int fill_set(CpMap *m, PyObject *chars) {
    PyObject *seq = PySequence_Fast(chars, "a sequence of code points");
    if (!seq) return -1;
    Py_ssize_t size = PySequence_Fast_GET_SIZE(seq);
    if (cpmap_init(m, size) < 0) { Py_DECREF(seq); return -1; }
    for (Py_ssize_t k = 0; k < size; k++) {
        long cp = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, k));
        if (cp < 0 || cp > 0x10FFFF) {
            Py_DECREF(seq);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a code point out of range");
            return -1;
        }
        cpmap_put(m, (uint32_t)cp, 1);
    }
    Py_DECREF(seq);
    return 0;
}

/* Translator(table, firsts, seconds, remove_extra_whitespaces, escape_whitespaces,
 * add_dummy_prefix): table maps a code point to its replacement (a str); a key longer than
 * one character may start where a code point of `seconds` follows one of `firsts`. */
static int Translator_init(Translator *t, PyObject *args, PyObject *kwds) {
    PyObject *table, *firsts, *seconds;
    int remove_extra, escape, dummy;
    if (!PyArg_ParseTuple(args, "O!OOppp", &PyDict_Type, &table, &firsts, &seconds, &remove_extra, &escape, &dummy))
        return -1;
    if (t->repl) {
        PyErr_SetString(PyExc_RuntimeError, "a Translator is built once");
        return -1;
    }
    Py_ssize_t entries = PyDict_Size(table), total = 0, pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(table, &pos, &key, &value)) {
        if (!PyUnicode_Check(value)) {
            PyErr_SetString(PyExc_TypeError, "a replacement: a str");
            return -1;
        }
        total += PyUnicode_GET_LENGTH(value);
    }
    t->repl = PyMem_Malloc((total + 1) * sizeof(Py_UCS4));
    t->starts = PyMem_Malloc((entries + 1) * sizeof(Py_ssize_t));
    if (!t->repl || !t->starts) { PyErr_NoMemory(); return -1; }
    if (cpmap_init(&t->table, entries) < 0) return -1;
    Py_ssize_t at = 0, k = 0;
    pos = 0;
    while (PyDict_Next(table, &pos, &key, &value)) {
        long cp = PyLong_AsLong(key);
        if (cp < 0 || cp > 0x10FFFF) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a code point out of range");
            return -1;
        }
        Py_ssize_t size = PyUnicode_GET_LENGTH(value);
        if (!PyUnicode_AsUCS4(value, t->repl + at, total + 1 - at, 0)) return -1;
        t->starts[k] = at;
        cpmap_put(&t->table, (uint32_t)cp, (int32_t)k);
        at += size;
        if (size > t->longest) t->longest = size;
        k++;
    }
    t->starts[k] = at;
    if (fill_set(&t->firsts, firsts) < 0 || fill_set(&t->seconds, seconds) < 0) return -1;
    t->has_longer = PySequence_Size(seconds) > 0;
    t->remove_extra = remove_extra;
    t->escape = escape;
    t->dummy = dummy;
    return 0;
}

/* normalize(text): the normalized text, or None where a key longer than one character may
 * match (the caller's walk handles those). */
static PyObject *Translator_normalize(Translator *t, PyObject *text) {
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "text: a str");
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) return NULL;
#endif
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    if (t->has_longer) {
        for (Py_ssize_t i = 1; i < n; i++) {
            if (cpmap_get(&t->seconds, PyUnicode_READ(kind, data, i)) >= 0 &&
                cpmap_get(&t->firsts, PyUnicode_READ(kind, data, i - 1)) >= 0)
                Py_RETURN_NONE;
        }
    }
    Py_UCS4 space = t->escape ? 0x2581 : 0x20;
    Py_ssize_t room = 1 + n * (t->longest > 1 ? t->longest : 1);
    Py_UCS4 *buf = PyMem_Malloc((room + 1) * sizeof(Py_UCS4));
    if (!buf) return PyErr_NoMemory();
    Py_ssize_t len = 1; /* buf[0]: the dummy prefix, where there is one */
    int started = 0, after_space = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 cp = PyUnicode_READ(kind, data, i);
        int32_t k = cpmap_get(&t->table, cp);
        const Py_UCS4 *from = k >= 0 ? t->repl + t->starts[k] : &cp;
        Py_ssize_t size = k >= 0 ? t->starts[k + 1] - t->starts[k] : 1;
        for (Py_ssize_t e = 0; e < size; e++) {
            Py_UCS4 c = from[e];
            if (c == 0x20) {
                if (t->remove_extra && (!started || after_space)) continue; /* leading or repeated */
                after_space = 1;
                buf[len++] = space;
            } else {
                started = 1;
                after_space = 0;
                buf[len++] = c;
            }
        }
    }
    Py_ssize_t first = 1;
    if (t->dummy && (t->remove_extra ? len > 1 : n > 0)) {
        buf[0] = space;
        first = 0;
    }
    if (t->remove_extra)
        while (len > first && buf[len - 1] == space) len--;
    PyObject *out = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, buf + first, len - first);
    PyMem_Free(buf);
    return out;
}

static PyMethodDef Translator_methods[] = {
    {"normalize", (PyCFunction)Translator_normalize, METH_O,
     "The normalized text, or None where a longer key may match."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TranslatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "modkit_plugins.tokenizers._unigram_native.Translator",
    .tp_basicsize = sizeof(Translator),
    .tp_dealloc = (destructor)Translator_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "sentencepiece's normaliser for text without keys longer than one character.",
    .tp_methods = Translator_methods,
    .tp_init = (initproc)Translator_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_unigram_native", "SentencePiece's Unigram Viterbi pass and normaliser fast path, compiled.", -1, NULL,
};

PyMODINIT_FUNC PyInit__unigram_native(void) {
    if (PyType_Ready(&LatticeType) < 0 || PyType_Ready(&TranslatorType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&LatticeType);
    Py_INCREF(&TranslatorType);
    if (PyModule_AddObject(m, "Lattice", (PyObject *)&LatticeType) < 0 ||
        PyModule_AddObject(m, "Translator", (PyObject *)&TranslatorType) < 0 ||
        PyModule_AddIntConstant(m, "VERSION", NATIVE_VERSION) < 0) {
        Py_DECREF(&LatticeType);
        Py_DECREF(&TranslatorType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
