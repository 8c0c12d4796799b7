/*
 * _fastsend: a leg's packet state, and the media clock's common case in C.
 *
 * PacketState is what one RTP leg sends: SSRC, sequence number, timestamp, payload type,
 * marker, the connected socket's fd, the send counters, the packet size in samples (= bytes
 * for every codec we speak), the silence to send when nothing plays (None: skip), whether the
 * player has work for Python (``busy``), and the slice of pre-encoded audio the player handed
 * over (a buffer reference, the next offset, where slicing must stop, and the playback's
 * played/last_seq/last_ts while it is handed over).  RtpLeg (rtp/leg.py) subclasses it, so the
 * leg owns that state and everything else reads and writes it as plain attributes.
 *
 * Why C: at 1,000+ legs about a quarter of the server's CPU went to the interpreter running
 * LegDriver.tick once per leg per packet.  run_group() does the simple cases of that tick --
 * slice the handed-over audio, or send silence, or skip -- from the struct alone: it reads no
 * Python attribute and calls no Python code for them.  Anything else (the player is busy: a
 * boundary, loading, overlay, mix, pause, bridging, DTMF; or no connected socket) is handed to
 * the leg's ``on_tick`` (LegDriver.tick), which reads and writes the same fields, so both paths
 * share one state and tests/unit/test_fastsend.py holds them to identical packets and counters.
 *
 *   PacketState()                     the type (RtpLeg's base)
 *   run_group(items) -> list[(item, exc)] | None
 *       One clock sub-slot: a PacketState item is ticked here (or its on_tick called), any other
 *       item is called; a failing item is reported and the others still run.
 *   counters() -> {'fast', 'silence', 'python'}
 *   send_packet(fd, b1, seq, ts, ssrc, data, off, n)   one packet from Python (a helper)
 *
 * The GIL is held across the sends: a group of ~75 sends takes a few hundred microseconds, and
 * giving the GIL away mid-group would let another thread (a decoder) hold the clock for a whole
 * switch interval.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#define HDR 12
#define STACK_PAYLOAD 1024

typedef struct {
    PyObject_HEAD
    /* the hot fields first: one tick touches these two cache lines */
    int fd;                   /* the connected sending socket, -1: none (the Python path sends) */
    uint16_t seq;
    char marker;              /* the next packet starts a talkspurt */
    char busy;                /* the player has work only Python does */
    uint32_t ssrc;
    uint32_t timestamp;
    int payload_type;
    Py_ssize_t samples;       /* RTP clock ticks per packet = payload bytes per packet */
    PyObject *slice_data;     /* bytes / bytearray handed over by the player, or NULL */
    Py_ssize_t slice_offset;  /* next byte to send */
    Py_ssize_t slice_end;     /* slice while slice_offset + samples < slice_end */
    long long slice_played;   /* the handed-over playback's samples_played */
    long long slice_last_seq; /* its last_seq / last_ts, -1 = None */
    long long slice_last_ts;
    PyObject *silence;        /* bytes sent when nothing plays, or NULL/None: skip */
    unsigned long long packets_sent, bytes_sent, send_errors;
    PyObject *on_tick;        /* the Python tick (LegDriver.tick) */
} PacketState;

static PyTypeObject PacketState_Type;
static PyObject *ps_call(PacketState *self, PyObject *args, PyObject *kwds);

/* Counters kept by the module (diagnostics and tests): packets sent by C, ticks handed to Python. */
static unsigned long long n_fast = 0, n_silence = 0, n_python = 0;

/* -- the type ---------------------------------------------------------------------------- */

static PyObject *ps_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PacketState *self = (PacketState *)type->tp_alloc(type, 0);  /* zeroed; arguments are the subclass's */
    if (self == NULL) return NULL;
    self->fd = -1;
    self->marker = 1;
    self->samples = 160;
    self->slice_last_seq = self->slice_last_ts = -1;
    return (PyObject *)self;
}

static int ps_traverse(PacketState *self, visitproc visit, void *arg) {
    Py_VISIT(self->slice_data);
    Py_VISIT(self->silence);
    Py_VISIT(self->on_tick);
    return 0;
}

static int ps_clear(PacketState *self) {
    Py_CLEAR(self->slice_data);
    Py_CLEAR(self->silence);
    Py_CLEAR(self->on_tick);
    return 0;
}

