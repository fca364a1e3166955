//! Models of the protocol with threads standing in for processes.

use std::marker::PhantomData;
use std::ptr::NonNull;

use super::layout::Words;

use ipc_shm::lowlevel::sync::Deadline;
use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicBool;
use loom::sync::Arc;

use super::claim::{Attempt, Claimed, ClaimedRun};
use super::layout::{Sink, Source};
use super::recover::{Liveness, Reclaim};
use super::span::{SpanReader, SpanWriter};
use super::*;

struct HeapSlot {
    state: AtomicU64,
    stamps: [AtomicU64; 2],
    record: AtomicU64,
    data: UnsafeCell<[u8; 8]>,
}

struct HeapSlots(Vec<HeapSlot>);

impl Slots for HeapSlots {
    fn states(&self) -> Words<'_> {
        // SAFETY: the slots are a Vec that `&self` keeps alive and unmoved; each slot's state
        // sits at the same offset in its `HeapSlot`, `size_of::<HeapSlot>()` bytes apart.
        unsafe {
            Words::new(
                NonNull::from(&self.0[0].state).cast::<u8>(),
                std::mem::size_of::<HeapSlot>(),
            )
        }
    }
    fn stamps(&self, reading: bool) -> Words<'_> {
        // SAFETY: as in `states`.
        unsafe {
            Words::new(
                NonNull::from(&self.0[0].stamps[usize::from(reading)]).cast::<u8>(),
                std::mem::size_of::<HeapSlot>(),
            )
        }
    }
    fn state(&self, i: Idx) -> &AtomicU64 {
        &self.0[i.0].state
    }
    fn stamp(&self, i: Idx, reading: bool) -> &AtomicU64 {
        &self.0[i.0].stamps[usize::from(reading)]
    }
    fn record(&self, i: Idx) -> &AtomicU64 {
        &self.0[i.0].record
    }
    fn write<R>(&self, i: Idx, f: impl FnOnce(SlotWriter<'_>) -> R) -> R {
        self.0[i.0].data.with_mut(|p| {
            f(SlotWriter {
                ptr: p.cast::<u8>(),
                len: 8,
                _slot: PhantomData,
            })
        })
    }
    fn read<R>(&self, i: Idx, f: impl FnOnce(SlotReader<'_>) -> R) -> R {
        self.0[i.0].data.with(|p| {
            f(SlotReader {
                ptr: p.cast::<u8>(),
                len: 8,
                _slot: PhantomData,
            })
        })
    }
}

/// Participants 1..=4; a participant "dies" by setting its flag and stopping.
struct Deaths([AtomicBool; 5]);

impl Liveness for Deaths {
    fn is_dead(&self, tid: u64, _stamp: u64) -> bool {
        self.0
            .get(tid as usize)
            .is_some_and(|d| d.load(Ordering::SeqCst))
    }
}

struct Model {
    ctl: Control,
    slots: HeapSlots,
    cap: usize,
    deaths: Deaths,
}

impl Model {
    fn new(cap: usize) -> Arc<Model> {
        let m = Model {
            ctl: Control::new(),
            slots: HeapSlots(
                (0..cap)
                    .map(|_| HeapSlot {
                        state: AtomicU64::new(0),
                        stamps: [AtomicU64::new(0), AtomicU64::new(0)],
                        record: AtomicU64::new(0),
                        data: UnsafeCell::new([0; 8]),
                    })
                    .collect(),
            ),
            cap,
            deaths: Deaths(std::array::from_fn(|_| AtomicBool::new(false))),
        };
        m.ring().init();
        Arc::new(m)
    }
    fn ring(&self) -> Ring<'_, HeapSlots> {
        Ring::new(&self.ctl, &self.slots, self.cap)
    }
}

fn me(n: u32) -> Me {
    Me::new(n, u64::from(n))
}

fn put(r: &Ring<'_, HeapSlots>, who: Me, v: u64) -> bool {
    matches!(
        r.try_put(who, &mut |mut w: SlotWriter<'_>| {
            assert!(w.store(0, &v.to_le_bytes()));
            Ok::<(), ()>(())
        }),
        Attempt::Done(Ok(()))
    )
}

