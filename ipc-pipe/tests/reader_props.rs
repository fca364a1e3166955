//! Properties of the connection's receive state machine (`Reader`: read-ahead
//! buffer, direct reads into the caller's `Vec`, payloads parked by a `try_`
//! call that found half a frame, descriptors matched to frames by stream
//! position), driven through a real socket pair in one thread: every piece
//! the writer sends is drained by non-blocking receives before the next, so
//! the reader sees exactly the splits the test chose.
//!
//! Counting `/proc/self/fd` needs a process where no other test opens fds
//! meanwhile (the proptest runner of a parallel test would), so this binary
//! holds one test that runs both properties in turn.

use std::collections::{BTreeSet, VecDeque};
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use ipc_pipe::frame::Header;
use ipc_pipe::{duplex, Connection, Error, TryRecvError};
use ipc_testkit::open_fds;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Item {
    Bytes(Vec<u8>),
    Fds(usize),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..100).prop_map(Item::Bytes),
        2 => (0usize..20_000).prop_map(|n| Item::Bytes((0..n).map(|i| (i % 251) as u8).collect())),
        2 => (1usize..=3).prop_map(Item::Fds),
    ]
}

/// Sends all of `bytes`, `fds` attached to the first `sendmsg`. With
/// `nowait`, gives up (returns false) when the socket is full: a reader that
/// stopped reading (poisoned) must not block the test.
fn send_raw(fd: RawFd, bytes: &[u8], fds: &[RawFd], nowait: bool) -> bool {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    let flags = if nowait {
        MsgFlags::MSG_DONTWAIT
    } else {
        MsgFlags::empty()
    };
    let mut done = 0;
    while done < bytes.len() {
        let iov = [IoSlice::new(&bytes[done..])];
        let c = if done == 0 { cmsgs } else { &[] };
        match sendmsg::<()>(fd, &iov, c, flags, None) {
            Ok(n) => done += n,
            Err(nix::errno::Errno::EAGAIN) if nowait => return false,
            Err(e) => panic!("sendmsg: {e}"),
        }
    }
    true
}

/// One send of the writer: bytes, with descriptors attached or not.
type Send = (Vec<u8>, bool);

