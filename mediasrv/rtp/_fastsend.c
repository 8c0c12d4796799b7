/*
 * _fastsend: the media clock's common case in C.
 *
 * Why: at 1,000+ legs about a quarter of the server's CPU went to the interpreter running
 * LegDriver.tick once per leg per packet (slice, struct.pack, concat, socket.send).  For a
 * leg in the simple state -- one main playback sliced from pre-encoded bytes (Player.fast),
 * or nothing at all (silence / skip) -- this module does the same thing in C: pack the
 * 12-byte RTP header, send header + payload with one send() on the leg's connected socket,
 * and write back the same Python attributes the Python tick writes.
 *
 * Python stays the owner of every bit of state: C holds no per-leg copy, it reads and writes
 * the LegDriver / RtpLeg / Playback attributes each time, so nothing has to be synced when a
 * leg leaves the fast path.  Any leg in any other state (a boundary, loading, overlay, mix,
 * pause, bridged, no connected socket, an unusual type) is handed to its Python tick()
 * unchanged.  LegDriver.tick in mediasrv/media/plane.py is the reference: packets, counters,
 * seq/ts and Playback.last_seq/last_ts must be identical (tests/unit/test_fastsend.py).
 *
 *   run_group(ticks) -> list[(tick, exc)] | None
 *       Call every tick in the tuple, the way ClockCore.run_until does; a bound
 *       registered tick whose driver is in the simple state is done here instead.
 *   register(tick_function, socket_type, driver_type, leg_type[, playback_type, probe_socket, player_type])
 *       Which function is LegDriver.tick, the socket class of RtpLeg.send_sock, and the
 *       classes whose __slots__ are read directly (an object of any other type: getattr);
 *       the probe socket checks that a socket's fd can be read from the object.
 *   send_packet(fd, b1, seq, ts, ssrc, data, off, n) -> None
 *       One packet from Python (the simpler per-packet variant, kept for the microbench).
 *
 * The GIL is held across the send (socket.send releases it): a group of ~75 sends takes
 * a few hundred microseconds, and giving the GIL away mid-group would let another thread
 * (a decoder) hold the clock for a whole switch interval.
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

static PyObject *tick_func = NULL;   /* LegDriver.tick (the plain function) */
static PyObject *sock_type = NULL;   /* socket.socket */

/*
 * The attributes the fast path reads and writes.  LegDriver, RtpLeg, Playback and Player use __slots__: for an
 * object of exactly the registered class the slot is read at its offset (what the member
 * descriptor does, minus the type lookup); anything else goes through PyObject_GetAttr.
 */
typedef struct {
    const char *text;
    int owner;            /* 0 generic, 1 LegDriver, 2 RtpLeg, 3 Playback, 4 Player */
    PyObject *name;       /* interned */
    Py_ssize_t offset;    /* slot offset in the registered class, 0 = use getattr */
} Field;

enum {
    F_LEG, F_PLAYER, F_SAMPLES, F_SEND_SILENCE, F_SILENCE_PAYLOAD,
    F_SEQ, F_TIMESTAMP, F_SSRC, F_PAYLOAD_TYPE, F_MARKER_NEXT, F_TRANSMIT, F_PACKETS_SENT, F_BYTES_SENT,
    F_SEND_ERRORS,
    F_FAST, F_BUSY,
    F_OFFSET, F_END, F_DATA, F_SAMPLES_PLAYED, F_LAST_SEQ, F_LAST_TS,
    F_COUNT
};

static Field fields[F_COUNT] = {
    {"leg", 1}, {"player", 1}, {"samples", 1}, {"send_silence", 1}, {"silence_payload", 1},
    {"seq", 2}, {"timestamp", 2}, {"ssrc", 2}, {"payload_type", 2}, {"marker_next", 2}, {"transmit", 2},
    {"packets_sent", 2}, {"bytes_sent", 2}, {"send_errors", 2},
    {"fast", 4}, {"busy", 4},
    {"offset", 3}, {"end", 3}, {"data", 3}, {"samples_played", 3}, {"last_seq", 3}, {"last_ts", 3},
};

