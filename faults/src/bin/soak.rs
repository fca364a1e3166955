//! Soak: queues, locks, semaphores and a pool under load in forked processes while a killer
//! `SIGKILL`s and `SIGSTOP`/`SIGCONT`s random participants (pool workers included).
//!
//! `cargo run --release -p ipc-faults --bin soak -- --secs N` (default 30). Prints a summary
//! and exits non-zero on any duplicated message, acknowledged message lost beyond what dead
//! readers explain, hang (a participant past its deadline), participant error, or leak.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Duration;

use ipc_faults::{now_ms, Board, Rng};
use ipc_testkit::{fork, Child, Exit, Leaks};

const QUEUES: usize = 2; // 0: PodQueue<[u64; 2]>, 1: Queue<(u32, u32)>
const PRODUCERS_PER_Q: usize = 2;
const CONSUMERS_PER_Q: usize = 2;
const LOCK_USERS: usize = 2;
const VALUE_USERS: usize = 2;
const SEM_USERS: usize = 3;
const SEM_PERMITS: u64 = 2;
const IDS: usize = 256; // producer incarnations per queue
const SEQ_MAX: u64 = 1 << 20; // messages per incarnation
const SEQ_WORDS: usize = (SEQ_MAX / 64) as usize;
const POOL_PIDS: usize = 8;
const HANG_MS: u64 = 5_000;
const OP_TIMEOUT: Duration = Duration::from_millis(200);

// Board layout.
const STOP: usize = 0;
const LOCK_COUNTER: usize = 1;
const LOCK_OWNER_DIED: usize = 2;
const VALUE_OWNER_DIED: usize = 3;
const SEM_VIOLATIONS: usize = 4;
const POOL_MAPS: usize = 5;
const POOL_APPLIES: usize = 6;
const POOL_WORKER_DIED: usize = 7;
const POOL_TIMEOUTS: usize = 8;
const POOL_REBUILDS: usize = 9;
const LOCK_TIMEOUTS: usize = 10;
const SEM_TIMEOUTS: usize = 11;
/// One bit per semaphore user slot holding a permit: set and cleared with one atomic RMW, so
/// a holder sees every holder of that instant (scanning per-slot words is no snapshot: a
/// holder could count one that released before another acquired).
const SEM_HELD: usize = 12;
const POOL_PID0: usize = 16;
const SLOT0: usize = POOL_PID0 + POOL_PIDS; // per slot: heartbeat, tally
const SLOTS: usize = 64;
const SLOT_WORDS: usize = 2;
const Q0: usize = SLOT0 + SLOTS * SLOT_WORDS; // per queue: delivered, dups, then acked[IDS], bitmap
const Q_WORDS: usize = 2 + IDS + IDS * SEQ_WORDS;
const BOARD_WORDS: usize = Q0 + QUEUES * Q_WORDS;

fn hb(slot: usize) -> usize {
    SLOT0 + slot * SLOT_WORDS
}
fn tally(slot: usize) -> usize {
    hb(slot) + 1
}
/// The bit of `slot` in the `SEM_HELD` word.
fn held_bit(slot: usize) -> u64 {
    1 << slot
}
fn q_delivered(q: usize) -> usize {
    Q0 + q * Q_WORDS
}
fn q_dups(q: usize) -> usize {
    q_delivered(q) + 1
}
fn q_acked(q: usize, id: usize) -> usize {
    q_delivered(q) + 2 + id
}
fn q_bits(q: usize, id: usize, seq: u64) -> usize {
    q_delivered(q) + 2 + IDS + id * SEQ_WORDS + (seq / 64) as usize
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Producer(usize),
    Consumer(usize),
    LockUser,
    ValueUser,
    SemUser,
    PoolOwner,
}

struct Shared {
    board: Board,
    podq: ipc_queue::PodQueue<[u64; 2]>,
    serq: ipc_queue::Queue<(u32, u32)>,
    lock: ipc_sem::Lock,
    value: ipc_shm::Value<u64>,
    sem: ipc_sem::BoundedSemaphore,
}

fn beat(b: &Board, slot: usize) {
    b.at(hb(slot)).store(now_ms(), Relaxed);
}
fn stopping(b: &Board) -> bool {
    b.at(STOP).load(Relaxed) != 0
}

