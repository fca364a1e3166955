//! Support for the cross-process tests: one interface over both queue types and both sharing
//! modes, per-message delivery counters in shared memory, and the stress workload.
#![allow(dead_code)]

#[cfg(feature = "serde")]
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

#[cfg(feature = "serde")]
use ipc_queue::Queue;
use ipc_queue::{
    Error, GetTimeoutError, JoinTimeoutError, PodQueue, PutError, PutTimeoutError, TryGetError,
    TryPutError,
};
use ipc_shm::SharedMemory;
use ipc_testkit::{fork, Child};
#[cfg(feature = "serde")]
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The watchdog for every child.
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// The tag of [`Setup`]'s queue names: `q-<pid>`, so the names are `ipct-q-<pid>-…` and
/// [`leak_guard`] watches this test binary's only (other programs on the machine make
/// `ipct-q-` names too).
pub fn q_tag() -> String {
    format!("q-{}", std::process::id())
}

/// The leak guard every cross-process test holds for its whole run
/// (`ipc_testkit::Leaks::exclusive`): tests of one binary then run one at a time, so the
/// fd, thread, shared-mapping and child checks are exact; its `/dev/shm` prefix is that of
/// every [`Setup`] name of this process. Tests naming segments with their own tag keep
/// their own `/dev/shm` check for that tag.
pub fn leak_guard() -> ipc_testkit::LeakGuard {
    ipc_testkit::Leaks::exclusive(&format!("ipct-{}-", q_tag()))
}

/// Both queue types, seen through one interface (values are `u64`).
pub trait TestQueue: Sized + Send + Sync + 'static {
    fn create(cap: usize, name: Option<&str>) -> Self;
    fn open(name: &str) -> Self;
    fn put(&self, v: u64) -> Result<(), PutError<u64>>;
    fn try_put(&self, v: u64) -> Result<(), TryPutError<u64>>;
    fn put_timeout(&self, v: u64, d: Duration) -> Result<(), PutTimeoutError<u64>>;
    fn get(&self) -> Result<u64, Error>;
    fn try_get(&self) -> Result<u64, TryGetError>;
    fn get_timeout(&self, d: Duration) -> Result<u64, GetTimeoutError>;
    fn len(&self) -> usize;
    fn capacity(&self) -> usize;
    fn close(&self);
    fn task_done(&self) -> Result<(), Error>;
    fn join_timeout(&self, d: Duration) -> Result<(), JoinTimeoutError>;
    fn dropped(&self) -> u64;
}

macro_rules! impl_test_queue {
    ($ty:ty, $create:expr) => {
        impl TestQueue for $ty {
            fn create(cap: usize, name: Option<&str>) -> Self {
                let f: fn(usize, Option<&str>) -> Self = $create;
                f(cap, name)
            }
            fn open(name: &str) -> Self {
                <$ty>::open_named(name).expect("open_named")
            }
            fn put(&self, v: u64) -> Result<(), PutError<u64>> {
                <$ty>::put(self, v)
            }
            fn try_put(&self, v: u64) -> Result<(), TryPutError<u64>> {
                <$ty>::try_put(self, v)
            }
            fn put_timeout(&self, v: u64, d: Duration) -> Result<(), PutTimeoutError<u64>> {
                <$ty>::put_timeout(self, v, d)
            }
            fn get(&self) -> Result<u64, Error> {
                <$ty>::get(self)
            }
            fn try_get(&self) -> Result<u64, TryGetError> {
                <$ty>::try_get(self)
            }
            fn get_timeout(&self, d: Duration) -> Result<u64, GetTimeoutError> {
                <$ty>::get_timeout(self, d)
            }
            fn len(&self) -> usize {
                <$ty>::len(self)
            }
            fn capacity(&self) -> usize {
                <$ty>::capacity(self)
            }
            fn close(&self) {
                <$ty>::close(self)
            }
            fn task_done(&self) -> Result<(), Error> {
                <$ty>::task_done(self)
            }
            fn join_timeout(&self, d: Duration) -> Result<(), JoinTimeoutError> {
                <$ty>::join_timeout(self, d)
            }
            fn dropped(&self) -> u64 {
                <$ty>::dropped_by_dead_peers(self)
            }
        }
    };
}