static PyTypeObject *owner_type[5] = {NULL, NULL, NULL, NULL, NULL};

/*
 * A socket.socket's fd read from the object itself: CPython's PySocketSockObject starts with
 * PyObject_HEAD then ``SOCKET_T sock_fd`` (-1 once closed).  Used only when register() found
 * that layout on a probe socket; otherwise PyObject_AsFileDescriptor (a fileno() call).
 */
static int raw_sock_fd = 0;
static inline int sock_fd_of(PyObject *sock) { return *(int *)((char *)sock + sizeof(PyObject)); }

/* Counters kept by the module (diagnostics and tests): packets sent by C, legs handed to Python. */
static unsigned long long n_fast = 0, n_silence = 0, n_python = 0;

static int intern_all(void) {
    for (int i = 0; i < F_COUNT; i++)
        if (!(fields[i].name = PyUnicode_InternFromString(fields[i].text))) return -1;
    return 0;
}

static inline PyObject **slot_of(PyObject *obj, int f) {
    const Field *fd = &fields[f];
    if (fd->offset > 0 && Py_TYPE(obj) == owner_type[fd->owner]) return (PyObject **)((char *)obj + fd->offset);
    return NULL;
}

/* A new reference to obj.<field>, or NULL with an exception set. */
static inline PyObject *fget(PyObject *obj, int f) {
    PyObject **p = slot_of(obj, f);
    if (p != NULL && *p != NULL) return Py_NewRef(*p);
    return PyObject_GetAttr(obj, fields[f].name);
}

/* obj.<field> = value (value borrowed). */
static inline int fset(PyObject *obj, int f, PyObject *value) {
    PyObject **p = slot_of(obj, f);
    if (p != NULL) {
        Py_XSETREF(*p, Py_NewRef(value));
        return 0;
    }
    return PyObject_SetAttr(obj, fields[f].name, value);
}

/* An exact int attribute as long long; 1 ok, 0 not an exact int (let Python handle it), -1 error. */
static int get_ll(PyObject *obj, int f, long long *out) {
    PyObject *v = fget(obj, f);
    if (v == NULL) return -1;
    if (!PyLong_CheckExact(v)) { Py_DECREF(v); return 0; }
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(v, &overflow);
    Py_DECREF(v);
    if (overflow) return 0;
    if (*out == -1 && PyErr_Occurred()) return -1;
    return 1;
}

static int set_ll(PyObject *obj, int f, long long value) {
    PyObject *v = PyLong_FromLongLong(value);
    if (v == NULL) return -1;
    int r = fset(obj, f, v);
    Py_DECREF(v);
    return r;
}

static int add_ll(PyObject *obj, int f, long long delta) {
    long long cur;
    int r = get_ll(obj, f, &cur);
    if (r <= 0) {  /* not an int: do it the Python way */
        if (r < 0) return -1;
        PyObject *v = fget(obj, f);
        if (v == NULL) return -1;
        PyObject *d = PyLong_FromLongLong(delta);
        PyObject *s = d ? PyNumber_Add(v, d) : NULL;
        Py_DECREF(v);
        Py_XDECREF(d);
        if (s == NULL) return -1;
        r = fset(obj, f, s);
        Py_DECREF(s);
        return r;
    }
    return set_ll(obj, f, cur + delta);
}

