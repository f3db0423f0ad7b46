/*
 * picklewarden._speedups: compiled versions of the hot loops, the pickle layout pass, the ZIP
 * central-directory walk (which builds the entries of plain records), a few whole-archive passes and an
 * in-place byte search, and of the machine's two hottest callbacks (_speedups_machine.h, which only
 * record). The loops only parse bytes: nothing here unpickles, imports or calls anything named by
 * the input. The pure-Python code (pickle/layout.py, containers/zipdir.py, torchentries.py, zipcolumns.py)
 * is the reference; these functions return exactly what its loops compute, and leave every message and
 * every rare path (errors, limits, clocks) to Python, so there is one place that words a finding.
 *
 * Every read is bounds-checked against the buffer before it happens; lengths from the input are compared,
 * never allocated.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

/* Must match the _LINE.. constants of pickle/layout.py (passed in as the step table's negative values). */
enum { STEP_LINE = -1, STEP_TWO_LINES = -2, STEP_COUNTED1 = -3, STEP_COUNTED4 = -4, STEP_COUNTED4S = -5,
       STEP_COUNTED8 = -6 };
/* Must match _A_IMPORT.. of pickle/layout.py. */
enum { A_IMPORT = 1, A_CALL, A_IMPORT_CALL, A_BUILD, A_PERSISTENT, A_PROTO, A_FRAME, A_PUT, A_EXT, A_STOP };
/* What layout_chunk reports; layout.py turns each failure into the same error as its own loop. */
enum { S_CHUNK = 0, S_STOP, F_END, F_BAD_OPCODE, F_LENGTH_TRUNCATED, F_NEGATIVE_LENGTH, F_NO_NEWLINE,
       F_SHORT, F_PUT_NOT_INT, F_MEMO, F_PROTO, F_FRAME };

static uint64_t
little_endian(const unsigned char *p, Py_ssize_t width)
{
    uint64_t value = 0;
    for (Py_ssize_t i = width - 1; i >= 0; i--)
        value = (value << 8) | p[i];
    return value;
}

static int
append_pair(PyObject *list, PyObject *a, PyObject *b)
{
    /* Steals a and b. */
    if (a == NULL || b == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        return -1;
    }
    PyObject *t = PyTuple_Pack(2, a, b);
    Py_DECREF(a);
    Py_DECREF(b);
    if (t == NULL)
        return -1;
    int r = PyList_Append(list, t);
    Py_DECREF(t);
    return r;
}

/* Append a new reference (NULL: an error already raised) to list, consuming it. */
static int
append_new(PyObject *list, PyObject *o)
{
    if (o == NULL)
        return -1;
    int r = PyList_Append(list, o);
    Py_DECREF(o);
    return r;
}

static int
append_int(PyObject *list, Py_ssize_t v)
{
    return append_new(list, PyLong_FromSsize_t(v));
}

static PyObject *
result(int status, Py_ssize_t pos, Py_ssize_t done, int proto, Py_ssize_t frame_end, PyObject *value)
{
    /* Steals value (which may be NULL only when an error is set). */
    if (value == NULL)
        return NULL;
    PyObject *r = Py_BuildValue("(innnnO)", status, pos, done, (Py_ssize_t)proto, frame_end, value);
    Py_DECREF(value);
    return r;
}

/*
 * layout_chunk(data, pos, count, chunk_end, proto, steps, actions, max_memo, highest_protocol,
 *              put_text, ext_signed, stop, imports, calls, builds, persistent, extensions)
 *   -> (status, pos, done, proto, value)
 *
 * Decodes opcodes count..chunk_end-1 from pos, appending to the lists as layout.py's loop does.
 * S_CHUNK: all decoded, pos is the next opcode. S_STOP: pos is STOP's offset, value the offset past it.
 * frame_end (the last argument, returned after proto) is where the last FRAME decoded so far ends.
 * Otherwise a failure at pos after ``done`` opcodes, with value its detail (a length, byte or index).
 */
