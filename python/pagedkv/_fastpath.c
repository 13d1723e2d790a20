/* _fastpath.c — the decode step of pagedkv.vllm.KVCacheManager in C.
 *
 * vLLM's scheduler calls allocate_slots(request, 1) once per running
 * request per step.  In Python that call (look the request up, check it is
 * a plain one-token decode, queue (seq, token), answer from the mirror)
 * costs several times the scheduler's own loop; ctypes cannot help, since
 * the cost is the Python around each call, not the library call.  This
 * module is that per-request work in C, over the same mirror:
 *
 *   ReqState   the mirror of one request's sequence (seq, known, reserved,
 *              n_blocks, committed, fast, cap, req) as C fields, readable
 *              and writable from Python as attributes (vllm.py's _Req);
 *   Allocator  the manager's allocate_slots: a callable (vectorcall) that
 *              does the decode fast path and hands everything else to the
 *              Python slow path unchanged; it owns the decode queue;
 *   Allocator.flush(cache)  the whole queue to libpagedkv in one call:
 *              pkv_batch_append for the queued slots, the new blocks into
 *              the pending results, pkv_batch_commit for the blocks that
 *              became full.
 *
 * The library is reached through the function pointers ctypes resolved in
 * the library the package loaded (passed to Allocator()), so this module
 * links nothing but Python and cannot disagree with _lib about which
 * libpagedkv is in use.  It is an accelerator with the same semantics as
 * the Python closure in vllm.py (python/tests/test_vllm_fast.py runs both
 * on the same scenarios); without it, `import pagedkv` warns once and the
 * Python path runs.
 *
 * Not thread-safe, like the manager (the GIL is held throughout). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

typedef int (*batch_append_fn)(void *cache, const uint64_t *seqs, const int32_t *tokens,
                               uint32_t n, int64_t *slots, void *results);
typedef int (*batch_commit_fn)(void *cache, const uint64_t *seqs, const uint32_t *n_tokens,
                               uint32_t n, int32_t *results);

/* ------------------------------------------------------------ ReqState */

typedef struct {
  PyObject_HEAD
  unsigned long long seq;
  long long known;     /* leading slots with token ids in the library */
  long long reserved;  /* slots reserved (known + lookahead) */
  long long n_blocks;
  long long committed; /* tokens committed (their full blocks cached) */
  long long fast;      /* known when known == reserved, else -1 */
  long long cap;       /* n_blocks * block_size */
  PyObject *req;
} ReqState;

static int req_init(ReqState *self, PyObject *args, PyObject *kw) {
  static char *names[] = {"seq", "req", NULL};
  unsigned long long seq;
  PyObject *req;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "KO", names, &seq, &req)) return -1;
  self->seq = seq;
  self->known = self->reserved = self->n_blocks = self->committed = 0;
  self->fast = self->cap = 0;
  Py_INCREF(req);
  Py_XSETREF(self->req, req);
  return 0;
}

static int req_traverse(ReqState *self, visitproc visit, void *arg) {
  Py_VISIT(self->req);
  return 0;
}

static int req_clear(ReqState *self) {
  Py_CLEAR(self->req);
  return 0;
}

