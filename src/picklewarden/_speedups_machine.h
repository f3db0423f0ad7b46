/*
 * The machine's two hottest callbacks in C (included by _speedups.c): the call of a stand-in class whose
 * calls a lean recording elides (a state dict's _rebuild_tensor_v2 and OrderedDict(), once per tensor), and
 * persistent_load of a torch storage id. pickle/machine.py is the reference: these functions do exactly
 * what Recorder.call and Recorder.persistent_load do on those paths, and hand every other case, and every
 * first call of a callee (whose answer Python computes and caches), back to the Python methods before
 * changing any state. They only record: nothing here resolves, imports or calls a name from the input; the
 * only Python code they call is the recorder's own.
 *
 * RecorderCore holds the counters and lists the fast paths share with the Python Recorder (a Python
 * subclass, so `self.next_id += 1` there and `next_id++` here update one field). StandinMeta is the
 * metaclass base whose tp_call is the fast path for calls of a stand-in class.
 */

typedef struct {
    PyObject_HEAD
    Py_ssize_t next_id, n_calls, n_persistent, check_at, base;
    PyObject *last_offset;      /* int or None */
    PyObject *statements;       /* list: Program.statements */
    PyObject *elided;           /* list: Program.elided */
    PyObject *layout_calls;     /* list of (offset, opcode) from the layout pass */
    PyObject *layout_persistent; /* list of offsets */
    PyObject *elide_by_callee;  /* dict: callee id -> bool, filled by the Python path */
    char lean;
} RecorderCore;

/* Set once by configure(): the Python classes the records are made of, and the fallbacks. */
static PyTypeObject *value_type, *persistent_type, *elided_type, *global_type;
static PyObject *call_how_call, *opnames, *slow_call, *str_storage, *str_checkpoint, *str_persistent_load;
static PyObject *str_pw_node, *str_pw_rec;
/* Slot offsets, per class: Python 3.10's dataclass(slots=True) gives a subclass its own slots for the
 * fields it inherits, so Node's `id` sits elsewhere in each record class. */
static Py_ssize_t off_value_node, off_value_rec, off_global_id, off_persistent_id, off_persistent_offset;
static Py_ssize_t off_persistent_pid, off_call_id, off_call_offset, off_call_callee, off_call_args, off_call_kwargs;
static Py_ssize_t off_call_how, off_call_opcode, off_call_seq;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))
#define MAX_NESTING 4

static int
set_slot(PyObject *obj, Py_ssize_t off, PyObject *value)
{
    /* Steals value; the slot is known empty (fresh object). NULL value: an error is already set. */
    if (value == NULL)
        return -1;
    SLOT(obj, off) = value;
    return 0;
}

static int
slot_offset(PyObject *cls, const char *name, Py_ssize_t *out)
{
    PyObject *descr = PyObject_GetAttrString(cls, name);
    if (descr == NULL) {
        PyErr_Clear(); /* reported as any other unusable field, below */
        descr = Py_NewRef(Py_None);
    }
    int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type) && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
    if (ok)
        *out = ((PyMemberDescrObject *)descr)->d_member->offset;
    Py_DECREF(descr);
    if (!ok)
        PyErr_Format(PyExc_TypeError, "%s is not an object slot", name);
    return ok ? 0 : -1;
}

static PyObject *
configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* configure(Value, Persistent, ElidedCall, Global, CallHow.CALL, opnames, slow_call) */
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "configure takes 7 arguments");
        return NULL;
    }
    for (int i = 0; i < 4; i++)
        if (!PyType_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError, "configure needs the record classes");
            return NULL;
        }
    if (!PyTuple_CheckExact(args[5]) || PyTuple_GET_SIZE(args[5]) != 256) {
        PyErr_SetString(PyExc_TypeError, "opnames must be a 256-tuple");
        return NULL;
    }
    /* All offsets are found before any is stored: a refused call leaves the last configuration whole. */
    enum { FIELDS = 14 };
    static const struct { int cls; const char *name; } wanted[FIELDS] = {
        {0, "_pw_node"}, {0, "_pw_rec"}, {1, "id"}, {1, "offset"}, {1, "pid"}, {2, "id"}, {2, "offset"},
        {2, "callee"}, {2, "args"}, {2, "kwargs"}, {2, "how"}, {2, "opcode"}, {2, "seq"}, {3, "id"},
    };
    Py_ssize_t *targets[FIELDS] = {
        &off_value_node, &off_value_rec, &off_persistent_id, &off_persistent_offset, &off_persistent_pid,
        &off_call_id, &off_call_offset, &off_call_callee, &off_call_args, &off_call_kwargs, &off_call_how,
        &off_call_opcode, &off_call_seq, &off_global_id,
    };
    Py_ssize_t found[FIELDS];
    for (int i = 0; i < FIELDS; i++)
        if (slot_offset(args[wanted[i].cls], wanted[i].name, &found[i]) < 0)
            return NULL;
    for (int i = 0; i < FIELDS; i++)
        *targets[i] = found[i];
    PyObject **keep[] = {(PyObject **)&value_type, (PyObject **)&persistent_type, (PyObject **)&elided_type,
                         (PyObject **)&global_type, &call_how_call, &opnames, &slow_call};
    for (int i = 0; i < 7; i++)
        Py_XSETREF(*keep[i], Py_NewRef(args[i]));
    Py_RETURN_NONE;
}