/// The stream a writer of this crate produces for `items`, as sends: bytes
/// frames cut into pieces of the `cuts` sizes (pieces may join frames), each
/// fd frame one 12-byte send with its descriptors, as `send_fds` does.
fn sends(items: &[Item], cuts: &[usize]) -> Vec<(Send, usize)> {
    let mut out = Vec::new();
    let mut run = Vec::new();
    let mut k = 0;
    let mut flush = |run: &mut Vec<u8>, out: &mut Vec<(Send, usize)>| {
        let mut pos = 0;
        while pos < run.len() {
            let end = (pos + cuts[k % cuts.len()]).min(run.len());
            k += 1;
            out.push(((run[pos..end].to_vec(), false), 0));
            pos = end;
        }
        run.clear();
    };
    for it in items {
        match it {
            Item::Bytes(b) => {
                run.extend_from_slice(Header::bytes(b.len()).as_slice());
                run.extend_from_slice(b);
            }
            Item::Fds(n) => {
                flush(&mut run, &mut out);
                let mut hdr = vec![0xFF; 4];
                hdr.extend_from_slice(&((1u64 << 63) | *n as u64).to_le_bytes());
                out.push(((hdr, true), *n));
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Receives what is complete, in order; false once the next is incomplete.
fn drain(rx: &mut Connection, expected: &mut VecDeque<Item>) -> Result<(), TestCaseError> {
    while let Some(next) = expected.front() {
        match next {
            Item::Bytes(b) => match rx.try_recv_bytes() {
                Ok(v) => prop_assert_eq!(&v, b),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(e) => return Err(TestCaseError::fail(format!("bytes: {e:?}"))),
            },
            Item::Fds(n) => match rx.try_recv_fds() {
                Ok(v) => prop_assert_eq!(v.len(), *n),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(e) => return Err(TestCaseError::fail(format!("fds: {e:?}"))),
            },
        }
        expected.pop_front();
    }
    Ok(())
}

fn fds_since(before: &BTreeSet<i32>) -> Vec<i32> {
    open_fds().difference(before).copied().collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// A valid stream of frames (with and without descriptors), split
    /// anywhere between reads, decodes to the same messages; nothing leaks.
    fn any_split_of_a_valid_stream_decodes_the_same(
        items in proptest::collection::vec(item(), 0..10),
        cuts in proptest::collection::vec(1usize..6000, 1..12),
    ) {
        let before = open_fds();
        {
            let (mut rx, tx) = duplex().unwrap();
            let tx = OwnedFd::from(tx);
            let (passed, _keep) = duplex().unwrap();
            let mut expected: VecDeque<Item> = items.iter().cloned().collect();
            for ((bytes, with_fds), n) in sends(&items, &cuts) {
                let fds = vec![passed.as_fd().as_raw_fd(); n];
                send_raw(tx.as_raw_fd(), &bytes, if with_fds { &fds } else { &[] }, false);
                drain(&mut rx, &mut expected)?;
            }
            prop_assert!(expected.is_empty(), "left undelivered: {}", expected.len());
            drop(tx);
            prop_assert!(matches!(rx.recv_bytes(), Err(Error::Disconnected)));
        }
        let left = fds_since(&before);
        prop_assert!(left.is_empty(), "fds left open: {left:?}");
    }

    /// Arbitrary bytes, with descriptors attached to arbitrary pieces, under
    /// an arbitrary limit: every receive gives a message within the limit or
    /// an error (never a panic, never a buffer past the limit), the
    /// connection ends in an error, and no descriptor stays open.
    fn arbitrary_bytes_give_values_or_errors(
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        cuts in proptest::collection::vec((1usize..200, any::<bool>()), 1..12),
        max in 0usize..2048,
    ) {
        let before = open_fds();
        {
            let (mut rx, tx) = duplex().unwrap();
            rx.set_max_message_size(max);
            let tx = OwnedFd::from(tx);
            let (passed, _keep) = duplex().unwrap();
            let pfd = passed.as_fd().as_raw_fd();
            let mut pos = 0;
            let mut k = 0;
            let mut fds_next = false;
            let mut finished = false;
            let step = |rx: &mut Connection, fds_next: &mut bool| -> Result<bool, TestCaseError> {
                // One non-blocking receive; true when nothing more comes now.
                if *fds_next {
                    match rx.try_recv_fds() {
                        Ok(v) => prop_assert!(!v.is_empty() && v.len() <= ipc_pipe::frame::MAX_FDS),
                        Err(TryRecvError::Empty) => return Ok(true),
                        Err(TryRecvError::Failed(Error::UnexpectedFrame { .. })) => *fds_next = false,
                        Err(_) => return Ok(true),
                    }
                } else {
                    match rx.try_recv_bytes() {
                        Ok(v) => {
                            prop_assert!(v.len() <= max);
                            prop_assert!(v.capacity() <= max.max(v.len()), "capacity {} max {max}", v.capacity());
                        }
                        Err(TryRecvError::Empty) => return Ok(true),
                        Err(TryRecvError::Failed(Error::UnexpectedFrame { .. })) => *fds_next = true,
                        Err(_) => return Ok(true),
                    }
                }
                Ok(false)
            };
            while pos < data.len() {
                let (len, attach) = cuts[k % cuts.len()];
                k += 1;
                let end = (pos + len).min(data.len());
                let two = [pfd, pfd];
                if !send_raw(tx.as_raw_fd(), &data[pos..end], if attach { &two } else { &[] }, true) {
                    break;
                }
                pos = end;
                for _ in 0..10_000 {
                    if step(&mut rx, &mut fds_next)? {
                        break;
                    }
                }
            }
            drop(tx);
            // End of stream: every receive now ends without blocking.
            for _ in 0..10_000 {
                match rx.recv_bytes() {
                    Ok(v) => prop_assert!(v.len() <= max),
                    Err(Error::UnexpectedFrame { .. }) => match rx.recv_fds() {
                        Ok(_) => {}
                        Err(e) => return Err(TestCaseError::fail(format!("fds after an fd frame: {e:?}"))),
                    },
                    Err(_) => {
                        finished = true;
                        break;
                    }
                }
            }
            prop_assert!(finished, "the connection never ended after end of stream");
        }
        let left = fds_since(&before);
        prop_assert!(left.is_empty(), "fds left open: {left:?}");
    }
}

#[test]
fn reader_state_machine_properties() {
    any_split_of_a_valid_stream_decodes_the_same();
    arbitrary_bytes_give_values_or_errors();
}
