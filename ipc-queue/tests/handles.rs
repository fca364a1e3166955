//! Handle passing: `Queue` and `PodQueue` sent as descriptors (`SCM_RIGHTS`, through
//! `ipc_pipe`) to a process that did not inherit them, rebuilt there with `from_fd`, and
//! refused when the descriptor is not what it claims to be.
//!
//! Each cross-process test forks its peer *before* the queues exist, so the peer can reach
//! them only through the descriptors it receives.

mod common;

use std::os::fd::{AsFd, OwnedFd};

use common::{leak_guard, WATCHDOG};
use ipc_pipe::Connection;
#[cfg(feature = "serde")]
use ipc_queue::Queue;
use ipc_queue::{Error, PodQueue};
use ipc_testkit::{fork, unique_name, Child, Hostile};

/// Forks a peer that shares nothing with the parent but one end of a fresh connection (the
/// parent's copy of that end is closed when `fork` drops the closure).
fn peer(f: impl FnOnce(Connection) -> i32) -> (Connection, Child) {
    let (here, there) = ipc_pipe::duplex().unwrap();
    let child = fork(move || f(there));
    (here, child)
}

#[cfg(feature = "serde")]
#[test]
fn queues_carry_messages_both_ways_with_a_process_that_did_not_inherit_them() {
    let _leaks = leak_guard();
    const N: u64 = 2_000;
    let (mut conn, child) = peer(|mut conn| {
        let Ok(fds) = conn.recv_fds() else { return 2 };
        let Ok([down, up]) = <[OwnedFd; 2]>::try_from(fds) else {
            return 3;
        };
        let (Ok(down), Ok(up)) = (Queue::<String>::from_fd(down), PodQueue::<u64>::from_fd(up))
        else {
            return 4;
        };
        // Answer every message with its number, until the parent closes its queue.
        let mut seen = 0u64;
        loop {
            match down.get() {
                Ok(msg) => {
                    let Some(n) = msg
                        .strip_prefix("message ")
                        .and_then(|n| n.parse::<u64>().ok())
                    else {
                        return 5;
                    };
                    if up.put(n).is_err() {
                        return 6;
                    }
                    seen += 1;
                }
                Err(Error::Closed) => break,
                Err(_) => return 7,
            }
        }
        i32::from(seen != N)
    });
    let down = Queue::<String>::builder().capacity(16).build().unwrap();
    let up = PodQueue::<u64>::new(16).unwrap();
    conn.send_fds(&[down.as_fd(), up.as_fd()]).unwrap();
    let mut sum = 0;
    for i in 0..N {
        down.put(&format!("message {i}")).unwrap();
        // Keep at most a few in flight so neither side fills up waiting for the other.
        if i >= 8 {
            sum += up.get_timeout(WATCHDOG).unwrap();
        }
    }
    for _ in 0..8 {
        sum += up.get_timeout(WATCHDOG).unwrap();
    }
    down.close();
    child.wait_success(WATCHDOG);
    assert_eq!(sum, N * (N - 1) / 2);
    assert!(up.is_empty());
}

#[test]
fn pod_queues_carry_messages_both_ways_with_a_process_that_did_not_inherit_them() {
    let _leaks = leak_guard();
    const N: u64 = 5_000;
    let (mut conn, child) = peer(|mut conn| {
        let Ok(fds) = conn.recv_fds() else { return 2 };
        let Ok([down, up]) = <[OwnedFd; 2]>::try_from(fds) else {
            return 3;
        };
        let (Ok(down), Ok(up)) = (
            PodQueue::<[u32; 2]>::from_fd(down),
            PodQueue::<u64>::from_fd(up),
        ) else {
            return 4;
        };
        // Answer every message with the product of its two numbers, until the parent closes.
        let mut seen = 0u64;
        loop {
            match down.get() {
                Ok([a, b]) => {
                    if up.put(u64::from(a) * u64::from(b)).is_err() {
                        return 5;
                    }
                    seen += 1;
                }
                Err(Error::Closed) => break,
                Err(_) => return 6,
            }
        }
        i32::from(seen != N)
    });
    let down = PodQueue::<[u32; 2]>::new(32).unwrap();
    let up = PodQueue::<u64>::new(32).unwrap();
    conn.send_fds(&[down.as_fd(), up.as_fd()]).unwrap();
    let mut sum = 0;
    for i in 0..N {
        down.put([i as u32, 2]).unwrap();
        // At most eight in flight, so neither side fills up waiting for the other.
        if i >= 8 {
            sum += up.get_timeout(WATCHDOG).unwrap();
        }
    }
    for _ in 0..8 {
        sum += up.get_timeout(WATCHDOG).unwrap();
    }
    down.close();
    child.wait_success(WATCHDOG);
    assert_eq!(sum, N * (N - 1));
}

