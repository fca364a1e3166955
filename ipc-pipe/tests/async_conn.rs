//! The tokio layer across processes: wake-up, timeout, dead peer, cancellation under load,
//! descriptors, a big message against a slow reader, and async accept/connect. Children are
//! forked before the parent builds its runtime (a forked child never inherits one) and use
//! the blocking API or a runtime of their own.
#![cfg(all(feature = "tokio", feature = "serde"))]

mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use common::{close_in_child, fork, s};
use ipc_pipe::{
    duplex, simplex, AsyncConnection, AsyncListener, AsyncReceiver, AsyncSender, Client,
    Connection, Error, Receiver, RecvTimeoutError, SendTimeoutError,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn local_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Message `i` of a numbered stream: sizes from a few bytes to more than a socket buffer,
/// so some frames are cut by a full buffer and some arrive in pieces.
fn numbered(i: u32) -> Vec<u8> {
    let len = match i % 7 {
        0 => 300_000,
        1 | 2 => 3000,
        _ => 4 + (i as usize % 50),
    };
    let mut v: Vec<u8> = (0..len)
        .map(|k| (k as u32 ^ i.wrapping_mul(2654435761)) as u8)
        .collect();
    v[..4].copy_from_slice(&i.to_le_bytes());
    v
}

/// Small deterministic generator (xorshift) for cancellation points.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn recv_wakes_when_the_peer_sends_later() {
    let _leaks = common::leak_guard();
    let (parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    // Before the fork: the child sends at least 200 ms after this.
    let start = Instant::now();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        std::thread::sleep(Duration::from_millis(200));
        child_end.send(&"late").map_err(s)?;
        // And the other way: the parent's send reaches a blocked reader here.
        let back: String = child_end.recv().map_err(s)?;
        if back != "late!" {
            return Err(format!("got {back:?}"));
        }
        Ok(())
    });
    let rt = runtime();
    rt.block_on(async {
        let mut conn = AsyncConnection::new(parent).unwrap();
        // Another task keeps running while this one waits: the thread is not blocked.
        let ticker = tokio::spawn(async {
            let mut ticks = 0u32;
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks += 1;
            }
            ticks
        });
        let got: String = conn.recv().await.unwrap();
        assert_eq!(got, "late");
        assert!(start.elapsed() >= Duration::from_millis(200));
        assert_eq!(ticker.await.unwrap(), 5);
        conn.send(&"late!").await.unwrap();
    });
    drop(rt);
    child.join_ok();
}

#[test]
fn simplex_halves_wake_up_across_processes() {
    let _leaks = common::leak_guard();
    let (rx, mut tx) = simplex().unwrap();
    let rx_fd = rx.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(rx_fd);
        for i in 0..100u32 {
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
            tx.send(&i).map_err(s)?;
        }
        Ok(())
    });
    // The parent's `tx` went with the closure: the child holds the only write end.
    let rt = runtime();
    rt.block_on(async {
        let mut rx = AsyncReceiver::new(rx).unwrap();
        for i in 0..100u32 {
            assert_eq!(rx.recv::<u32>().await.unwrap(), i);
        }
        assert!(matches!(rx.recv::<u32>().await, Err(Error::Disconnected)));
    });
    drop(rt);
    child.join_ok();

    // The send half against a blocking reader in a child.
    let (mut rx, tx) = simplex().unwrap();
    let tx_fd = tx.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(tx_fd);
        std::thread::sleep(Duration::from_millis(50));
        for i in 0..100u32 {
            let got: u32 = rx.recv().map_err(s)?;
            if got != i {
                return Err(format!("expected {i}, got {got}"));
            }
        }
        Ok(())
    });
    let rt = local_runtime();
    rt.block_on(async {
        let mut tx = AsyncSender::new(tx).unwrap();
        for i in 0..100u32 {
            tx.send(&i).await.unwrap();
        }
    });
    drop(rt);
    child.join_ok();
}

