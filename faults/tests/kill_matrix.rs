//! The kill matrix: every mechanism x canonical fault point, a victim that arms the point
//! (`SIGKILL`, or `SIGSTOP` where a stall means something) and runs the operation, survivors
//! doing their part, then the survivors' view and leaks checked. One test, so it runs alone:
//! the leak checks (fds, threads, children) are process-wide.
//!
//! A row whose victim finishes its operation alive shows "point not reached" and fails: the
//! fault point is missing from the library, or the scenario no longer reaches it.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::OnceLock;
use std::time::Duration;

use ipc_failpoints::{arm, Action};
use ipc_faults::Board;
use ipc_testkit::{fork, Child, Exit, Leaks};

enum Outcome {
    Pass(String),
    NotReached(String),
    Fail(String),
}
use Outcome::{Fail, NotReached, Pass};

const KILL: Action = Action::Kill;
const STOP: Action = Action::Stop;
const SECS: fn(u64) -> Duration = Duration::from_secs;

/// How a victim ended: died at its point, finished alive, or failed.
fn victim_end(mut v: Child, timeout: Duration) -> Result<bool, String> {
    match v.wait_timeout(timeout) {
        Some(Exit::Signal(libc::SIGKILL)) => Ok(true),
        Some(Exit::Code(0)) => Ok(false),
        Some(other) => Err(format!("victim ended with {other:?}")),
        None => Err(format!("victim still running after {timeout:?} (watchdog)")),
    }
}

/// A survivor's exit code, or a hang.
fn survivor(mut c: Child, timeout: Duration) -> Result<i32, String> {
    match c.wait_timeout(timeout) {
        Some(Exit::Code(n)) => Ok(n),
        Some(other) => Err(format!("survivor ended with {other:?}")),
        None => Err(format!("survivor blocked past its deadline ({timeout:?})")),
    }
}

const NOT_REACHED: &str = "point not reached: the victim finished its operation alive (the fault point is missing, or the scenario no longer reaches it)";

// ---- queue ---------------------------------------------------------------------------