fn producer(s: &Shared, q: usize, id: usize, slot: usize) -> i32 {
    let b = &s.board;
    let mut seq = b.at(q_acked(q, id)).load(Relaxed);
    while seq < SEQ_MAX && !stopping(b) {
        beat(b, slot);
        let r = if q == 0 {
            s.podq
                .put_timeout([id as u64, seq], OP_TIMEOUT)
                .map_err(|e| e.into_error())
        } else {
            s.serq
                .put_timeout((id as u32, seq as u32), OP_TIMEOUT)
                .map_err(|e| e.into_error())
        };
        match r {
            Ok(()) => {
                seq += 1;
                b.at(q_acked(q, id)).store(seq, SeqCst);
            }
            Err(ipc_queue::Error::Timeout) => {}
            Err(ipc_queue::Error::Closed) => break,
            Err(e) => {
                eprintln!("soak: producer q{q} id{id}: {e}");
                return 2;
            }
        }
    }
    0
}

fn consumer(s: &Shared, q: usize, slot: usize) -> i32 {
    let b = &s.board;
    loop {
        beat(b, slot);
        let r = if q == 0 {
            s.podq.get_timeout(OP_TIMEOUT).map(|[id, seq]| (id, seq))
        } else {
            s.serq
                .get_timeout(OP_TIMEOUT)
                .map(|(id, seq)| (u64::from(id), u64::from(seq)))
        };
        match r {
            Ok((id, seq)) => {
                if id as usize >= IDS || seq >= SEQ_MAX {
                    eprintln!("soak: consumer q{q}: message out of range ({id}, {seq})");
                    return 2;
                }
                let bit = 1u64 << (seq % 64);
                let prev = b.at(q_bits(q, id as usize, seq)).fetch_or(bit, SeqCst);
                if prev & bit != 0 {
                    b.at(q_dups(q)).fetch_add(1, SeqCst);
                } else {
                    b.at(q_delivered(q)).fetch_add(1, Relaxed);
                }
            }
            Err(ipc_queue::GetTimeoutError::Timeout) => {}
            Err(ipc_queue::GetTimeoutError::Closed) => return 0,
            Err(e) => {
                eprintln!("soak: consumer q{q}: {e}");
                return 2;
            }
        }
    }
}

/// The increment every lock user makes: read, store + 1 (two steps, so a lost lock shows).
fn bump(b: &Board, slot: usize) {
    let c = b.at(LOCK_COUNTER).load(SeqCst);
    std::hint::black_box(c);
    b.at(LOCK_COUNTER).store(c + 1, SeqCst);
    b.at(tally(slot)).fetch_add(1, SeqCst);
}

fn lock_user(s: &Shared, slot: usize) -> i32 {
    let b = &s.board;
    while !stopping(b) {
        beat(b, slot);
        match s.lock.lock_timeout(OP_TIMEOUT) {
            Ok(_g) => bump(b, slot),
            Err(ipc_sem::LockTimeoutError::OwnerDied(g)) => {
                g.mark_consistent();
                b.at(LOCK_OWNER_DIED).fetch_add(1, Relaxed);
                bump(b, slot);
            }
            Err(ipc_sem::LockTimeoutError::Timeout) => {
                b.at(LOCK_TIMEOUTS).fetch_add(1, Relaxed);
            }
            Err(e) => {
                eprintln!("soak: lock user: {e}");
                return 2;
            }
        }
    }
    0
}

