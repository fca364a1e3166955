//! Named objects: kinds are checked on open, names are private (0600), only the creator
//! removes a name, nothing is left in `/dev/shm`.

mod common;

use std::time::Duration;

use common::{fork, fresh, mode_of, WATCHDOG};
use ipc_sem::{
    Barrier, BoundedSemaphore, Condition, Error, Event, Lock, PosixSemaphore, RLock, Semaphore,
};

/// Every kind, created under one name, as a boxed handle.
const KINDS: [&str; 7] = [
    "Semaphore",
    "BoundedSemaphore",
    "Lock",
    "RLock",
    "Event",
    "Condition",
    "Barrier",
];

fn create(kind: &str, name: &str) -> ipc_sem::Result<Box<dyn std::any::Any>> {
    Ok(match kind {
        "Semaphore" => Box::new(Semaphore::create_named(name, 1)?),
        "BoundedSemaphore" => Box::new(BoundedSemaphore::create_named(name, 1)?),
        "Lock" => Box::new(Lock::create_named(name)?),
        "RLock" => Box::new(RLock::create_named(name)?),
        "Event" => Box::new(Event::create_named(name)?),
        "Condition" => Box::new(Condition::create_named(name)?),
        "Barrier" => Box::new(Barrier::create_named(name, 2)?),
        _ => unreachable!(),
    })
}

fn open(kind: &str, name: &str) -> ipc_sem::Result<Box<dyn std::any::Any>> {
    Ok(match kind {
        "Semaphore" => Box::new(Semaphore::open_named(name)?),
        "BoundedSemaphore" => Box::new(BoundedSemaphore::open_named(name)?),
        "Lock" => Box::new(Lock::open_named(name)?),
        "RLock" => Box::new(RLock::open_named(name)?),
        "Event" => Box::new(Event::open_named(name)?),
        "Condition" => Box::new(Condition::open_named(name)?),
        "Barrier" => Box::new(Barrier::open_named(name)?),
        _ => unreachable!(),
    })
}

#[test]
fn opening_as_another_kind_is_a_layout_error() {
    let _leaks = common::leak_guard();
    for made in KINDS {
        let (name, shm, _) = fresh("kind");
        let obj = create(made, &name).unwrap();
        for opened in KINDS {
            let r = open(opened, &name);
            if made == opened {
                assert!(r.is_ok(), "{made} reopened as itself: {:?}", r.err());
            } else {
                match r {
                    Err(e) => assert!(e.is_layout_mismatch(), "{made} as {opened}: {e}"),
                    Ok(_) => panic!("{made} opened as {opened}"),
                }
            }
        }
        drop(obj);
        shm.assert_no_new_shm();
    }
}

#[test]
fn named_objects_are_private_to_their_owner() {
    let _leaks = common::leak_guard();
    for kind in KINDS {
        let (name, shm, _) = fresh("perm");
        let obj = create(kind, &name).unwrap();
        assert_eq!(mode_of(name.trim_start_matches('/')), 0o600, "{kind}");
        drop(obj);
        shm.assert_no_new_shm();
    }
    let (name, _, sem) = fresh("perm");
    let p = PosixSemaphore::create_named(&name, 0).unwrap();
    assert_eq!(
        mode_of(&format!("sem.{}", name.trim_start_matches('/'))),
        0o600
    );
    drop(p);
    sem.assert_no_new_shm();
}