static int
int64_ok(PyObject *v)
{
    int overflow = 0;
    (void)PyLong_AsLongLongAndOverflow(v, &overflow);
    return overflow == 0;
}

/* standins.inert on one value at a depth. */
static int
inert_one(PyObject *v, int depth)
{
    PyTypeObject *kind = Py_TYPE(v);
    if (kind == &PyLong_Type)
        return int64_ok(v);
    if (kind == value_type) {
        PyObject *node = SLOT(v, off_value_node);
        return node != NULL && (Py_IS_TYPE(node, elided_type) || Py_IS_TYPE(node, persistent_type));
    }
    if (kind == &PyTuple_Type) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(v); i++) {
            PyObject *item = PyTuple_GET_ITEM(v, i);
            if (Py_IS_TYPE(item, &PyLong_Type) && int64_ok(item))
                continue;
            if (depth < MAX_NESTING && inert_one(item, depth + 1))
                continue;
            return 0;
        }
        return 1;
    }
    return kind == &PyFloat_Type || kind == &PyBool_Type || v == Py_None;
}

static PyObject *
new_record(PyTypeObject *type)
{
    return type->tp_alloc(type, 0);
}

static PyObject *
new_value(PyObject *node, RecorderCore *rec)
{
    PyObject *value = new_record(value_type);
    if (value == NULL)
        return NULL;
    SLOT(value, off_value_node) = Py_NewRef(node);
    SLOT(value, off_value_rec) = Py_NewRef((PyObject *)rec);
    return value;
}

/* Recorder._record's bookkeeping for a record about to be appended to `list`: the checkpoint (Python) when
 * due, then the append and last_offset. */