fn value_user(s: &Shared, slot: usize) -> i32 {
    let b = &s.board;
    while !stopping(b) {
        beat(b, slot);
        let r = match s.value.lock_timeout(OP_TIMEOUT) {
            Ok(g) => Ok(g),
            Err(ipc_shm::LockTimeoutError::OwnerDied(g)) => {
                g.mark_consistent();
                b.at(VALUE_OWNER_DIED).fetch_add(1, Relaxed);
                Ok(g)
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(mut g) => {
                let v = *g;
                *g = v + 1;
                b.at(tally(slot)).fetch_add(1, SeqCst);
            }
            Err(ipc_shm::LockTimeoutError::Timeout) => {
                b.at(LOCK_TIMEOUTS).fetch_add(1, Relaxed);
            }
            Err(e) => {
                eprintln!("soak: value user: {e}");
                return 2;
            }
        }
    }
    0
}

fn sem_user(s: &Shared, slot: usize) -> i32 {
    let b = &s.board;
    while !stopping(b) {
        beat(b, slot);
        if s.sem.acquire_timeout(OP_TIMEOUT).is_err() {
            b.at(SEM_TIMEOUTS).fetch_add(1, Relaxed);
            continue;
        }
        let before = b.at(SEM_HELD).fetch_or(held_bit(slot), SeqCst);
        if u64::from((before | held_bit(slot)).count_ones()) > SEM_PERMITS {
            b.at(SEM_VIOLATIONS).fetch_add(1, SeqCst);
        }
        b.at(tally(slot)).fetch_add(1, Relaxed);
        b.at(SEM_HELD).fetch_and(!held_bit(slot), SeqCst);
        if let Err(e) = s.sem.release() {
            eprintln!("soak: semaphore user: {e}");
            return 2;
        }
    }
    0
}

fn square(x: u64) -> u64 {
    x * x
}

fn pool_owner(s: &Shared, slot: usize) -> i32 {
    let b = &s.board;
    'rebuild: while !stopping(b) {
        beat(b, slot);
        let pool = match ipc_pool::Pool::builder().processes(2).build() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("soak: pool build: {e}");
                return 2;
            }
        };
        let mut n = 0u64;
        while !stopping(b) {
            let pids = pool.pids();
            for i in 0..POOL_PIDS {
                let p = pids.get(i).map_or(0, |&p| p as u64);
                b.at(POOL_PID0 + i).store(p, Relaxed);
            }
            beat(b, slot);
            n += 1;
            let r = pool.map(square, 0..64u64).and_then(|v| {
                if v.iter()
                    .enumerate()
                    .all(|(i, &r)| r == (i as u64) * (i as u64))
                {
                    b.at(POOL_MAPS).fetch_add(1, Relaxed);
                    Ok(())
                } else {
                    Err(ipc_pool::Error::Broken("map returned wrong results".into()))
                }
            });
            let r = r.and_then(|()| {
                let mut a = pool.apply_async(square, n)?;
                let v = a.get_timeout(Duration::from_secs(2))?;
                if v == n * n {
                    b.at(POOL_APPLIES).fetch_add(1, Relaxed);
                    Ok(())
                } else {
                    Err(ipc_pool::Error::Broken(
                        "apply returned a wrong result".into(),
                    ))
                }
            });
            match r {
                Ok(()) => {}
                Err(ipc_pool::Error::WorkerDied { .. }) => {
                    b.at(POOL_WORKER_DIED).fetch_add(1, Relaxed);
                }
                Err(ipc_pool::Error::Timeout) => {
                    b.at(POOL_TIMEOUTS).fetch_add(1, Relaxed);
                }
                Err(e) => {
                    eprintln!("soak: pool: {e}; rebuilding");
                    b.at(POOL_REBUILDS).fetch_add(1, Relaxed);
                    continue 'rebuild;
                }
            }
        }
        for i in 0..POOL_PIDS {
            b.at(POOL_PID0 + i).store(0, Relaxed);
        }
        pool.close();
        if let Err(e) = pool.join_timeout(Duration::from_secs(5)) {
            eprintln!("soak: pool join: {e}");
            return 2;
        }
    }
    0
}

struct Slot {
    role: Role,
    child: Option<Child>,
    id: usize,
    started: u64,
    stopped_until: Option<u64>,
    last_cont: u64,
}

#[derive(Default)]
struct Stats {
    kills: BTreeMap<String, u64>,
    stops: BTreeMap<String, u64>,
    hangs: Vec<String>,
    errors: Vec<String>,
    consumer_kills: [u64; QUEUES],
    orphans_reaped: u64,
    ids_exhausted: bool,
}

fn role_name(r: Role) -> String {
    match r {
        Role::Producer(q) => format!("producer q{q}"),
        Role::Consumer(q) => format!("consumer q{q}"),
        Role::LockUser => "lock user".into(),
        Role::ValueUser => "value user".into(),
        Role::SemUser => "semaphore user".into(),
        Role::PoolOwner => "pool owner".into(),
    }
}

