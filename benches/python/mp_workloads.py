#!/usr/bin/env python3
"""Python `multiprocessing` column of the `compare` run (WORKLOADS.md, section 3).

    python3 mp_workloads.py --workload ID [--n N] [--timeout S]
    python3 mp_workloads.py --list
    python3 mp_workloads.py --self-test

`--workload` runs one workload once and prints exactly one JSON line on stdout:

    {"id": ..., "n": ..., "unit": ..., "value": ..., "elapsed_s": ..., "ok": true,
     "error": null, "python": "3.11.7"}

`value` and `elapsed_s` are null when `ok` is false; the exit status is 0 when ok, 1 when not,
2 for a usage error (which still prints the JSON line when an id was given).

Standard library only, Python 3.8+, start method `fork` (Linux). Roles are forked processes
that do their untimed setup, pass a `multiprocessing.Barrier` start gate, read
`time.perf_counter()` (CLOCK_MONOTONIC, comparable across processes) and report
`(t_start, t_end, result)` through a pipe; elapsed = max(t_end) - min(t_start). Pool rows and
single-process rows time in the main process; pool rows after `pool.map(sq, range(8))`.

Checksums follow WORKLOADS.md section 1: each of M producers sends per = n/M values
0..per-1 (an int, or the first 8 bytes little-endian of a byte message), each of N consumers
receives exactly per*M/N and sums them; the total must be M*per*(per-1)/2 (mod 2**64),
message lengths must match and counters must end at n. A failed check gives ok=false.

A watchdog (default 120 s) bounds every run: the parent's wait for role results has that
deadline, SIGALRM interrupts pool and single-process rows, and a second alarm 10 s later kills
every child and prints the failure even if clean-up itself hangs. Children carry
PR_SET_PDEATHSIG(SIGKILL) and an alarm of their own, so none outlives the run.
"""

import argparse
import json
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import platform
import re
import signal
import struct
import subprocess
import sys
import time
from array import array

perf_counter = time.perf_counter

CTX = mp.get_context("fork")
U64 = (1 << 64) - 1
QW = struct.Struct("<Q")  # u64 little-endian: the checksum word of byte messages
F64 = struct.Struct("<d")

WATCHDOG_S = 120.0  # set from --timeout
DEADLINE = None  # time.monotonic() deadline of the whole run
FAULT = None  # --fault drop|dup: producers drop or repeat one value (self-test of the checks)

SWEEP = (8, 64, 512, 4 << 10, 32 << 10, 256 << 10, 1 << 20)
V3_WORDS = 8 << 20  # Array('d', 8 Mi): 64 MiB
V3_MAX_N = 32  # the writer keeps one 64 MiB source per k & 0xFF


class CheckFailed(Exception):
    """A checksum, count or exit status did not match: the run is not valid."""


class Watchdog(Exception):
    """The run outlived its watchdog."""


# --------------------------------------------------------------------------- task functions


def sq(x):
    return x * x


def burn(seed):
    # ~ 3 ms of pure-Python CPU work (WORKLOADS.md: burn = sum(range(200_000))); the seed keeps
    # results distinct so that order and completeness are checked.
    return sum(range(200000)) + seed


def noop():
    pass


# --------------------------------------------------------------------------- process plumbing


def _prctl(option, arg):
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0)
    except Exception:  # not Linux, or no ctypes: the alarm below still bounds the child
        return -1


def _child_init(ppid, timeout):
    """In every forked child (roles and pool workers): die with the parent, and on our own alarm."""
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != ppid:  # the parent died before the prctl took effect
        os._exit(1)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.alarm(int(timeout) + 15)


def _remaining():
    return DEADLINE - time.monotonic()


def _role_main(idx, fn, args, barrier, w, own_r, close, ppid, timeout):
    _child_init(ppid, timeout)
    own_r.close()
    for c in close:  # ends this role does not use: a dead peer then shows as EOF / EPIPE
        if not any(c is a for a in args):
            c.close()

    def gate():
        barrier.wait(timeout)
        return perf_counter()

    try:
        t0, t1, result = fn(gate, *args)
        w.send(("ok", t0, t1, result))
    except BaseException as e:  # reported to the parent, which fails the run
        try:
            w.send(("err", "%s: %s: %s" % (fn.__name__, type(e).__name__, e)))
        except Exception:
            pass
        sys.exit(1)
    w.close()