static void req_dealloc(ReqState *self) {
  PyObject_GC_UnTrack(self);
  req_clear(self);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef req_members[] = {
  {"seq", T_ULONGLONG, offsetof(ReqState, seq), 0, "sequence id"},
  {"known", T_LONGLONG, offsetof(ReqState, known), 0, "slots with ids"},
  {"reserved", T_LONGLONG, offsetof(ReqState, reserved), 0, "slots reserved"},
  {"n_blocks", T_LONGLONG, offsetof(ReqState, n_blocks), 0, "blocks held"},
  {"committed", T_LONGLONG, offsetof(ReqState, committed), 0, "tokens committed"},
  {"fast", T_LONGLONG, offsetof(ReqState, fast), 0, "known, or -1 with lookahead"},
  {"cap", T_LONGLONG, offsetof(ReqState, cap), 0, "n_blocks * block_size"},
  {"req", T_OBJECT, offsetof(ReqState, req), 0, "the request object"},
  {NULL, 0, 0, 0, NULL},
};

/* The slots of the module's garbage-collected types: struct T, its
 * functions p_init, p_dealloc, p_traverse, p_clear and members p_members,
 * created by PyType_GenericNew; extra_flags beside DEFAULT | HAVE_GC. */
#define GC_TYPE_SLOTS(T, p, doc, extra_flags)                                 \
  .tp_basicsize = sizeof(T),                                                  \
  .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | (extra_flags),        \
  .tp_doc = doc, .tp_new = PyType_GenericNew,                                 \
  .tp_init = (initproc)p##_init, .tp_dealloc = (destructor)p##_dealloc,       \
  .tp_traverse = (traverseproc)p##_traverse, .tp_clear = (inquiry)p##_clear,  \
  .tp_members = p##_members

static PyTypeObject ReqStateType = {
  PyVarObject_HEAD_INIT(NULL, 0)
  .tp_name = "pagedkv._fastpath.ReqState",
  GC_TYPE_SLOTS(ReqState, req,
                "ReqState(seq, req): the manager's mirror of one request", 0),
};

/* ------------------------------------------------------------ Allocator */

typedef struct {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyObject *reqs;      /* dict request_id -> ReqState */
  PyObject *slow;      /* slow(request, r|None, nnt, nnc, ncb, la, delay) */
  PyObject *empty;     /* the shared "no new block" result */
  PyObject *pending;   /* class of a queued step's result (slots _mgr, _pos, _ids) */
  Py_ssize_t off_mgr, off_pos, off_ids; /* where those slots live in it */
  PyObject *mgr;
  PyObject *refresh;   /* refresh() -> free + evictable blocks now */
  PyObject *commits;   /* list of ReqState whose tail block became full */
  PyObject *blocks;    /* list of pending results handed out */
  long long bs;
  int caching;
  long long avail;     /* free + evictable net of the queue; -1 unknown */
  batch_append_fn f_append;
  batch_commit_fn f_commit;
  uint64_t *q_seq;     /* the decode queue */
  int32_t *q_tok;
  int64_t *q_slot;
  uint32_t *c_n;       /* commit buffers */
  uint64_t *c_seq;
  Py_ssize_t n, cap, ccap;
} Allocator;

static PyObject *s_request_id, *s_num_computed_tokens, *s_all_token_ids;
static PyObject *k_names[6];

static int alloc_traverse(Allocator *a, visitproc visit, void *arg) {
  Py_VISIT(a->reqs); Py_VISIT(a->slow); Py_VISIT(a->empty); Py_VISIT(a->pending);
  Py_VISIT(a->mgr); Py_VISIT(a->refresh); Py_VISIT(a->commits); Py_VISIT(a->blocks);
  return 0;
}

static int alloc_clear(Allocator *a) {
  Py_CLEAR(a->reqs); Py_CLEAR(a->slow); Py_CLEAR(a->empty); Py_CLEAR(a->pending);
  Py_CLEAR(a->mgr); Py_CLEAR(a->refresh); Py_CLEAR(a->commits); Py_CLEAR(a->blocks);
  return 0;
}

static void alloc_dealloc(Allocator *a) {
  PyObject_GC_UnTrack(a);
  alloc_clear(a);
  PyMem_Free(a->q_seq); PyMem_Free(a->q_tok); PyMem_Free(a->q_slot);
  PyMem_Free(a->c_n); PyMem_Free(a->c_seq);
  Py_TYPE(a)->tp_free((PyObject *)a);
}

/* Grows the queue to hold one more step (doubling: amortized O(1)). */
static int queue_room(Allocator *a) {
  if (a->n < a->cap) return 0;
  Py_ssize_t nc = a->cap ? 2 * a->cap : 256;
  uint64_t *s = PyMem_Realloc(a->q_seq, (size_t)nc * sizeof *s);
  if (!s) { PyErr_NoMemory(); return -1; }
  a->q_seq = s;
  int32_t *t = PyMem_Realloc(a->q_tok, (size_t)nc * sizeof *t);
  if (!t) { PyErr_NoMemory(); return -1; }
  a->q_tok = t;
  int64_t *sl = PyMem_Realloc(a->q_slot, (size_t)nc * sizeof *sl);
  if (!sl) { PyErr_NoMemory(); return -1; }
  a->q_slot = sl;
  a->cap = nc;
  return 0;
}

/* The Python slow path with every argument spelled out. */
static PyObject *call_slow(Allocator *a, PyObject *const *v, PyObject *r) {
  PyObject *zero = PyLong_FromLong(0);
  if (!zero) return NULL;
  PyObject *args[7] = {v[0], r ? r : Py_None, v[1], v[2] ? v[2] : zero,
                       v[3] ? v[3] : Py_None, v[4] ? v[4] : zero,
                       v[5] ? v[5] : Py_False};
  PyObject *out = PyObject_Vectorcall(a->slow, args, 7, NULL);
  Py_DECREF(zero);
  return out;
}

/* 1 if o is absent or the int 0 (or False), 0 if not, -1 on error. */
static int absent_or_zero(PyObject *o) {
  if (!o || o == Py_False) return 1;
  if (PyLong_CheckExact(o)) {
    int overflow;
    long v = PyLong_AsLongAndOverflow(o, &overflow);
    return !overflow && v == 0;
  }
  return 0;
}

/* allocate_slots(request, num_new_tokens, num_new_computed_tokens=0,
 *                new_computed_blocks=None, num_lookahead_tokens=0,
 *                delay_cache_blocks=False) */
static PyObject *alloc_call(PyObject *self, PyObject *const *args, size_t nargsf,
                            PyObject *kwnames) {
  Allocator *a = (Allocator *)self;
  Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  PyObject *v[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
  if (nargs > 6) {
    PyErr_Format(PyExc_TypeError, "allocate_slots() takes at most 6 arguments (%zd given)", nargs);
    return NULL;
  }
  for (Py_ssize_t i = 0; i < nargs; i++) v[i] = args[i];
  if (kwnames) {
    Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t j = 0; j < nk; j++) {
      PyObject *k = PyTuple_GET_ITEM(kwnames, j);
      int i;
      for (i = 0; i < 6; i++)
        if (k == k_names[i] || PyUnicode_Compare(k, k_names[i]) == 0) break;
      if (i == 6) {
        PyErr_Format(PyExc_TypeError, "allocate_slots() got an unexpected keyword argument '%U'", k);
        return NULL;
      }
      if (v[i]) {
        PyErr_Format(PyExc_TypeError, "allocate_slots() got multiple values for argument '%U'", k);
        return NULL;
      }
      v[i] = args[nargs + j];
    }
  }
  if (!v[0] || !v[1]) {
    PyErr_SetString(PyExc_TypeError, "allocate_slots() missing required argument "
                                     "'request' or 'num_new_tokens'");
    return NULL;
  }
  PyObject *rid = PyObject_GetAttr(v[0], s_request_id);
  if (!rid) return NULL;
  PyObject *ro = PyDict_GetItemWithError(a->reqs, rid); /* borrowed */
  Py_DECREF(rid);
  if (!ro && PyErr_Occurred()) return NULL;
  if (!ro || Py_TYPE(ro) != &ReqStateType) return call_slow(a, v, ro);
  ReqState *r = (ReqState *)ro;

  /* The decode fast path: one token whose id is known, nothing reserved
   * ahead, no hit, no lookahead. */
  int overflow;
  if (!PyLong_CheckExact(v[1]) || PyLong_AsLongAndOverflow(v[1], &overflow) != 1 || overflow
      || (v[3] && v[3] != Py_None) || absent_or_zero(v[4]) != 1 || absent_or_zero(v[2]) != 1)
    return call_slow(a, v, ro);
  int delay = 0;
  if (v[5]) {
    delay = PyObject_IsTrue(v[5]);
    if (delay < 0) return NULL;
  }
  long long known = r->fast;
  PyObject *nct = PyObject_GetAttr(v[0], s_num_computed_tokens);
  if (!nct) return NULL;
  long long computed = PyLong_Check(nct) ? PyLong_AsLongLongAndOverflow(nct, &overflow) : -2;
  Py_DECREF(nct);
  if (computed == -1 && PyErr_Occurred()) return NULL;
  if (computed != known || known < 0) return call_slow(a, v, ro);
  PyObject *toks = PyObject_GetAttr(v[0], s_all_token_ids);
  if (!toks) {
    if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return NULL;
    PyErr_Clear();
    return call_slow(a, v, ro);
  }
  long long tok;
  if (PyList_CheckExact(toks)) {
    if (PyList_GET_SIZE(toks) != known + 1) { Py_DECREF(toks); return call_slow(a, v, ro); }
    PyObject *t = PyList_GET_ITEM(toks, known);
    if (!PyLong_CheckExact(t)) { Py_DECREF(toks); return call_slow(a, v, ro); }
    tok = PyLong_AsLongLongAndOverflow(t, &overflow);
  } else {
    /* Another sequence type: the slow path handles it exactly. */
    Py_DECREF(toks);
    return call_slow(a, v, ro);
  }
  Py_DECREF(toks);
  if (overflow || tok < INT32_MIN || tok > INT32_MAX) return call_slow(a, v, ro);

  int new_block = known >= r->cap;
  if (new_block) {
    if (a->avail < 0) {
      PyObject *n = PyObject_CallNoArgs(a->refresh);
      if (!n) return NULL;
      a->avail = PyLong_AsLongLong(n);
      Py_DECREF(n);
      if (a->avail == -1 && PyErr_Occurred()) return NULL;
    }
    if (a->avail <= 0) Py_RETURN_NONE;
  }
  if (queue_room(a) < 0) return NULL;
  PyObject *res;
  if (new_block) {
    /* pending(mgr, pos) without the Python __init__: its three slots set
     * where their descriptors say (checked at init). */
    PyTypeObject *pt = (PyTypeObject *)a->pending;
    PyObject *pos = PyLong_FromSsize_t(a->n);
    if (!pos) return NULL;
    res = pt->tp_alloc(pt, 0);
    if (!res) { Py_DECREF(pos); return NULL; }
    *(PyObject **)((char *)res + a->off_mgr) = Py_NewRef(a->mgr);
    *(PyObject **)((char *)res + a->off_pos) = pos;
    *(PyObject **)((char *)res + a->off_ids) = Py_NewRef(Py_None);
    if (PyList_Append(a->blocks, res) < 0) { Py_DECREF(res); return NULL; }
    a->avail--;
    r->n_blocks++;
    r->cap += a->bs;
  } else {
    res = Py_NewRef(a->empty);
  }
  a->q_seq[a->n] = r->seq;
  a->q_tok[a->n] = (int32_t)tok;
  a->n++;
  known++;
  r->known = r->reserved = r->fast = known;
  if (known == r->cap && a->caching && !delay && PyList_Append(a->commits, ro) < 0) {
    Py_DECREF(res);  /* cannot happen short of memory; the queue stays */
    return NULL;
  }
  return res;
}

/* The offset of __slots__ member `name` of type t (an object slot), or -1
 * with an exception. */
static Py_ssize_t slot_offset(PyTypeObject *t, const char *name) {
  PyObject *d = PyObject_GetAttrString((PyObject *)t, name);
  if (!d) return -1;
  Py_ssize_t off = -1;
  if (Py_IS_TYPE(d, &PyMemberDescr_Type)) {
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type == T_OBJECT_EX && !(m->flags & READONLY)) off = m->offset;
  }
  Py_DECREF(d);
  if (off < 0) PyErr_Format(PyExc_TypeError, "Allocator: %s.%s is not a writable __slots__ member",
                            t->tp_name, name);
  return off;
}

