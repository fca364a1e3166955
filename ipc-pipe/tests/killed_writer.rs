//! A writer killed in the middle of a frame (fault point
//! `pipe.frame.header_written`, or a raw writer that stops anywhere in the
//! header or body): the reader gets `Disconnected` for the cut frame and
//! `Poisoned` after, never a hang or a panic, once no process holds the write
//! end any more.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};

use common::{close_in_child, fork, s, Exit};
use ipc_failpoints::{arm, Action};
use ipc_pipe::{duplex, frame::Header, simplex, Error};

/// Larger than any socket or pipe buffer here, so the first write is partial.
const BIG: usize = 8 << 20;
/// Longer than the test ever needs; the send never gets that far.
const WATCH: std::time::Duration = std::time::Duration::from_secs(60);

#[test]
fn duplex_writer_killed_after_header() {
    let _leaks = common::leak_guard();
    let (mut parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        child_end.send_bytes(b"whole").map_err(s)?;
        arm("pipe.frame.header_written", 1, Action::Kill).map_err(s)?;
        // A bounded send writes what fits and goes on: the point sits there
        // (a blocking send finishes the frame inside the kernel).
        child_end
            .send_bytes_timeout(&vec![5u8; BIG], WATCH)
            .map_err(s)?;
        Err("the fault point did not fire".into())
    });
    assert_eq!(child.wait(), Exit::Signal(libc::SIGKILL));
    assert_eq!(parent.recv_bytes().unwrap(), b"whole");
    let mut buf = Vec::new();
    let err = parent.recv_bytes_into(&mut buf);
    assert!(matches!(err, Err(Error::Disconnected)), "{err:?}");
    assert!(matches!(parent.recv_bytes(), Err(Error::Poisoned)));
}

#[test]
fn simplex_writer_killed_after_header() {
    let _leaks = common::leak_guard();
    let (mut rx, mut tx) = simplex().unwrap();
    let rx_fd = rx.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(rx_fd);
        tx.send(&7u32).map_err(s)?;
        arm("pipe.frame.header_written", 1, Action::Kill).map_err(s)?;
        tx.send_bytes_timeout(&vec![5u8; BIG], WATCH).map_err(s)?;
        Err("the fault point did not fire".into())
    });
    assert_eq!(child.wait(), Exit::Signal(libc::SIGKILL));
    assert_eq!(rx.recv::<u32>().unwrap(), 7);
    let err = rx.recv::<Vec<u8>>();
    assert!(matches!(err, Err(Error::Disconnected)), "{err:?}");
    assert!(matches!(rx.recv::<u32>(), Err(Error::Poisoned)));
}

#[test]
fn reader_sees_every_cut_point_as_disconnected() {
    let _leaks = common::leak_guard();
    // A frame cut after each possible number of bytes: header (short and
    // long form) or body. Whole frames before it are delivered.
    let mut frames = Vec::new();
    for len in [3usize, 100] {
        let mut f = Header::bytes(len).as_slice().to_vec();
        f.extend(std::iter::repeat(9u8).take(len));
        frames.push(f);
    }
    let mut long = vec![0xFF; 4];
    long.extend_from_slice(&(u64::from(u32::MAX) + 1).to_le_bytes());
    frames.push(long);
    for f in &frames {
        for cut in 1..f.len() {
            let (mut parent, child_end) = duplex().unwrap();
            parent.set_max_message_size(usize::MAX);
            let parent_fd = parent.as_raw_fd();
            let piece = f[..cut].to_vec();
            let mut child = fork(move || {
                close_in_child(parent_fd);
                let mut raw = File::from(OwnedFd::from(child_end));
                raw.write_all(Header::bytes(2).as_slice()).map_err(s)?;
                raw.write_all(b"ok").map_err(s)?;
                raw.write_all(&piece).map_err(s)
            });
            child.join_ok();
            assert_eq!(parent.recv_bytes().unwrap(), b"ok");
            let err = parent.recv_bytes();
            assert!(
                matches!(err, Err(Error::Disconnected)),
                "cut at {cut} of {}: {err:?}",
                f.len()
            );
            assert!(matches!(parent.recv_bytes(), Err(Error::Poisoned)));
        }
    }
}
