//! `starmap` over tuples of 1 to 8 arguments, and `initializer_with` (Python's `initargs`):
//! cross-process, each test in a forked child under a watchdog.

mod common;

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use common::{children, in_child_checked, in_child_checked_after_init};
use ipc_pool::{Error, Pool};
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

fn with_pid3(a: u32, b: u64, c: String) -> (i32, String) {
    std::thread::sleep(Duration::from_millis(1));
    (ipc_pool::current_pid(), format!("{c}{}", u64::from(a) + b))
}

#[allow(clippy::too_many_arguments)]
fn eight(a: u8, b: i16, c: u32, d: i64, e: String, f: bool, g: char, h: Vec<u16>) -> String {
    let sum: u64 = h.iter().map(|&x| u64::from(x)).sum();
    format!("{a}/{b}/{c}/{d}/{e}/{f}/{g}/{sum}")
}

#[test]
fn starmap_spreads_tuples_of_one_three_and_eight_in_order() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let pool = Pool::new(2).unwrap();

        // Arity 1: one-field tuples.
        let out = pool
            .starmap(|x: u64| x * 3, (0..5_000u64).map(|x| (x,)))
            .unwrap();
        assert_eq!(out, (0..5_000u64).map(|x| x * 3).collect::<Vec<_>>());

        // Arity 3, a named function: slow enough that both workers take chunks.
        let items: Vec<(u32, u64, String)> =
            (0..300u32).map(|i| (i, 1000, format!("n{i}-"))).collect();
        let out: Vec<(i32, String)> = pool
            .starmap(with_pid3 as fn(_, _, _) -> _, items.clone())
            .unwrap();
        let want: Vec<String> = items
            .iter()
            .map(|(a, b, c)| format!("{c}{}", u64::from(*a) + b))
            .collect();
        assert_eq!(out.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>(), want);
        let pids: HashSet<i32> = out.iter().map(|&(p, _)| p).collect();
        assert!(pids.len() >= 2, "one worker did everything: {pids:?}");
        assert!(!pids.contains(&ipc_pool::current_pid()));

        // Arity 8, mixed types, unknown length (the filter hides it).
        let items = (0..1_000u32).filter(|i| i % 7 != 0).map(|i| {
            (
                i as u8,
                -(i as i16),
                i * 3,
                -i64::from(i) * 1_000_000,
                format!("s{i}"),
                i % 2 == 0,
                char::from_u32(0x41 + i % 26).unwrap(),
                vec![i as u16; (i % 5) as usize],
            )
        });
        let want: Vec<String> = items
            .clone()
            .map(|(a, b, c, d, e, f, g, h)| eight(a, b, c, d, e, f, g, h))
            .collect();
        let out = pool
            .starmap(eight as fn(_, _, _, _, _, _, _, _) -> _, items)
            .unwrap();
        assert_eq!(out, want);
        // A closure of eight parameters.
        let out = pool
            .starmap(
                |a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8| {
                    [a, b, c, d, e, f, g, h]
                        .iter()
                        .map(|&x| u32::from(x))
                        .sum::<u32>()
                },
                (0..100u8).map(|i| (i, i, i, i, i, i, i, 1)),
            )
            .unwrap();
        assert_eq!(out, (0..100u32).map(|i| 7 * i + 1).collect::<Vec<_>>());

        assert!(pool
            .starmap(|x: u8, y: u8| x + y, Vec::<(u8, u8)>::new())
            .unwrap()
            .is_empty());
        pool.join().unwrap();
        drop(pool);
        assert!(children().is_empty(), "children left: {:?}", children());
    });
}

#[test]
fn starmap_reports_a_panicking_item() {
    let _leaks = common::leak_guard();
    in_child_checked(30, || {
        let pool = Pool::new(2).unwrap();
        let r = pool.starmap(
            |a: u32, b: u32, c: u32| {
                assert!(a != 5, "five");
                a + b + c
            },
            (0..10u32).map(|i| (i, i, i)),
        );
        assert!(
            matches!(&r, Err(Error::Panicked(m)) if m.contains("five")),
            "{r:?}"
        );
        // The pool goes on.
        assert_eq!(pool.starmap(|a: u8, b: u8| a * b, [(2, 3)]).unwrap(), [6]);
        pool.join().unwrap();
    });
}

/// What the initializer received, in this worker.
static INIT_ARGS: OnceLock<(u64, Vec<String>)> = OnceLock::new();