static PyObject *
layout_chunk(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 18) {
        PyErr_SetString(PyExc_TypeError, "layout_chunk takes 18 arguments");
        return NULL;
    }
    Py_ssize_t frame_end = PyLong_AsSsize_t(args[17]);
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t count = PyLong_AsSsize_t(args[2]);
    Py_ssize_t chunk_end = PyLong_AsSsize_t(args[3]);
    long proto = PyLong_AsLong(args[4]);
    long highest = PyLong_AsLong(args[8]);
    long put_text = PyLong_AsLong(args[9]);
    long ext_signed = PyLong_AsLong(args[10]);
    long stop_code = PyLong_AsLong(args[11]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *max_memo = args[7];
    PyObject *imports = args[12], *calls = args[13], *builds = args[14], *persistent = args[15],
             *extensions = args[16];
    if (!PyLong_Check(max_memo) || !PyList_Check(imports) || !PyList_Check(calls) || !PyList_Check(builds) ||
        !PyList_Check(persistent) || !PyList_Check(extensions)) {
        PyErr_SetString(PyExc_TypeError, "layout_chunk: bad argument types");
        return NULL;
    }
    Py_buffer steps_view, actions_view, view;
    if (PyObject_GetBuffer(args[5], &steps_view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[6], &actions_view, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&steps_view);
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&steps_view);
        PyBuffer_Release(&actions_view);
        return NULL;
    }
    PyObject *out = NULL;
    if (steps_view.len != 256 || actions_view.len != 256 || pos < 0) {
        PyErr_SetString(PyExc_ValueError, "layout_chunk: tables must have 256 entries");
        goto done_all;
    }
    const signed char *steps = (const signed char *)steps_view.buf;
    const unsigned char *actions = (const unsigned char *)actions_view.buf;
    const unsigned char *data = (const unsigned char *)view.buf;
    const Py_ssize_t n = view.len;

    for (Py_ssize_t done = count; done < chunk_end; done++) {
        if (pos >= n) {
            out = result(F_END, pos, done, (int)proto, frame_end, Py_NewRef(Py_None));
            goto done_all;
        }
        unsigned char code = data[pos];
        int step = steps[code];
        Py_ssize_t nxt, body = pos + 1;
        if (step > 0) {
            nxt = pos + step;
        }
        else if (step == 0) {
            out = result(F_BAD_OPCODE, pos, done, (int)proto, frame_end, PyLong_FromLong(code));
            goto done_all;
        }
        else if (step <= STEP_COUNTED1) {
            uint64_t length;
            if (step == STEP_COUNTED1) {
                body = pos + 2;
                if (body > n) {
                    out = result(F_LENGTH_TRUNCATED, pos, done + 1, (int)proto, frame_end, Py_NewRef(Py_None));
                    goto done_all;
                }
                length = data[pos + 1];
            }
            else {
                Py_ssize_t width = step == STEP_COUNTED8 ? 8 : 4;
                body = pos + 1 + width;
                if (body > n) {
                    out = result(F_LENGTH_TRUNCATED, pos, done + 1, (int)proto, frame_end, Py_NewRef(Py_None));
                    goto done_all;
                }
                length = little_endian(data + pos + 1, width);
                if (step == STEP_COUNTED4S && length >= 0x80000000u) {
                    long long negative = (long long)length - 0x100000000LL;
                    out = result(F_NEGATIVE_LENGTH, pos, done + 1, (int)proto, frame_end, PyLong_FromLongLong(negative));
                    goto done_all;
                }
            }
            if (length > (uint64_t)(n - body)) {
                /* nxt - n in Python's arithmetic: the length less what is left after the prefix. */
                out = result(F_SHORT, pos, done + 1, (int)proto, frame_end,
                             PyLong_FromUnsignedLongLong(length - (uint64_t)(n - body)));
                goto done_all;
            }
            nxt = body + (Py_ssize_t)length;
        }
        else {
            const unsigned char *eol = pos + 1 < n ? memchr(data + pos + 1, '\n', (size_t)(n - pos - 1)) : NULL;
            if (eol != NULL && step == STEP_TWO_LINES) {
                Py_ssize_t after = (eol - data) + 1;
                eol = after < n ? memchr(data + after, '\n', (size_t)(n - after)) : NULL;
            }
            if (eol == NULL) {
                out = result(F_NO_NEWLINE, pos, done + 1, (int)proto, frame_end, Py_NewRef(Py_None));
                goto done_all;
            }
            nxt = (eol - data) + 1;
        }
        if (nxt > n) {
            out = result(F_SHORT, pos, done + 1, (int)proto, frame_end, PyLong_FromSsize_t(nxt - n));
            goto done_all;
        }
        int action = actions[code];
        if (action) {
            Py_ssize_t arg_start = step <= STEP_COUNTED1 ? body : pos + 1;
            switch (action) {
            case A_CALL:
                if (append_pair(calls, PyLong_FromSsize_t(pos), PyLong_FromLong(code)) < 0)
                    goto done_all;
                break;
            case A_PERSISTENT:
                if (append_int(persistent, pos) < 0)
                    goto done_all;
                break;
            case A_BUILD:
                if (append_int(builds, pos) < 0)
                    goto done_all;
                break;
            case A_IMPORT:
            case A_IMPORT_CALL: {
                PyObject *t = Py_BuildValue("(nll)", pos, (long)code, proto);
                if (t == NULL)
                    goto done_all;
                int r = PyList_Append(imports, t);
                Py_DECREF(t);
                if (r < 0)
                    goto done_all;
                if (action == A_IMPORT_CALL &&
                    append_pair(calls, PyLong_FromSsize_t(pos), PyLong_FromLong(code)) < 0)
                    goto done_all;
                break;
            }
            case A_PUT: {
                PyObject *index;
                if (code == put_text) {
                    /* int() of the text, with Python's own rules for what an integer literal is. */
                    PyObject *text = PyBytes_FromStringAndSize((const char *)data + arg_start, nxt - 1 - arg_start);
                    if (text == NULL)
                        goto done_all;
                    index = PyNumber_Long(text);
                    Py_DECREF(text);
                    if (index == NULL) {
                        if (!PyErr_ExceptionMatches(PyExc_ValueError))
                            goto done_all;
                        PyErr_Clear();
                        out = result(F_PUT_NOT_INT, pos, done + 1, (int)proto, frame_end, Py_NewRef(Py_None));
                        goto done_all;
                    }
                }
                else {
                    if (nxt - arg_start > 8) {
                        PyErr_SetString(PyExc_ValueError, "layout_chunk: memo index wider than 8 bytes");
                        goto done_all;
                    }
                    index = PyLong_FromUnsignedLongLong(little_endian(data + arg_start, nxt - arg_start));
                    if (index == NULL)
                        goto done_all;
                }
                int over = PyObject_RichCompareBool(index, max_memo, Py_GT);
                if (over != 0) {
                    if (over < 0) {
                        Py_DECREF(index);
                        goto done_all;
                    }
                    out = result(F_MEMO, pos, done + 1, (int)proto, frame_end, index);
                    goto done_all;
                }
                Py_DECREF(index);
                break;
            }
            case A_PROTO:
                proto = data[arg_start];
                if (proto > highest) {
                    out = result(F_PROTO, pos, done + 1, (int)proto, frame_end, PyLong_FromLong(proto));
                    goto done_all;
                }
                break;
            case A_FRAME: {
                uint64_t frame_len = little_endian(data + arg_start, nxt - arg_start);
                if (frame_len > (uint64_t)(n - nxt)) {
                    out = result(F_FRAME, pos, done + 1, (int)proto, frame_end, PyLong_FromUnsignedLongLong(frame_len));
                    goto done_all;
                }
                frame_end = nxt + (Py_ssize_t)frame_len;
                break;
            }
            case A_EXT: {
                Py_ssize_t width = nxt - arg_start;
                uint64_t raw = little_endian(data + arg_start, width);
                PyObject *value;
                if (code == ext_signed && width == 4)
                    value = PyLong_FromLong((long)(int32_t)(uint32_t)raw);
                else
                    value = PyLong_FromUnsignedLongLong(raw);
                if (append_pair(extensions, PyLong_FromSsize_t(pos), value) < 0)
                    goto done_all;
                break;
            }
            default:
                break;
            }
            if (code == stop_code) {
                out = result(S_STOP, pos, done + 1, (int)proto, frame_end, PyLong_FromSsize_t(nxt));
                goto done_all;
            }
        }
        pos = nxt;
    }
    out = result(S_CHUNK, pos, chunk_end, (int)proto, frame_end, Py_NewRef(Py_None));
done_all:
    PyBuffer_Release(&view);
    PyBuffer_Release(&actions_view);
    PyBuffer_Release(&steps_view);
    return out;
}

/* ---- ZIP central directory ------------------------------------------------------------------------ */

#define CDH_SIZE 46
#define LOCAL_SIZE 30
#define U16_MAX 0xFFFFu
#define U32_MAX 0xFFFFFFFFull
#define FLAG_MASKED 0x2000u

static unsigned
u16(const unsigned char *p)
{
    return (unsigned)p[0] | ((unsigned)p[1] << 8);
}

static uint64_t
u32(const unsigned char *p)
{
    return little_endian(p, 4);
}