/* Truth of an attribute: 1/0, -1 error. */
static int attr_true(PyObject *obj, int f) {
    PyObject *v = fget(obj, f);
    if (v == NULL) return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* The slot offsets of *type* for the fields owned by *owner* (0 where it is not a plain slot). */
static int learn_slots(PyTypeObject *type, int owner) {
    for (int i = 0; i < F_COUNT; i++) {
        if (fields[i].owner != owner) continue;
        fields[i].offset = 0;
        PyObject *d = PyObject_GetAttr((PyObject *)type, fields[i].name);
        if (d == NULL) {
            PyErr_Clear();
            continue;
        }
        if (Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
            if (m->type == T_OBJECT_EX && !(m->flags & READONLY)) fields[i].offset = m->offset;
        }
        Py_DECREF(d);
    }
    Py_XSETREF(owner_type[owner], (PyTypeObject *)Py_NewRef(type));
    return 0;
}

/* The connected socket's fd when leg.transmit is that socket's bound send(), else -1 (Python path). */
static int send_fd(PyObject *leg, int *fd) {
    PyObject *tx = fget(leg, F_TRANSMIT);
    if (tx == NULL) return -1;
    *fd = -1;
    if (PyCFunction_Check(tx) && strcmp(((PyCFunctionObject *)tx)->m_ml->ml_name, "send") == 0) {
        PyObject *self = PyCFunction_GET_SELF(tx);
        if (self != NULL && sock_type != NULL && PyObject_TypeCheck(self, (PyTypeObject *)sock_type)) {
            int f = raw_sock_fd ? sock_fd_of(self) : PyObject_AsFileDescriptor(self);
            if (f < 0) {
                PyErr_Clear();  /* a closed socket: Python's send raises OSError -> send_errors */
                f = -1;
            }
            *fd = f;
            Py_DECREF(tx);
            return f >= 0 ? 1 : 0;
        }
    }
    Py_DECREF(tx);
    return 0;
}

static void pack_header(unsigned char *h, int b1, unsigned seq, unsigned long ts, unsigned long ssrc) {
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

/*
 * The packets of one group are built first and sent together (flush): the sends then leave
 * back to back, as the C sender's do, instead of one every ~1 us of attribute work -- the
 * receiver side wakes once per burst rather than once per packet, which is most of the
 * kernel's per-packet cost on loopback.  No Python code runs between building and sending:
 * the batch is flushed before any leg's Python tick() is called and at the end of the group.
 * The counters (packets_sent, bytes_sent or send_errors) are written after the send.
 */
#define BATCH 64
typedef struct {
    unsigned char buf[HDR + STACK_PAYLOAD];
    int fd;
    Py_ssize_t len;
    long long n;
    PyObject *leg;   /* strong references until flushed */
    PyObject *tick;
} Pending;
static Pending pend[BATCH];
static int npend = 0;

static int add_failure(PyObject **failed, PyObject *tick);

/* Send what is pending, then count it.  -1 only when the failure list itself cannot grow. */
static int flush(PyObject **failed) {
    int rc = 0, count = npend;
    unsigned char err[BATCH];
    npend = 0;
    for (int i = 0; i < count; i++) {
        ssize_t r;
        do {
            r = send(pend[i].fd, pend[i].buf, (size_t)pend[i].len, 0);
        } while (r < 0 && errno == EINTR);
        err[i] = r < 0;
    }
    for (int i = 0; i < count; i++) {
        PyObject *leg = pend[i].leg;
        int bad = err[i] ? add_ll(leg, F_SEND_ERRORS, 1)
                         : (add_ll(leg, F_PACKETS_SENT, 1) < 0 || add_ll(leg, F_BYTES_SENT, pend[i].n) < 0) ? -1 : 0;
        if (bad < 0 && add_failure(failed, pend[i].tick) < 0) rc = -1;
        Py_DECREF(leg);
        Py_DECREF(pend[i].tick);
    }
    return rc;
}

/*
 * LegDriver.tick's simple cases for one driver.  Returns 1 done here, 0 not simple (call the
 * Python tick; nothing was changed), -1 a Python error (nothing was sent).
 * Mirrors, in order:
 *   pb = player.fast; if pb is not None and pb.offset + n < pb.end: slice
 *   elif player.busy: Python (the slow path)
 *   else: silence (send_silence) or leg.skip(n)
 */
static int fast_tick(PyObject *driver, PyObject *tick) {
    int result = -1;
    PyObject *leg = NULL, *player = NULL, *pb = NULL, *data = NULL;
    Py_buffer view;
    int have_view = 0;
    long long n, seq, ts, ssrc, pt, off = 0, end = 0;
    int r, mode;  /* 1 play, 2 silence */

    if ((r = get_ll(driver, F_SAMPLES, &n)) <= 0) return r;
    if (!(leg = fget(driver, F_LEG))) return -1;
    if (!(player = fget(driver, F_PLAYER))) goto done;
    if ((r = get_ll(leg, F_SEQ, &seq)) <= 0) { result = r; goto done; }
    if ((r = get_ll(leg, F_TIMESTAMP, &ts)) <= 0) { result = r; goto done; }
    if (!(pb = fget(player, F_FAST))) goto done;
    if (pb != Py_None) {
        if ((r = get_ll(pb, F_OFFSET, &off)) <= 0) { result = r; goto done; }
        if ((r = get_ll(pb, F_END, &end)) <= 0) { result = r; goto done; }
        if (!(off + n < end)) { result = 0; goto done; }  /* a boundary: the player decides */
        if (!(data = fget(pb, F_DATA))) goto done;
        mode = 1;
    } else {
        int busy = attr_true(player, F_BUSY);  /* something for Player.next_payload to do */
        if (busy < 0) goto done;
        if (busy) { result = 0; goto done; }
        if ((r = attr_true(driver, F_SEND_SILENCE)) < 0) goto done;
        if (!r) {  /* leg.skip(n): time passes, the next packet starts a talkspurt */
            if (set_ll(leg, F_TIMESTAMP, (ts + n) & 0xFFFFFFFFLL) < 0) goto done;
            if (fset(leg, F_MARKER_NEXT, Py_True) < 0) goto done;
            result = 1;
            goto done;
        }
        if (!(data = fget(driver, F_SILENCE_PAYLOAD))) goto done;
        off = 0;
        mode = 2;
    }
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) { PyErr_Clear(); result = 0; goto done; }
    have_view = 1;
    if (mode == 1 && off + n > view.len) { result = 0; goto done; }  /* a short slice: Python's way */
    if (off < 0 || n < 0) { result = 0; goto done; }

    if ((r = get_ll(leg, F_SSRC, &ssrc)) <= 0) { result = r; goto done; }
    if ((r = get_ll(leg, F_PAYLOAD_TYPE, &pt)) <= 0) { result = r; goto done; }
    int marker = attr_true(leg, F_MARKER_NEXT);
    if (marker < 0) goto done;
    int b1 = marker ? (int)(pt | 0x80) : (int)pt;
    if (b1 < 0 || b1 > 255 || ssrc < 0 || ssrc > 0xFFFFFFFFLL || seq < 0 || seq > 0xFFFF
        || ts < 0 || ts > 0xFFFFFFFFLL) { result = 0; goto done; }  /* struct.pack would raise: Python's way */
    int fd;
    if ((r = send_fd(leg, &fd)) <= 0) { result = r; goto done; }

    /* decided: from here on this leg is done in C */
    const char *payload = (const char *)view.buf + off;
    Py_ssize_t plen = mode == 1 ? (Py_ssize_t)n : view.len;
    if (mode == 1) {
        if (set_ll(pb, F_OFFSET, off + n) < 0 || add_ll(pb, F_SAMPLES_PLAYED, n) < 0
            || set_ll(pb, F_LAST_SEQ, seq) < 0 || set_ll(pb, F_LAST_TS, ts) < 0) goto done;
    }
    if (marker && fset(leg, F_MARKER_NEXT, Py_False) < 0) goto done;
    if (set_ll(leg, F_SEQ, (seq + 1) & 0xFFFF) < 0) goto done;
    if (set_ll(leg, F_TIMESTAMP, (ts + n) & 0xFFFFFFFFLL) < 0) goto done;
    unsigned char hdr[HDR];
    pack_header(hdr, b1, (unsigned)seq, (unsigned long)ts, (unsigned long)ssrc);
    if (plen <= STACK_PAYLOAD && npend < BATCH) {  /* sent by flush(), with the group's other packets */
        Pending *q = &pend[npend];
        memcpy(q->buf, hdr, HDR);
        memcpy(q->buf + HDR, payload, (size_t)plen);
        q->fd = fd;
        q->len = HDR + plen;
        q->n = n;
        q->leg = Py_NewRef(leg);
        q->tick = Py_NewRef(tick);
        npend++;
    } else if (send_rtp(fd, hdr, payload, plen) == 0) {
        if (add_ll(leg, F_PACKETS_SENT, 1) < 0 || add_ll(leg, F_BYTES_SENT, n) < 0) goto done;
    } else {
        if (add_ll(leg, F_SEND_ERRORS, 1) < 0) goto done;
    }
    if (mode == 1) n_fast++; else n_silence++;
    result = 1;
done:
    if (have_view) PyBuffer_Release(&view);
    Py_XDECREF(data);
    Py_XDECREF(pb);
    Py_XDECREF(player);
    Py_XDECREF(leg);
    return result;
}

static int add_failure(PyObject **failed, PyObject *tick) {
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (exc != NULL && tb != NULL) PyException_SetTraceback(exc, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    if (*failed == NULL && !(*failed = PyList_New(0))) { Py_XDECREF(exc); return -1; }
    PyObject *pair = PyTuple_Pack(2, tick, exc ? exc : Py_None);
    Py_XDECREF(exc);
    if (pair == NULL) return -1;
    int r = PyList_Append(*failed, pair);
    Py_DECREF(pair);
    return r;
}

/*
 * Prefetching.  At 1,000 legs each tick touches ~15 Python objects last seen 20 ms ago (the
 * driver, leg, player, playback, their int values, the socket, the payload), and perf showed
 * the C side mostly waiting on those cache misses.  While leg i is done, the objects of the
 * next legs are prefetched in stages, each stage following pointers the previous one brought
 * in.  Only a hint: no value is used, nothing is written, and each stage reads only through
 * references held at that moment (tuple -> bound method -> driver -> leg/player -> playback),
 * with no Python code running in between, so the pointers are live.
 */
static inline void pf(const void *p) {
    if (p != NULL) __builtin_prefetch(p);
}

/* obj.<field> (borrowed) when obj is of the registered class and the field a plain slot, else NULL. */
static inline PyObject *peek(PyObject *obj, int f) {
    PyObject **p = obj != NULL ? slot_of(obj, f) : NULL;
    return p != NULL ? *p : NULL;
}

static inline void pf_slot(PyObject *obj, int f) {
    if (obj != NULL && fields[f].offset > 0) pf((char *)obj + fields[f].offset);
}

static inline PyObject *driver_of(PyObject *tick) {
    return tick != NULL && Py_IS_TYPE(tick, &PyMethod_Type) && PyMethod_GET_FUNCTION(tick) == tick_func
        ? PyMethod_GET_SELF(tick) : NULL;
}

#define AHEAD 16
static void prefetch_ahead(PyObject *ticks, Py_ssize_t i, Py_ssize_t count) {
    PyObject *drv, *leg, *player, *pb, *tx, *v;
    if (i + AHEAD < count) pf(PyTuple_GET_ITEM(ticks, i + AHEAD));          /* the bound method */
    if (i + 12 < count && (drv = driver_of(PyTuple_GET_ITEM(ticks, i + 12))) != NULL) {
        pf(drv);
        pf_slot(drv, F_LEG);
        pf_slot(drv, F_PLAYER);
    }
    if (i + 8 < count && (drv = driver_of(PyTuple_GET_ITEM(ticks, i + 8))) != NULL) {
        pf(v = peek(drv, F_SAMPLES));
        if ((leg = peek(drv, F_LEG)) != NULL) {
            pf(leg);
            pf_slot(leg, F_SEQ);
            pf_slot(leg, F_SSRC);
            pf_slot(leg, F_PACKETS_SENT);
            pf_slot(leg, F_TRANSMIT);
        }
        if ((player = peek(drv, F_PLAYER)) != NULL) {
            pf(player);
            pf_slot(player, F_FAST);
        }
    }
    if (i + 4 < count && (drv = driver_of(PyTuple_GET_ITEM(ticks, i + 4))) != NULL) {
        if ((leg = peek(drv, F_LEG)) != NULL) {
            pf(peek(leg, F_SEQ));
            pf(peek(leg, F_TIMESTAMP));
            pf(peek(leg, F_SSRC));
            pf(peek(leg, F_PACKETS_SENT));
            pf(peek(leg, F_BYTES_SENT));
            pf(peek(leg, F_TRANSMIT));
        }
        if ((player = peek(drv, F_PLAYER)) != NULL && (pb = peek(player, F_FAST)) != NULL) {
            pf(pb);
            pf_slot(pb, F_OFFSET);
            pf_slot(pb, F_DATA);
            pf_slot(pb, F_SAMPLES_PLAYED);
        }
    }
    if (i + 2 < count && (drv = driver_of(PyTuple_GET_ITEM(ticks, i + 2))) != NULL) {
        if ((leg = peek(drv, F_LEG)) != NULL && (tx = peek(leg, F_TRANSMIT)) != NULL && PyCFunction_Check(tx))
            pf(PyCFunction_GET_SELF(tx));                                    /* the socket */
        if ((player = peek(drv, F_PLAYER)) != NULL && (pb = peek(player, F_FAST)) != NULL) {
            pf(peek(pb, F_OFFSET));
            pf(peek(pb, F_END));
            pf(peek(pb, F_DATA));
            pf(peek(pb, F_SAMPLES_PLAYED));
        }
    }
    if (i + 1 < count && (drv = driver_of(PyTuple_GET_ITEM(ticks, i + 1))) != NULL
        && (player = peek(drv, F_PLAYER)) != NULL && (pb = peek(player, F_FAST)) != NULL
        && (v = peek(pb, F_DATA)) != NULL && PyBytes_CheckExact(v)) {
        PyObject *o = peek(pb, F_OFFSET);
        if (o != NULL && PyLong_CheckExact(o)) {
            Py_ssize_t off = PyLong_AsSsize_t(o);
            if (off == -1 && PyErr_Occurred()) {
                PyErr_Clear();
            } else if (off >= 0 && off < PyBytes_GET_SIZE(v)) {
                const char *b = PyBytes_AS_STRING(v) + off;
                pf(b);
                pf(b + 64);
                pf(b + 128);
            }
        }
    }
}

static PyObject *run_group(PyObject *module, PyObject *ticks) {
    if (!PyTuple_Check(ticks)) {
        PyErr_SetString(PyExc_TypeError, "run_group expects a tuple of callables");
        return NULL;
    }
    PyObject *failed = NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(ticks);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *tick = PyTuple_GET_ITEM(ticks, i);
        if (tick_func != NULL) prefetch_ahead(ticks, i, count);
        if (tick_func != NULL && PyMethod_Check(tick) && PyMethod_GET_FUNCTION(tick) == tick_func) {
            if (npend == BATCH && flush(&failed) < 0) goto fail;
            int r = fast_tick(PyMethod_GET_SELF(tick), tick);
            if (r == 1) continue;
            if (r < 0) {
                if (!PyErr_ExceptionMatches(PyExc_Exception)) goto fail;  /* KeyboardInterrupt etc. */
                if (add_failure(&failed, tick) < 0) goto fail;
                continue;
            }
        }
        if (npend && flush(&failed) < 0) goto fail;  /* Python code runs next: nothing pending across it */
        n_python++;
        PyObject *res = PyObject_CallNoArgs(tick);
        if (res != NULL) {
            Py_DECREF(res);
        } else {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) goto fail;
            if (add_failure(&failed, tick) < 0) goto fail;
        }
    }
    if (npend && flush(&failed) < 0) goto fail;
    if (failed == NULL) Py_RETURN_NONE;
    return failed;
fail:
    if (npend) {  /* the packets' state has advanced: send them, keep the error */
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        flush(&failed);
        PyErr_Restore(t, v, tb);
    }
    Py_XDECREF(failed);
    return NULL;
}