def run_roles(roles, close=()):
    """Fork one child per (fn, args) role behind one Barrier; return ([result], elapsed).

    `close` lists connections the roles share: each child closes those it was not given,
    the parent closes all of them once every child is forked.
    """
    barrier = CTX.Barrier(len(roles))
    ppid = os.getpid()
    procs, readers = [], []
    try:
        for idx, (fn, args) in enumerate(roles):
            r, w = CTX.Pipe(duplex=False)
            p = CTX.Process(
                target=_role_main,
                args=(idx, fn, args, barrier, w, r, close, ppid, WATCHDOG_S),
                name="role%d-%s" % (idx, fn.__name__),
                daemon=True,
            )
            p.start()
            procs.append(p)
            readers.append(r)
            w.close()
        for c in close:
            c.close()
        out = [None] * len(roles)
        pending = {r: i for i, r in enumerate(readers)}
        while pending:
            left = _remaining()
            if left <= 0:
                names = ", ".join(procs[i].name for i in sorted(pending.values()))
                raise Watchdog("no result within %g s from %s" % (WATCHDOG_S, names))
            for r in mpc.wait(list(pending), left):
                i = pending.pop(r)
                try:
                    msg = r.recv()
                except EOFError:
                    procs[i].join(1)
                    raise CheckFailed(
                        "%s exited without a result (exit code %s)" % (procs[i].name, procs[i].exitcode)
                    )
                if msg[0] != "ok":
                    raise CheckFailed("%s failed: %s" % (procs[i].name, msg[1]))
                out[i] = msg[1:]
        for p in procs:
            p.join(max(0.5, _remaining()))
            if p.exitcode != 0:
                raise CheckFailed("%s exit code %s" % (p.name, p.exitcode))
        elapsed = max(o[1] for o in out) - min(o[0] for o in out)
        return [o[2] for o in out], elapsed
    finally:
        for r in readers:
            r.close()
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(5)


def _values(per):
    """What a producer sends: 0..per-1, or with --fault one value dropped / repeated."""
    if FAULT is None:
        return range(per)
    vals = list(range(per))
    k = per // 2
    if FAULT == "drop":
        del vals[k]
    else:
        vals.insert(k, vals[k])
    return vals