static int alloc_init(Allocator *a, PyObject *args, PyObject *kw) {
  static char *names[] = {"mgr", "reqs", "slow", "empty", "pending", "refresh",
                          "block_size", "caching", "batch_append", "batch_commit", NULL};
  PyObject *mgr, *reqs, *slow, *empty, *pending, *refresh;
  long long bs;
  int caching;
  unsigned long long fa, fc;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OO!OOOOLpKK", names, &mgr, &PyDict_Type, &reqs,
                                   &slow, &empty, &pending, &refresh, &bs, &caching, &fa, &fc))
    return -1;
  if (!PyType_Check(pending)) {
    PyErr_SetString(PyExc_TypeError, "Allocator: pending must be a class");
    return -1;
  }
  PyTypeObject *pt = (PyTypeObject *)pending;
  if ((a->off_mgr = slot_offset(pt, "_mgr")) < 0 || (a->off_pos = slot_offset(pt, "_pos")) < 0
      || (a->off_ids = slot_offset(pt, "_ids")) < 0)
    return -1;
  if (bs <= 0 || !fa || !fc) {
    PyErr_SetString(PyExc_ValueError, "Allocator: block_size > 0 and both library functions needed");
    return -1;
  }
  PyObject *commits = PyList_New(0), *blocks = PyList_New(0);
  if (!commits || !blocks) { Py_XDECREF(commits); Py_XDECREF(blocks); return -1; }
  Py_XSETREF(a->mgr, Py_NewRef(mgr));
  Py_XSETREF(a->reqs, Py_NewRef(reqs));
  Py_XSETREF(a->slow, Py_NewRef(slow));
  Py_XSETREF(a->empty, Py_NewRef(empty));
  Py_XSETREF(a->pending, Py_NewRef(pending));
  Py_XSETREF(a->refresh, Py_NewRef(refresh));
  Py_XSETREF(a->commits, commits);
  Py_XSETREF(a->blocks, blocks);
  a->bs = bs;
  a->caching = caching;
  a->avail = -1;
  a->f_append = (batch_append_fn)(uintptr_t)fa;
  a->f_commit = (batch_commit_fn)(uintptr_t)fc;
  a->n = 0;
  a->vectorcall = alloc_call;
  return 0;
}

