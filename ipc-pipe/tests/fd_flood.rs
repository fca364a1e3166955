//! A peer must not be able to fill the receiver's fd table: descriptors
//! attached to the bytes of a long bytes frame are closed as they arrive, and
//! an fd frame carrying more than it announced poisons the connection. Counting
//! `/proc/self/fd` needs a process where no other test opens fds meanwhile, so
//! this binary holds one test.

mod common;

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use common::{close_in_child, fork, s};
use ipc_pipe::{duplex, Connection, Error};
use ipc_testkit::open_fds;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

/// Raw `sendmsg` of `bytes` with `fds` attached, bypassing the framing.
fn send_raw(conn: &Connection, bytes: &[u8], fds: &[i32]) -> Result<(), String> {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    let n = sendmsg::<()>(conn.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).map_err(s)?;
    if n == bytes.len() {
        Ok(())
    } else {
        Err(format!("short sendmsg: {n} of {}", bytes.len()))
    }
}

/// New fds of this process since `before`.
fn new_fds(before: &std::collections::BTreeSet<i32>) -> usize {
    open_fds().difference(before).count()
}

const FLOOD: usize = 300;

#[test]
fn peer_cannot_fill_the_fd_table() {
    let _leaks = common::leak_guard();
    let before = open_fds();

    // 1. A bytes frame of 1 MiB whose first bytes each carry 4 descriptors;
    //    the peer dies before the frame ends. Nothing it attached may stay
    //    open in the receiver, even while the (poisoned) connection lives.
    let (mut parent, child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        let dev_null = std::fs::File::open("/dev/null").map_err(s)?;
        let fd = dev_null.as_fd().as_raw_fd();
        send_raw(&child_end, &(1u32 << 20).to_le_bytes(), &[])?;
        for _ in 0..FLOOD {
            send_raw(&child_end, &[7], &[fd, fd, fd, fd])?;
        }
        Ok(())
    });
    // The peer blocks once the socket buffer is full: receive while it sends.
    assert!(matches!(parent.recv_bytes(), Err(Error::Disconnected)));
    child.join_ok();
    // The one new fd allowed is `parent` itself.
    let open = new_fds(&before) - 1;
    assert_eq!(
        open, 0,
        "{open} descriptors sent with a bytes frame are still open in the receiver"
    );
    drop(parent);

    // 2. An fd frame announcing 1 descriptor that carries 3: poisoned, and
    //    none of them left open.
    let (mut parent, child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        let dev_null = std::fs::File::open("/dev/null").map_err(s)?;
        let fd = dev_null.as_fd().as_raw_fd();
        let mut hdr = [0xFFu8; 12];
        hdr[4..].copy_from_slice(&((1u64 << 63) | 1).to_le_bytes());
        send_raw(&child_end, &hdr, &[fd, fd, fd])
    });
    child.join_ok();
    let err = parent.recv_fds();
    assert!(matches!(err, Err(Error::Poisoned)), "{err:?}");
    assert!(matches!(parent.recv_fds(), Err(Error::Poisoned)));
    assert_eq!(new_fds(&before), 1, "only `parent` itself is open");
    drop(parent);

    // 3. Descriptors attached to each byte of one header: more batches than
    //    any stream this crate writes has pending at once; poisoned, closed.
    let (mut parent, child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        let dev_null = std::fs::File::open("/dev/null").map_err(s)?;
        let fd = dev_null.as_fd().as_raw_fd();
        let mut hdr = [0xFFu8; 12];
        hdr[4..].copy_from_slice(&((1u64 << 63) | 1).to_le_bytes());
        for b in hdr {
            send_raw(&child_end, &[b], &[fd])?;
        }
        Ok(())
    });
    let err = parent.recv_fds();
    assert!(matches!(err, Err(Error::Poisoned)), "{err:?}");
    child.join_ok();
    assert_eq!(new_fds(&before), 1, "only `parent` itself is open");
    drop(parent);

    // 4. Still fine: descriptors sent properly arrive, and a bytes message
    //    after them is intact.
    let (mut parent, mut child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        let dev_null = std::fs::File::open("/dev/null").map_err(s)?;
        child_end.send_bytes(&[1; 100_000]).map_err(s)?;
        child_end
            .send_fds(&[dev_null.as_fd(), dev_null.as_fd()])
            .map_err(s)?;
        child_end.send_bytes(b"after").map_err(s)
    });
    assert_eq!(parent.recv_bytes().unwrap().len(), 100_000);
    let got: Vec<OwnedFd> = parent.recv_fds().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(parent.recv_bytes().unwrap(), b"after");
    child.join_ok();
    drop(got);
    drop(parent);

    let left: Vec<_> = open_fds().difference(&before).copied().collect();
    assert!(left.is_empty(), "file descriptors left open: {left:?}");
}