def _split(n, m, k):
    if n <= 0 or n % m or (n // m * m) % k:
        raise CheckFailed("n=%d does not split over %d producer(s) and %d consumer(s)" % (n, m, k))
    per = n // m
    return per, per * m // k


def _check_stream(per, m, sent, got):
    """sent: count per producer; got: (sum, wrong_length) per consumer. Reports every problem."""
    problems = []
    total = sum(s for s, _ in got) & U64
    want = (m * per * (per - 1) // 2) & U64
    if total != want:
        problems.append("checksum %d, expected %d" % (total, want))
    for i, c in enumerate(sent):
        if c != per:
            problems.append("producer %d sent %d values, expected %d" % (i, c, per))
    bad = sum(b for _, b in got)
    if bad:
        problems.append("%d message(s) of the wrong length" % bad)
    if problems:
        raise CheckFailed("; ".join(problems))


# --------------------------------------------------------------------------- stream roles


def _put_ints(gate, q, values):
    put = q.put
    t0 = gate()
    for v in values:
        put(v)
    return t0, perf_counter(), len(values)


def _get_ints(gate, q, count):
    get = q.get
    s = 0
    t0 = gate()
    for _ in range(count):
        s += get()
    return t0, perf_counter(), (s, 0)


def _put_bytes(gate, q, size, values):
    tail = b"\xa5" * (size - 8)
    pack = QW.pack
    msgs = [pack(v) + tail for v in values]  # prepared before the gate
    put = q.put
    t0 = gate()
    for m in msgs:
        put(m)
    return t0, perf_counter(), len(msgs)


def _get_bytes(gate, q, size, count):
    get = q.get
    unpack = QW.unpack_from
    s = bad = 0
    t0 = gate()
    for _ in range(count):
        m = get()
        if len(m) != size:
            bad += 1
        s += unpack(m)[0]
    return t0, perf_counter(), (s, bad)


def _send_bytes(gate, conn, size, values):
    buf = bytearray(b"\xa5" * size)  # one prefilled buffer; its first 8 bytes carry the value
    pack_into = QW.pack_into
    send = conn.send_bytes
    t0 = gate()
    for v in values:
        pack_into(buf, 0, v)
        send(buf)
    return t0, perf_counter(), len(values)


def _recv_bytes(gate, conn, size, count):
    recv = conn.recv_bytes
    unpack = QW.unpack_from
    s = bad = 0
    t0 = gate()
    for _ in range(count):
        m = recv()
        if len(m) != size:
            bad += 1
        s += unpack(m)[0]
    return t0, perf_counter(), (s, bad)


def _queue_stream(n, m, k, make_queue, size=None):
    per, cnt = _split(n, m, k)
    q = make_queue()
    if size is None:
        roles = [(_put_ints, (q, _values(per)))] * m + [(_get_ints, (q, cnt))] * k
    else:
        roles = [(_put_bytes, (q, size, _values(per)))] * m + [(_get_bytes, (q, size, cnt))] * k
    res, el = run_roles(roles)
    _check_stream(per, m, res[:m], res[m:])
    return el


def _pipe_stream(n, size, duplex):
    per, cnt = _split(n, 1, 1)
    a, b = CTX.Pipe(duplex=duplex)  # duplex: a socketpair; simplex: a pipe, a reads, b writes
    tx, rx = (a, b) if duplex else (b, a)
    res, el = run_roles(
        [(_send_bytes, (tx, size, _values(per))), (_recv_bytes, (rx, size, cnt))], close=(a, b)
    )
    _check_stream(per, 1, res[:1], res[1:])
    return el


def w_q3(n):
    el = _queue_stream(n, 1, 1, CTX.Queue)
    return n / el / 1e6, el


def w_q3s(n):
    el = _queue_stream(n, 1, 1, CTX.SimpleQueue)
    return n / el / 1e6, el


def w_q2(n):
    el = _queue_stream(n, 2, 2, CTX.Queue)
    return n / el / 1e6, el


def w_q4(n):
    el = _queue_stream(n, 1, 1, CTX.Queue, size=1024)
    return n / el / 1e6, el


def w_q4_size(n, size):
    el = _queue_stream(n, 1, 1, CTX.Queue, size=size)
    return n * size / el / 1e6, el


def w_c1d(n):
    el = _pipe_stream(n, 64 << 10, True)
    return n * (64 << 10) / el / 1e9, el


def w_c1s(n):
    el = _pipe_stream(n, 64 << 10, False)
    return n * (64 << 10) / el / 1e9, el


def w_c3d(n):
    el = _pipe_stream(n, 64, True)
    return n / el / 1e6, el


def w_c3s(n):
    el = _pipe_stream(n, 64, False)
    return n / el / 1e6, el


def w_c4_size(n, size):
    el = _pipe_stream(n, size, True)
    return n * size / el / 1e6, el


# --------------------------------------------------------------------------- ping-pong roles

C2_WARMUP = 200


def _c2_a(gate, conn, n):
    send, recv = conn.send_bytes, conn.recv_bytes
    pack, unpack = QW.pack, QW.unpack_from
    for i in range(C2_WARMUP):
        send(pack(i))
        recv()
    s = 0
    t0 = gate()
    for i in range(n):
        send(pack(i))
        s += unpack(recv())[0]
    return t0, perf_counter(), s


def _c2_b(gate, conn, n):
    send, recv = conn.send_bytes, conn.recv_bytes
    unpack = QW.unpack_from
    for _ in range(C2_WARMUP):
        send(recv())
    s = 0
    t0 = gate()
    for _ in range(n):
        m = recv()
        s += unpack(m)[0]
        send(m)
    return t0, perf_counter(), s


def w_c2(n):
    if n <= 0:
        raise CheckFailed("n must be at least 1")
    a, b = CTX.Pipe()
    (sa, sb), el = run_roles([(_c2_a, (a, n)), (_c2_b, (b, n))], close=(a, b))
    want = n * (n - 1) // 2
    if sa != want or sb != want:
        raise CheckFailed("ping-pong sums %d / %d, expected %d" % (sa, sb, want))
    return el / n * 1e6, el


def _s4_a(gate, a, b, n):
    rel, acq = a.release, b.acquire
    t0 = gate()
    for _ in range(n):
        rel()
        acq()
    return t0, perf_counter(), n


def _s4_b(gate, a, b, n):
    acq, rel = a.acquire, b.release
    t0 = gate()
    for _ in range(n):
        acq()
        rel()
    return t0, perf_counter(), n


def w_s4(n):
    if n <= 0:
        raise CheckFailed("n must be at least 1")
    a, b = CTX.Semaphore(0), CTX.Semaphore(0)
    res, el = run_roles([(_s4_a, (a, b, n)), (_s4_b, (a, b, n))])
    if res != [n, n] or a.get_value() != 0 or b.get_value() != 0:
        raise CheckFailed("semaphores end at %d / %d, rounds %s" % (a.get_value(), b.get_value(), res))
    return el / n * 1e6, el


# --------------------------------------------------------------------------- shared memory


def _v1_role(gate, v, per):
    lock = v.get_lock()
    t0 = gate()
    for _ in range(per):
        with lock:
            v.value += 1
    return t0, perf_counter(), per


def w_v1(n):
    per, _ = _split(n, 2, 1)
    v = CTX.Value("Q", 0)
    _, el = run_roles([(_v1_role, (v, per))] * 2)
    if v.value != n:
        raise CheckFailed("counter ends at %d, expected %d" % (v.value, n))
    return n / el / 1e6, el


def _v3_views(slots):
    return [memoryview(a.get_obj()).cast("B") for a in slots], [a.get_lock() for a in slots]


def _v3_writer(gate, slots, full, empty, n):
    views, locks = _v3_views(slots)
    srcs = {}
    for k in range(n):  # one source per value, built before the gate
        v = k & 0xFF
        if v not in srcs:
            srcs[v] = memoryview(array("d", [float(v)]) * V3_WORDS).cast("B")
    zero = bytes(len(views[0]))
    for mv in views:  # pre-touch: write every page of both slots
        mv[:] = zero
    t0 = gate()
    for k in range(n):
        s = k & 1
        empty[s].acquire()
        with locks[s]:
            views[s][:] = srcs[k & 0xFF]
        full[s].release()
    return t0, perf_counter(), n


def _v3_reader(gate, slots, full, empty, n):
    views, locks = _v3_views(slots)
    out = bytearray(len(views[0]))
    omv = memoryview(out)
    shifted = omv[8:]
    for mv in views:  # pre-touch: read one byte per 4 KiB page
        mv[::4096].tobytes()
    total = 0
    wrong = []
    t0 = gate()
    for k in range(n):
        s = k & 1
        full[s].acquire()
        with locks[s]:
            omv[:] = views[s]
        empty[s].release()
        # out[i] == out[i+8] for every i, and the first word right: the slot holds k & 0xFF
        # as f64 in every word; its wrapping u64 sum is then V3_WORDS times that word.
        if out[:8] != F64.pack(float(k & 0xFF)) or not out.startswith(shifted):
            wrong.append(k)
        total += V3_WORDS * QW.unpack_from(out)[0]
    return t0, perf_counter(), (total & U64, wrong)


def w_v3(n):
    if not 1 <= n <= V3_MAX_N:
        raise CheckFailed("py-V3 needs 1 <= n <= %d (one 64 MiB source buffer per k)" % V3_MAX_N)
    slots = [CTX.Array("d", V3_WORDS) for _ in range(2)]  # zero-filled by the parent
    full = [CTX.Semaphore(0) for _ in range(2)]
    empty = [CTX.Semaphore(1) for _ in range(2)]
    res, el = run_roles([(_v3_writer, (slots, full, empty, n)), (_v3_reader, (slots, full, empty, n))])
    total, wrong = res[1]
    want = sum(V3_WORDS * QW.unpack(F64.pack(float(k & 0xFF)))[0] for k in range(n)) & U64
    if res[0] != n or wrong or total != want:
        raise CheckFailed("slot contents wrong at k=%s; checksum %d, expected %d" % (wrong[:5], total, want))
    return n * V3_WORDS * 8 / el / 1e9, el


# --------------------------------------------------------------------------- single process


def w_s1(n):
    if n <= 0:
        raise CheckFailed("n must be at least 1")
    sem = CTX.Semaphore(1)
    acq, rel = sem.acquire, sem.release
    for _ in range(1000):  # untimed warm-up
        acq()
        rel()
    t0 = perf_counter()
    for _ in range(n):
        acq()
        rel()
    el = perf_counter() - t0
    if sem.get_value() != 1:
        raise CheckFailed("semaphore ends at %d, expected 1" % sem.get_value())
    return el / n * 1e9, el


def w_s2(n):
    if n <= 0:
        raise CheckFailed("n must be at least 1")
    lock = CTX.Lock()
    for _ in range(1000):  # untimed warm-up
        with lock:
            pass
    t0 = perf_counter()
    for _ in range(n):
        with lock:
            pass
    el = perf_counter() - t0
    if not lock.acquire(False):
        raise CheckFailed("lock still held after the loop")
    lock.release()
    return el / n * 1e9, el


def w_k4(n):
    if n <= 0:
        raise CheckFailed("n must be at least 1")
    p = CTX.Process(target=noop)  # untimed warm-up
    p.start()
    p.join()
    bad = 0
    t0 = perf_counter()
    for _ in range(n):
        p = CTX.Process(target=noop)
        p.start()
        p.join()
        bad += p.exitcode != 0
    el = perf_counter() - t0
    if bad:
        raise CheckFailed("%d of %d processes exited non-zero" % (bad, n))
    return el / n * 1e6, el


# --------------------------------------------------------------------------- pool rows


def _with_pool(n, body):
    if n <= 0:
        raise CheckFailed("n must be at least 1")
    pool = CTX.Pool(2, initializer=_child_init, initargs=(os.getpid(), WATCHDOG_S))
    try:
        if pool.map(sq, range(8)) != [i * i for i in range(8)]:
            raise CheckFailed("warm-up map returned wrong results")
        result = body(pool)
        pool.close()
        pool.join()
        return result
    finally:
        pool.terminate()
        pool.join()


def w_k1(n):
    def body(pool):
        apply = pool.apply
        s = 0
        t0 = perf_counter()
        for i in range(n):
            s += apply(sq, (i,))
        el = perf_counter() - t0
        want = (n - 1) * n * (2 * n - 1) // 6
        if s != want:
            raise CheckFailed("sum of results %d, expected %d" % (s, want))
        return el / n * 1e6, el

    return _with_pool(n, body)


def _k2(n, chunksize):
    def body(pool):
        t0 = perf_counter()
        res = pool.map(sq, range(n), chunksize)
        el = perf_counter() - t0
        if res != [i * i for i in range(n)]:
            raise CheckFailed("map results wrong, missing or out of order")
        return n / el / 1e6, el

    return _with_pool(n, body)


def w_k2a(n):
    return _k2(n, None)


def w_k2b(n):
    return _k2(n, 1)


def w_k3(n):
    def body(pool):
        t0 = perf_counter()
        serial1 = [burn(i) for i in range(n)]
        t1 = perf_counter()
        par = pool.map(burn, range(n))
        t2 = perf_counter()
        serial2 = [burn(i) for i in range(n)]
        t3 = perf_counter()
        if not (serial1 == par == serial2):
            raise CheckFailed("pool results differ from the serial ones")
        s1, tp, s2 = t1 - t0, t2 - t1, t3 - t2
        sys.stderr.write(
            "py-K3: serial %.4f s, %.4f s (drift %+.1f %%), pool %.4f s\n" % (s1, s2, (s2 / s1 - 1) * 100, tp)
        )
        return (s1 + s2) / 2 / tp, tp

    return _with_pool(n, body)


# --------------------------------------------------------------------------- registry

FIXED = {
    "py-Q3": (200000, "Mmsg/s", w_q3),
    "py-Q3s": (200000, "Mmsg/s", w_q3s),
    "py-Q2": (200000, "Mmsg/s", w_q2),
    "py-Q4": (100000, "Mmsg/s", w_q4),
    "py-C1d": (20000, "GB/s", w_c1d),
    "py-C1s": (20000, "GB/s", w_c1s),
    "py-C2": (10000, "µs/RT", w_c2),
    "py-C3d": (200000, "Mmsg/s", w_c3d),
    "py-C3s": (200000, "Mmsg/s", w_c3s),
    "py-S1": (1000000, "ns/pair", w_s1),
    "py-S2": (1000000, "ns/pair", w_s2),
    "py-S4": (20000, "µs/RT", w_s4),
    "py-V1": (400000, "Minc/s", w_v1),
    "py-V3": (1, "GB/s", w_v3),
    "py-K1": (2000, "µs/call", w_k1),
    "py-K2a": (200000, "Mtask/s", w_k2a),
    "py-K2b": (20000, "Mtask/s", w_k2b),
    "py-K3": (200, "speed-up", w_k3),
    "py-K4": (200, "µs/proc", w_k4),
}
SIZED = {  # prefix -> (unit, fn(n, size)); n(s)/2 by default
    "py-Q4@": ("MB/s", w_q4_size),
    "py-C4@": ("MB/s", w_c4_size),
}
LIST_ORDER = [
    "py-Q3", "py-Q3s", "py-Q2", "py-Q4", "py-Q4@",
    "py-C1d", "py-C1s", "py-C2", "py-C3d", "py-C3s", "py-C4@",
    "py-S1", "py-S2", "py-S4", "py-V1", "py-V3",
    "py-K1", "py-K2a", "py-K2b", "py-K3", "py-K4",
]
SIZE_RE = re.compile(r"^([1-9][0-9]*)(B|KiB|MiB)$")
SIZE_MULT = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20}


def size_name(s):
    for suffix, mult in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if s % mult == 0:
            return "%d%s" % (s // mult, suffix)
    return "%dB" % s


def sweep_n(s):
    """Python's n(s)/2, n(s) = min(400,000, 256 MiB / s)."""
    return min(400000, (256 << 20) // s) // 2


def lookup(wid):
    """id -> (default n, unit, fn(n)) or raise KeyError with a reason."""
    if wid in FIXED:
        return FIXED[wid]
    for prefix, (unit, fn) in SIZED.items():
        if wid.startswith(prefix):
            m = SIZE_RE.match(wid[len(prefix):])
            if not m:
                raise KeyError("bad size in %r (want e.g. 8B, 64B, 4KiB, 1MiB)" % wid)
            size = int(m.group(1)) * SIZE_MULT[m.group(2)]
            if size < 8:
                raise KeyError("size must be at least 8 B (the checksum word): %r" % wid)
            if size > 64 << 20:
                raise KeyError("size above 64 MiB: %r" % wid)
            return sweep_n(size), unit, (lambda n, _s=size, _f=fn: _f(n, _s))
    raise KeyError("unknown workload %r (see --list)" % wid)


def listing():
    rows = []
    for wid in LIST_ORDER:
        if wid in SIZED:
            for s in SWEEP:
                full = wid + size_name(s)
                n, unit, _ = lookup(full)
                rows.append((full, n, unit))
        else:
            n, unit, _ = FIXED[wid]
            rows.append((wid, n, unit))
    return rows


# --------------------------------------------------------------------------- run one


def emit(wid, n, unit, value, elapsed, ok, error):
    rec = {
        "id": wid,
        "n": n,
        "unit": unit,
        "value": value if ok else None,
        "elapsed_s": elapsed if ok else None,
        "ok": ok,
        "error": error,
        "python": platform.python_version(),
    }
    line = json.dumps(rec, ensure_ascii=False) + "\n"
    sys.stdout.flush()
    sys.stdout.buffer.write(line.encode("utf-8"))
    sys.stdout.buffer.flush()


def _kill_children():
    for p in mp.active_children():
        try:
            p.kill()
        except Exception:
            pass
    for p in mp.active_children():
        p.join(5)


def run_one(wid, n):
    global DEADLINE
    try:
        default_n, unit, fn = lookup(wid)
    except KeyError as e:
        emit(wid, n, None, None, None, False, e.args[0])
        return 2
    if n is None:
        n = default_n

    def hard_stop(signum, frame):  # clean-up after the watchdog hung too: kill, report, leave
        _kill_children()
        emit(wid, n, unit, None, None, False, "watchdog: no result within %g s, clean-up hung" % WATCHDOG_S)
        os._exit(1)

    def on_alarm(signum, frame):
        signal.signal(signal.SIGALRM, hard_stop)
        signal.alarm(10)
        raise Watchdog("no result within %g s" % WATCHDOG_S)

    DEADLINE = time.monotonic() + WATCHDOG_S
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(WATCHDOG_S + 0.999)) + 1)  # backstop; run_roles has DEADLINE itself
    value = elapsed = error = None
    try:
        value, elapsed = fn(n)
        ok = True
    except Watchdog as e:
        ok, error = False, "watchdog: %s" % e
    except CheckFailed as e:
        ok, error = False, str(e)
    except Exception as e:
        ok, error = False, "%s: %s" % (type(e).__name__, e)
    finally:
        try:
            _kill_children()
        except Watchdog:
            pass
    signal.alarm(0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    emit(wid, n, unit, value, elapsed, ok, error)
    return 0 if ok else 1


# --------------------------------------------------------------------------- self-test


def _tiny_n(wid, default_n):
    if wid == "py-V3":
        return 2
    n = max(4, default_n // 50)
    return n - n % 2


def _orphans():
    """Processes re-parented to us (we are a child subreaper during the self-test)."""
    me, found = str(os.getpid()), []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[1] == me:
            found.append(int(d))
    return found


def _shm_names():
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def self_test():
    have_subreaper = _prctl(36, 1) == 0  # PR_SET_CHILD_SUBREAPER
    me = os.path.abspath(__file__)
    failures = []

    def run(wid, n, extra=(), timeout=60):
        shm_before = _shm_names()
        cmd = [sys.executable, me, "--workload", wid, "--n", str(n), "--timeout", str(timeout)] + list(extra)
        t0 = time.monotonic()
        try:
            cp = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            return None, "did not exit within %d s" % (timeout + 30), time.monotonic() - t0
        wall = time.monotonic() - t0
        problems = []
        lines = cp.stdout.decode("utf-8", "replace").splitlines()
        rec = None
        if len(lines) != 1:
            problems.append("%d stdout lines" % len(lines))
        else:
            try:
                rec = json.loads(lines[0])
            except ValueError as e:
                problems.append("bad JSON: %s" % e)
        if rec is not None:
            keys = ["id", "n", "unit", "value", "elapsed_s", "ok", "error", "python"]
            if list(rec) != keys:
                problems.append("keys %s" % list(rec))
            if (cp.returncode == 0) != bool(rec.get("ok")):
                problems.append("exit status %d with ok=%s" % (cp.returncode, rec.get("ok")))
        time.sleep(0.05)
        left = _orphans() if have_subreaper else []
        if left:
            problems.append("left processes %s" % left)
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        while True:  # reap anything re-parented to us
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        new_shm = _shm_names() - shm_before
        if new_shm:
            problems.append("left /dev/shm entries %s" % sorted(new_shm))
        if problems and rec is not None:
            rec = dict(rec, ok=False, error="; ".join(problems + [str(rec.get("error"))]))
        return rec, "; ".join(problems) or None, wall

    for wid, default_n, unit in listing():
        n = _tiny_n(wid, default_n)
        rec, problem, wall = run(wid, n)
        good = (
            problem is None
            and rec is not None
            and rec["ok"] is True
            and rec["error"] is None
            and rec["id"] == wid
            and rec["n"] == n
            and rec["unit"] == unit
            and isinstance(rec["value"], (int, float))
            and rec["value"] > 0
            and isinstance(rec["elapsed_s"], (int, float))
            and rec["elapsed_s"] > 0
        )
        if good:
            print("ok    %-14s n=%-7d %12.4g %-9s (%.1f s)" % (wid, n, rec["value"], unit, wall))
        else:
            print("FAIL  %-14s n=%-7d %s" % (wid, n, problem or (rec and rec.get("error")) or rec))
            failures.append(wid)

    # The checks themselves must be able to fail: a repeated value breaks the checksum; a
    # dropped one leaves a consumer waiting, ended by the watchdog (a Queue, whose other
    # producer keeps it open) or by EOF (a pipe whose only writer left); an unknown id is refused.
    negatives = [
        ("py-Q3", 2000, ["--fault", "dup"], 30, "checksum"),
        ("py-C3d", 2000, ["--fault", "dup"], 30, "checksum"),
        ("py-Q4@4KiB", 200, ["--fault", "dup"], 30, "checksum"),
        ("py-Q2", 2000, ["--fault", "drop"], 3, "watchdog"),
        ("py-C1s", 200, ["--fault", "drop"], 30, "EOFError"),  # the producer left: EOF
        ("py-K3", 100000, [], 2, "watchdog"),  # the alarm path: a pool row that runs too long
        ("py-K4", 100000, [], 2, "watchdog"),  # ... and one that is forking when it fires
        ("py-nope", 10, [], 30, "unknown workload"),
    ]
    for wid, n, extra, timeout, want in negatives:
        rec, problem, wall = run(wid, n, extra, timeout)
        good = problem is None and rec is not None and rec["ok"] is False and want in (rec["error"] or "")
        label = "%s %s" % (wid, " ".join(extra))
        if good:
            print("ok    %-24s fails as it must: %s (%.1f s)" % (label, rec["error"], wall))
        else:
            print("FAIL  %-24s should fail with %r: %s" % (label, want, problem or rec))
            failures.append(label)

    print("self-test: %d failure(s)%s" % (len(failures), (": " + ", ".join(failures)) if failures else ""))
    return 1 if failures else 0


# --------------------------------------------------------------------------- main


def main(argv=None):
    global WATCHDOG_S, FAULT
    ap = argparse.ArgumentParser(description="Python multiprocessing column of benches' compare run.")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--workload", metavar="ID", help="run one workload once, print one JSON line")
    g.add_argument("--list", action="store_true", help="print id, default n and unit, tab-separated")
    g.add_argument("--self-test", action="store_true", help="run every workload with a tiny n")
    ap.add_argument("--n", type=int, help="op count (default: WORKLOADS.md section 3)")
    ap.add_argument("--timeout", type=float, default=120.0, help="watchdog seconds (default 120)")
    ap.add_argument("--fault", choices=("drop", "dup"), help="test hook: producers drop/repeat one value")
    args = ap.parse_args(argv)
    if sys.platform != "linux":
        sys.stderr.write("note: written for Linux (fork start method, /proc, prctl)\n")
    WATCHDOG_S = args.timeout
    FAULT = args.fault
    if args.list:
        for wid, n, unit in listing():
            sys.stdout.buffer.write(("%s\t%d\t%s\n" % (wid, n, unit)).encode("utf-8"))
        return 0
    if args.self_test:
        return self_test()
    return run_one(args.workload, args.n)


if __name__ == "__main__":
    sys.exit(main())