static void ps_dealloc(PacketState *self) {
    PyObject_GC_UnTrack(self);
    ps_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Unsigned header fields: range-checked so the struct always holds a valid header. */
typedef struct {
    size_t offset;
    int bits;
} UField;

static const UField F_SEQ = {offsetof(PacketState, seq), 16};
static const UField F_TS = {offsetof(PacketState, timestamp), 32};
static const UField F_SSRC = {offsetof(PacketState, ssrc), 32};
static const UField F_PT = {offsetof(PacketState, payload_type), 7};

static PyObject *get_u(PacketState *self, void *closure) {
    const UField *f = closure;
    char *p = (char *)self + f->offset;
    if (f->bits == 16) return PyLong_FromUnsignedLong(*(uint16_t *)p);
    if (f->bits == 32) return PyLong_FromUnsignedLong(*(uint32_t *)p);
    return PyLong_FromLong(*(int *)p);
}

static int set_u(PacketState *self, PyObject *value, void *closure) {
    const UField *f = closure;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete a packet state field");
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "value out of range for a %d-bit field", f->bits);
        }
        return -1;
    }
    if (v >> f->bits) {
        PyErr_Format(PyExc_ValueError, "value out of range for a %d-bit field", f->bits);
        return -1;
    }
    char *p = (char *)self + f->offset;
    if (f->bits == 16) *(uint16_t *)p = (uint16_t)v;
    else if (f->bits == 32) *(uint32_t *)p = (uint32_t)v;
    else *(int *)p = (int)v;
    return 0;
}

/* last_seq / last_ts of the handed-over playback: int or None (-1 inside). */
static PyObject *get_opt(PacketState *self, void *closure) {
    long long v = *(long long *)((char *)self + (size_t)closure);
    if (v < 0) Py_RETURN_NONE;
    return PyLong_FromLongLong(v);
}

static int set_opt(PacketState *self, PyObject *value, void *closure) {
    long long v = -1;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete a packet state field");
        return -1;
    }
    if (value != Py_None) {
        v = PyLong_AsLongLong(value);
        if (v == -1 && PyErr_Occurred()) return -1;
        if (v < 0 || v > 0xFFFFFFFFLL) {
            PyErr_SetString(PyExc_ValueError, "last_seq/last_ts out of range");
            return -1;
        }
    }
    *(long long *)((char *)self + (size_t)closure) = v;
    return 0;
}

static PyGetSetDef ps_getset[] = {
    {"seq", (getter)get_u, (setter)set_u, "next RTP sequence number (16 bits)", (void *)&F_SEQ},
    {"timestamp", (getter)get_u, (setter)set_u, "next RTP timestamp (32 bits)", (void *)&F_TS},
    {"ssrc", (getter)get_u, (setter)set_u, "SSRC (32 bits)", (void *)&F_SSRC},
    {"payload_type", (getter)get_u, (setter)set_u, "RTP payload type (7 bits)", (void *)&F_PT},
    {"slice_last_seq", (getter)get_opt, (setter)set_opt, "the handed-over playback's last_seq",
     (void *)offsetof(PacketState, slice_last_seq)},
    {"slice_last_ts", (getter)get_opt, (setter)set_opt, "the handed-over playback's last_ts",
     (void *)offsetof(PacketState, slice_last_ts)},
    {NULL},
};

static PyMemberDef ps_members[] = {
    {"fd", T_INT, offsetof(PacketState, fd), 0, "the connected sending socket's fd, -1: the Python path sends"},
    {"marker_next", T_BOOL, offsetof(PacketState, marker), 0, "the next packet starts a talkspurt"},
    {"busy", T_BOOL, offsetof(PacketState, busy), 0, "the player has work for the Python tick"},
    {"samples", T_PYSSIZET, offsetof(PacketState, samples), 0, "RTP ticks (= payload bytes) per packet"},
    {"slice_data", T_OBJECT, offsetof(PacketState, slice_data), 0, "handed-over encoded audio, or None"},
    {"slice_offset", T_PYSSIZET, offsetof(PacketState, slice_offset), 0, "next byte of slice_data to send"},
    {"slice_end", T_PYSSIZET, offsetof(PacketState, slice_end), 0, "slice while offset + samples < end"},
    {"slice_played", T_LONGLONG, offsetof(PacketState, slice_played), 0, "the handed-over playback's samples_played"},
    {"silence", T_OBJECT, offsetof(PacketState, silence), 0, "payload when nothing plays; None: skip"},
    {"packets_sent", T_ULONGLONG, offsetof(PacketState, packets_sent), 0, NULL},
    {"bytes_sent", T_ULONGLONG, offsetof(PacketState, bytes_sent), 0, "payload octets, as RTCP counts them"},
    {"send_errors", T_ULONGLONG, offsetof(PacketState, send_errors), 0, NULL},
    {"on_tick", T_OBJECT, offsetof(PacketState, on_tick), 0, "the Python tick, for what C does not do"},
    {NULL},
};