fn remember(args: (u64, Vec<String>)) {
    assert!(INIT_ARGS.set(args).is_ok(), "initializer ran twice");
}

fn seen(_: u32) -> (i32, Option<(u64, Vec<String>)>) {
    (ipc_pool::current_pid(), INIT_ARGS.get().cloned())
}

fn die_now(_: u32) -> u32 {
    let _ = std::process::Command::new("kill")
        .args(["-9", &ipc_pool::current_pid().to_string()])
        .status();
    std::thread::sleep(Duration::from_secs(10));
    0
}

fn init_value() -> (u64, Vec<String>) {
    (42, vec!["alpha".into(), "βeta".into(), String::new()])
}

#[test]
fn initargs_reach_every_worker_including_replacements() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let pool = Pool::builder()
            .processes(2)
            .max_tasks_per_child(3)
            .initializer_with(remember, init_value())
            .build()
            .unwrap();
        let first: HashSet<i32> = pool.pids().into_iter().collect();
        // One item per task: every worker leaves after three and is replaced.
        let out = pool.map_chunked(seen, 0..60u32, 1).unwrap();
        let want = Some(init_value());
        assert!(out.iter().all(|(_, v)| *v == want), "{out:?}");
        let pids: HashSet<i32> = out.iter().map(|&(p, _)| p).collect();
        assert!(pids.len() >= 20, "workers were not replaced: {pids:?}");
        assert!(pids.iter().any(|p| !first.contains(p)));

        // A worker killed mid-task: its replacement gets the arguments too.
        assert!(matches!(
            pool.apply(die_now, 0),
            Err(Error::WorkerDied { .. })
        ));
        for _ in 0..10 {
            assert_eq!(pool.apply(seen, 0).unwrap().1, want);
        }
        assert!(INIT_ARGS.get().is_none(), "initializer ran in the parent");
        pool.join().unwrap();
        drop(pool);
        assert!(children().is_empty(), "children left: {:?}", children());
    });
}

#[test]
fn initargs_reach_workers_of_a_pool_on_the_process_wide_server() {
    let _leaks = common::leak_guard();
    in_child_checked_after_init(60, || {
        let pool = Pool::builder()
            .processes(2)
            .initializer_with(remember, init_value())
            .build()
            .unwrap();
        let out = pool.map_chunked(seen, 0..20u32, 1).unwrap();
        assert!(out.iter().all(|(_, v)| *v == Some(init_value())), "{out:?}");
        pool.join().unwrap();
    });
}

fn bad_init(n: u32) {
    panic!("initializer fails with {n}");
}

#[test]
fn a_panicking_initializer_with_args_breaks_the_pool() {
    let _leaks = common::leak_guard();
    in_child_checked(30, || {
        let pool = Pool::builder()
            .processes(1)
            .initializer_with(bad_init, 3)
            .build()
            .unwrap();
        let r = pool.apply(|x: u32| x, 2);
        assert!(
            matches!(r, Err(Error::Broken(_)) | Err(Error::WorkerDied { .. })),
            "{r:?}"
        );
        pool.join().unwrap();
        assert!(children().is_empty(), "children left: {:?}", children());
    });
}

/// Encodes as a unit, refuses to decode.
struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for Refuses {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(D::Error::custom("refused"))
    }
}

/// Refuses to encode.
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(S::Error::custom("cannot encode"))
    }
}

impl<'de> Deserialize<'de> for Unencodable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Unencodable)
    }
}

fn take_refuses(_: Refuses) {}

fn take_unencodable(_: Unencodable) {}

#[test]
fn initargs_that_do_not_decode_or_encode_fail_cleanly() {
    let _leaks = common::leak_guard();
    in_child_checked(30, || {
        // Decoding fails in the worker: an initializer failure.
        let pool = Pool::builder()
            .processes(1)
            .initializer_with(take_refuses, Refuses)
            .build()
            .unwrap();
        let r = pool.apply(|x: u32| x, 2);
        assert!(
            matches!(r, Err(Error::Broken(_)) | Err(Error::WorkerDied { .. })),
            "{r:?}"
        );
        pool.join().unwrap();
        // Encoding fails in the builder: `build` says so and forks nothing.
        let r = Pool::builder()
            .processes(1)
            .initializer_with(take_unencodable, Unencodable)
            .build();
        assert!(
            matches!(&r, Err(Error::Encode(m)) if m.contains("initializer")),
            "{r:?}"
        );
        assert!(children().is_empty(), "children left: {:?}", children());
    });
}