/// A thread that puts `v` as `who` with a blocking `put_until` (it parks on a full ring).
fn spawn_blocking_put(
    m: &Arc<Model>,
    who: Me,
    v: u64,
) -> loom::thread::JoinHandle<Result<Result<(), ()>, Stop>> {
    let m = Arc::clone(m);
    loom::thread::spawn(move || {
        let w = DeathWatch::new();
        m.ring().put_until(
            who,
            Deadline::never(),
            &w,
            &m.deaths,
            &mut |mut wr: SlotWriter<'_>| {
                assert!(wr.store(0, &v.to_le_bytes()));
                Ok::<(), ()>(())
            },
        )
    })
}

/// A consumer thread blocked in `get_until` with no deadline.
fn spawn_blocking_get(
    m: &Arc<Model>,
    who: Me,
) -> loom::thread::JoinHandle<Result<Option<u64>, Stop>> {
    let m = Arc::clone(m);
    loom::thread::spawn(move || {
        let w = DeathWatch::new();
        m.ring().get_until(
            who,
            Deadline::never(),
            &w,
            &m.deaths,
            &mut |rd: SlotReader<'_>| rd.read_pod::<u64>(0),
        )
    })
}

fn get(r: &Ring<'_, HeapSlots>, who: Me) -> Option<u64> {
    match r.try_get(who, &mut |rd: SlotReader<'_>| rd.read_pod::<u64>(0)) {
        Attempt::Done(v) => v,
        _ => None,
    }
}

/// 2 producers and 1 consumer on capacities 1 and 2: every value delivered once, each
/// producer's values in order.
#[test]
fn two_producers_one_consumer() {
    for cap in [1, 2] {
        loom::model(move || {
            let m = Model::new(cap);
            let ps: Vec<_> = (0..2u64)
                .map(|k| {
                    let m = Arc::clone(&m);
                    loom::thread::spawn(move || {
                        let r = m.ring();
                        let mut sent = 0;
                        for v in [k * 10 + 1, k * 10 + 2] {
                            if put(&r, me(k as u32 + 1), v) {
                                sent += 1;
                            } else {
                                break;
                            }
                        }
                        sent
                    })
                })
                .collect();
            let r = m.ring();
            let mut got = Vec::new();
            for _ in 0..3 {
                if let Some(v) = get(&r, me(3)) {
                    got.push(v);
                }
            }
            let sent: u64 = ps.into_iter().map(|p| p.join().unwrap()).sum();
            while let Some(v) = get(&r, me(3)) {
                got.push(v);
            }
            if got.len() as u64 != sent {
                let st: Vec<_> = (0..cap)
                    .map(|i| {
                        let s = m.slots.state(Idx(i)).load(Ordering::SeqCst);
                        (seq(s), owner(s))
                    })
                    .collect();
                let e = m.ctl.enq.load(Ordering::SeqCst);
                let d = m.ctl.deq.load(Ordering::SeqCst);
                panic!(
                    "cap {cap} sent {sent} got {got:?} slots {st:?} enq {:?} deq {:?} try {:?}",
                    (seq(e), owner(e)),
                    (seq(d), owner(d)),
                    r.try_get(me(3), &mut |rd: SlotReader<'_>| rd.read_pod::<u64>(0))
                );
            }
            for k in 0..2 {
                let mine: Vec<_> = got.iter().filter(|v| **v / 10 == k).collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "{got:?}");
            }
            assert_eq!(r.len(), 0);
        });
    }
}

/// A consumer parked on the slot it waits for (WAITING bit, then futex) is always woken
/// by the put that publishes it with a swap (a lost wake-up would deadlock the model).
#[test]
fn slot_waiting_loses_no_wakeup() {
    loom::model(|| {
        let m = Model::new(1);
        let c = spawn_blocking_get(&m, me(2));
        assert!(put(&m.ring(), me(1), 7));
        assert_eq!(c.join().unwrap(), Ok(Some(7)));
    });
}