/* zipdir.DirectoryReader.directory_zip64: 0 on success, -1 where the reference raises. */
static int
directory_zip64(const unsigned char *extra, Py_ssize_t extra_len, uint64_t *plain, uint64_t *compressed,
                uint64_t *offset)
{
    Py_ssize_t position = 0, remaining = extra_len;
    for (;;) {
        if (remaining < 4)
            return -1;
        unsigned field_id = u16(extra + position), field_size = u16(extra + position + 2);
        if ((Py_ssize_t)field_size + 4 > remaining)
            return -1;
        if (field_id == 1)
            break;
        position += 4 + field_size;
        remaining -= 4 + field_size;
        if (remaining == 0)
            break;
    }
    if (remaining >= 4) {
        position += 4;
        remaining -= 4;
        uint64_t *values[3] = {plain, compressed, offset};
        for (int slot = 0; slot < 3; slot++) {
            if (*values[slot] == U32_MAX && remaining >= 8) {
                *values[slot] = little_endian(extra + position, 8);
                position += 8;
                remaining -= 8;
            }
        }
    }
    return 0;
}

/* ziprecords._stat_zip64: the values extraction uses, and its error message (NULL when none). */
static const char *
stat_zip64(const unsigned char *extra, Py_ssize_t extra_len, uint64_t *plain, uint64_t *compressed,
           uint64_t *offset)
{
    if ((*compressed != U32_MAX && *plain != U32_MAX && *offset != U32_MAX) || extra_len == 0)
        return NULL;
    Py_ssize_t position = 0, remaining = extra_len;
    while (remaining) {
        if (remaining < 4)
            return "corrupt extra field";
        unsigned field_id = u16(extra + position), field_size = u16(extra + position + 2);
        if ((Py_ssize_t)field_size + 4 > remaining)
            return "corrupt extra field";
        if (field_id == 1) {
            Py_ssize_t cursor = position + 4, left = field_size;
            uint64_t values[3] = {*plain, *compressed, *offset};
            for (int slot = 0; slot < 3; slot++) {
                if (values[slot] == U32_MAX) {
                    if (left < 8)
                        return "ZIP64 extra field too short";
                    values[slot] = little_endian(extra + cursor, 8);
                    cursor += 8;
                    left -= 8;
                }
            }
            *plain = values[0];
            *compressed = values[1];
            *offset = values[2];
            return NULL;
        }
        position += 4 + field_size;
        remaining -= 4 + field_size;
    }
    return NULL;
}

/* Python's zipfile finds the extra field corrupt (ziprecords._zipfile_extra_corrupt). */
static int
zipfile_extra_corrupt(const unsigned char *extra, Py_ssize_t extra_len)
{
    Py_ssize_t position = 0;
    while (extra_len - position >= 4) {
        Py_ssize_t field_size = u16(extra + position + 2);
        if (field_size + 4 > extra_len - position)
            return 1;
        position += 4 + field_size;
    }
    return 0;
}

static int
ends_with(const unsigned char *name, Py_ssize_t len, const char *tail)
{
    Py_ssize_t n = (Py_ssize_t)strlen(tail);
    return len >= n && memcmp(name + len - n, tail, (size_t)n) == 0;
}

/* What a name's bytes hold, as the checks below ask: one table lookup per byte, in one pass. */
enum { NAME_NUL = 1, NAME_HIGH = 2, NAME_BACKSLASH = 4, NAME_UPPER = 8 };

static unsigned
name_bits(const unsigned char *name, Py_ssize_t name_len)
{
    static unsigned char classes[256];
    static int ready = 0;
    if (!ready) {
        classes[0] = NAME_NUL;
        for (int c = 0x80; c < 0x100; c++)
            classes[c] = NAME_HIGH;
        classes['\\'] = NAME_BACKSLASH;
        for (int c = 'A'; c <= 'Z'; c++)
            classes[c] = NAME_UPPER;
        ready = 1;
    }
    unsigned bits = 0;
    for (Py_ssize_t i = 0; i < name_len; i++)
        bits |= classes[name[i]];
    return bits;
}

/* torchzip's _is_tensor_data, in part: "/data/" in "/" + name. */
static int
under_data_folder(const unsigned char *name, Py_ssize_t name_len)
{
    if (name_len >= 5 && memcmp(name, "data/", 5) == 0)
        return 1;
    const unsigned char *end = name + name_len;
    for (const unsigned char *p = name; (p = memchr(p, '/', (size_t)(end - p))) != NULL; p++)
        if (end - p >= 6 && memcmp(p, "/data/", 6) == 0)
            return 1;
    return 0;
}

/*
 * ziprecords._zipfile_plain: Python's zipfile (3.10-3.13) reads this record's name as its raw bytes (ASCII: cp437
 * and UTF-8 agree; no NUL it would cut at, no backslash Windows would turn into a slash), accepts its version
 * and extra field, and takes nothing from the extra field (no ZIP64 values, no Unicode path).
 */
static int
zipfile_plain_record(unsigned bits, const unsigned char *extra, Py_ssize_t extra_len, unsigned extract_version)
{
    if (extract_version > 63 || (bits & (NAME_NUL | NAME_HIGH | NAME_BACKSLASH)))
        return 0;
    Py_ssize_t position = 0;
    while (extra_len - position >= 4) {
        unsigned field_id = u16(extra + position);
        Py_ssize_t field_size = u16(extra + position + 2);
        if (field_size + 4 > extra_len - position || field_id == 0x0001 || field_id == 0x7075)
            return 0;
        position += 4 + field_size;
    }
    return 1;
}

/*
 * A plain tensor-data record: stored raw storage bytes under data/ with an ASCII name, nothing odd about it.
 * torchzip._Reader.check_entry has nothing to say about such a record and its local header is read only on
 * demand, so torchzip builds its entry directly. Every condition here mirrors a check there.
 */
static int
plain_tensor_record(const unsigned char *name, Py_ssize_t name_len, unsigned bits, const unsigned char *extra,
                    Py_ssize_t extra_len, unsigned flags, unsigned method, uint64_t external, uint64_t size,
                    uint64_t compressed, uint64_t offset, unsigned usual_flags, Py_ssize_t file_size)
{
    if (method != 0 || (flags & ~usual_flags) != 0 || compressed == 0 || size != compressed || (external & 0x10))
        return 0;
    if (bits & (NAME_NUL | NAME_HIGH))
        return 0;
    /* torchzip's _is_tensor_data: "/data/" in "/" + name, not a pickle, not a folder */
    if (!under_data_folder(name, name_len) || ends_with(name, name_len, ".pkl") || ends_with(name, name_len, "/"))
        return 0;
    if (zipfile_extra_corrupt(extra, extra_len))
        return 0;
    /* the data (from the lower-bound offset) lies within the file */
    uint64_t start = offset + LOCAL_SIZE + (uint64_t)name_len;
    return start >= offset && start <= (uint64_t)file_size && compressed <= (uint64_t)file_size - start;
}