/* flush(cache) -> 0 or the library's negative code.  The queued slots go to
 * the library in one pkv_batch_append, each pending result gets its new
 * block (slot // block_size), and the blocks that became full are committed
 * in one pkv_batch_commit (ReqState.committed = known).  The queues are
 * empty afterwards whatever the outcome (a failure means the mirror was
 * wrong: the caller raises Corrupt). */
static PyObject *alloc_flush(Allocator *a, PyObject *arg) {
  void *cache = PyLong_AsVoidPtr(arg);
  if (!cache) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "flush: NULL cache");
    return NULL;
  }
  int rc = 0;
  if (a->n) {
    rc = a->f_append(cache, a->q_seq, a->q_tok, (uint32_t)a->n, a->q_slot, NULL);
    a->n = 0;
    Py_ssize_t nb = PyList_GET_SIZE(a->blocks);
    for (Py_ssize_t i = 0; rc == 0 && i < nb; i++) {
      PyObject *pb = PyList_GET_ITEM(a->blocks, i);
      Py_ssize_t p = PyLong_AsSsize_t(*(PyObject **)((char *)pb + a->off_pos));
      if (p == -1 && PyErr_Occurred()) return NULL;
      PyObject *ids = Py_BuildValue("([L])", (long long)(a->q_slot[p] / a->bs));
      if (!ids) return NULL;
      Py_XSETREF(*(PyObject **)((char *)pb + a->off_ids), ids);
    }
    if (PyList_SetSlice(a->blocks, 0, nb, NULL) < 0) return NULL;
    if (rc < 0) {
      PyList_SetSlice(a->commits, 0, PyList_GET_SIZE(a->commits), NULL);
      return PyLong_FromLong(rc);
    }
  }
  Py_ssize_t nc = PyList_GET_SIZE(a->commits);
  if (nc) {
    if (nc > a->ccap) {
      uint64_t *s = PyMem_Realloc(a->c_seq, (size_t)nc * sizeof *s);
      if (!s) return PyErr_NoMemory();
      a->c_seq = s;
      uint32_t *n = PyMem_Realloc(a->c_n, (size_t)nc * sizeof *n);
      if (!n) return PyErr_NoMemory();
      a->c_n = n;
      a->ccap = nc;
    }
    for (Py_ssize_t i = 0; i < nc; i++) {
      ReqState *r = (ReqState *)PyList_GET_ITEM(a->commits, i);
      a->c_seq[i] = r->seq;
      a->c_n[i] = (uint32_t)r->known;
    }
    rc = a->f_commit(cache, a->c_seq, a->c_n, (uint32_t)nc, NULL);
    if (rc == 0)
      for (Py_ssize_t i = 0; i < nc; i++) {
        ReqState *r = (ReqState *)PyList_GET_ITEM(a->commits, i);
        r->committed = r->known;
      }
    if (PyList_SetSlice(a->commits, 0, nc, NULL) < 0) return NULL;
  }
  return PyLong_FromLong(rc);
}

