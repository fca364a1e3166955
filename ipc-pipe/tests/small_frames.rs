//! Streams of small frames on a `simplex()` pipe: the writer's one-syscall
//! path for a small blocking send, and the reader's pause after a short read
//! between small frames. Frames stay whole and in order whatever the pace of
//! either side; a blocking send on an `O_NONBLOCK` write end still waits for
//! room; an idle writer never stalls the reader.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use common::{close_in_child, fork, s};
use ipc_pipe::{simplex, Error, Receiver, Sender};

/// Message `i` of a stream: a size that cycles through 1..=1100 bytes (across
/// the reader's short-read threshold of 1 KiB), stamped with `i`.
fn message(i: u64) -> Vec<u8> {
    let len = 1 + (i.wrapping_mul(37) % 1100) as usize;
    let mut m: Vec<u8> = (0..len).map(|j| (i as usize ^ j) as u8).collect();
    let stamp = i.to_le_bytes();
    let k = len.min(8);
    m[..k].copy_from_slice(&stamp[..k]);
    m
}

/// Receives `n` messages and checks each against [`message`]; `pause_every`
/// messages (0: never) the reader stops for a while, so the writer fills the
/// pipe, then it drains at full speed.
fn check_stream(rx: &mut Receiver, n: u64, pause_every: u64) -> Result<(), String> {
    let mut buf = Vec::new();
    for i in 0..n {
        if pause_every > 0 && i % pause_every == pause_every / 2 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let k = rx.recv_bytes_into(&mut buf).map_err(s)?;
        let want = message(i);
        if k != want.len() || buf != want {
            return Err(format!(
                "message {i}: got {k} bytes, want {} (first bytes {:?})",
                want.len(),
                &buf[..buf.len().min(8)]
            ));
        }
    }
    match rx.recv_bytes_into(&mut buf) {
        Err(Error::Disconnected) => Ok(()),
        other => Err(format!("after the stream: {other:?}")),
    }
}

#[test]
fn small_frames_whole_and_in_order_across_processes() {
    let _leaks = common::leak_guard();
    const N: u64 = 60_000;
    for pause_every in [0, 15_000] {
        let (mut rx, mut tx) = simplex().unwrap();
        let rx_fd = rx.as_raw_fd();
        let mut child = fork(move || {
            close_in_child(rx_fd);
            for i in 0..N {
                if i == N / 3 {
                    // An idle writer: the reader retries, then sleeps.
                    std::thread::sleep(Duration::from_millis(30));
                }
                tx.send_bytes(&message(i)).map_err(s)?;
            }
            Ok(())
        });
        let res = check_stream(&mut rx, N, pause_every);
        child.join_ok();
        res.unwrap();
    }
}

#[test]
fn blocking_small_send_on_nonblocking_pipe_waits_for_room() {
    let _leaks = common::leak_guard();
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by nobody else.
    let (r_fd, w_fd) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut rx = Receiver::from(r_fd);
    let mut tx = Sender::from(w_fd);
    // Far more than the pipe holds (64 KiB by default): the writer meets a
    // full pipe (EAGAIN on this fd) many times and must wait, not fail.
    const N: u64 = 20_000;
    let rx_fd = rx.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(rx_fd);
        for i in 0..N {
            tx.send_bytes(&message(i)).map_err(s)?;
        }
        Ok(())
    });
    // The read end is O_NONBLOCK too: blocking receives poll for it.
    let res = check_stream(&mut rx, N, 5_000);
    child.join_ok();
    res.unwrap();
}