static PyObject *do_register(PyObject *module, PyObject *args) {
    PyObject *fn, *st, *dt, *lt, *pt = Py_None, *probe = Py_None, *yt = Py_None;
    if (!PyArg_ParseTuple(args, "OOOO|OOO:register", &fn, &st, &dt, &lt, &pt, &probe, &yt)) return NULL;
    if (!PyFunction_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "register: the tick must be a plain Python function");
        return NULL;
    }
    if (!PyType_Check(st) || !PyType_Check(dt) || !PyType_Check(lt)) {
        PyErr_SetString(PyExc_TypeError, "register: socket, driver and leg classes must be types");
        return NULL;
    }
    if ((pt != Py_None && !PyType_Check(pt)) || (yt != Py_None && !PyType_Check(yt))) {
        PyErr_SetString(PyExc_TypeError, "register: the playback and player classes must be types");
        return NULL;
    }
    learn_slots((PyTypeObject *)dt, 1);
    learn_slots((PyTypeObject *)lt, 2);
    PyObject *optional[2] = {pt, yt};
    for (int k = 0; k < 2; k++) {
        if (optional[k] != Py_None) {
            learn_slots((PyTypeObject *)optional[k], 3 + k);
        } else {
            for (int i = 0; i < F_COUNT; i++)
                if (fields[i].owner == 3 + k) fields[i].offset = 0;
        }
    }
    raw_sock_fd = 0;
    if (probe != Py_None && PyObject_TypeCheck(probe, (PyTypeObject *)st)) {
        int f = PyObject_AsFileDescriptor(probe);
        if (f < 0) return NULL;
        raw_sock_fd = f == sock_fd_of(probe);
    }
    Py_XSETREF(tick_func, Py_NewRef(fn));
    Py_XSETREF(sock_type, Py_NewRef(st));
    Py_RETURN_NONE;
}