/// A consumer parked on an empty ring is woken by `close` and reports it closed; a put
/// racing with the close either arrives or is refused.
#[test]
fn close_wakes_a_parked_consumer() {
    loom::model(|| {
        let m = Model::new(1);
        let c = spawn_blocking_get(&m, me(2));
        m.ring().close();
        assert_eq!(c.join().unwrap(), Err(Stop::Closed));
    });
}

/// A put racing `close` while a consumer waits: a put that returns `Ok` is delivered to
/// the consumer, which reports `Closed` only when the put was refused (a claim made
/// before the close is waited for, never abandoned).
#[test]
fn put_racing_close_is_delivered_or_refused() {
    loom::model(|| {
        let m = Model::new(1);
        let c = spawn_blocking_get(&m, me(2));
        let m3 = Arc::clone(&m);
        let p = loom::thread::spawn(move || put(&m3.ring(), me(1), 7));
        m.ring().close();
        let sent = p.join().unwrap();
        let got = c.join().unwrap();
        if sent {
            assert_eq!(got, Ok(Some(7)));
        } else {
            assert_eq!(got, Err(Stop::Closed));
        }
    });
}

/// A producer parked on a full ring is woken by `close` and reports it closed.
#[test]
fn close_wakes_a_parked_producer() {
    loom::model(|| {
        let m = Model::new(1);
        assert!(put(&m.ring(), me(1), 1));
        let p = spawn_blocking_put(&m, me(1), 2);
        m.ring().close();
        assert_eq!(p.join().unwrap(), Err(Stop::Closed));
        assert_eq!(get(&m.ring(), me(2)), Some(1));
    });
}

/// A producer parked on a full ring is woken by a get.
#[test]
fn not_full_loses_no_wakeup() {
    loom::model(|| {
        let m = Model::new(1);
        assert!(put(&m.ring(), me(1), 1));
        let p = spawn_blocking_put(&m, me(1), 2);
        assert_eq!(get(&m.ring(), me(2)), Some(1));
        assert_eq!(p.join().unwrap(), Ok(Ok(())));
        assert_eq!(get(&m.ring(), me(2)), Some(2));
    });
}