/*
 * A plain member record: a stored member outside the tensor folder (data.pkl, version, byteorder...) with an
 * ASCII name, whose local header lies in the file and agrees with the central record on signature, flags,
 * method and name, and whose data ends within the file. torchzip._Reader.make_entry reads that header and
 * neither it nor check_entry has anything to note about such a record; every condition here mirrors a check
 * there. Returns the data offset the local header gives, or 0 (never a data offset) when the record is not
 * plain and Python builds its entry.
 */
static uint64_t
plain_member_record(const unsigned char *data, Py_ssize_t file_size, const unsigned char *name, Py_ssize_t name_len,
                    unsigned bits, const unsigned char *extra, Py_ssize_t extra_len, unsigned flags, unsigned method,
                    uint64_t external, uint64_t size, uint64_t compressed, uint64_t offset, unsigned usual_flags)
{
    const uint64_t end = (uint64_t)file_size;
    if (method != 0 || (flags & ~usual_flags) != 0 || size != compressed || (external & 0x10))
        return 0;
    if ((bits & (NAME_NUL | NAME_HIGH)) || ends_with(name, name_len, "/"))
        return 0;
    /* not tensor data (torchzip's _is_tensor_data): those records' local headers are read on demand only */
    if (under_data_folder(name, name_len) && !ends_with(name, name_len, ".pkl"))
        return 0;
    if (zipfile_extra_corrupt(extra, extra_len))
        return 0;
    if (offset > end || end - offset < LOCAL_SIZE + (uint64_t)name_len)
        return 0;
    const unsigned char *local = data + offset;
    if (memcmp(local, "PK\x03\x04", 4) != 0 || u16(local + 6) != flags || u16(local + 8) != method ||
        u16(local + 26) != (unsigned)name_len || memcmp(local + LOCAL_SIZE, name, (size_t)name_len) != 0)
        return 0;
    uint64_t start = offset + LOCAL_SIZE + (uint64_t)name_len + u16(local + 28);
    return start <= end && compressed <= end - start ? start : 0;
}

/* ZipEntry's fields, in order, as torchzip._Reader.make_entry fills them for a plain tensor record. */
static const char *const entry_fields[] = {
    "name", "header_offset", "data_offset", "compressed_size", "size", "method", "crc32", "flags", "index",
    "directory", "stat_error", "local_read",
};
#define ENTRY_FIELDS 12

/*
 * Where each of entry_type's fields lives in an instance: the offset of its __slots__ member, so that
 * building (or reading) 500,000 entries costs a store (or a load) per field rather than an attribute
 * lookup. Offsets are -1 when a field is not a writable object slot of entry_type (a subclass, a
 * property): callers then go through the attribute protocol.
 */
static int
slot_offsets(PyObject *entry_type, PyObject *const *names, int count, Py_ssize_t *offsets)
{
    for (int i = 0; i < count; i++)
        offsets[i] = -1;
    for (int i = 0; i < count; i++) {
        PyObject *descr = PyObject_GetAttr(entry_type, names[i]); /* on the class: the descriptor itself */
        if (descr == NULL)
            return -1;
        int usable = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                     ((PyDescrObject *)descr)->d_type == (PyTypeObject *)entry_type &&
                     ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX &&
                     !(((PyMemberDescrObject *)descr)->d_member->flags & READONLY);
        Py_ssize_t offset = usable ? ((PyMemberDescrObject *)descr)->d_member->offset : -1;
        Py_DECREF(descr);
        if (offset < (Py_ssize_t)sizeof(PyObject)) {
            for (int j = 0; j < count; j++)
                offsets[j] = -1;
            return 0;
        }
        offsets[i] = offset;
    }
    return 0;
}

/*
 * The entry torchzip._Reader.make_entry builds for a plain tensor record (its local header unread, its data
 * offset the lower bound, nothing to note) or a plain member record (its header read, its data offset exact):
 * object.__new__(entry_type) with its fields stored as __init__
 * stores them, straight into the slots when `offsets` holds them (a new object's slots are NULL), else
 * with PyObject_GenericSetAttr (the class's own __setattr__ refuses).
 */
static PyObject *
plain_entry(PyObject *entry_type, PyObject *const *names, const Py_ssize_t *offsets, const unsigned char *name,
            Py_ssize_t name_len, Py_ssize_t index, unsigned flags, unsigned method, uint64_t crc32, uint64_t size,
            uint64_t plain, uint64_t offset, uint64_t data_offset, int local_read)
{
    /* what object.__new__(entry_type) does when given no arguments */
    PyObject *entry = ((PyTypeObject *)entry_type)->tp_alloc((PyTypeObject *)entry_type, 0);
    if (entry == NULL)
        return NULL;
    PyObject *text = PyUnicode_New(name_len, 127); /* plain records' names are ASCII */
    if (text != NULL)
        memcpy(PyUnicode_1BYTE_DATA(text), name, (size_t)name_len);
    PyObject *compressed = PyLong_FromUnsignedLongLong((unsigned long long)size);
    PyObject *values[ENTRY_FIELDS] = {
        text,
        PyLong_FromUnsignedLongLong((unsigned long long)offset),
        PyLong_FromUnsignedLongLong((unsigned long long)data_offset),
        compressed,
        /* a stored member's two sizes are one int object (ints are immutable): one allocation fewer */
        plain == size ? Py_XNewRef(compressed) : PyLong_FromUnsignedLongLong((unsigned long long)plain),
        PyLong_FromUnsignedLong(method),
        PyLong_FromUnsignedLongLong((unsigned long long)crc32),
        PyLong_FromUnsignedLong(flags),
        PyLong_FromSsize_t(index),
        Py_NewRef(Py_False),
        Py_NewRef(Py_None),
        PyBool_FromLong(local_read),
    };
    int failed = 0;
    for (int i = 0; i < ENTRY_FIELDS; i++) {
        if (failed || values[i] == NULL) {
            failed = 1;
            Py_XDECREF(values[i]);
        }
        else if (offsets[i] >= 0) {
            PyObject **slot = (PyObject **)((char *)entry + offsets[i]);
            Py_XSETREF(*slot, values[i]); /* steals the new reference */
        }
        else {
            if (PyObject_GenericSetAttr(entry, names[i], values[i]) < 0)
                failed = 1;
            Py_DECREF(values[i]);
        }
    }
    if (failed) {
        Py_DECREF(entry);
        return NULL;
    }
    return entry;
}