static PyObject *alloc_get_pending(Allocator *a, void *closure) {
  (void)closure;
  return PyLong_FromSsize_t(a->n);
}

static PyObject *alloc_get_avail(Allocator *a, void *closure) {
  (void)closure;
  if (a->avail < 0) Py_RETURN_NONE;
  return PyLong_FromLongLong(a->avail);
}

static int alloc_set_avail(Allocator *a, PyObject *v, void *closure) {
  (void)closure;
  if (!v || v == Py_None) { a->avail = -1; return 0; }
  long long n = PyLong_AsLongLong(v);
  if (n == -1 && PyErr_Occurred()) return -1;
  a->avail = n < 0 ? -1 : n;
  return 0;
}

static PyGetSetDef alloc_getset[] = {
  {"n_pending", (getter)alloc_get_pending, NULL, "queued decode steps", NULL},
  {"avail", (getter)alloc_get_avail, (setter)alloc_set_avail,
   "free + evictable blocks net of the queue (None: ask the library)", NULL},
  {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef alloc_members[] = {
  {"commits", T_OBJECT, offsetof(Allocator, commits), READONLY, "ReqStates to commit"},
  {"blocks", T_OBJECT, offsetof(Allocator, blocks), READONLY, "pending results"},
  {"__vectorcalloffset__", T_PYSSIZET, offsetof(Allocator, vectorcall), READONLY, NULL},
  {NULL, 0, 0, 0, NULL},
};

static PyMethodDef alloc_methods[] = {
  {"flush", (PyCFunction)alloc_flush, METH_O,
   "flush(cache_ptr) -> 0 or the library's error code: the queue in one call"},
  {NULL, NULL, 0, NULL},
};

static PyTypeObject AllocatorType = {
  PyVarObject_HEAD_INIT(NULL, 0)
  .tp_name = "pagedkv._fastpath.Allocator",
  GC_TYPE_SLOTS(Allocator, alloc, "The decode fast path of "
                "KVCacheManager.allocate_slots (see vllm.py)",
                Py_TPFLAGS_HAVE_VECTORCALL),
  .tp_call = PyVectorcall_Call,
  .tp_vectorcall_offset = offsetof(Allocator, vectorcall),
  .tp_getset = alloc_getset,
  .tp_methods = alloc_methods,
};

/* ------------------------------------------------------------ module */

static struct PyModuleDef fastpath_module = {
  PyModuleDef_HEAD_INIT, "_fastpath",
  "The vLLM protocol's decode fast path in C (see the top of _fastpath.c).",
  -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
  static const char *kn[6] = {"request", "num_new_tokens", "num_new_computed_tokens",
                              "new_computed_blocks", "num_lookahead_tokens",
                              "delay_cache_blocks"};
  for (int i = 0; i < 6; i++)
    if (!(k_names[i] = PyUnicode_InternFromString(kn[i]))) return NULL;
  if (!(s_request_id = PyUnicode_InternFromString("request_id"))
      || !(s_num_computed_tokens = PyUnicode_InternFromString("num_computed_tokens"))
      || !(s_all_token_ids = PyUnicode_InternFromString("all_token_ids")))
    return NULL;
  if (PyType_Ready(&ReqStateType) < 0 || PyType_Ready(&AllocatorType) < 0) return NULL;
  PyObject *m = PyModule_Create(&fastpath_module);
  if (!m) return NULL;
  if (PyModule_AddObjectRef(m, "ReqState", (PyObject *)&ReqStateType) < 0
      || PyModule_AddObjectRef(m, "Allocator", (PyObject *)&AllocatorType) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