/// A failed write publishes a tombstone: the consumer skips it and gets exactly the
/// other producer's message.
#[test]
fn failed_write_leaves_a_skipped_tombstone() {
    loom::model(|| {
        let m = Model::new(2);
        let m2 = Arc::clone(&m);
        let failing = loom::thread::spawn(move || {
            let r = m2.ring();
            matches!(
                r.try_put(me(1), &mut |_w: SlotWriter<'_>| Err::<(), ()>(())),
                Attempt::Done(Err(()))
            )
        });
        let m3 = Arc::clone(&m);
        let other = loom::thread::spawn(move || put(&m3.ring(), me(2), 5));
        assert!(failing.join().unwrap());
        assert!(other.join().unwrap());
        let r = m.ring();
        assert_eq!(get(&r, me(3)), Some(5));
        assert_eq!(get(&r, me(3)), None);
        assert_eq!(r.messages(), 1);
    });
}

/// A producer stopped right after its claim (it never runs again, as if SIGKILLed): a
/// consumer that sees it dead turns the slot into a tombstone, whether the claim is still
/// only in the position word or was already moved into the slot by the other producer's
/// helping step; the other producer's message arrives exactly once.
#[test]
fn stopped_writer_is_reclaimed() {
    loom::model(|| {
        let m = Model::new(2);
        let m1 = Arc::clone(&m);
        let victim = loom::thread::spawn(move || {
            let r = m1.ring();
            let claimed = matches!(r.claim_put(me(1)), Claimed::Slot(..));
            m1.deaths.0[1].store(true, Ordering::SeqCst);
            claimed
        });
        let m2 = Arc::clone(&m);
        let p = loom::thread::spawn(move || put(&m2.ring(), me(2), 9));
        let m3 = Arc::clone(&m);
        let c = loom::thread::spawn(move || {
            let r = m3.ring();
            for _ in 0..4 {
                match r.try_get(me(3), &mut |rd: SlotReader<'_>| rd.read_pod::<u64>(0)) {
                    Attempt::Done(v) => return v,
                    Attempt::Blocked(Some(b)) if m3.deaths.0[1].load(Ordering::SeqCst) => {
                        r.reclaim(b, me(3), &m3.deaths);
                    }
                    _ => {}
                }
            }
            None
        });
        assert!(victim.join().unwrap());
        assert!(p.join().unwrap());
        let got = c.join().unwrap();
        let r = m.ring();
        let mut rest = Vec::new();
        for _ in 0..3 {
            match r.try_get(me(3), &mut |rd: SlotReader<'_>| rd.read_pod::<u64>(0)) {
                Attempt::Done(v) => rest.extend(v),
                Attempt::Blocked(Some(b)) => {
                    r.reclaim(b, me(3), &m.deaths);
                }
                _ => {}
            }
        }
        let all: Vec<u64> = got.into_iter().chain(rest).collect();
        assert_eq!(all, vec![9]);
        assert_eq!(r.messages(), 1);
    });
}

/// A consumer stopped right after its claim: a producer facing the full ring reclaims the
/// slot once the consumer is dead, counts the message dropped, and its own message goes
/// through; `join` accounting sees nothing unfinished.
#[test]
fn stopped_reader_is_reclaimed_and_counted() {
    loom::model(|| {
        let m = Model::new(1);
        assert!(put(&m.ring(), me(1), 1));
        let m2 = Arc::clone(&m);
        let victim = loom::thread::spawn(move || {
            let r = m2.ring();
            let claimed = matches!(r.claim_get(me(2)), Claimed::Slot(..));
            m2.deaths.0[2].store(true, Ordering::SeqCst);
            claimed
        });
        let m3 = Arc::clone(&m);
        let p = loom::thread::spawn(move || {
            let r = m3.ring();
            for _ in 0..3 {
                match r.try_put(me(1), &mut |mut w: SlotWriter<'_>| {
                    assert!(w.store(0, &2u64.to_le_bytes()));
                    Ok::<(), ()>(())
                }) {
                    Attempt::Done(_) => return true,
                    Attempt::Blocked(Some(b)) => {
                        r.reclaim(b, me(3), &m3.deaths);
                    }
                    _ => {}
                }
            }
            false
        });
        assert!(victim.join().unwrap());
        let sent = p.join().unwrap();
        let r = m.ring();
        if !sent {
            // The producer gave up first; the victim is dead by now.
            if !put(&r, me(1), 2) {
                let b = match r.claim_put(me(1)) {
                    Claimed::Blocked(Some(b)) => b,
                    other => panic!("{other:?}"),
                };
                assert_eq!(r.reclaim(b, me(1), &m.deaths), Reclaim::Reclaimed);
                assert!(put(&r, me(1), 2));
            }
        }
        assert_eq!(get(&r, me(3)), Some(2));
        assert_eq!(r.dropped(), 1);
        assert_eq!(r.task_done(), Ok(()));
        assert_eq!(r.unfinished(), 0);
    });
}

/// A run of `vs` put with one claim (as many as fit), retried a few times; how many went.
fn put_run(r: &Ring<'_, HeapSlots>, who: Me, vs: &[u64]) -> usize {
    let mut done = 0;
    for _ in 0..3 {
        if done == vs.len() {
            break;
        }
        let rest = &vs[done..];
        if let Attempt::Done(n) = r.try_put_run(who, rest.len() as u64, &mut |k, mut w| {
            assert!(w.store(0, &rest[k as usize].to_le_bytes()));
        }) {
            done += n as usize;
        }
    }
    done
}

/// Up to `max` messages taken with one claim.
fn get_run(r: &Ring<'_, HeapSlots>, who: Me, max: u64) -> Vec<u64> {
    get_run_or_reclaim(
        r,
        who,
        max,
        &Deaths(std::array::from_fn(|_| AtomicBool::new(false))),
    )
}