#[test]
fn a_timed_out_recv_keeps_the_partial_message_and_the_next_one() {
    let _leaks = common::leak_guard();
    let (parent, mut child_end) = duplex().unwrap();
    let (mut go_rx, go_tx) = simplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let go_tx_fd = go_tx.as_raw_fd();
    let big = numbered(7); // 300 000 bytes
    let expect = big.clone();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        close_in_child(go_tx_fd);
        // Half a frame by hand (header + some payload), then wait for the parent's go.
        let hdr = ipc_pipe::frame::Header::bytes(big.len());
        let mut raw = hdr.as_slice().to_vec();
        raw.extend_from_slice(&big[..1000]);
        nix::unistd::write(child_end.as_fd(), &raw).map_err(s)?;
        go_rx.recv_bytes().map_err(s)?;
        let mut rest = &big[1000..];
        while !rest.is_empty() {
            let n = nix::unistd::write(child_end.as_fd(), rest).map_err(s)?;
            rest = &rest[n..];
        }
        child_end.send(&"next").map_err(s)?;
        Ok(())
    });
    let mut go_tx = go_tx;
    let rt = runtime();
    rt.block_on(async {
        let mut conn = AsyncConnection::new(parent).unwrap();
        // tokio's timeout around the plain form, then our own timeout form.
        let start = Instant::now();
        let r = tokio::time::timeout(Duration::from_millis(100), conn.recv_bytes()).await;
        assert!(r.is_err(), "no whole message yet: {r:?}");
        assert!(start.elapsed() >= Duration::from_millis(100));
        let start = Instant::now();
        match conn.recv_bytes_timeout(Duration::from_millis(50)).await {
            Err(RecvTimeoutError::Timeout) => {}
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert!(start.elapsed() >= Duration::from_millis(50));
        go_tx.send_bytes(b"go").unwrap();
        let got = conn.recv_bytes().await.unwrap();
        assert!(got == expect, "the cut-off message came back damaged");
        assert_eq!(conn.recv::<String>().await.unwrap(), "next");
        assert!(matches!(conn.recv_bytes().await, Err(Error::Disconnected)));
    });
    drop(rt);
    child.join_ok();
}

#[test]
fn a_killed_peer_is_disconnected_for_recv_and_send() {
    let _leaks = common::leak_guard();
    let (parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        child_end.send(&1u32).map_err(s)?;
        child_end.send(&2u32).map_err(s)?;
        // Then hang until killed.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let pid = child.pid();
    let rt = runtime();
    rt.block_on(async {
        let mut conn = AsyncConnection::new(parent).unwrap();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            ipc_testkit::signal_pid(pid, libc::SIGKILL);
        });
        // What the peer finished sending is delivered, then Disconnected.
        assert_eq!(conn.recv::<u32>().await.unwrap(), 1);
        assert_eq!(conn.recv::<u32>().await.unwrap(), 2);
        let r = tokio::time::timeout(common::WATCHDOG, conn.recv::<u32>()).await;
        assert!(matches!(r, Ok(Err(Error::Disconnected))), "{r:?}");
        killer.join().unwrap();
        // A send to the dead peer: Disconnected, never SIGPIPE, never a hang.
        let big = vec![0u8; 1 << 20];
        let r = tokio::time::timeout(common::WATCHDOG, conn.send_bytes(&big)).await;
        assert!(matches!(r, Ok(Err(Error::Disconnected))), "{r:?}");
    });
    drop(rt);
    assert_eq!(child.wait(), common::Exit::Signal(libc::SIGKILL));
}