static int
record(RecorderCore *rec, PyObject *list, PyObject *stmt, PyObject *offset, Py_ssize_t count)
{
    if (count >= rec->check_at) {
        PyObject *r = PyObject_CallMethodOneArg((PyObject *)rec, str_checkpoint, stmt);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    if (PyList_Append(list, stmt) < 0)
        return -1;
    if (offset != Py_None)
        Py_SETREF(rec->last_offset, Py_NewRef(offset));
    return 0;
}

static PyObject *
position(RecorderCore *rec, PyObject *offsets, Py_ssize_t index)
{
    /* base + offsets[index] (the int, or the first item of a pair), or None past the end. */
    if (index >= PyList_GET_SIZE(offsets))
        return Py_NewRef(Py_None);
    PyObject *at = PyList_GET_ITEM(offsets, index);
    if (PyTuple_CheckExact(at))
        at = PyTuple_GET_ITEM(at, 0);
    if (rec->base == 0 && PyLong_CheckExact(at))
        return Py_NewRef(at); /* the same value: one int object per offset instead of two */
    Py_ssize_t where = PyLong_AsSsize_t(at);
    if (where == -1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromSsize_t(rec->base + where);
}

static int
core_ready(RecorderCore *rec)
{
    return value_type != NULL && rec->statements != NULL && PyList_CheckExact(rec->statements) &&
           rec->elided != NULL && PyList_CheckExact(rec->elided) && rec->layout_calls != NULL &&
           PyList_CheckExact(rec->layout_calls) && rec->layout_persistent != NULL &&
           PyList_CheckExact(rec->layout_persistent);
}

static PyObject *
core_persistent_load(RecorderCore *rec, PyObject *pid)
{
    if (!(core_ready(rec) && PyTuple_CheckExact(pid) && PyTuple_GET_SIZE(pid) > 0 &&
          PyUnicode_CheckExact(PyTuple_GET_ITEM(pid, 0)) &&
          PyUnicode_Compare(PyTuple_GET_ITEM(pid, 0), str_storage) == 0))
        return PyObject_CallMethodOneArg((PyObject *)rec, str_persistent_load, pid);
    Py_ssize_t index = rec->n_persistent++;
    PyObject *offset = position(rec, rec->layout_persistent, index);
    if (offset == NULL)
        return NULL;
    Py_ssize_t node_id = rec->next_id++;
    PyObject *node = new_record(persistent_type);
    if (node == NULL || set_slot(node, off_persistent_id, PyLong_FromSsize_t(node_id)) < 0) {
        Py_DECREF(offset);
        Py_XDECREF(node);
        return NULL;
    }
    SLOT(node, off_persistent_offset) = offset;
    SLOT(node, off_persistent_pid) = Py_NewRef(pid);
    Py_ssize_t count = PyList_GET_SIZE(rec->statements) + PyList_GET_SIZE(rec->elided);
    PyObject *out = NULL;
    if (record(rec, rec->statements, node, offset, count) == 0)
        out = new_value(node, rec);
    Py_DECREF(node);
    return out;
}

/* Recorder.call's elided path for a plain CALL without keywords; NULL without an error set: not this path
 * (nothing was changed), the caller runs the Python method. */
static PyObject *
core_call(RecorderCore *rec, PyObject *callee, PyObject *args)
{
    if (!rec->lean || !core_ready(rec) || !Py_IS_TYPE(callee, global_type) || rec->elide_by_callee == NULL ||
        !PyDict_CheckExact(rec->elide_by_callee))
        return NULL;
    PyObject *key = SLOT(callee, off_global_id);
    if (key == NULL)
        return NULL;
    PyObject *elide = PyDict_GetItemWithError(rec->elide_by_callee, key);
    if (elide != Py_True)
        return NULL; /* not asked yet (the Python path asks and caches), not elided, or an error */
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); i++)
        if (!inert_one(PyTuple_GET_ITEM(args, i), 0)) /* inert(args, 0): each argument at depth 0 */
            return NULL;
    Py_ssize_t index = rec->n_calls;
    PyObject *offset = Py_None, *opname = Py_None;
    if (index < PyList_GET_SIZE(rec->layout_calls)) {
        PyObject *pair = PyList_GET_ITEM(rec->layout_calls, index);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(pair, 1)))
            return NULL;
        long code = PyLong_AsLong(PyTuple_GET_ITEM(pair, 1));
        if (code < 0 || code > 255)
            return NULL;
        opname = PyTuple_GET_ITEM(opnames, code);
        offset = position(rec, rec->layout_calls, index);
        if (offset == NULL)
            return NULL;
    } else {
        Py_INCREF(offset);
    }
    rec->n_calls = index + 1;
    Py_ssize_t node_id = rec->next_id++;
    Py_ssize_t seq = PyList_GET_SIZE(rec->statements) + PyList_GET_SIZE(rec->elided);
    PyObject *safe = new_record(elided_type);
    if (safe == NULL || set_slot(safe, off_call_id, PyLong_FromSsize_t(node_id)) < 0 ||
        set_slot(safe, off_call_seq, PyLong_FromSsize_t(seq)) < 0) {
        Py_DECREF(offset);
        Py_XDECREF(safe);
        return NULL;
    }
    SLOT(safe, off_call_offset) = offset;
    SLOT(safe, off_call_callee) = Py_NewRef(callee);
    SLOT(safe, off_call_args) = Py_NewRef(args);
    SLOT(safe, off_call_kwargs) = Py_NewRef(Py_None);
    SLOT(safe, off_call_how) = Py_NewRef(call_how_call);
    SLOT(safe, off_call_opcode) = Py_NewRef(opname);
    PyObject *out = NULL;
    if (record(rec, rec->elided, safe, offset, seq) == 0)
        out = new_value(safe, rec);
    Py_DECREF(safe);
    return out;
}

static PyObject *
core_persistent_method(PyObject *self, PyObject *pid)
{
    return core_persistent_load((RecorderCore *)self, pid);
}

static PyObject *
core_call_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* fast_call(callee, args): the elided call's stand-in, or None when the Python path must run. */
    if (nargs != 2 || !PyTuple_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "fast_call(callee, args: tuple)");
        return NULL;
    }
    PyObject *out = core_call((RecorderCore *)self, args[0], args[1]);
    if (out == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return out;
}

static int
core_traverse(RecorderCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->last_offset);
    Py_VISIT(self->statements);
    Py_VISIT(self->elided);
    Py_VISIT(self->layout_calls);
    Py_VISIT(self->layout_persistent);
    Py_VISIT(self->elide_by_callee);
    return 0;
}

static int
core_clear(RecorderCore *self)
{
    Py_CLEAR(self->last_offset);
    Py_CLEAR(self->statements);
    Py_CLEAR(self->elided);
    Py_CLEAR(self->layout_calls);
    Py_CLEAR(self->layout_persistent);
    Py_CLEAR(self->elide_by_callee);
    return 0;
}