#[test]
fn only_the_creator_removes_the_name() {
    let _leaks = common::leak_guard();
    let (name, shm, _) = fresh("owner");
    let creator = Semaphore::create_named(&name, 0).unwrap();
    assert!(matches!(
        Semaphore::create_named(&name, 0),
        Err(Error::Shm(ipc_shm::Error::AlreadyExists(_)))
    ));
    // An opener that drops its handle leaves the name in place...
    drop(Semaphore::open_named(&name).unwrap());
    // ...and so does a forked child that drops its copy of the creator's handle.
    fork(|| {
        // SAFETY: in the forked child the original handle is never used or dropped again
        // (the child leaves with `_exit`), so this bitwise copy is the only one dropped here.
        drop(unsafe { std::ptr::read(&creator) });
        let opened = Semaphore::open_named(&name);
        i32::from(opened.is_err())
    })
    .wait_success(WATCHDOG);
    let again = Semaphore::open_named(&name).unwrap();
    again.release().unwrap();
    assert_eq!(creator.value(), 1);
    drop(creator);
    assert!(matches!(
        Semaphore::open_named(&name),
        Err(Error::Shm(ipc_shm::Error::NotFound(_)))
    ));
    // The opener's mapping keeps working after the name is gone.
    again.try_acquire().unwrap();
    drop(again);
    shm.assert_no_new_shm();
}

#[test]
fn posix_named_only_the_creator_unlinks() {
    let _leaks = common::leak_guard();
    let (name, _, sem) = fresh("pown");
    let creator = PosixSemaphore::create_named(&name, 0).unwrap();
    assert!(matches!(
        PosixSemaphore::create_named(&name, 0),
        Err(Error::Shm(ipc_shm::Error::AlreadyExists(_)))
    ));
    drop(PosixSemaphore::open_named(&name).unwrap());
    let opener = PosixSemaphore::open_named(&name).unwrap();
    opener.release().unwrap();
    assert_eq!(creator.value().unwrap(), 1);
    drop(creator);
    assert!(matches!(
        PosixSemaphore::open_named(&name),
        Err(Error::Shm(ipc_shm::Error::NotFound(_)))
    ));
    opener.acquire_timeout(Duration::ZERO).unwrap();
    drop(opener);
    sem.assert_no_new_shm();
    assert!(matches!(
        PosixSemaphore::create_named("a/b", 0),
        Err(Error::Shm(ipc_shm::Error::InvalidName(..)))
    ));
}

#[test]
fn geometry_comes_from_the_header() {
    let _leaks = common::leak_guard();
    let (name, shm, _) = fresh("geo");
    let b = BoundedSemaphore::create_named_with_bound(&name, 1, 5).unwrap();
    let o = BoundedSemaphore::open_named(&name).unwrap();
    assert_eq!(o.bound(), 5);
    o.release_n(4).unwrap();
    assert!(matches!(o.release(), Err(Error::ReleasedTooManyTimes)));
    drop((b, o));
    let bar = Barrier::create_named(&name, 7).unwrap();
    assert_eq!(Barrier::open_named(&name).unwrap().parties(), 7);
    drop(bar);
    shm.assert_no_new_shm();
}

#[test]
fn racing_over_releases_of_a_bounded_semaphore_let_exactly_one_through() {
    let _leaks = common::leak_guard();
    const CHILDREN: usize = 4;
    for _ in 0..10 {
        let sem = BoundedSemaphore::new(1).unwrap();
        sem.acquire().unwrap();
        let go = ipc_shm::AtomicValue::<std::sync::atomic::AtomicU32>::new(0).unwrap();
        let children: Vec<_> = (0..CHILDREN)
            .map(|_| {
                fork(|| {
                    while go.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                        std::hint::spin_loop();
                    }
                    match sem.release() {
                        Ok(()) => 0,
                        Err(Error::ReleasedTooManyTimes) => 1,
                        Err(_) => 2,
                    }
                })
            })
            .collect();
        go.store(1, std::sync::atomic::Ordering::SeqCst);
        let mut ok = 0;
        for c in children {
            match c.wait(WATCHDOG) {
                common::Exit::Code(0) => ok += 1,
                common::Exit::Code(1) => {}
                other => panic!("child: {other:?}"),
            }
        }
        assert_eq!(ok, 1, "exactly one release fits under the bound");
        assert_eq!(sem.value(), 1);
    }
}