/*
 * central_directory(data, cd_offset, cd_size, total, disk, size, usual_flags, entry_type)
 *   -> (records, entries, names, positions, zipfile_plain, position, remaining, names_lower, names_nul_free,
 *       folder_shared) or None
 *
 * What zipdir.DirectoryReader.read_central_directory returns (a ziprecords.Walk): the records whose entries
 * torchzip builds, as tuples in _Raw's field order; by record, the entry built here for a plain tensor or
 * member record (see above; None for the others, and for all when entry_type is None), the name and the record's
 * offset; whether zipfile reads every record plainly; where the walk stopped and what it left; whether no
 * name holds an ASCII capital, none a NUL, and all start with the first name's folder (up to its first '/').
 * None where any record is one the reference refuses: the caller then runs the reference, which raises with
 * its own message (errors are rare; their wording stays in one place).
 */
static PyObject *
central_directory(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "central_directory takes 8 arguments");
        return NULL;
    }
    PyObject *entry_type = args[7] == Py_None ? NULL : args[7];
    if (entry_type != NULL && !PyType_Check(entry_type)) {
        PyErr_SetString(PyExc_TypeError, "central_directory: entry_type must be a class or None");
        return NULL;
    }
    PyObject *field_names[ENTRY_FIELDS] = {NULL};
    Py_ssize_t field_offsets[ENTRY_FIELDS];
    for (int i = 0; entry_type != NULL && i < ENTRY_FIELDS; i++) {
        field_names[i] = PyUnicode_InternFromString(entry_fields[i]);
        if (field_names[i] == NULL) {
            for (int j = 0; j < i; j++)
                Py_DECREF(field_names[j]);
            return NULL;
        }
    }
    if (entry_type != NULL && slot_offsets(entry_type, field_names, ENTRY_FIELDS, field_offsets) < 0) {
        for (int i = 0; i < ENTRY_FIELDS; i++)
            Py_DECREF(field_names[i]);
        return NULL;
    }
    Py_ssize_t cd_offset = PyLong_AsSsize_t(args[1]);
    Py_ssize_t cd_size = PyLong_AsSsize_t(args[2]);
    Py_ssize_t total = PyLong_AsSsize_t(args[3]);
    long disk = PyLong_AsLong(args[4]);
    Py_ssize_t expected_size = PyLong_AsSsize_t(args[5]);
    unsigned usual_flags = (unsigned)PyLong_AsUnsignedLong(args[6]);
    PyObject *out = NULL;
    if (PyErr_Occurred())
        goto names;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        /* Not one flat run of bytes (a strided view): the reference reads it by slicing. */
        if (PyErr_ExceptionMatches(PyExc_BufferError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            out = Py_NewRef(Py_None);
        }
        goto names;
    }
    const unsigned char *data = (const unsigned char *)view.buf;
    const Py_ssize_t size = view.len;
    PyObject *records = NULL, *entries = NULL, *names = NULL, *positions = NULL;
    int all_zipfile_plain = 1, names_lower = 1, names_nul_free = 1, folder_shared = 0;
    const unsigned char *folder = NULL;
    Py_ssize_t folder_len = 0;
    if (size != expected_size || cd_offset < 0 || cd_size < 0 || total < 0 || cd_offset > size ||
        cd_size > size - cd_offset) {
        out = Py_NewRef(Py_None);
        goto finish;
    }
    records = PyList_New(0);
    entries = PyList_New(0);
    names = PyList_New(0);
    positions = PyList_New(0);
    if (records == NULL || entries == NULL || names == NULL || positions == NULL)
        goto finish;
    Py_ssize_t position = cd_offset, remaining = cd_size;
    for (Py_ssize_t index = 0; index < total; index++) {
        if (remaining < CDH_SIZE || position + CDH_SIZE > size || memcmp(data + position, "PK\x01\x02", 4) != 0)
            goto refuse;
        const unsigned char *h = data + position;
        unsigned flags = u16(h + 8), method = u16(h + 10), time = u16(h + 12);
        uint64_t crc32 = u32(h + 16), compressed = u32(h + 20), plain = u32(h + 24);
        Py_ssize_t name_len = u16(h + 28), extra_len = u16(h + 30), comment_len = u16(h + 32);
        unsigned entry_disk = u16(h + 34);
        uint64_t external = u32(h + 38), header_offset = u32(h + 42);
        if (CDH_SIZE + name_len + extra_len > remaining)
            goto refuse;
        const unsigned char *name = h + CDH_SIZE, *extra = name + name_len;
        uint64_t c_size = compressed, c_plain = plain, c_offset = header_offset;
        if (extra_len && (compressed == U32_MAX || plain == U32_MAX || header_offset == U32_MAX)) {
            if (directory_zip64(extra, extra_len, &c_plain, &c_size, &c_offset) < 0)
                goto refuse;
        }
        if (c_size != U32_MAX && c_plain != U32_MAX) {
            if (((method | ((uint64_t)time << 16)) == 0 && c_plain != c_size) || (c_plain && !c_size))
                goto refuse;
        }
        if (entry_disk == U16_MAX || (entry_disk != (unsigned long)disk && entry_disk != 1))
            goto refuse;
        if (c_size != U32_MAX && c_offset + LOCAL_SIZE + c_size > (uint64_t)size) /* wraps as & U64_MASK does */
            goto refuse;
        if (flags & FLAG_MASKED)
            goto refuse;
        Py_ssize_t record_size = CDH_SIZE + name_len + extra_len + comment_len;
        if (record_size > remaining)
            goto refuse;
        uint64_t s_plain = plain, s_size = compressed, s_offset = header_offset;
        const char *stat_error = stat_zip64(extra, extra_len, &s_plain, &s_size, &s_offset);
        unsigned bits = name_bits(name, name_len);
        int plain_record = stat_error == NULL && plain_tensor_record(name, name_len, bits, extra, extra_len, flags,
                                                                     method, external, s_plain, s_size, s_offset,
                                                                     usual_flags, size);
        uint64_t data_offset = s_offset + LOCAL_SIZE + (uint64_t)name_len; /* a tensor record's lower bound */
        int local_read = 0;
        if (!plain_record && stat_error == NULL && entry_type != NULL) {
            uint64_t member_start = plain_member_record(data, size, name, name_len, bits, extra, extra_len, flags,
                                                        method, external, s_plain, s_size, s_offset, usual_flags);
            if (member_start != 0) {
                plain_record = local_read = 1;
                data_offset = member_start;
            }
        }
        int zipfile_plain = zipfile_plain_record(bits, extra, extra_len, h[6]);
        all_zipfile_plain &= zipfile_plain;
        names_nul_free &= !(bits & NAME_NUL);
        names_lower &= !(bits & NAME_UPPER);
        if (index == 0) {
            const unsigned char *slash = memchr(name, '/', (size_t)name_len);
            folder = name;
            folder_len = slash == NULL ? 0 : slash - name + 1;
            folder_shared = folder_len > 0;
        }
        else if (folder_shared && (name_len < folder_len || memcmp(name, folder, (size_t)folder_len) != 0))
            folder_shared = 0;
        if (append_new(names, PyBytes_FromStringAndSize((const char *)name, name_len)) < 0 ||
            append_int(positions, position) < 0)
            goto finish;
        if (plain_record && entry_type != NULL) {
            if (append_new(entries, plain_entry(entry_type, field_names, field_offsets, name, name_len, index, flags,
                                                method, crc32, s_size, s_plain, s_offset, data_offset, local_read)) < 0)
                goto finish;
            position += record_size;
            remaining -= record_size;
            continue;
        }
        if (PyList_Append(entries, Py_None) < 0)
            goto finish;
        PyObject *raw = Py_BuildValue("(nny#IIKKKKKy#INN)", index, position, (const char *)name, name_len, flags,
                                      method, (unsigned long long)crc32, (unsigned long long)s_size,
                                      (unsigned long long)s_plain, (unsigned long long)s_offset,
                                      (unsigned long long)external, (const char *)extra, extra_len, time,
                                      stat_error ? PyUnicode_FromString(stat_error) : Py_NewRef(Py_None),
                                      PyBool_FromLong(zipfile_plain));
        if (append_new(records, raw) < 0) /* "N" handed the tuple our reference to the error text */
            goto finish;
        position += record_size;
        remaining -= record_size;
    }
    out = Py_BuildValue("(OOOONnnNNN)", records, entries, names, positions, PyBool_FromLong(all_zipfile_plain),
                        position, remaining, PyBool_FromLong(names_lower), PyBool_FromLong(names_nul_free),
                        PyBool_FromLong(folder_shared));
    goto finish;