static void
core_dealloc(RecorderCore *self)
{
    PyObject_GC_UnTrack(self);
    core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef core_members[] = {
    {"next_id", T_PYSSIZET, offsetof(RecorderCore, next_id), 0, NULL},
    {"n_calls", T_PYSSIZET, offsetof(RecorderCore, n_calls), 0, NULL},
    {"n_persistent", T_PYSSIZET, offsetof(RecorderCore, n_persistent), 0, NULL},
    {"check_at", T_PYSSIZET, offsetof(RecorderCore, check_at), 0, NULL},
    {"base", T_PYSSIZET, offsetof(RecorderCore, base), 0, NULL},
    {"last_offset", T_OBJECT, offsetof(RecorderCore, last_offset), 0, NULL},
    {"statements", T_OBJECT_EX, offsetof(RecorderCore, statements), 0, NULL},
    {"elided", T_OBJECT_EX, offsetof(RecorderCore, elided), 0, NULL},
    {"layout_calls", T_OBJECT_EX, offsetof(RecorderCore, layout_calls), 0, NULL},
    {"layout_persistent", T_OBJECT_EX, offsetof(RecorderCore, layout_persistent), 0, NULL},
    {"elide_by_callee", T_OBJECT_EX, offsetof(RecorderCore, elide_by_callee), 0, NULL},
    {"lean", T_BOOL, offsetof(RecorderCore, lean), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef core_methods[] = {
    {"fast_persistent_load", core_persistent_method, METH_O,
     "persistent_load for the unpickler: a storage id here, anything else by the Python method."},
    {"fast_call", (PyCFunction)(void (*)(void))core_call_method, METH_FASTCALL,
     "The elided call's stand-in, or None where Recorder.call must run (for tests)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RecorderCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "picklewarden._speedups.RecorderCore",
    .tp_doc = "State the machine's compiled callbacks share with pickle.machine.Recorder.",
    .tp_basicsize = sizeof(RecorderCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_members = core_members,
    .tp_methods = core_methods,
};

static PyObject *
standin_call(PyObject *cls, PyObject *args, PyObject *kwargs)
{
    /* A stand-in class is called: the elided path when it applies, else standins' Python __call__. */
    PyObject *dict = ((PyTypeObject *)cls)->tp_dict;
    if (dict != NULL && (kwargs == NULL || PyDict_GET_SIZE(kwargs) == 0)) {
        PyObject *rec = PyDict_GetItemWithError(dict, str_pw_rec);
        PyObject *node = rec == NULL ? NULL : PyDict_GetItemWithError(dict, str_pw_node);
        if (node != NULL && PyObject_TypeCheck(rec, &RecorderCoreType)) {
            PyObject *out = core_call((RecorderCore *)rec, node, args);
            if (out != NULL || PyErr_Occurred())
                return out;
        }
        if (PyErr_Occurred())
            return NULL;
    }
    if (slow_call == NULL) {
        PyErr_SetString(PyExc_TypeError, "picklewarden._speedups is not configured");
        return NULL;
    }
    /* slow_call(cls, *args, **kwargs) */
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject *full = PyTuple_New(n + 1);
    if (full == NULL)
        return NULL;
    PyTuple_SET_ITEM(full, 0, Py_NewRef(cls));
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(full, i + 1, Py_NewRef(PyTuple_GET_ITEM(args, i)));
    PyObject *out = PyObject_Call(slow_call, full, kwargs);
    Py_DECREF(full);
    return out;
}

static PyTypeObject StandinMetaType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "picklewarden._speedups.StandinMeta",
    .tp_doc = "Metaclass base of the machine's stand-in classes: calls take the compiled elided path.",
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_TYPE_SUBCLASS,
    .tp_call = standin_call,
};

static int
machine_init(PyObject *module)
{
    str_storage = PyUnicode_InternFromString("storage");
    str_checkpoint = PyUnicode_InternFromString("_checkpoint");
    str_persistent_load = PyUnicode_InternFromString("persistent_load");
    str_pw_node = PyUnicode_InternFromString("_pw_node");
    str_pw_rec = PyUnicode_InternFromString("_pw_rec");
    if (!str_storage || !str_checkpoint || !str_persistent_load || !str_pw_node || !str_pw_rec)
        return -1;
    StandinMetaType.tp_base = &PyType_Type;
    StandinMetaType.tp_traverse = PyType_Type.tp_traverse;
    StandinMetaType.tp_clear = PyType_Type.tp_clear;
    if (PyType_Ready(&RecorderCoreType) < 0 || PyType_Ready(&StandinMetaType) < 0)
        return -1;
    if (PyModule_AddObjectRef(module, "RecorderCore", (PyObject *)&RecorderCoreType) < 0 ||
        PyModule_AddObjectRef(module, "StandinMeta", (PyObject *)&StandinMetaType) < 0)
        return -1;
    return 0;
}