impl_test_queue!(PodQueue<u64>, |cap, name| {
    match name {
        Some(n) => PodQueue::create_named(n, cap),
        None => PodQueue::new(cap),
    }
    .expect("create PodQueue")
});

#[cfg(feature = "serde")]
impl_test_queue!(Queue<u64>, |cap, name| {
    let b = Queue::<u64>::builder().capacity(cap).max_message_size(16);
    match name {
        Some(n) => b.create_named(n),
        None => b.build(),
    }
    .expect("create Queue")
});

/// How the queue reaches the children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `new`, inherited through `fork`.
    Inherited,
    /// `create_named` + `open_named` in each child.
    Named,
}

/// A queue made in `mode`, plus the name children open (if named).
pub struct Setup<Q> {
    pub q: Q,
    pub name: Option<String>,
}

impl<Q: TestQueue> Setup<Q> {
    pub fn new(mode: Mode, cap: usize) -> Setup<Q> {
        let name = (mode == Mode::Named).then(|| ipc_testkit::unique_name(&q_tag()));
        Setup {
            q: Q::create(cap, name.as_deref()),
            name,
        }
    }

    /// Runs `f` in a forked child on its own handle (opened by name in named mode).
    pub fn child(&self, f: impl FnOnce(&Q) -> i32) -> Child {
        let name = self.name.clone();
        let q = &self.q;
        fork(move || match name {
            Some(n) => f(&Q::open(&n)),
            None => f(q),
        })
    }
}

/// One delivery counter per message, in shared memory, plus a few shared words.
pub struct Counters {
    mem: SharedMemory,
    n: usize,
}

pub const WORDS: usize = 16;

impl Counters {
    pub fn new(n: usize) -> Counters {
        Counters {
            mem: SharedMemory::new(WORDS * 8 + n.max(1)).expect("shared memory"),
            n,
        }
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned, zero-initialised, at least WORDS * 8 bytes long
        // and lives as long as `self`; atomics are valid for any bits.
        unsafe { std::slice::from_raw_parts(self.mem.as_ptr().cast::<AtomicU64>(), WORDS) }
    }

    fn hits(&self) -> &[AtomicU8] {
        // SAFETY: as above; the `n` counters follow the words.
        unsafe {
            std::slice::from_raw_parts(self.mem.as_ptr().add(WORDS * 8).cast::<AtomicU8>(), self.n)
        }
    }

    /// Records the delivery of message `i`.
    pub fn hit(&self, i: u64) {
        self.hits()[i as usize].fetch_add(1, Ordering::SeqCst);
    }

    pub fn count(&self, i: usize) -> u8 {
        self.hits()[i].load(Ordering::SeqCst)
    }

    pub fn word(&self, k: usize) -> &AtomicU64 {
        &self.words()[k]
    }

    /// Asserts that every message in `range` was delivered exactly once.
    pub fn assert_exactly_once(&self, range: std::ops::Range<usize>) {
        let (missing, dups) = self.missing_and_dups(range);
        assert!(
            missing.is_empty(),
            "lost: {:?}",
            &missing[..missing.len().min(10)]
        );
        assert!(
            dups.is_empty(),
            "duplicated: {:?}",
            &dups[..dups.len().min(10)]
        );
    }

    /// (never delivered, delivered more than once) message indices in `range`.
    pub fn missing_and_dups(&self, range: std::ops::Range<usize>) -> (Vec<usize>, Vec<usize>) {
        let mut missing = Vec::new();
        let mut dups = Vec::new();
        for i in range {
            match self.count(i) {
                0 => missing.push(i),
                1 => {}
                _ => dups.push(i),
            }
        }
        (missing, dups)
    }
}

/// Message `seq` of producer `p` (`per` messages each): its global index.
pub fn encode(p: u64, seq: u64) -> u64 {
    (p << 32) | seq
}