refuse:
    out = Py_NewRef(Py_None);
finish:
    Py_XDECREF(records);
    Py_XDECREF(entries);
    Py_XDECREF(names);
    Py_XDECREF(positions);
    PyBuffer_Release(&view);
names:
    for (int i = 0; i < ENTRY_FIELDS; i++)
        Py_XDECREF(field_names[i]);
    return out;
}

/* A non-negative int slot's value; -1 when it is unset, not an int, negative or wider than 64 bits. */
static int
slot_u64(PyObject *entry, Py_ssize_t offset, uint64_t *value)
{
    PyObject *held = *(PyObject **)((char *)entry + offset);
    if (held == NULL || !PyLong_CheckExact(held))
        return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(held);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    *value = (uint64_t)v;
    return 0;
}

/* slot_offsets for fields named by C strings: -1 on error, 0 otherwise (offsets all -1: not readable). */
static int
named_slot_offsets(PyObject *entry_type, const char *const *fields, int count, Py_ssize_t *offsets)
{
    PyObject *names[8] = {NULL};
    int status = -1;
    if (count > 8) {
        PyErr_SetString(PyExc_SystemError, "named_slot_offsets: too many fields");
        return -1;
    }
    for (int i = 0; i < count; i++) {
        names[i] = PyUnicode_InternFromString(fields[i]);
        if (names[i] == NULL)
            goto done;
    }
    status = slot_offsets(entry_type, names, count, offsets);
done:
    for (int i = 0; i < count; i++)
        Py_XDECREF(names[i]);
    return status;
}

static const char *const span_fields[] = {"header_offset", "data_offset", "compressed_size", "directory"};
#define SPAN_FIELDS 4

/*
 * ordered_spans(entries, entry_type) -> True, False or None
 *
 * The fast path of torchzip._Reader.check_overlaps: True when the entries' header offsets strictly increase
 * and no member with bytes (not a directory, compressed size not 0) starts before the end (data offset +
 * compressed size) of an earlier one, False when either fails (the reference then sorts and words the
 * finding), None when it cannot say (an entry of another class, a field that is not a plain int or bool,
 * an end past 2**64): the reference decides.
 */
static PyObject *
ordered_spans(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "ordered_spans takes a sequence of entries and their class");
        return NULL;
    }
    PyObject *entry_type = args[1];
    Py_ssize_t offsets[SPAN_FIELDS];
    PyObject *out = NULL, *seq = NULL;
    if (named_slot_offsets(entry_type, span_fields, SPAN_FIELDS, offsets) < 0)
        return NULL;
    if (offsets[0] < 0)
        return Py_NewRef(Py_None);
    seq = PySequence_Fast(args[0], "ordered_spans: entries must be a sequence");
    if (seq == NULL)
        goto done;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    uint64_t previous = 0, reach = 0;
    int any_kept = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *entry = items[i];
        uint64_t start, data, size;
        if (!Py_IS_TYPE(entry, (PyTypeObject *)entry_type) || slot_u64(entry, offsets[0], &start) < 0 ||
            slot_u64(entry, offsets[1], &data) < 0 || slot_u64(entry, offsets[2], &size) < 0) {
            out = Py_NewRef(Py_None);
            goto done;
        }
        PyObject *directory = *(PyObject **)((char *)entry + offsets[3]);
        if (directory != Py_True && directory != Py_False) {
            out = Py_NewRef(Py_None);
            goto done;
        }
        if (i > 0 && start <= previous) {
            out = Py_NewRef(Py_False);
            goto done;
        }
        previous = start;
        if (directory == Py_True || size == 0)
            continue;
        if (data > UINT64_MAX - size) {
            out = Py_NewRef(Py_None);
            goto done;
        }
        if (any_kept && start < reach) {
            out = Py_NewRef(Py_False);
            goto done;
        }
        if (!any_kept || data + size > reach)
            reach = data + size;
        any_kept = 1;
    }
    out = Py_NewRef(Py_True);
done:
    Py_XDECREF(seq);
    return out;
}

/* ('storage', <class>, <str key>, <location>, <int numel>): a tuple of five, the first item an exact str equal
 * to "storage", the key an exact str, the count an exact int, as torch.save writes them. */
static int
plain_storage_id(PyObject *pid)
{
    return PyTuple_CheckExact(pid) && PyTuple_GET_SIZE(pid) == 5 && PyUnicode_CheckExact(PyTuple_GET_ITEM(pid, 0)) &&
           PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(pid, 0), "storage") == 0 &&
           PyUnicode_CheckExact(PyTuple_GET_ITEM(pid, 2)) && PyLong_CheckExact(PyTuple_GET_ITEM(pid, 4));
}

/*
 * storage_columns(statements) -> (keys, classes, numels) or None
 *
 * consistency._storage_columns compiled: when every statement's pid (read as the attribute "pid") is
 * ('storage', <class>, <str key>, <location>, <int numel>) -- a tuple of five, the first item an exact
 * str equal to "storage", the key an exact str, the count an exact int, as torch.save writes them --
 * their keys, classes and counts as three lists, in order; otherwise None. Nothing is called but the
 * attribute read and the comparison of two exact strs.
 */