/// As [`get_run`], but a blocked attempt tries to reclaim its blocker as a blocked caller
/// does (with `live` judging the claimers).
fn get_run_or_reclaim(r: &Ring<'_, HeapSlots>, who: Me, max: u64, live: &Deaths) -> Vec<u64> {
    let mut got = Vec::new();
    let attempt = r.try_get_run(who, max, &mut |rd: SlotReader<'_>| {
        got.extend(rd.read_pod::<u64>(0));
    });
    if let Attempt::Blocked(Some(b)) = attempt {
        r.reclaim(b, who, live);
    }
    got
}

/// A producer putting a run of two with one claim, another putting one message, and a
/// consumer taking runs that, whenever it is blocked, looks for dead claimers (nobody is
/// dead): every message arrives once, each producer's in order, and no slot of a live run
/// is ever taken for a dead claimer's.
#[test]
fn runs_and_single_claims_deliver_once_in_order() {
    loom::model(|| {
        let m = Model::new(3);
        let m1 = Arc::clone(&m);
        let a = loom::thread::spawn(move || put_run(&m1.ring(), me(1), &[11, 12]));
        let m2 = Arc::clone(&m);
        let b = loom::thread::spawn(move || usize::from(put(&m2.ring(), me(2), 21)));
        let r = m.ring();
        let mut got = get_run_or_reclaim(&r, me(3), 3, &m.deaths);
        got.extend(get_run_or_reclaim(&r, me(3), 3, &m.deaths));
        let sent = a.join().unwrap() + b.join().unwrap();
        for _ in 0..3 {
            got.extend(get_run(&r, me(3), 3));
        }
        assert_eq!(got.len(), sent, "{got:?}");
        assert_eq!(sent, 3);
        let mine: Vec<_> = got.iter().filter(|v| **v / 10 == 1).collect();
        assert_eq!(mine, [&11, &12], "{got:?}");
        assert_eq!(r.len(), 0);
    });
}

/// Two consumers, one taking runs and one single messages, racing for three messages: each
/// arrives exactly once.
#[test]
fn run_and_single_gets_take_each_message_once() {
    loom::model(|| {
        let m = Model::new(3);
        assert_eq!(put_run(&m.ring(), me(1), &[1, 2, 3]), 3);
        let m2 = Arc::clone(&m);
        let c = loom::thread::spawn(move || get_run(&m2.ring(), me(2), 2));
        let r = m.ring();
        let mut got: Vec<u64> = get(&r, me(3)).into_iter().collect();
        got.extend(c.join().unwrap());
        while let Some(v) = get(&r, me(3)) {
            got.push(v);
        }
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(r.messages(), 3);
    });
}

/// A producer stopped right after claiming a run of two (as if SIGKILLed): whether its claim
/// is still only in the position word (a run's record) or another producer's helping walk
/// moved it into both slots, a consumer that sees it dead turns both into tombstones, and the
/// other producer's message arrives exactly once.
#[test]
fn stopped_run_writer_is_reclaimed() {
    loom::model(|| {
        let m = Model::new(3);
        let m1 = Arc::clone(&m);
        let victim = loom::thread::spawn(move || {
            let r = m1.ring();
            let n = match r.claim_run(false, me(1), 1, 2) {
                ClaimedRun::Run { n, .. } => n,
                _ => 0,
            };
            m1.deaths.0[1].store(true, Ordering::SeqCst);
            n
        });
        let m2 = Arc::clone(&m);
        let p = loom::thread::spawn(move || put(&m2.ring(), me(2), 9));
        assert_eq!(victim.join().unwrap(), 2);
        assert!(p.join().unwrap());
        let r = m.ring();
        let mut got = Vec::new();
        for _ in 0..4 {
            match r.try_get(me(3), &mut |rd: SlotReader<'_>| rd.read_pod::<u64>(0)) {
                Attempt::Done(v) => got.extend(v),
                Attempt::Blocked(Some(b)) => {
                    r.reclaim(b, me(3), &m.deaths);
                }
                _ => {}
            }
        }
        assert_eq!(got, vec![9]);
        assert_eq!(r.messages(), 1);
        assert_eq!(r.len(), 0);
    });
}