#[test]
fn a_send_blocked_on_a_killed_reader_is_disconnected() {
    let _leaks = common::leak_guard();
    let (parent, child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        let _keep = child_end;
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let pid = child.pid();
    let rt = runtime();
    rt.block_on(async {
        let mut conn = AsyncConnection::new(parent).unwrap();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            ipc_testkit::signal_pid(pid, libc::SIGKILL);
        });
        // More than the socket buffers hold: the send waits for room, then the peer dies.
        let big = vec![5u8; 16 << 20];
        let r = tokio::time::timeout(common::WATCHDOG, conn.send_bytes(&big)).await;
        assert!(matches!(r, Ok(Err(Error::Disconnected))), "{r:?}");
        killer.join().unwrap();
    });
    drop(rt);
    assert_eq!(child.wait(), common::Exit::Signal(libc::SIGKILL));
}

#[test]
fn receives_dropped_at_random_points_lose_nothing() {
    const N: u32 = 600;
    let _leaks = common::leak_guard();
    let (parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        for i in 0..N {
            child_end.send_bytes(&numbered(i)).map_err(s)?;
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    });
    let rt = runtime();
    let dropped = rt.block_on(async {
        let mut conn = AsyncConnection::new(parent).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut buf = Vec::new();
        let mut dropped = 0u32;
        let mut i = 0;
        while i < N {
            // A receive dropped after a random few microseconds (often mid-message).
            let limit = Duration::from_micros(rng.below(300));
            let r = match rng.below(3) {
                0 => tokio::time::timeout(limit, conn.recv_bytes()).await,
                1 => tokio::time::timeout(limit, conn.recv_bytes_into(&mut buf))
                    .await
                    .map(|r| r.map(|_| std::mem::take(&mut buf))),
                _ => match conn.recv_bytes_timeout(limit).await {
                    Err(RecvTimeoutError::Timeout) => {
                        dropped += 1;
                        continue;
                    }
                    r => Ok(r.map_err(Error::from)),
                },
            };
            match r {
                Err(_) => dropped += 1,
                Ok(Ok(msg)) => {
                    assert!(msg == numbered(i), "message {i} damaged or out of order");
                    i += 1;
                }
                Ok(Err(e)) => panic!("message {i}: {e:?}"),
            }
        }
        assert!(matches!(conn.recv_bytes().await, Err(Error::Disconnected)));
        dropped
    });
    drop(rt);
    child.join_ok();
    assert!(
        dropped > 0,
        "no receive was cancelled: the test proved nothing"
    );
}