static PyObject *
storage_columns(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "storage_columns takes one sequence of statements");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[0], "storage_columns: statements must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *pid_name = PyUnicode_InternFromString("pid");
    PyObject *keys = PyList_New(count), *classes = PyList_New(count), *numels = PyList_New(count);
    PyObject *out = NULL;
    if (pid_name == NULL || keys == NULL || classes == NULL || numels == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pid = PyObject_GetAttr(items[i], pid_name);
        if (pid == NULL)
            goto done;
        int plain = plain_storage_id(pid);
        if (!plain) {
            Py_DECREF(pid);
            out = Py_NewRef(Py_None);
            goto done;
        }
        PyList_SET_ITEM(keys, i, Py_NewRef(PyTuple_GET_ITEM(pid, 2)));
        PyList_SET_ITEM(classes, i, Py_NewRef(PyTuple_GET_ITEM(pid, 1)));
        PyList_SET_ITEM(numels, i, Py_NewRef(PyTuple_GET_ITEM(pid, 4)));
        Py_DECREF(pid);
    }
    out = PyTuple_Pack(3, keys, classes, numels);
done:
    /* A list left part-filled (None returned) holds NULL items, which list deallocation skips. */
    Py_XDECREF(keys);
    Py_XDECREF(classes);
    Py_XDECREF(numels);
    Py_XDECREF(pid_name);
    Py_DECREF(seq);
    return out;
}

static const char *const flag_fields[] = {"name", "directory", "size"};
#define FLAG_FIELDS 3

/*
 * entry_flags(entries, entry_type, folder) -> bytes or None
 *
 * torchzip.entry_flags compiled: a byte per entry, the sum of FLAG_IN_FOLDER (1: the name starts with
 * `folder`), FLAG_DIRECTORY (2), FLAG_EMPTY (4: uncompressed size 0), FLAG_PICKLE (8: the name ends
 * in ".pkl") and FLAG_ENDS_IN_L (16: in "l" or "L"); None when an entry is not of entry_type or a field not an exact str, bool or int.
 */
static PyObject *
entry_flags(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyType_Check(args[1]) || !PyUnicode_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "entry_flags takes entries, their class and a folder name");
        return NULL;
    }
    PyObject *entry_type = args[1], *folder = args[2];
    Py_ssize_t offsets[FLAG_FIELDS];
    PyObject *out = NULL, *seq = NULL, *pkl = NULL;
    if (named_slot_offsets(entry_type, flag_fields, FLAG_FIELDS, offsets) < 0)
        return NULL;
    if (offsets[0] < 0)
        return Py_NewRef(Py_None);
    pkl = PyUnicode_FromString(".pkl");
    seq = PySequence_Fast(args[0], "entry_flags: entries must be a sequence");
    if (pkl == NULL || seq == NULL)
        goto done;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *flags = PyBytes_FromStringAndSize(NULL, count);
    if (flags == NULL)
        goto done;
    char *flag = PyBytes_AS_STRING(flags);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *entry = items[i];
        if (!Py_IS_TYPE(entry, (PyTypeObject *)entry_type)) {
            Py_DECREF(flags);
            out = Py_NewRef(Py_None);
            goto done;
        }
        PyObject *name = *(PyObject **)((char *)entry + offsets[0]);
        PyObject *directory = *(PyObject **)((char *)entry + offsets[1]);
        PyObject *size = *(PyObject **)((char *)entry + offsets[2]);
        if (name == NULL || !PyUnicode_CheckExact(name) || (directory != Py_True && directory != Py_False) ||
            size == NULL || !PyLong_CheckExact(size)) {
            Py_DECREF(flags);
            out = Py_NewRef(Py_None);
            goto done;
        }
        Py_ssize_t in_folder = PyUnicode_Tailmatch(name, folder, 0, PY_SSIZE_T_MAX, -1);
        Py_ssize_t pickle = PyUnicode_Tailmatch(name, pkl, 0, PY_SSIZE_T_MAX, 1);
        int empty = PyObject_Not(size);
        if (in_folder < 0 || pickle < 0 || empty < 0) {
            Py_DECREF(flags);
            goto done;
        }
        Py_ssize_t length = PyUnicode_GET_LENGTH(name);
        Py_UCS4 last = length ? PyUnicode_READ_CHAR(name, length - 1) : 0;
        flag[i] = (char)((in_folder ? 1 : 0) | (directory == Py_True ? 2 : 0) | (empty ? 4 : 0) | (pickle ? 8 : 0) |
                         (last == 'l' || last == 'L' ? 16 : 0));
    }
    out = flags;
done:
    Py_XDECREF(seq);
    Py_XDECREF(pkl);
    return out;
}

/* The value of an exact int as a long long; -1 when it is not one or does not fit. */
static int
exact_long(PyObject *value, long long *out)
{
    if (value == NULL || !PyLong_CheckExact(value))
        return -1;
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (*out == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return -1;
    }
    return 0;
}

/*
 * fit_storages(statements, size_of, folder, files, entries, start, entry_type) -> True, False or None
 *
 * One pickle's part of consistency._fitting_storages, without a Python step per tensor: whether every
 * statement's pid is a plain storage id (see storage_columns), size_of(class) -- called when the class
 * differs from the previous id's -- is not None, files[start + i] == folder + key and entries[start + i]
 * .size == size * numel for the i-th id. None when it cannot say (an entry of another class, a count or
 * size past 64 bits, size_of returning something else than an int or None): the reference then decides.
 */