/// A consumer stopped right after claiming a run of two: a producer facing the full ring
/// reclaims each slot once the consumer is dead, both messages are counted dropped, and
/// `join` accounting sees nothing unfinished.
#[test]
fn stopped_run_reader_is_reclaimed_and_counted() {
    loom::model(|| {
        let m = Model::new(2);
        assert_eq!(put_run(&m.ring(), me(1), &[1, 2]), 2);
        let m2 = Arc::clone(&m);
        let victim = loom::thread::spawn(move || {
            let r = m2.ring();
            let n = match r.claim_run(true, me(2), 1, 2) {
                ClaimedRun::Run { n, .. } => n,
                _ => 0,
            };
            m2.deaths.0[2].store(true, Ordering::SeqCst);
            n
        });
        let m3 = Arc::clone(&m);
        let p = loom::thread::spawn(move || {
            let r = m3.ring();
            for _ in 0..3 {
                match r.try_put(me(1), &mut |mut w: SlotWriter<'_>| {
                    assert!(w.store(0, &3u64.to_le_bytes()));
                    Ok::<(), ()>(())
                }) {
                    Attempt::Done(_) => return true,
                    Attempt::Blocked(Some(b)) => {
                        r.reclaim(b, me(3), &m3.deaths);
                    }
                    _ => {}
                }
            }
            false
        });
        assert_eq!(victim.join().unwrap(), 2);
        let mut sent = p.join().unwrap();
        let r = m.ring();
        for _ in 0..3 {
            if sent {
                break;
            }
            match r.try_put(me(1), &mut |mut w: SlotWriter<'_>| {
                assert!(w.store(0, &3u64.to_le_bytes()));
                Ok::<(), ()>(())
            }) {
                Attempt::Done(_) => sent = true,
                Attempt::Blocked(Some(b)) => {
                    r.reclaim(b, me(1), &m.deaths);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(sent);
        assert_eq!(get(&r, me(3)), Some(3));
        // The second slot of the dead run is found by the scan `dropped_by_dead_peers` runs.
        r.settle_dead_claims(me(3), &m.deaths);
        assert_eq!(r.dropped(), 2);
        assert_eq!(r.task_done(), Ok(()));
        assert_eq!(r.unfinished(), 0);
    });
}

/// A live producer holds a claimed run, unwritten, while another producer claims after it
/// (its helping walk moves the run's claim into every slot of the run): a consumer blocked
/// on the run's first slot looks for dead claimers and finds none, and once the run is
/// written every message arrives in order.
#[test]
fn live_run_is_never_reclaimed() {
    loom::model(|| {
        let m = Model::new(3);
        let r = m.ring();
        let (p, n) = match r.claim_run(false, me(1), 1, 2) {
            ClaimedRun::Run { p, n, .. } => (p, n),
            other => panic!("{other:?}"),
        };
        assert_eq!((p, n), (0, 2));
        assert!(put(&r, me(2), 21));
        let b = match r.try_get(me(3), &mut |rd: SlotReader<'_>| rd.read_pod::<u64>(0)) {
            Attempt::Blocked(Some(b)) => b,
            other => panic!("{other:?}"),
        };
        assert_eq!(r.reclaim(b, me(3), &m.deaths), Reclaim::Nothing);
        r.settle_dead_claims(me(3), &m.deaths);
        let mut c = r.cursor(p).unwrap();
        for v in [11u64, 12] {
            r.slots
                .write(c.i, |mut w| assert!(w.store(0, &v.to_le_bytes())));
            r.step(&mut c);
        }
        r.end_run(p, r.index(p).unwrap(), n, |q| pack(q + 1, 0));
        let got: Vec<_> = (0..3).filter_map(|_| get(&r, me(3))).collect();
        assert_eq!(got, [11, 12, 21]);
        assert_eq!(r.messages(), 3);
    });
}

/// A message spanning two slots in the models: the head's word says how many slots, the
/// continuation holds the value.
fn put_span(r: &Ring<'_, HeapSlots>, who: Me, v: u64) -> bool {
    let attempt = r.try_put_span(who, 2, &mut |mut w: SpanWriter<'_, '_, HeapSlots>| {
        let ok =
            Sink::store(&mut w, 0, &2u64.to_le_bytes()) && Sink::store(&mut w, 8, &v.to_le_bytes());
        if ok {
            Ok(())
        } else {
            Err(())
        }
    });
    matches!(attempt, Attempt::Done(Ok(())))
}

/// A get of a message that may span slots: `(head word, continuation word or 0)`.
fn get_message(r: &Ring<'_, HeapSlots>, who: Me) -> Option<(u64, u64)> {
    let span = |rd: SlotReader<'_>| rd.read_pod::<u64>(0).unwrap_or(1);
    match r.try_get_message(who, &span, &mut |rd: SpanReader<'_, '_, HeapSlots>| {
        let head = Source::read_pod::<u64>(&rd, 0).unwrap_or(0);
        let rest = if Source::len(&rd) >= 16 {
            Source::read_pod::<u64>(&rd, 8).unwrap_or(0)
        } else {
            0
        };
        (head, rest)
    }) {
        Attempt::Done(m) => Some(m),
        _ => None,
    }
}

/// A producer putting a message that spans two slots, another putting a one-slot message
/// (its head word 1), and a consumer taking messages: each arrives whole and once, the
/// spanning one never cut or taken as two.
#[test]
fn a_span_and_a_single_message_arrive_whole_once() {
    loom::model(|| {
        let m = Model::new(3);
        let m1 = Arc::clone(&m);
        let a = loom::thread::spawn(move || put_span(&m1.ring(), me(1), 77));
        let m2 = Arc::clone(&m);
        let b = loom::thread::spawn(move || {
            let r = m2.ring();
            matches!(
                r.try_put(me(2), &mut |mut w: SlotWriter<'_>| {
                    assert!(w.store(0, &1u64.to_le_bytes()));
                    Ok::<(), ()>(())
                }),
                Attempt::Done(Ok(()))
            )
        });
        let r = m.ring();
        let mut got: Vec<(u64, u64)> = get_message(&r, me(3)).into_iter().collect();
        let sent_span = a.join().unwrap();
        let sent_single = b.join().unwrap();
        while let Some(x) = get_message(&r, me(3)) {
            got.push(x);
        }
        got.sort_unstable();
        let mut want = Vec::new();
        if sent_single {
            want.push((1, 0));
        }
        if sent_span {
            want.push((2, 77));
        }
        assert_eq!(got, want);
        assert_eq!(r.messages(), want.len() as u64);
        assert_eq!(r.len(), 0);
    });
}