#[test]
fn sends_dropped_at_random_points_never_cut_a_frame() {
    const N: u32 = 400;
    let _leaks = common::leak_guard();
    let (parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        // Phase 1: `send_bytes_timeout` (Timeout = not sent, resent): exactly 0..N in order.
        for i in 0..N {
            let msg = child_end.recv_bytes().map_err(s)?;
            if msg != numbered(i) {
                return Err(format!("phase 1: message {i} damaged or out of order"));
            }
            if i % 40 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        // Phase 2: plain sends dropped anywhere: what arrives is whole and increasing, and
        // the final marker arrives.
        let mut last = None;
        loop {
            let msg = child_end.recv_bytes().map_err(s)?;
            if msg == b"end" {
                break;
            }
            let i = u32::from_le_bytes(msg[..4].try_into().map_err(s)?);
            if msg != numbered(i) || last.is_some_and(|l| i <= l) {
                return Err(format!("phase 2: message {i} damaged or repeated"));
            }
            last = Some(i);
            // A slow reader now and then, so the parent's sends find the buffer full.
            if i % 40 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        child_end.send(&last).map_err(s)?;
        Ok(())
    });
    let rt = runtime();
    rt.block_on(async {
        let mut conn = AsyncConnection::new(parent).unwrap();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut timeouts = 0;
        let mut i = 0;
        while i < N {
            let limit = Duration::from_micros(rng.below(200));
            match conn.send_bytes_timeout(&numbered(i), limit).await {
                Ok(()) => i += 1,
                Err(SendTimeoutError::Timeout) => timeouts += 1,
                Err(e) => panic!("send {i}: {e:?}"),
            }
        }
        assert!(
            timeouts > 0,
            "no send was cancelled: phase 1 proved nothing"
        );
        let mut dropped = 0;
        // At least N sends, and on until one was dropped mid-way (bounded: the reader pauses
        // every 40 messages, so a full buffer comes soon).
        let mut i = 0;
        while i < N || (dropped == 0 && i < 50 * N) {
            i += 1;
            let limit = Duration::from_micros(rng.below(200));
            if tokio::time::timeout(limit, conn.send_bytes(&numbered(i)))
                .await
                .is_err()
            {
                dropped += 1;
            }
        }
        assert!(dropped > 0, "no send was dropped: phase 2 proved nothing");
        conn.send_bytes(b"end").await.unwrap();
        conn.flush().await.unwrap();
        assert_eq!(conn.pending_bytes(), 0);
        let last: Option<u32> = conn.recv().await.unwrap();
        assert!(last.is_some(), "phase 2 delivered nothing");
    });
    drop(rt);
    child.join_ok();
}

#[test]
fn descriptors_cross_both_ways() {
    let _leaks = common::leak_guard();
    let (parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        // Hand the parent the read end of a fresh pipe, then write into it.
        let (rx, mut tx) = simplex().map_err(s)?;
        child_end.send_fds(&[rx.as_fd()]).map_err(s)?;
        drop(rx);
        tx.send_bytes(b"through a passed pipe").map_err(s)?;
        // And take one from the parent.
        let mut fds = child_end.recv_fds().map_err(s)?;
        let mut theirs = Connection::from(fds.remove(0));
        theirs.send_bytes(b"back").map_err(s)?;
        Ok(())
    });
    let rt = runtime();
    rt.block_on(async {
        let mut conn = AsyncConnection::new(parent).unwrap();
        let mut fds = conn.recv_fds().await.unwrap();
        assert_eq!(fds.len(), 1);
        let mut passed = AsyncReceiver::new(Receiver::from(fds.remove(0))).unwrap();
        assert_eq!(passed.recv_bytes().await.unwrap(), b"through a passed pipe");
        let (mut mine, theirs) = duplex().unwrap();
        conn.send_fds(&[theirs.as_fd()]).await.unwrap();
        drop(theirs);
        assert_eq!(mine.recv_bytes().unwrap(), b"back");
        drop(passed);
    });
    drop(rt);
    child.join_ok();
}

#[test]
fn a_big_message_goes_to_a_slow_reader_without_blocking_the_runtime() {
    let _leaks = common::leak_guard();
    let (parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let big = numbered(0).repeat(30); // 9 MB, far more than the socket buffers
    let expect = big.clone();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        std::thread::sleep(Duration::from_millis(300));
        let mut buf = Vec::with_capacity(64 << 10);
        // The sender has long filled the socket buffers and waits for room.
        let msg = child_end
            .recv_bytes_into(&mut buf)
            .map(|_| buf)
            .map_err(s)?;
        if msg != expect {
            return Err("big message damaged".into());
        }
        child_end.send(&msg.len()).map_err(s)?;
        Ok(())
    });
    let rt = local_runtime();
    rt.block_on(async {
        let mut conn = AsyncConnection::new(parent).unwrap();
        let ticker = tokio::spawn(async {
            let mut ticks = 0u32;
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks += 1;
                if ticks == 10 {
                    return ticks;
                }
            }
        });
        conn.send_bytes(&big).await.unwrap();
        assert_eq!(conn.pending_bytes(), 0);
        // On a current-thread runtime the ticker could only run while the send waited.
        assert!(ticker.is_finished(), "the runtime was blocked by the send");
        assert_eq!(conn.recv::<usize>().await.unwrap(), big.len());
    });
    drop(rt);
    child.join_ok();
}