static PyTypeObject PacketState_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mediasrv.rtp._fastsend.PacketState",
    .tp_doc = "What one RTP leg sends: header fields, fd, counters, the handed-over slice (see module doc).",
    .tp_basicsize = sizeof(PacketState),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = ps_new,
    .tp_call = (ternaryfunc)ps_call,
    .tp_dealloc = (destructor)ps_dealloc,
    .tp_traverse = (traverseproc)ps_traverse,
    .tp_clear = (inquiry)ps_clear,
    .tp_members = ps_members,
    .tp_getset = ps_getset,
};

/* -- sending ------------------------------------------------------------------------------ */

static inline void pack_header(unsigned char *h, int b1, unsigned seq, uint32_t ts, uint32_t ssrc) {
    h[0] = 0x80;
    h[1] = (unsigned char)b1;
    h[2] = (unsigned char)(seq >> 8);
    h[3] = (unsigned char)seq;
    h[4] = (unsigned char)(ts >> 24);
    h[5] = (unsigned char)(ts >> 16);
    h[6] = (unsigned char)(ts >> 8);
    h[7] = (unsigned char)ts;
    h[8] = (unsigned char)(ssrc >> 24);
    h[9] = (unsigned char)(ssrc >> 16);
    h[10] = (unsigned char)(ssrc >> 8);
    h[11] = (unsigned char)ssrc;
}

/* One datagram: header + payload, one syscall.  0 sent, else errno. */
static int send_rtp(int fd, const unsigned char *hdr, const char *payload, Py_ssize_t len) {
    ssize_t r;
    if (len <= STACK_PAYLOAD) {
        unsigned char buf[HDR + STACK_PAYLOAD];
        memcpy(buf, hdr, HDR);
        memcpy(buf + HDR, payload, (size_t)len);
        do {
            r = send(fd, buf, (size_t)(HDR + len), 0);
        } while (r < 0 && errno == EINTR);
    } else {
        struct iovec iov[2] = {{(void *)hdr, HDR}, {(void *)payload, (size_t)len}};
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov;
        msg.msg_iovlen = 2;
        do {
            r = sendmsg(fd, &msg, 0);
        } while (r < 0 && errno == EINTR);
    }
    return r < 0 ? errno : 0;
}

static inline void count_send(PacketState *s, int failed, Py_ssize_t n) {
    if (failed) {
        s->send_errors++;
    } else {
        s->packets_sent++;
        s->bytes_sent += (unsigned long long)n;
    }
}

/*
 * The packets of one group are built first and sent together (flush): the sends then leave
 * back to back, as the C sender's do -- the receiver side wakes once per burst rather than
 * once per packet, which is most of the kernel's per-packet cost on loopback.  No Python code
 * runs between building and sending: the batch is flushed before any Python tick is called and
 * at the end of the group.  The counters are written after the send.
 */
#define BATCH 64
typedef struct {
    unsigned char buf[HDR + STACK_PAYLOAD];
    Py_ssize_t len, n;
    PacketState *state;  /* a strong reference until flushed */
} Pending;
static Pending pend[BATCH];
static int npend = 0;

static void flush(void) {
    int count = npend;
    npend = 0;
    unsigned char err[BATCH];
    for (int i = 0; i < count; i++) {
        ssize_t r;
        do {
            r = send(pend[i].state->fd, pend[i].buf, (size_t)pend[i].len, 0);
        } while (r < 0 && errno == EINTR);
        err[i] = r < 0;
    }
    for (int i = 0; i < count; i++) {
        count_send(pend[i].state, err[i], pend[i].n);
        Py_DECREF(pend[i].state);
    }
}

/* The bytes of a slice buffer: bytes and bytearray (a streaming source's growing buffer) only. */
static inline const char *buffer_of(PyObject *o, Py_ssize_t *len) {
    if (PyBytes_CheckExact(o)) {
        *len = PyBytes_GET_SIZE(o);
        return PyBytes_AS_STRING(o);
    }
    if (PyByteArray_CheckExact(o)) {
        *len = PyByteArray_GET_SIZE(o);
        return PyByteArray_AS_STRING(o);
    }
    return NULL;
}

/*
 * LegDriver.tick's simple cases on the struct alone.  1 done here, 0 not simple (call on_tick;
 * nothing was changed).  Mirrors, in order:
 *   slice_data handed over and slice_offset + n < slice_end: send that slice
 *   elif busy: Python (the player's slow path)
 *   else: silence, or skip when silence is None
 */