fn main() {
    let mut secs = 30u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => match args.next().and_then(|v| v.parse().ok()) {
                Some(v) => secs = v,
                None => {
                    eprintln!("usage: soak [--secs N]");
                    std::process::exit(2);
                }
            },
            _ => {
                eprintln!("usage: soak [--secs N]");
                std::process::exit(2);
            }
        }
    }
    std::process::exit(run(secs));
}

fn run(secs: u64) -> i32 {
    let leaks = Leaks::snapshot("ipc-");
    if let Err(e) = ipc_testkit::become_subreaper() {
        eprintln!("soak: cannot become a subreaper ({e}); orphans go unseen");
    }
    let code = {
        let shared = match make_shared() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("soak: setup: {e}");
                return 2;
            }
        };
        soak(&shared, secs)
    };
    // Every handle is dropped: nothing may be left.
    let left = leaks.report_within(Duration::from_secs(5));
    for l in &left {
        println!("LEAK: {l}");
    }
    println!("leaks: {}", left.len());
    if left.is_empty() {
        code
    } else {
        1
    }
}

fn make_shared() -> Result<Shared, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    Ok(Shared {
        board: Board::new(BOARD_WORDS).map_err(|x| e(&x))?,
        podq: ipc_queue::PodQueue::new(64).map_err(|x| e(&x))?,
        serq: ipc_queue::Queue::new(64).map_err(|x| e(&x))?,
        lock: ipc_sem::Lock::new().map_err(|x| e(&x))?,
        value: ipc_shm::Value::new(0u64).map_err(|x| e(&x))?,
        sem: ipc_sem::BoundedSemaphore::new(SEM_PERMITS as u32).map_err(|x| e(&x))?,
    })
}

fn spawn(s: &Shared, slot: &mut Slot, index: usize) {
    let b = &s.board;
    b.at(hb(index)).store(now_ms(), SeqCst);
    slot.started = now_ms();
    slot.last_cont = slot.started;
    slot.stopped_until = None;
    let role = slot.role;
    let id = slot.id;
    slot.child = Some(fork(|| match role {
        Role::Producer(q) => producer(s, q, id, index),
        Role::Consumer(q) => consumer(s, q, index),
        Role::LockUser => lock_user(s, index),
        Role::ValueUser => value_user(s, index),
        Role::SemUser => sem_user(s, index),
        Role::PoolOwner => pool_owner(s, index),
    }));
}