fn queue_row(point: &'static str, _a: Action) -> Outcome {
    let q = ipc_queue::PodQueue::<u64>::new(8).unwrap();
    // 0: survivor acked, 1: victim acked, 2: got count, 3..: got values (victim and survivor
    // consumer).
    let b = Board::new(3 + 512).unwrap();
    let record = |x: u64| {
        let n = b.at(2).fetch_add(1, SeqCst) as usize;
        if n < 512 {
            b.at(3 + n).store(x, SeqCst);
        }
    };
    let needs_dead_writer = matches!(point, "queue.tombstone.published");
    if needs_dead_writer {
        // A writer that dies between claim and publish, so the victim meets a slot to reclaim.
        let c = fork(|| {
            arm("queue.put.claimed", 1, KILL).unwrap();
            let _ = q.put(999_999);
            0
        });
        if let Err(e) = victim_end(c, SECS(10)) {
            return Fail(format!("setup writer: {e}"));
        }
    }
    let s = fork(|| {
        for i in 0..200u64 {
            match q.put_timeout(i, SECS(5)) {
                Ok(()) => b.at(0).store(i + 1, SeqCst),
                Err(ipc_queue::PutTimeoutError::Closed(_)) => return 0,
                Err(_) => return 11,
            }
        }
        0
    });
    let v = fork(|| {
        arm(point, 1, KILL).unwrap();
        for i in 0..50u64 {
            if q.put_timeout(10_000 + i, SECS(2)).is_ok() {
                b.at(1).store(i + 1, SeqCst);
            }
            if let Ok(x) = q.get_timeout(Duration::from_millis(50)) {
                record(x);
            }
        }
        if point == "queue.close.mid" {
            q.close();
        }
        0
    });
    let consumer = || {
        fork(|| loop {
            match q.get_timeout(SECS(10)) {
                Ok(x) => record(x),
                Err(ipc_queue::GetTimeoutError::Closed) => return 0,
                Err(_) => return 11,
            }
        })
    };
    // The survivor consumer runs beside the victim, except where the victim must be the one
    // that meets the dead writer's slot (else the survivor may skip it first).
    let early = (point != "queue.tombstone.published").then(consumer);
    let died = match victim_end(v, SECS(20)) {
        Ok(d) => d,
        Err(e) => return Fail(e),
    };
    let c = early.unwrap_or_else(consumer);
    if let Err(e) = survivor(s, SECS(30)).and_then(|c| match c {
        0 => Ok(()),
        c => Err(format!("survivor producer exit {c} (a put timed out)")),
    }) {
        return Fail(e);
    }
    q.close();
    if let Err(e) = survivor(c, SECS(30)).and_then(|c| match c {
        0 => Ok(()),
        c => Err(format!("survivor consumer exit {c} (a get timed out)")),
    }) {
        return Fail(e);
    }
    let mut seen = std::collections::BTreeMap::<u64, u32>::new();
    let got = (b.at(2).load(SeqCst) as usize).min(512);
    for i in 0..got {
        *seen.entry(b.at(3 + i).load(SeqCst)).or_default() += 1;
    }
    loop {
        match q.get_timeout(Duration::from_millis(100)) {
            Ok(x) => *seen.entry(x).or_default() += 1,
            Err(ipc_queue::GetTimeoutError::Timeout | ipc_queue::GetTimeoutError::Closed) => break,
            Err(e) => return Fail(format!("drain: {e}")),
        }
    }
    let dups: Vec<u64> = seen
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(&k, _)| k)
        .collect();
    if !dups.is_empty() {
        return Fail(format!("duplicated: {dups:?}"));
    }
    if seen.contains_key(&999_999) {
        return Fail("a dead writer's unpublished message was delivered".into());
    }
    let acked_s = b.at(0).load(SeqCst);
    let acked_v = b.at(1).load(SeqCst);
    let missing_list: Vec<u64> = (0..acked_s)
        .chain(10_000..10_000 + acked_v)
        .filter(|x| !seen.contains_key(x))
        .collect();
    let missing = missing_list.len() as u64;
    let dropped = q.dropped_by_dead_peers();
    if missing > dropped || dropped > 1 {
        return Fail(format!(
            "acknowledged message(s) missing: {missing_list:?}; queue counted {dropped} dropped"
        ));
    }
    if !died {
        return NotReached(NOT_REACHED.into());
    }
    Pass(format!(
        "victim SIGKILLed at the point; {} delivered exactly once, {missing} lost with the dead reader (counted {dropped})",
        seen.len()
    ))
}

/// A message whose encoding fails inside its slot when `fail` is set: the size pass before
/// the claim succeeds, the write after it does not.
struct Fallible {
    value: u64,
    fail: bool,
    calls: std::cell::Cell<u32>,
}

impl Fallible {
    fn new(value: u64, fail: bool) -> Fallible {
        Fallible {
            value,
            fail,
            calls: std::cell::Cell::new(0),
        }
    }
}

impl serde::Serialize for Fallible {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.calls.set(self.calls.get() + 1);
        if self.fail && self.calls.get() > 1 {
            return Err(serde::ser::Error::custom("refused in the slot"));
        }
        s.serialize_u64(self.value)
    }
}

impl<'de> serde::Deserialize<'de> for Fallible {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = <u64 as serde::Deserialize>::deserialize(d)?;
        Ok(Fallible::new(value, false))
    }
}