static int state_tick(PacketState *s) {
    Py_ssize_t n = s->samples, plen, len;
    const char *payload;
    int slicing = 0;
    PyObject *d = s->slice_data;
    if (n <= 0) return 0;
    if (d != NULL && d != Py_None && s->slice_offset + n < s->slice_end) {
        const char *buf = buffer_of(d, &len);
        if (buf == NULL || s->slice_offset < 0 || s->slice_offset + n > len) return 0;  /* Python's way */
        payload = buf + s->slice_offset;
        plen = n;
        slicing = 1;
    } else if (s->busy) {
        return 0;
    } else if (s->silence == NULL || s->silence == Py_None) {  /* skip: time passes, next packet starts a talkspurt */
        s->timestamp += (uint32_t)n;
        s->marker = 1;
        return 1;
    } else if (PyBytes_CheckExact(s->silence)) {
        payload = PyBytes_AS_STRING(s->silence);
        plen = PyBytes_GET_SIZE(s->silence);
    } else {
        return 0;
    }
    if (s->fd < 0) return 0;  /* no connected socket: the leg's transmit() in Python */

    /* decided: from here on this packet is done in C */
    unsigned seq = s->seq;
    uint32_t ts = s->timestamp;
    int b1 = s->payload_type | (s->marker ? 0x80 : 0);
    if (slicing) {
        s->slice_offset += n;
        s->slice_played += n;
        s->slice_last_seq = seq;
        s->slice_last_ts = ts;
        n_fast++;
    } else {
        n_silence++;
    }
    s->marker = 0;
    s->seq = (uint16_t)(seq + 1);
    s->timestamp = ts + (uint32_t)n;
    if (plen <= STACK_PAYLOAD && npend < BATCH) {  /* sent by flush(), with the group's other packets */
        Pending *q = &pend[npend++];
        pack_header(q->buf, b1, seq, ts, s->ssrc);
        memcpy(q->buf + HDR, payload, (size_t)plen);
        q->len = HDR + plen;
        q->n = n;
        q->state = (PacketState *)Py_NewRef(s);
    } else {
        unsigned char hdr[HDR];
        pack_header(hdr, b1, seq, ts, s->ssrc);
        count_send(s, send_rtp(s->fd, hdr, payload, plen) != 0, n);
    }
    return 1;
}

/* state(): one tick, as run_group does it for a group of one. */
static PyObject *ps_call(PacketState *self, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) || (kwds != NULL && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "a PacketState is called with no arguments");
        return NULL;
    }
    if (state_tick(self)) {
        if (npend) flush();
        Py_RETURN_NONE;
    }
    if (npend) flush();
    PyObject *call = self->on_tick;
    if (call == NULL || call == Py_None) {
        PyErr_SetString(PyExc_TypeError, "a PacketState on the clock needs on_tick for what C does not do");
        return NULL;
    }
    n_python++;
    Py_INCREF(call);
    PyObject *res = PyObject_CallNoArgs(call);
    Py_DECREF(call);
    return res;
}

