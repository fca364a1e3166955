//! Writing to a closed peer never raises SIGPIPE, even in a host that left
//! SIGPIPE at its default action (which kills). The signal disposition is
//! changed only inside forked children, but this stays its own binary.

mod common;

use std::mem;

use common::{fork, s, Exit};
use ipc_pipe::{duplex, simplex, Error, SendTimeoutError, TrySendError};

fn sigpipe_pending() -> bool {
    // SAFETY: sigpending fills a zeroed set we own; sigismember reads it.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigpending(&mut set);
        libc::sigismember(&set, libc::SIGPIPE) == 1
    }
}

fn set_default_sigpipe() {
    // SAFETY: resets SIGPIPE to SIG_DFL in this (child) process.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn block_sigpipe(block: bool) {
    // SAFETY: builds a one-signal set and changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

fn writes_to_closed_peers() -> Result<(), String> {
    let (rx, mut tx) = simplex().map_err(s)?;
    drop(rx);
    for _ in 0..3 {
        match tx.send_bytes(b"nobody reads") {
            Err(Error::Disconnected) => {}
            other => return Err(format!("pipe: expected Disconnected, got {other:?}")),
        }
    }
    // The bounded forms write with RWF_NOWAIT / MSG_DONTWAIT: same guarantee.
    match tx.try_send_bytes(b"nobody reads") {
        Err(TrySendError::Disconnected) => {}
        other => return Err(format!("pipe try_: expected Disconnected, got {other:?}")),
    }
    match tx.send_bytes_timeout(b"nobody reads", std::time::Duration::from_secs(5)) {
        Err(SendTimeoutError::Disconnected) => {}
        other => {
            return Err(format!(
                "pipe _timeout: expected Disconnected, got {other:?}"
            ))
        }
    }
    match tx.send(&vec![0u8; 1 << 20]) {
        Err(Error::Disconnected) => {}
        other => return Err(format!("pipe big: expected Disconnected, got {other:?}")),
    }
    let (a, mut b) = duplex().map_err(s)?;
    drop(a);
    match b.send_bytes(b"nobody reads") {
        Err(Error::Disconnected) => {}
        other => return Err(format!("socket: expected Disconnected, got {other:?}")),
    }
    match b.try_send(&1u8) {
        Err(TrySendError::Disconnected) => {}
        other => return Err(format!("socket try_: expected Disconnected, got {other:?}")),
    }
    Ok(())
}

#[test]
fn sigpipe_not_raised_with_default_disposition() {
    let _leaks = common::leak_guard();
    let mut child = fork(|| {
        set_default_sigpipe();
        writes_to_closed_peers()?;
        if sigpipe_pending() {
            return Err("a SIGPIPE was left pending".into());
        }
        Ok(())
    });
    // Killed by SIGPIPE would be Exit::Signal(SIGPIPE).
    assert_eq!(child.wait(), Exit::Code(0));
}

#[test]
fn sigpipe_not_left_pending_when_caller_blocks_it() {
    let _leaks = common::leak_guard();
    let mut child = fork(|| {
        set_default_sigpipe();
        block_sigpipe(true);
        writes_to_closed_peers()?;
        if sigpipe_pending() {
            return Err("a SIGPIPE was left pending".into());
        }
        // Unblocking must not deliver anything either.
        block_sigpipe(false);
        Ok(())
    });
    assert_eq!(child.wait(), Exit::Code(0));
}

fn set_sigpipe(handler: libc::sighandler_t) {
    // SAFETY: sets SIGPIPE's disposition in this (child) process.
    unsafe { libc::signal(libc::SIGPIPE, handler) };
}

#[test]
fn sigpipe_ignored_closed_peer_is_disconnected() {
    // While SIGPIPE is ignored small pipe messages are plain `write`s: a
    // closed peer must still be `Disconnected` on every form.
    let _leaks = common::leak_guard();
    let mut child = fork(|| {
        set_sigpipe(libc::SIG_IGN);
        writes_to_closed_peers()
    });
    assert_eq!(child.wait(), Exit::Code(0));
}

#[test]
fn default_action_restored_midstream_is_honoured_within_64_sends() {
    // The documented bound: a sender reads the disposition every 64 sends.
    // Ignored at the first send, default from the second on: after 63 more
    // sends to a live reader the sender must know, so a send to the closed
    // pipe is `Disconnected` and the process lives.
    let _leaks = common::leak_guard();
    let mut child = fork(|| {
        set_sigpipe(libc::SIG_IGN);
        let (mut rx, mut tx) = simplex().map_err(s)?;
        tx.send_bytes(b"first").map_err(s)?;
        set_default_sigpipe();
        for i in 0u32..63 {
            tx.send_bytes(&i.to_le_bytes()).map_err(s)?;
        }
        let mut buf = Vec::new();
        for _ in 0..64 {
            rx.recv_bytes_into(&mut buf).map_err(s)?;
        }
        drop(rx);
        for _ in 0..3 {
            match tx.send_bytes(b"nobody reads") {
                Err(Error::Disconnected) => {}
                other => return Err(format!("expected Disconnected, got {other:?}")),
            }
        }
        if sigpipe_pending() {
            return Err("a SIGPIPE was left pending".into());
        }
        Ok(())
    });
    assert_eq!(child.wait(), Exit::Code(0));
}