/// A producer stopped after claiming a two-slot span (never written): a consumer that sees
/// it dead skips both slots, and another producer's message arrives once.
#[test]
fn stopped_span_writer_is_skipped() {
    loom::model(|| {
        let m = Model::new(4);
        let m1 = Arc::clone(&m);
        let victim = loom::thread::spawn(move || {
            let r = m1.ring();
            let n = match r.claim_run(false, me(1), 2, 2) {
                ClaimedRun::Run { n, .. } => n,
                _ => 0,
            };
            m1.deaths.0[1].store(true, Ordering::SeqCst);
            n
        });
        let m2 = Arc::clone(&m);
        let p = loom::thread::spawn(move || put_span(&m2.ring(), me(2), 5));
        assert_eq!(victim.join().unwrap(), 2);
        assert!(p.join().unwrap());
        let r = m.ring();
        let mut got = Vec::new();
        for _ in 0..6 {
            let span = |rd: SlotReader<'_>| rd.read_pod::<u64>(0).unwrap_or(1);
            match r.try_get_message(me(3), &span, &mut |rd: SpanReader<'_, '_, HeapSlots>| {
                Source::read_pod::<u64>(&rd, 8).unwrap_or(0)
            }) {
                Attempt::Done(v) => got.push(v),
                Attempt::Blocked(Some(b)) => {
                    r.reclaim(b, me(3), &m.deaths);
                }
                _ => {}
            }
        }
        assert_eq!(got, vec![5]);
        assert_eq!(r.len(), 0);
    });
}