/// The two join-accounting points: a victim killed after a tombstone is published (its own
/// failed encoding) or after it reclaimed a dead writer's slot, before either is counted as
/// retired. Survivors then put and get 100 messages, each `task_done`: every one arrives
/// exactly once and `join` returns (before the fix it hung for ever).
fn queue_retire_row(point: &'static str, _a: Action) -> Outcome {
    let Ok(q) = ipc_queue::Queue::<Fallible>::new(4) else {
        return Fail("queue".into());
    };
    if point == "queue.reclaim.before_retire" {
        // A writer killed between claim and publish leaves the slot the victim reclaims.
        let w = fork(|| {
            arm("queue.put.claimed", 1, KILL).unwrap();
            let _ = q.put(Fallible::new(999_999, false));
            0
        });
        if let Err(e) = victim_end(w, SECS(10)) {
            return Fail(format!("setup writer: {e}"));
        }
    }
    let v = fork(|| {
        arm(point, 1, KILL).unwrap();
        if point == "queue.publish.before_retire" {
            let _ = q.put(Fallible::new(0, true));
        } else {
            let _ = q.get_timeout(SECS(2));
        }
        0
    });
    let died = match victim_end(v, SECS(20)) {
        Ok(d) => d,
        Err(e) => return Fail(e),
    };
    let p = fork(|| {
        let ok = (0..100).all(|v| q.put_timeout(Fallible::new(v, false), SECS(5)).is_ok());
        i32::from(!ok)
    });
    let mut seen = std::collections::BTreeMap::<u64, u32>::new();
    for _ in 0..100 {
        match q.get_timeout(SECS(5)) {
            Ok(m) => {
                *seen.entry(m.value).or_default() += 1;
                let _ = q.task_done();
            }
            Err(e) => return Fail(format!("survivor get: {e}")),
        }
    }
    match survivor(p, SECS(20)) {
        Ok(0) => {}
        Ok(c) => return Fail(format!("survivor producer exit {c}")),
        Err(e) => return Fail(e),
    }
    if seen.len() != 100 || seen.values().any(|&n| n != 1) || seen.contains_key(&999_999) {
        return Fail(format!("not exactly once: {} distinct", seen.len()));
    }
    if let Err(e) = q.join_timeout(SECS(5)) {
        return Fail(format!("join after the survivors' task_done: {e}"));
    }
    if !died {
        return NotReached(NOT_REACHED.into());
    }
    Pass(
        "victim SIGKILLed before the retire was counted; 100 delivered exactly once, join returned"
            .into(),
    )
}

// ---- locks -----------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum LockKind {
    Lock,
    RLock,
    Value,
    Array,
}

struct Locks {
    lock: ipc_sem::Lock,
    rlock: ipc_sem::RLock,
    value: ipc_shm::Value<u64>,
    array: ipc_shm::Array<u64>,
}

/// Locks `kind` within `t`: 0 = got it, 10 = OwnerDied, 11 = timeout, 12 = other error.
/// Holds it for `hold` (the victim's operation), nesting once for an `RLock`.
fn lock_once(l: &Locks, kind: LockKind, t: Duration, hold: Duration) -> i32 {
    fn code<G>(
        r: Result<G, ipc_shm::LockTimeoutError<G>>,
        hold: Duration,
        fix: impl Fn(&G),
    ) -> i32 {
        match r {
            Ok(_g) => {
                std::thread::sleep(hold);
                0
            }
            Err(ipc_shm::LockTimeoutError::OwnerDied(g)) => {
                fix(&g);
                10
            }
            Err(ipc_shm::LockTimeoutError::Timeout) => 11,
            Err(_) => 12,
        }
    }
    match kind {
        LockKind::Lock => code(l.lock.lock_timeout(t), hold, |g| g.mark_consistent()),
        LockKind::RLock => match l.rlock.lock_timeout(t) {
            Ok(_g) => {
                let inner = l.rlock.lock_timeout(t);
                std::thread::sleep(hold);
                drop(inner);
                0
            }
            Err(ipc_shm::LockTimeoutError::OwnerDied(g)) => {
                g.mark_consistent();
                10
            }
            Err(ipc_shm::LockTimeoutError::Timeout) => 11,
            Err(_) => 12,
        },
        LockKind::Value => code(l.value.lock_timeout(t), hold, |g| g.mark_consistent()),
        LockKind::Array => code(l.array.lock_timeout(t), hold, |g| g.mark_consistent()),
    }
}