static PyObject *
fit_storages(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 7 || !PyUnicode_Check(args[2]) || !PyList_CheckExact(args[3]) || !PyList_CheckExact(args[4]) ||
        !PyType_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "fit_storages(statements, size_of, folder, files, entries, start, type)");
        return NULL;
    }
    PyObject *size_of = args[1], *folder = args[2], *files = args[3], *entries = args[4], *entry_type = args[6];
    Py_ssize_t start = PyLong_AsSsize_t(args[5]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    static const char *const size_field[] = {"size"};
    Py_ssize_t size_offset;
    if (named_slot_offsets(entry_type, size_field, 1, &size_offset) < 0)
        return NULL;
    if (size_offset < 0)
        return Py_NewRef(Py_None);
    PyObject *seq = PySequence_Fast(args[0], "fit_storages: statements must be a sequence");
    if (seq == NULL)
        return NULL;
    PyObject *pid_name = PyUnicode_InternFromString("pid");
    PyObject *out = NULL, *last_class = NULL, *pid = NULL; /* the last two held while used */
    if (pid_name == NULL)
        goto done;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_ssize_t folder_len = PyUnicode_GET_LENGTH(folder);
    if (start < 0 || start > PyList_GET_SIZE(files) || count > PyList_GET_SIZE(files) - start ||
        PyList_GET_SIZE(entries) != PyList_GET_SIZE(files)) {
        out = Py_NewRef(Py_False);
        goto done;
    }
    long long element = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_XSETREF(pid, PyObject_GetAttr(items[i], pid_name));
        if (pid == NULL)
            goto done;
        int plain = plain_storage_id(pid);
        if (!plain) {
            out = Py_NewRef(Py_False);
            goto done;
        }
        PyObject *cls = PyTuple_GET_ITEM(pid, 1), *key = PyTuple_GET_ITEM(pid, 2);
        if (cls != last_class) {
            PyObject *size = PyObject_CallOneArg(size_of, cls);
            if (size == NULL)
                goto done;
            if (size == Py_None) {
                Py_DECREF(size);
                out = Py_NewRef(Py_False); /* not a torch storage class: the reference says False too */
                goto done;
            }
            int bad = exact_long(size, &element) < 0;
            Py_DECREF(size);
            if (bad) {
                out = Py_NewRef(Py_None);
                goto done;
            }
            Py_XSETREF(last_class, Py_NewRef(cls));
        }
        long long numel, have, needed;
        PyObject *entry = PyList_GET_ITEM(entries, start + i);
        if (exact_long(PyTuple_GET_ITEM(pid, 4), &numel) < 0 || !Py_IS_TYPE(entry, (PyTypeObject *)entry_type) ||
            exact_long(*(PyObject **)((char *)entry + size_offset), &have) < 0 ||
            __builtin_mul_overflow(element, numel, &needed)) {
            out = Py_NewRef(Py_None);
            goto done;
        }
        PyObject *file = PyList_GET_ITEM(files, start + i);
        if (!PyUnicode_CheckExact(file)) {
            out = Py_NewRef(Py_None);
            goto done;
        }
        Py_ssize_t file_len = PyUnicode_GET_LENGTH(file);
        int named = file_len == folder_len + PyUnicode_GET_LENGTH(key);
        if (named) {
            Py_ssize_t head = PyUnicode_Tailmatch(file, folder, 0, folder_len, -1);
            Py_ssize_t tail = head > 0 ? PyUnicode_Tailmatch(file, key, folder_len, file_len, 1) : head;
            if (head < 0 || tail < 0)
                goto done;
            named = head > 0 && tail > 0;
        }
        if (!named || have != needed) {
            out = Py_NewRef(Py_False);
            goto done;
        }
    }
    out = Py_NewRef(Py_True);
done:
    Py_XDECREF(pid);
    Py_XDECREF(last_class);
    Py_XDECREF(pid_name);
    Py_DECREF(seq);
    return out;
}

/*
 * find_bytes(data, needle, start, end) -> int: bytes.find(needle, start, end) over any contiguous buffer
 * (bytes or a mapped file, searched in place). zipdir.check_tail looks for a second end-of-directory
 * signature in up to the last 64 KiB of every archive; glibc's memmem does that in about half the time of
 * bytes.find on tensor data.
 */
static PyObject *
find_bytes(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    Py_ssize_t start, end;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "find_bytes(data, needle, start, end)");
        return NULL;
    }
    if ((start = PyNumber_AsSsize_t(args[2], PyExc_OverflowError)) == -1 && PyErr_Occurred())
        return NULL;
    if ((end = PyNumber_AsSsize_t(args[3], PyExc_OverflowError)) == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer data, needle;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &needle, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    /* bytes.find's slice rules for non-negative bounds: clamp to the buffer, empty when start > end. */
    Py_ssize_t found = -1;
    if (start >= 0 && end >= 0) {
        if (end > data.len)
            end = data.len;
        if (start <= end && needle.len <= end - start) {
            const unsigned char *base = (const unsigned char *)data.buf;
            const unsigned char *hit;
            Py_BEGIN_ALLOW_THREADS
#ifdef _GNU_SOURCE
            hit = memmem(base + start, (size_t)(end - start), needle.buf, (size_t)needle.len);
#else
            hit = NULL;
            const unsigned char *at = base + start, *stop = base + end - needle.len;
            const unsigned char first = needle.len ? ((const unsigned char *)needle.buf)[0] : 0;
            if (needle.len == 0)
                hit = at;
            while (hit == NULL && at <= stop && (at = memchr(at, first, (size_t)(stop - at + 1))) != NULL) {
                if (memcmp(at, needle.buf, (size_t)needle.len) == 0)
                    hit = at;
                else
                    at++;
            }
#endif
            Py_END_ALLOW_THREADS
            found = hit == NULL ? -1 : hit - base;
        }
    }
    else {
        found = -2; /* negative bounds: the caller's own bytes.find handles them */
    }
    PyBuffer_Release(&needle);
    PyBuffer_Release(&data);
    if (found == -2) {
        PyErr_SetString(PyExc_ValueError, "find_bytes takes non-negative bounds");
        return NULL;
    }
    return PyLong_FromSsize_t(found);
}

#include "_speedups_machine.h"

static PyMethodDef methods[] = {
    {"layout_chunk", (PyCFunction)(void (*)(void))layout_chunk, METH_FASTCALL,
     "Decode one chunk of a pickle's opcodes (see picklewarden.pickle.layout)."},
    {"central_directory", (PyCFunction)(void (*)(void))central_directory, METH_FASTCALL,
     "Read a ZIP's central-directory records (see picklewarden.containers.zipdir)."},
    {"ordered_spans", (PyCFunction)(void (*)(void))ordered_spans, METH_FASTCALL,
     "Whether ZIP entries lie in file order without overlapping (see picklewarden.containers.torchzip)."},
    {"entry_flags", (PyCFunction)(void (*)(void))entry_flags, METH_FASTCALL,
     "A byte of flags per ZIP entry: in a folder, directory, empty, pickle (see picklewarden.containers.torchzip)."},
    {"fit_storages", (PyCFunction)(void (*)(void))fit_storages, METH_FASTCALL,
     "Whether one pickle's storage ids name the data entries in order, each of its size (see containers.consistency)."},
    {"storage_columns", (PyCFunction)(void (*)(void))storage_columns, METH_FASTCALL,
     "The keys, classes and counts of plain storage persistent ids (see picklewarden.containers.consistency)."},
    {"find_bytes", (PyCFunction)(void (*)(void))find_bytes, METH_FASTCALL,
     "bytes.find over any contiguous buffer, searched in place (see picklewarden.containers.zipdir)."},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "Give the machine's compiled callbacks the record classes they build (see pickle/machine.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "picklewarden._speedups", "Compiled parsing loops; they never execute input.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module != NULL && machine_init(module) < 0)
        Py_CLEAR(module);
    return module;
}