#[test]
fn into_inner_gives_back_a_blocking_connection_with_its_buffers() {
    let _leaks = common::leak_guard();
    let (mut a, b) = duplex().unwrap();
    let rt = local_runtime();
    let b = rt.block_on(async {
        let mut b = AsyncConnection::new(b).unwrap();
        a.send_bytes(b"one").unwrap();
        a.send_bytes(b"two").unwrap();
        assert_eq!(b.recv_bytes().await.unwrap(), b"one");
        b.into_inner()
    });
    drop(rt);
    // "two" was read ahead by the async handle: the blocking one still has it.
    let mut b = b;
    assert_eq!(b.recv_bytes().unwrap(), b"two");
    // The fd is blocking again: a timed receive waits and times out.
    assert!(matches!(
        b.recv_bytes_timeout(Duration::from_millis(20)),
        Err(RecvTimeoutError::Timeout)
    ));
    // SAFETY: F_GETFL on a descriptor we own.
    let flags = unsafe { libc::fcntl(b.as_raw_fd(), libc::F_GETFL) };
    assert!(flags >= 0);
    assert_eq!(flags & libc::O_NONBLOCK, 0);
}

#[test]
fn async_listener_and_client_across_processes() {
    let path = common::unique_socket_path("async");
    let _leaks =
        common::leak_guard().watch_dir_prefix(std::env::temp_dir(), &common::socket_prefix());
    let client_path = path.clone();
    let rt_listener = {
        // Bind before forking so the child can connect; register after.
        ipc_pipe::Listener::bind(path.as_path()).unwrap()
    };
    let listener_fd = rt_listener.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(listener_fd);
        let rt = local_runtime();
        rt.block_on(async {
            for i in 0..3u32 {
                let mut c = Client::connect_async(client_path.as_path())
                    .await
                    .map_err(s)?;
                c.send(&i).await.map_err(s)?;
                let back: u32 = c.recv().await.map_err(s)?;
                if back != i * 10 {
                    return Err(format!("got {back}"));
                }
            }
            Ok(())
        })
    });
    let rt = runtime();
    rt.block_on(async {
        let mut listener = AsyncListener::new(rt_listener).unwrap();
        for _ in 0..3 {
            let mut conn = listener.accept().await.unwrap();
            let i: u32 = conn.recv().await.unwrap();
            conn.send(&(i * 10)).await.unwrap();
        }
    });
    drop(rt);
    child.join_ok();
}

#[cfg(feature = "auth")]
#[test]
fn authenticated_async_accept_is_not_stalled_by_a_silent_peer() {
    let path = common::unique_socket_path("asyncauth");
    let _leaks =
        common::leak_guard().watch_dir_prefix(std::env::temp_dir(), &common::socket_prefix());
    let listener = ipc_pipe::Listener::bind_with_authkey(path.as_path(), b"key").unwrap();
    let listener_fd = listener.as_raw_fd();
    let client_path = path.clone();
    let mut child = fork(move || {
        close_in_child(listener_fd);
        // A peer that connects and never answers, then a good one and a bad one.
        let _silent = Client::connect(client_path.as_path()).map_err(s)?;
        let rt = local_runtime();
        rt.block_on(async {
            let mut c = Client::connect_with_authkey_async(client_path.as_path(), b"key")
                .await
                .map_err(s)?;
            c.send(&"authenticated").await.map_err(s)?;
            match Client::connect_with_authkey_async(client_path.as_path(), b"wrong").await {
                Err(Error::AuthenticationFailed) => {}
                other => return Err(format!("wrong key: {other:?}")),
            }
            // Wait for the parent to finish with the good connection.
            let _ = c.recv_bytes().await;
            Ok(())
        })
    });
    let rt = runtime();
    rt.block_on(async {
        let mut listener = AsyncListener::new(listener).unwrap();
        let mut conn = listener.accept().await.unwrap();
        assert_eq!(conn.recv::<String>().await.unwrap(), "authenticated");
        match listener.accept().await {
            Err(Error::AuthenticationFailed) => {}
            other => panic!("wrong key accepted: {other:?}"),
        }
        drop(conn);
        drop(listener);
    });
    drop(rt);
    child.join_ok();
}