static int add_failure(PyObject **failed, PyObject *item) {
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (exc != NULL && tb != NULL) PyException_SetTraceback(exc, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    if (*failed == NULL && !(*failed = PyList_New(0))) { Py_XDECREF(exc); return -1; }
    PyObject *pair = PyTuple_Pack(2, item, exc ? exc : Py_None);
    Py_XDECREF(exc);
    if (pair == NULL) return -1;
    int r = PyList_Append(*failed, pair);
    Py_DECREF(pair);
    return r;
}

/*
 * Prefetching.  At 1,000 legs each tick touches a struct and a payload last seen 20 ms ago;
 * while leg i is done, the next legs' structs and payload bytes are brought in.  Only a hint:
 * it reads through references the group tuple holds, with no Python code running in between.
 */
static inline void pf(const void *p) {
    if (p != NULL) __builtin_prefetch(p);
}

#define AHEAD 8
static inline void prefetch_ahead(PyObject *items, Py_ssize_t i, Py_ssize_t count) {
    if (i + AHEAD < count) {
        PyObject *o = PyTuple_GET_ITEM(items, i + AHEAD);
        pf(o);
        pf((char *)o + 64);
    }
    if (i + AHEAD / 2 < count) {
        PyObject *o = PyTuple_GET_ITEM(items, i + AHEAD / 2);
        if (Py_IS_TYPE(o, &PacketState_Type) || PyType_IsSubtype(Py_TYPE(o), &PacketState_Type)) {
            PacketState *s = (PacketState *)o;
            PyObject *d = s->slice_data;
            if (d != NULL && PyBytes_CheckExact(d) && s->slice_offset >= 0 && s->slice_offset < PyBytes_GET_SIZE(d)) {
                const char *b = PyBytes_AS_STRING(d) + s->slice_offset;
                pf(b);
                pf(b + 64);
                pf(b + 128);
            } else {
                pf(s->silence);
            }
        }
    }
}

static PyObject *run_group(PyObject *module, PyObject *items) {
    if (!PyTuple_Check(items)) {
        PyErr_SetString(PyExc_TypeError, "run_group expects a tuple");
        return NULL;
    }
    PyObject *failed = NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        PyObject *call = item;
        prefetch_ahead(items, i, count);
        if (PyObject_TypeCheck(item, &PacketState_Type)) {
            if (npend == BATCH) flush();
            if (state_tick((PacketState *)item)) continue;
            call = ((PacketState *)item)->on_tick;
            if (call == NULL || call == Py_None) {
                PyErr_SetString(PyExc_TypeError, "a PacketState on the clock needs on_tick for what C does not do");
                if (add_failure(&failed, item) < 0) goto fail;
                continue;
            }
            n_python++;
        }
        if (npend) flush();  /* Python code runs next: nothing pending across it */
        Py_INCREF(call);  /* the call may drop the item's reference to it */
        PyObject *res = PyObject_CallNoArgs(call);
        Py_DECREF(call);
        if (res != NULL) {
            Py_DECREF(res);
        } else {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) goto fail;  /* KeyboardInterrupt etc. */
            if (add_failure(&failed, item) < 0) goto fail;
        }
    }
    if (npend) flush();
    if (failed == NULL) Py_RETURN_NONE;
    return failed;
fail:
    if (npend) flush();  /* the packets' state has advanced: send them, keep the error */
    Py_XDECREF(failed);
    return NULL;
}

static PyObject *counters(PyObject *module, PyObject *unused) {
    return Py_BuildValue("{sKsKsK}", "fast", n_fast, "silence", n_silence, "python", n_python);
}

static PyObject *send_packet(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "send_packet(fd, b1, seq, ts, ssrc, data, off, n)");
        return NULL;
    }
    long long v[5], off, n;
    for (int i = 0; i < 5; i++) {
        v[i] = PyLong_AsLongLong(args[i]);
        if (v[i] == -1 && PyErr_Occurred()) return NULL;
    }
    off = PyLong_AsLongLong(args[6]);
    if (off == -1 && PyErr_Occurred()) return NULL;
    n = PyLong_AsLongLong(args[7]);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (v[1] < 0 || v[1] > 255 || v[2] < 0 || v[2] > 0xFFFF || v[3] < 0 || v[3] > 0xFFFFFFFFLL || v[4] < 0
        || v[4] > 0xFFFFFFFFLL) {
        PyErr_SetString(PyExc_ValueError, "send_packet: header field out of range");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[5], &view, PyBUF_SIMPLE) < 0) return NULL;
    if (off < 0 || n < 0 || off > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "send_packet: slice out of range");
        return NULL;
    }
    if (off + n > view.len) n = view.len - off;  /* like a Python slice */
    unsigned char hdr[HDR];
    pack_header(hdr, (int)v[1], (unsigned)v[2], (uint32_t)v[3], (uint32_t)v[4]);
    int err = send_rtp((int)v[0], hdr, (const char *)view.buf + off, (Py_ssize_t)n);
    PyBuffer_Release(&view);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"run_group", (PyCFunction)run_group, METH_O,
     "run_group(items) -> failed | None: one clock group; PacketState items are ticked in C (or their on_tick)."},
    {"counters", (PyCFunction)counters, METH_NOARGS,
     "counters() -> {'fast', 'silence', 'python'}: packets sent in C, and ticks handed to Python."},
    {"send_packet", (PyCFunction)(void (*)(void))send_packet, METH_FASTCALL,
     "send_packet(fd, b1, seq, ts, ssrc, data, off, n): one RTP packet (header + data[off:off+n]); OSError on failure."},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *module) {
    if (PyType_Ready(&PacketState_Type) < 0) return -1;
    return PyModule_AddObjectRef(module, "PacketState", (PyObject *)&PacketState_Type);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_fastsend", "A leg's packet state and the clock's common case in C (see mediasrv/rtp/fastpath.py).",
    0, methods, slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastsend(void) {
    return PyModuleDef_Init(&moduledef);
}