#[test]
fn a_named_queue_passed_by_fd_keeps_its_name_until_its_creator_drops() {
    let _leaks = leak_guard();
    let name = unique_name(&format!("{}-named", common::q_tag()));
    let q = PodQueue::<u32>::create_named(&name, 4).unwrap();
    let other = PodQueue::<u32>::from_fd(q.as_fd().try_clone_to_owned().unwrap()).unwrap();
    assert!(other.name().is_none());
    other.put(5).unwrap();
    drop(other); // removes nothing
    let opened = PodQueue::<u32>::open_named(&name).unwrap();
    assert_eq!(opened.get().unwrap(), 5);
    // into_fd of the creator removes the name, as drop does; the queue lives on.
    opened.put(6).unwrap();
    let fd = q.into_fd();
    assert!(matches!(
        PodQueue::<u32>::open_named(&name),
        Err(Error::Shm(ipc_shm::Error::NotFound(_)))
    ));
    let back = PodQueue::<u32>::from_fd(fd).unwrap();
    assert_eq!(back.get().unwrap(), 6);
}

fn is_mismatch<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    match r {
        Err(Error::Shm(ipc_shm::Error::LayoutMismatch { .. })) => true,
        other => panic!("expected LayoutMismatch, got {other:?}"),
    }
}

fn dup(fd: &impl AsFd) -> OwnedFd {
    fd.as_fd().try_clone_to_owned().unwrap()
}

#[test]
fn a_descriptor_opened_as_another_queue_type_is_a_layout_mismatch() {
    let _leaks = leak_guard();
    let pod = PodQueue::<u32>::new(8).unwrap();
    let value = ipc_shm::Value::new(0u64).unwrap();
    assert!(is_mismatch(PodQueue::<u64>::from_fd(dup(&pod))));
    assert!(is_mismatch(PodQueue::<i32>::from_fd(dup(&pod))));
    assert!(is_mismatch(PodQueue::<u64>::from_fd(dup(&value))));
    // The right type opens it and sees the creator's geometry.
    assert_eq!(PodQueue::<u32>::from_fd(dup(&pod)).unwrap().capacity(), 8);
    #[cfg(feature = "serde")]
    {
        let serde = Queue::<String>::new(8).unwrap();
        assert!(is_mismatch(Queue::<u32>::from_fd(dup(&pod))));
        assert!(is_mismatch(Queue::<Vec<u8>>::from_fd(dup(&serde))));
        assert!(is_mismatch(PodQueue::<u32>::from_fd(dup(&serde))));
        assert_eq!(
            Queue::<String>::from_fd(dup(&serde))
                .unwrap()
                .max_message_size(),
            serde.max_message_size()
        );
    }
}

#[test]
fn a_socket_or_a_file_of_another_size_is_refused() {
    let _leaks = leak_guard();
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    assert!(matches!(
        PodQueue::<u8>::from_fd(a.into()),
        Err(Error::Shm(ipc_shm::Error::NotMemoryFile {
            file_type: "socket",
            ..
        }))
    ));
    let q = PodQueue::<u64>::new(4).unwrap();
    let grown = std::fs::File::from(dup(&q));
    grown.set_len(1 << 20).unwrap();
    assert!(is_mismatch(PodQueue::<u64>::from_fd(grown.into())));
}

#[test]
fn a_header_corrupted_by_a_hostile_writer_is_refused() {
    let _leaks = leak_guard();
    let name = unique_name(&format!("{}-hostile", common::q_tag()));
    // Capacity (offset 32) and slot size (offset 40) of the header: a ring geometry that no
    // longer matches the segment, or that no creator writes.
    for (offset, bytes) in [(32, 1u64 << 40), (32, 3), (40, 12), (40, 0)] {
        let q = PodQueue::<[u64; 2]>::create_named(&name, 4).unwrap();
        Hostile::open(&name)
            .write_at(offset, &bytes.to_ne_bytes())
            .unwrap();
        assert!(
            is_mismatch(PodQueue::<[u64; 2]>::from_fd(q.into_fd())),
            "offset {offset} = {bytes}"
        );
    }
}