fn lock_row(kind: LockKind, point: &'static str, action: Action) -> Outcome {
    let l = Locks {
        lock: ipc_sem::Lock::new().unwrap(),
        rlock: ipc_sem::RLock::new().unwrap(),
        value: ipc_shm::Value::new(0).unwrap(),
        array: ipc_shm::Array::new(4).unwrap(),
    };
    let v = fork(|| {
        arm(point, 1, action).unwrap();
        lock_once(&l, kind, SECS(5), Duration::from_millis(20))
    });
    let other = |t: Duration| survivor(fork(|| lock_once(&l, kind, t, Duration::ZERO)), SECS(20));
    if action == STOP {
        let mut v = v;
        let t0 = std::time::Instant::now();
        while !v.is_stopped() {
            if let Some(e) = v.try_wait() {
                return match e {
                    Exit::Code(0) => NotReached(NOT_REACHED.into()),
                    e => Fail(format!("victim ended with {e:?}")),
                };
            }
            if t0.elapsed() > SECS(10) {
                return Fail("victim neither stopped nor finished".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let r = other(Duration::from_millis(300));
        v.signal(libc::SIGCONT);
        let end = victim_end(v, SECS(10));
        return match (r, end) {
            (Ok(11), Ok(false)) => match other(SECS(5)) {
                Ok(0) => Pass("stopped holder: others time out (no OwnerDied); after SIGCONT it releases and the next locker gets it".into()),
                Ok(c) => Fail(format!("after SIGCONT the next locker got code {c}")),
                Err(e) => Fail(e),
            },
            (Ok(10), _) => Fail("a stopped (live) holder was reported as OwnerDied".into()),
            (Ok(c), e) => Fail(format!("locker while stopped got code {c}, victim {e:?}")),
            (Err(e), _) => Fail(e),
        };
    }
    match victim_end(v, SECS(20)) {
        Err(e) => Fail(e),
        Ok(false) => match other(SECS(5)) {
            Ok(0) => NotReached(NOT_REACHED.into()),
            r => Fail(format!("victim finished but the next locker got {r:?}")),
        },
        Ok(true) => match other(SECS(5)) {
            Ok(10) => match other(SECS(5)) {
                Ok(0) => Pass(
                    "victim SIGKILLed holding it: next locker got OwnerDied, then the lock works"
                        .into(),
                ),
                r => Fail(format!(
                    "after OwnerDied + mark_consistent the lock gave {r:?}"
                )),
            },
            Ok(c) => Fail(format!("next locker got code {c}, not OwnerDied (10)")),
            Err(e) => Fail(e),
        },
    }
}

// ---- condition, barrier, semaphore ----------------------------------------------------

fn condition_row(point: &'static str, _a: Action) -> Outcome {
    let c = ipc_sem::Condition::new().unwrap();
    let b = Board::new(1).unwrap();
    let v = fork(|| {
        arm(point, 1, KILL).unwrap();
        let g = match c.lock() {
            Ok(g) => g,
            Err(_) => return 12,
        };
        b.at(0).store(1, SeqCst);
        let _ = c.wait_timeout(g, SECS(3));
        0
    });
    let t0 = std::time::Instant::now();
    while b.at(0).load(SeqCst) == 0 && t0.elapsed() < SECS(5) {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(50));
    let n = fork(|| match c.lock_timeout(SECS(5)) {
        Ok(_g) => {
            c.notify_all();
            0
        }
        Err(ipc_shm::LockTimeoutError::OwnerDied(g)) => {
            g.mark_consistent();
            c.notify_all();
            10
        }
        Err(_) => 11,
    });
    let died = victim_end(v, SECS(20));
    let notifier = survivor(n, SECS(20));
    let after = survivor(
        fork(|| match c.lock_timeout(SECS(5)) {
            Ok(_) => 0,
            Err(ipc_shm::LockTimeoutError::OwnerDied(g)) => {
                g.mark_consistent();
                10
            }
            Err(_) => 11,
        }),
        SECS(20),
    );
    match (died, notifier, after) {
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => Fail(e),
        (Ok(_), Ok(11), _) | (Ok(_), _, Ok(11)) => Fail("a locker timed out".into()),
        (Ok(false), ..) => NotReached(NOT_REACHED.into()),
        (Ok(true), Ok(n), Ok(a)) => Pass(format!(
            "victim SIGKILLed in its wait: notifier not blocked (code {n}), lock usable after (code {a}; 10 = OwnerDied)"
        )),
    }
}

fn barrier_row(point: &'static str, _a: Action) -> Outcome {
    let bar = ipc_sem::Barrier::new(3).unwrap();
    let party = || match bar.wait_timeout(SECS(5)) {
        Ok(_) => 0,
        Err(ipc_sem::BarrierTimeoutError::Broken) => 10,
        Err(_) => 12,
    };
    // The victim arrives first (the last arrival completes the generation and never reaches
    // the mid-arrival point): the survivors start after it has had time to arrive.
    let v = fork(|| {
        arm(point, 1, KILL).unwrap();
        party()
    });
    let late_party = || {
        std::thread::sleep(Duration::from_millis(300));
        party()
    };
    let s1 = fork(late_party);
    let s2 = fork(late_party);
    match (
        victim_end(v, SECS(20)),
        survivor(s1, SECS(20)),
        survivor(s2, SECS(20)),
    ) {
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => Fail(e),
        (Ok(false), Ok(0), Ok(0)) => NotReached(NOT_REACHED.into()),
        (Ok(true), Ok(10), Ok(10)) => {
            Pass("victim SIGKILLed mid-arrival: both survivors got BrokenBarrier".into())
        }
        (d, a, b) => Fail(format!(
            "victim died {d:?}, survivors {a:?} {b:?} (10 = BrokenBarrier)"
        )),
    }
}

fn semaphore_row(point: &'static str, _a: Action) -> Outcome {
    let sem = ipc_sem::Semaphore::new(0).unwrap();
    let acquirer = || {
        if sem.acquire_timeout(SECS(5)).is_ok() {
            0
        } else {
            11
        }
    };
    if point == "sem.semaphore.woken" {
        let v = fork(|| {
            arm(point, 1, KILL).unwrap();
            if sem.acquire_timeout(SECS(5)).is_ok() {
                0
            } else {
                11
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        sem.release().unwrap();
        return match victim_end(v, SECS(20)) {
            Err(e) => Fail(e),
            Ok(false) => NotReached(NOT_REACHED.into()),
            Ok(true) => match survivor(fork(acquirer), SECS(20)) {
                Ok(0) => Pass("victim SIGKILLed woken, before its CAS: the permit stays for the next acquirer".into()),
                r => Fail(format!("the released permit was lost with the victim: {r:?}")),
            },
        };
    }
    let w = fork(acquirer);
    std::thread::sleep(Duration::from_millis(100));
    let v = fork(|| {
        arm(point, 1, KILL).unwrap();
        match sem.release() {
            Ok(()) => 0,
            Err(_) => 12,
        }
    });
    match (victim_end(v, SECS(20)), survivor(w, SECS(20))) {
        (Err(e), _) | (_, Err(e)) => Fail(e),
        (Ok(false), Ok(0)) => NotReached(NOT_REACHED.into()),
        (Ok(true), Ok(0)) => Pass("victim SIGKILLed between count store and wake: the parked acquirer still got the permit".into()),
        (d, r) => Fail(format!("victim died {d:?}; parked acquirer {r:?} (11 = lost wake-up)")),
    }
}

// ---- pipe ------------------------------------------------------------------------------

fn pipe_row(point: &'static str, _a: Action) -> Outcome {
    let (mut mine, mut theirs) = ipc_pipe::duplex().unwrap();
    let v = fork(|| {
        arm(point, 1, KILL).unwrap();
        // A bounded send of a frame larger than the socket buffer: its first write puts the
        // header and part of the body on the wire (nobody reads yet), then the point fires.
        // (A blocking send finishes inside one write, where only an outside kill can cut it.)
        match theirs.send_bytes_timeout(&vec![7u8; 4 << 20], SECS(5)) {
            Ok(()) => 0,
            Err(_) => 12,
        }
    });
    drop(theirs);
    let died = victim_end(v, SECS(20));
    let r = mine.recv_bytes_timeout(SECS(5));
    match (died, r) {
        (Err(e), _) => Fail(e),
        (Ok(false), Ok(b)) if b.len() == 4 << 20 => NotReached(NOT_REACHED.into()),
        (Ok(true), Err(ipc_pipe::RecvTimeoutError::Timeout)) => {
            Fail("receiver timed out instead of seeing the dead peer".into())
        }
        (Ok(true), Err(e)) => Pass(format!(
            "victim SIGKILLed after the header: receiver got `{e}`, no partial message"
        )),
        (d, r) => Fail(format!(
            "victim died {d:?}; receiver {:?}",
            r.map(|b| b.len())
        )),
    }
}

// ---- pool ------------------------------------------------------------------------------

static POOL_ARM: OnceLock<Board> = OnceLock::new();

/// The pool initializer: the first worker to start arms `pool.worker.mid_task`.
fn arm_first_worker() {
    if let Some(b) = POOL_ARM.get() {
        if b.at(0).swap(0, SeqCst) == 1 {
            let _ = arm("pool.worker.mid_task", 1, KILL);
        }
    }
}

fn square(x: u64) -> u64 {
    x * x
}

fn map_ok(pool: &ipc_pool::Pool) -> Result<(), ipc_pool::Error> {
    let v = pool.map(square, 0..16u64)?;
    if v.iter().enumerate().all(|(i, &r)| r == (i * i) as u64) {
        Ok(())
    } else {
        Err(ipc_pool::Error::Broken("wrong results".into()))
    }
}

fn apply_within(pool: &ipc_pool::Pool, x: u64) -> Result<u64, ipc_pool::Error> {
    Ok(pool.apply_async(square, x)?.get_timeout(SECS(10))?)
}

fn pool_row(point: &'static str, _a: Action) -> Outcome {
    let owner = fork(|| match point {
        "pool.worker.mid_task" => {
            let b = POOL_ARM.get_or_init(|| Board::new(1).unwrap());
            b.at(0).store(1, SeqCst);
            let Ok(pool) = ipc_pool::Pool::builder()
                .processes(2)
                .initializer(arm_first_worker)
                .build()
            else {
                return 13;
            };
            let mut died = false;
            for _ in 0..4 {
                match map_ok(&pool) {
                    Ok(()) => {}
                    Err(ipc_pool::Error::WorkerDied { .. }) => died = true,
                    Err(_) => return 14,
                }
            }
            match (died, map_ok(&pool)) {
                (true, Ok(())) => 10,
                (false, Ok(())) => 0,
                _ => 15,
            }
        }
        _ => {
            arm(point, 1, KILL).unwrap();
            let pool = match ipc_pool::Pool::builder().processes(2).build() {
                Ok(p) => p,
                Err(_) => return 20,
            };
            if point == "pool.fork_server.request" {
                // A respawn makes the fork server take a request.
                if let Some(&pid) = pool.pids().first() {
                    ipc_testkit::signal_pid(pid, libc::SIGKILL);
                }
            }
            let mut err = false;
            for i in 0..8 {
                match apply_within(&pool, i) {
                    Ok(r) if r == i * i => {}
                    Ok(_) => return 15,
                    Err(ipc_pool::Error::WorkerDied { .. })
                        if point == "pool.fork_server.request" && i == 0 => {}
                    Err(ipc_pool::Error::Timeout) => return 11,
                    Err(_) => err = true,
                }
            }
            if err {
                20
            } else {
                0
            }
        }
    });
    let r = {
        let mut o = owner;
        match o.wait_timeout(SECS(60)) {
            Some(e) => Ok(e),
            None => Err("pool owner blocked past its deadline (60 s)".to_string()),
        }
    };
    match (point, r) {
        (_, Err(e)) => Fail(e),
        (_, Ok(Exit::Code(0))) => NotReached(NOT_REACHED.into()),
        ("pool.worker.mid_task", Ok(Exit::Code(10))) => {
            Pass("worker SIGKILLed mid-task: WorkerDied for its task, the pool went on".into())
        }
        ("pool.parent.dispatching", Ok(Exit::Signal(libc::SIGKILL))) => Pass(
            "parent SIGKILLed while dispatching: its fork server and workers went with it".into(),
        ),
        (_, Ok(Exit::Code(20))) => Pass("pool reported an error (no hang)".into()),
        (_, Ok(Exit::Code(11))) => Fail("a task hung past its deadline".into()),
        (_, Ok(e)) => Fail(format!("pool owner ended with {e:?}")),
    }
}

// ---- the matrix ------------------------------------------------------------------------

type Scenario = fn(&'static str, Action) -> Outcome;

#[test]
fn kill_matrix() {
    let _ = ipc_testkit::become_subreaper();
    let rows: Vec<(&str, &'static str, Action, Scenario)> = vec![
        ("queue", "queue.put.claimed", KILL, queue_row),
        ("queue", "queue.get.claimed", KILL, queue_row),
        ("queue", "queue.tombstone.published", KILL, queue_row),
        (
            "queue",
            "queue.publish.before_retire",
            KILL,
            queue_retire_row,
        ),
        (
            "queue",
            "queue.reclaim.before_retire",
            KILL,
            queue_retire_row,
        ),
        ("queue", "queue.close.mid", KILL, queue_row),
        ("shm", "shm.rawlock.held", KILL, |p, a| {
            lock_row(LockKind::Value, p, a)
        }),
        ("shm", "shm.rawlock.held", STOP, |p, a| {
            lock_row(LockKind::Value, p, a)
        }),
        ("shm", "shm.value.guard_held", KILL, |p, a| {
            lock_row(LockKind::Value, p, a)
        }),
        ("shm", "shm.value.guard_held", STOP, |p, a| {
            lock_row(LockKind::Value, p, a)
        }),
        ("shm", "shm.array.guard_held", KILL, |p, a| {
            lock_row(LockKind::Array, p, a)
        }),
        ("shm", "shm.array.guard_held", STOP, |p, a| {
            lock_row(LockKind::Array, p, a)
        }),
        ("sem", "sem.lock.held", KILL, |p, a| {
            lock_row(LockKind::Lock, p, a)
        }),
        ("sem", "sem.lock.held", STOP, |p, a| {
            lock_row(LockKind::Lock, p, a)
        }),
        ("sem", "sem.rlock.depth_set", KILL, |p, a| {
            lock_row(LockKind::RLock, p, a)
        }),
        ("sem", "sem.rlock.depth_set", STOP, |p, a| {
            lock_row(LockKind::RLock, p, a)
        }),
        ("sem", "sem.condition.registered", KILL, condition_row),
        ("sem", "sem.condition.woken", KILL, condition_row),
        ("sem", "sem.barrier.mid_arrival", KILL, barrier_row),
        ("sem", "sem.semaphore.woken", KILL, semaphore_row),
        ("sem", "sem.semaphore.release_mid_wake", KILL, semaphore_row),
        ("pipe", "pipe.frame.header_written", KILL, pipe_row),
        ("pool", "pool.worker.mid_task", KILL, pool_row),
        ("pool", "pool.zygote.mid_fork", KILL, pool_row),
        ("pool", "pool.fork_server.request", KILL, pool_row),
        ("pool", "pool.parent.dispatching", KILL, pool_row),
    ];
    let mut lines = Vec::new();
    let mut failed = 0;
    for (mech, point, action, run) in rows {
        let leaks = Leaks::snapshot("ipc");
        let outcome = run(point, action);
        // Orphans re-parented to us (a dead pool owner's workers): reap the dead, report the
        // living.
        let t0 = std::time::Instant::now();
        while t0.elapsed() < SECS(3) {
            ipc_testkit::reap_children(&ipc_testkit::child_pids());
            if ipc_testkit::child_pids().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = leaks.report_within(SECS(3));
        for pid in ipc_testkit::child_pids() {
            ipc_testkit::signal_pid(pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
        ipc_testkit::reap_children(&ipc_testkit::child_pids());
        let act = if action == STOP { "STOP" } else { "KILL" };
        let (tag, text) = match outcome {
            _ if !left.is_empty() => ("FAIL", format!("leaks: {}", left.join("; "))),
            Pass(t) => ("ok", t),
            NotReached(t) => ("FAIL", format!("not reached: {t}")),
            Fail(t) => ("FAIL", t),
        };
        if tag == "FAIL" {
            failed += 1;
        }
        lines.push(format!("{mech:<6} {point:<33} {act:<5} {tag:<12} {text}"));
    }
    let table = lines.join("\n");
    println!("kill matrix (mechanism, point, action, outcome):\n{table}");
    assert_eq!(failed, 0, "{failed} row(s) failed:\n{table}");
}