static PyObject *slot_offsets(PyObject *module, PyObject *unused) {
    PyObject *d = PyDict_New();
    for (int i = 0; d != NULL && i < F_COUNT; i++) {
        if (fields[i].owner == 0) continue;
        PyObject *v = PyLong_FromSsize_t(fields[i].offset);
        if (v == NULL || PyDict_SetItemString(d, fields[i].text, v) < 0) Py_CLEAR(d);
        Py_XDECREF(v);
    }
    if (d != NULL && PyDict_SetItemString(d, "raw_sock_fd", raw_sock_fd ? Py_True : Py_False) < 0) Py_CLEAR(d);
    return d;
}

static PyObject *do_unregister(PyObject *module, PyObject *unused) {
    Py_CLEAR(tick_func);
    Py_RETURN_NONE;
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
    pack_header(hdr, (int)v[1], (unsigned)v[2], (unsigned long)v[3], (unsigned long)v[4]);
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
     "run_group(ticks) -> failed | None: call every tick; registered LegDriver ticks in the simple state run in C."},
    {"register", (PyCFunction)do_register, METH_VARARGS,
     "register(tick, socket_type, driver_type, leg_type[, playback_type, probe, player_type]): LegDriver.tick, "
     "the sending socket's class and the classes whose slots are read directly."},
    {"slot_offsets", (PyCFunction)slot_offsets, METH_NOARGS,
     "slot_offsets() -> {name: offset}: which LegDriver/RtpLeg attributes are read as slots (0: getattr)."},
    {"unregister", (PyCFunction)do_unregister, METH_NOARGS, "unregister(): every tick goes through Python."},
    {"counters", (PyCFunction)counters, METH_NOARGS,
     "counters() -> {'fast', 'silence', 'python'}: packets sent in C, and ticks handed to Python."},
    {"send_packet", (PyCFunction)(void (*)(void))send_packet, METH_FASTCALL,
     "send_packet(fd, b1, seq, ts, ssrc, data, off, n): one RTP packet (header + data[off:off+n]); OSError on failure."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_fastsend", "LegDriver.tick's common case in C (see mediasrv/rtp/fastpath.py).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastsend(void) {
    if (intern_all() < 0) return NULL;
    return PyModule_Create(&moduledef);
}