fn soak(s: &Shared, secs: u64) -> i32 {
    let b = &s.board;
    let mut rng = Rng::from_os();
    let mut next_id = [0usize; QUEUES];
    let mut roles = Vec::new();
    for q in 0..QUEUES {
        roles.extend(std::iter::repeat(Role::Producer(q)).take(PRODUCERS_PER_Q));
        roles.extend(std::iter::repeat(Role::Consumer(q)).take(CONSUMERS_PER_Q));
    }
    roles.extend(std::iter::repeat(Role::LockUser).take(LOCK_USERS));
    roles.extend(std::iter::repeat(Role::ValueUser).take(VALUE_USERS));
    roles.extend(std::iter::repeat(Role::SemUser).take(SEM_USERS));
    roles.push(Role::PoolOwner);
    assert!(roles.len() <= 64, "SEM_HELD has one bit per slot");
    let mut slots: Vec<Slot> = roles
        .iter()
        .map(|&role| Slot {
            role,
            child: None,
            id: 0,
            started: 0,
            stopped_until: None,
            last_cont: 0,
        })
        .collect();
    let mut st = Stats::default();
    for (i, slot) in slots.iter_mut().enumerate() {
        if let Role::Producer(q) = slot.role {
            slot.id = next_id[q];
            next_id[q] += 1;
        }
        spawn(s, slot, i);
    }
    let mut worker_stops: Vec<(i32, u64)> = Vec::new();
    let mut orphans_seen: BTreeMap<i32, u64> = BTreeMap::new();
    let start = now_ms();
    let end = start + secs * 1000;
    let mut next_action = start + 100;
    println!(
        "soak: {} participants + 2 pool workers for {secs} s",
        slots.len()
    );

    // Phase 1: load and faults.
    while now_ms() < end {
        let now = now_ms();
        for (i, slot) in slots.iter_mut().enumerate() {
            let ended = slot.child.as_mut().and_then(Child::try_wait);
            if let Some(exit) = ended {
                slot.child = None;
                if slot.role == Role::SemUser
                    && b.at(SEM_HELD).fetch_and(!held_bit(i), SeqCst) & held_bit(i) != 0
                {
                    // It died holding a permit: give the permit back for it.
                    if s.sem.release().is_err() {
                        eprintln!("soak: supervisor release for dead slot {i} refused (too many)");
                    }
                }
                match exit {
                    Exit::Signal(libc::SIGKILL) => {}
                    Exit::Code(0) => {}
                    other => st
                        .errors
                        .push(format!("{} ended with {other:?}", role_name(slot.role))),
                }
                if let Role::Producer(q) = slot.role {
                    if next_id[q] >= IDS {
                        st.ids_exhausted = true;
                        continue;
                    }
                    // Each incarnation gets a fresh id, so a dead one's acknowledgements stay
                    // exact (its in-flight put may or may not have landed).
                    slot.id = next_id[q];
                    next_id[q] += 1;
                }
                spawn(s, slot, i);
                continue;
            }
            if let Some(until) = slot.stopped_until {
                if now >= until {
                    if let Some(c) = &slot.child {
                        c.signal(libc::SIGCONT);
                    }
                    slot.stopped_until = None;
                    slot.last_cont = now;
                }
                continue;
            }
            let last = b
                .at(hb(i))
                .load(SeqCst)
                .max(slot.last_cont)
                .max(slot.started);
            if slot.child.is_some() && now.saturating_sub(last) > HANG_MS {
                st.hangs.push(format!(
                    "{} (slot {i}) silent for {} ms",
                    role_name(slot.role),
                    now - last
                ));
                if let Some(c) = &slot.child {
                    c.kill();
                }
            }
        }
        worker_stops.retain(|&(pid, until)| {
            if now >= until {
                ipc_testkit::signal_pid(pid, libc::SIGCONT);
                false
            } else {
                true
            }
        });
        reap_orphans(&slots, &mut orphans_seen, &mut st);
        if now >= next_action {
            next_action = now + 20 + rng.below(100);
            let kill = rng.below(2) == 0;
            if rng.below(6) == 0 {
                // A pool worker.
                let k = rng.below(POOL_PIDS as u64) as usize;
                let pid = b.at(POOL_PID0 + k).load(Relaxed) as i32;
                if pid > 0 && is_ours(pid) {
                    if kill {
                        ipc_testkit::signal_pid(pid, libc::SIGKILL);
                        *st.kills.entry("pool worker".into()).or_default() += 1;
                    } else if !worker_stops.iter().any(|&(p, _)| p == pid) {
                        ipc_testkit::signal_pid(pid, libc::SIGSTOP);
                        worker_stops.push((pid, now + 10 + rng.below(200)));
                        *st.stops.entry("pool worker".into()).or_default() += 1;
                    }
                }
            } else {
                let i = rng.below(slots.len() as u64) as usize;
                let slot = &mut slots[i];
                // The pool owner is rebuilt at some cost: hit it less often.
                let skip = slot.role == Role::PoolOwner && kill && rng.below(4) != 0;
                if let (Some(c), None, false) = (&slot.child, slot.stopped_until, skip) {
                    if kill {
                        c.kill();
                        *st.kills.entry(role_name(slot.role)).or_default() += 1;
                        if let Role::Consumer(q) = slot.role {
                            st.consumer_kills[q] += 1;
                        }
                    } else {
                        c.signal(libc::SIGSTOP);
                        slot.stopped_until = Some(now + 10 + rng.below(200));
                        *st.stops.entry(role_name(slot.role)).or_default() += 1;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }

    // Phase 2: wind down. Continue everyone, stop the loops, then close the queues so the
    // consumers drain them.
    for slot in &mut slots {
        if slot.stopped_until.take().is_some() {
            if let Some(c) = &slot.child {
                c.signal(libc::SIGCONT);
            }
        }
    }
    for &(pid, _) in &worker_stops {
        ipc_testkit::signal_pid(pid, libc::SIGCONT);
    }
    b.at(STOP).store(1, SeqCst);
    let wait_all = |slots: &mut [Slot], pick: &dyn Fn(Role) -> bool, st: &mut Stats| {
        for (i, slot) in slots.iter_mut().enumerate() {
            if !pick(slot.role) {
                continue;
            }
            if let Some(mut c) = slot.child.take() {
                match c.wait_timeout(Duration::from_secs(20)) {
                    Some(Exit::Code(0)) | Some(Exit::Signal(libc::SIGKILL)) => {}
                    Some(other) => st
                        .errors
                        .push(format!("{} ended with {other:?}", role_name(slot.role))),
                    None => st.hangs.push(format!(
                        "{} (slot {i}) did not finish within 20 s of the stop",
                        role_name(slot.role)
                    )),
                }
            }
            if slot.role == Role::SemUser
                && b.at(SEM_HELD).fetch_and(!held_bit(i), SeqCst) & held_bit(i) != 0
            {
                let _ = s.sem.release();
            }
        }
    };
    wait_all(&mut slots, &|r| !matches!(r, Role::Consumer(_)), &mut st);
    s.podq.close();
    s.serq.close();
    wait_all(&mut slots, &|r| matches!(r, Role::Consumer(_)), &mut st);
    let deadline = now_ms() + 3000;
    while now_ms() < deadline && !ipc_testkit::child_pids().is_empty() {
        reap_orphans(&slots, &mut orphans_seen, &mut st);
        std::thread::sleep(Duration::from_millis(10));
    }
    for pid in ipc_testkit::child_pids() {
        st.errors
            .push(format!("orphan {pid} still alive at the end; killed"));
        ipc_testkit::signal_pid(pid, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(50));
    ipc_testkit::reap_children(&ipc_testkit::child_pids());

    let roles: Vec<Role> = slots.iter().map(|s| s.role).collect();
    report(s, &st, &roles, secs)
}

fn is_ours(pid: i32) -> bool {
    let me = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    let it = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    !me.is_empty() && me == it && ipc_testkit::proc_state(pid).is_some_and(|c| c != 'Z')
}

/// Reaps children that are not our participants (orphans re-parented to us); one that stays
/// alive is only an error at the end.
fn reap_orphans(slots: &[Slot], seen: &mut BTreeMap<i32, u64>, st: &mut Stats) {
    let ours: BTreeSet<i32> = slots
        .iter()
        .filter_map(|s| s.child.as_ref().map(Child::pid))
        .collect();
    let others: BTreeSet<i32> = ipc_testkit::child_pids()
        .difference(&ours)
        .copied()
        .collect();
    for pid in ipc_testkit::reap_children(&others) {
        seen.remove(&pid);
        st.orphans_reaped += 1;
    }
    for pid in others {
        seen.entry(pid).or_insert_with(now_ms);
    }
}

fn report(s: &Shared, st: &Stats, roles: &[Role], secs: u64) -> i32 {
    let b = &s.board;
    let mut fail = Vec::new();
    println!("== soak summary ({secs} s)");
    println!("kills: {:?}", st.kills);
    println!("stops: {:?}", st.stops);
    for q in 0..QUEUES {
        let (name, dropped) = if q == 0 {
            ("PodQueue<[u64; 2]>", s.podq.dropped_by_dead_peers())
        } else {
            ("Queue<(u32, u32)>", s.serq.dropped_by_dead_peers())
        };
        let (mut sent, mut lost, mut unacked_delivered) = (0u64, 0u64, 0u64);
        for id in 0..IDS {
            let acked = b.at(q_acked(q, id)).load(SeqCst);
            sent += acked;
            for w in 0..SEQ_WORDS as u64 {
                let bits = b.at(q_bits(q, id, w * 64)).load(SeqCst);
                // The bits of this word below `acked` must all be set; those above may be
                // (delivered, but the producer died before acknowledging).
                let below = acked.saturating_sub(w * 64).min(64);
                let mask = if below == 64 {
                    u64::MAX
                } else {
                    (1u64 << below) - 1
                };
                lost += u64::from((!bits & mask).count_ones());
                unacked_delivered += u64::from((bits & !mask).count_ones());
                if bits == 0 && below == 0 {
                    break;
                }
            }
        }
        let delivered = b.at(q_delivered(q)).load(SeqCst);
        let dups = b.at(q_dups(q)).load(SeqCst);
        // A consumer killed between its get's return and its record loses one message the
        // queue cannot count: allow one per consumer kill on top of the queue's count.
        let explained = dropped + st.consumer_kills[q];
        println!(
            "queue {name}: sent (acked) {sent}, delivered {delivered} (of which unacked in-flight {unacked_delivered}), lost {lost} (queue dropped_by_dead_peers {dropped}, consumer kills {}), duplicated {dups}",
            st.consumer_kills[q]
        );
        if dups != 0 {
            fail.push(format!("{name}: {dups} duplicated"));
        }
        if lost > explained {
            fail.push(format!(
                "{name}: {lost} acknowledged messages lost, only {explained} explained by dead readers"
            ));
        }
    }
    let sum = |role: Role| -> u64 {
        (0..roles.len())
            .filter(|&i| roles[i] == role)
            .map(|i| b.at(tally(i)).load(SeqCst))
            .sum()
    };
    let kills = |role: Role| st.kills.get(&role_name(role)).copied().unwrap_or(0);
    let counter = b.at(LOCK_COUNTER).load(SeqCst);
    let value = s.value.lock_timeout(Duration::from_secs(1)).map(|g| *g);
    // Each user counts its own increments after making them: the shared count may exceed the
    // sum by one per user killed in between, never fall below it (that would be a lost update,
    // two holders at once).
    for (what, shared, role) in [
        ("lock counter", Some(counter), Role::LockUser),
        ("value", value.as_ref().ok().copied(), Role::ValueUser),
    ] {
        let own = sum(role);
        match shared {
            Some(v) if v >= own && v - own <= kills(role) => {}
            Some(v) => fail.push(format!(
                "{what}: shared count {v}, users counted {own}, {} users killed",
                kills(role)
            )),
            None => fail.push(format!("{what}: cannot read at the end")),
        }
    }
    println!(
        "lock: counter {counter}, OwnerDied seen {}; value: {:?}, OwnerDied seen {}; lock/value timeouts {}",
        b.at(LOCK_OWNER_DIED).load(SeqCst),
        value.as_ref().map_err(|e| e.to_string()),
        b.at(VALUE_OWNER_DIED).load(SeqCst),
        b.at(LOCK_TIMEOUTS).load(SeqCst)
    );
    println!(
        "semaphore: value {} of {SEM_PERMITS} at the end, over-limit holders {}, timeouts {}",
        s.sem.value(),
        b.at(SEM_VIOLATIONS).load(SeqCst),
        b.at(SEM_TIMEOUTS).load(SeqCst)
    );
    if b.at(SEM_VIOLATIONS).load(SeqCst) != 0 {
        fail.push("semaphore: more holders than permits".into());
    }
    println!(
        "pool: maps {}, applies {}, WorkerDied {}, timeouts {}, rebuilds {}",
        b.at(POOL_MAPS).load(SeqCst),
        b.at(POOL_APPLIES).load(SeqCst),
        b.at(POOL_WORKER_DIED).load(SeqCst),
        b.at(POOL_TIMEOUTS).load(SeqCst),
        b.at(POOL_REBUILDS).load(SeqCst)
    );
    println!(
        "orphans reaped (re-parented to the soak): {}",
        st.orphans_reaped
    );
    if st.ids_exhausted {
        println!("note: producer ids ran out; some producers were not respawned");
    }
    println!("hangs: {}", st.hangs.len());
    for h in &st.hangs {
        println!("HANG: {h}");
        fail.push(format!("hang: {h}"));
    }
    println!("participant errors: {}", st.errors.len());
    for e in &st.errors {
        println!("ERROR: {e}");
        fail.push(e.clone());
    }
    if fail.is_empty() {
        0
    } else {
        for f in &fail {
            println!("FAIL: {f}");
        }
        1
    }
}