/// A consumer loop: gets until `Closed`, records each delivery, checks per-producer FIFO.
/// Exit code 0, or 2 for an order violation, 3 for an unexpected error.
pub fn consume<Q: TestQueue>(q: &Q, c: &Counters, per: u64, producers: u64) -> i32 {
    let mut last = vec![None::<u64>; producers as usize];
    loop {
        match q.get() {
            Ok(v) => {
                let (p, seq) = (v >> 32, v & 0xFFFF_FFFF);
                if p >= producers || seq >= per {
                    return 4;
                }
                if last[p as usize].is_some_and(|l| seq <= l) {
                    return 2;
                }
                last[p as usize] = Some(seq);
                c.hit(p * per + seq);
                c.word(0).fetch_add(1, Ordering::SeqCst);
            }
            Err(Error::Closed) => return 0,
            Err(e) => {
                eprintln!("consumer: {e}");
                return 3;
            }
        }
    }
}

/// A producer loop: puts `per` messages of producer `p`, recording progress in word 1 + p
/// (how many puts returned).
pub fn produce<Q: TestQueue>(q: &Q, c: &Counters, p: u64, per: u64) -> i32 {
    for seq in 0..per {
        if let Err(e) = q.put(encode(p, seq)) {
            eprintln!("producer: {e}");
            return 3;
        }
        c.word(1 + p as usize).store(seq + 1, Ordering::SeqCst);
    }
    0
}

/// M producers and N consumers exchange `per` messages each through a queue of `cap`:
/// everything arrives exactly once, in order per producer as each consumer sees it.
pub fn stress<Q: TestQueue>(mode: Mode, cap: usize, producers: u64, consumers: u64, per: u64) {
    let s = Setup::<Q>::new(mode, cap);
    let c = Counters::new((producers * per) as usize);
    let cons: Vec<_> = (0..consumers)
        .map(|_| s.child(|q| consume(q, &c, per, producers)))
        .collect();
    let prods: Vec<_> = (0..producers)
        .map(|p| s.child(|q| produce(q, &c, p, per)))
        .collect();
    for p in prods {
        p.wait_success(WATCHDOG);
    }
    s.q.close();
    for k in cons {
        k.wait_success(WATCHDOG);
    }
    c.assert_exactly_once(0..(producers * per) as usize);
    assert_eq!(c.word(0).load(Ordering::SeqCst), producers * per);
    assert_eq!(s.q.len(), 0);
    assert_eq!(s.q.dropped(), 0);
}

/// A value whose `Serialize` succeeds for the size pass and then panics (`Panic`), fails
/// (`Fail`), or always works (`Ok`); it travels as its `u32`.
#[cfg(feature = "serde")]
#[derive(Debug)]
pub struct Bomb {
    pub value: u32,
    mode: Mode2,
    calls: Cell<u32>,
}

#[cfg(feature = "serde")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode2 {
    Ok,
    Panic,
    Fail,
}

#[cfg(feature = "serde")]
impl Bomb {
    pub fn new(value: u32, mode: Mode2) -> Bomb {
        Bomb {
            value,
            mode,
            calls: Cell::new(0),
        }
    }
}

#[cfg(feature = "serde")]
impl Serialize for Bomb {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.calls.get() + 1;
        self.calls.set(n);
        if n >= 2 {
            match self.mode {
                Mode2::Ok => {}
                Mode2::Panic => panic!("Serialize panics in the slot"),
                Mode2::Fail => return Err(serde::ser::Error::custom("fails in the slot")),
            }
        }
        self.value.serialize(s)
    }
}

#[cfg(feature = "serde")]
impl<'de> Deserialize<'de> for Bomb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bomb, D::Error> {
        Ok(Bomb::new(u32::deserialize(d)?, Mode2::Ok))
    }
}

#[cfg(feature = "serde")]
pub fn bomb_queue() -> Queue<Bomb> {
    Queue::<Bomb>::builder()
        .capacity(4)
        .max_message_size(16)
        .build()
        .unwrap()
}
