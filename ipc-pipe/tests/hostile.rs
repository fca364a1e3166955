//! A hostile peer's header must not make the receiver allocate what it claims.
//! This binary counts the largest allocation made by the process (its own
//! global allocator), so it holds this one test only.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{close_in_child, fork, s};
use ipc_pipe::{duplex, Error};

struct Counting;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LARGEST.fetch_max(new, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn claimed_lengths_allocate_nothing() {
    let _leaks = common::leak_guard();
    let (mut parent, child_end) = duplex().unwrap();
    // Within the limit, but the peer sends only 10 bytes of the 60 MiB it
    // claims, then dies: the receive buffer grows only with what arrived.
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        let mut raw = File::from(OwnedFd::from(child_end));
        raw.write_all(&(60u32 << 20).to_le_bytes()).map_err(s)?;
        raw.write_all(&[9; 10]).map_err(s)
    });
    child.join_ok();
    LARGEST.store(0, Ordering::Relaxed);
    let mut buf = Vec::new();
    assert!(matches!(
        parent.recv_bytes_into(&mut buf),
        Err(Error::Disconnected)
    ));
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest <= 1 << 20, "largest allocation {largest} bytes");

    // Beyond the limit (4 GiB): refused at the header.
    let (mut parent, child_end) = duplex().unwrap();
    let parent_fd = parent.as_raw_fd();
    let mut child = fork(move || {
        close_in_child(parent_fd);
        let mut raw = File::from(OwnedFd::from(child_end));
        let mut hdr = vec![0xFF; 4];
        hdr.extend_from_slice(&(4u64 << 30).to_le_bytes());
        raw.write_all(&hdr).map_err(s)?;
        raw.write_all(&[1; 4096]).map_err(s)
    });
    child.join_ok();
    LARGEST.store(0, Ordering::Relaxed);
    assert!(matches!(
        parent.recv::<Vec<u8>>(),
        Err(Error::TooLarge { len, .. }) if len == 4 << 30
    ));
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest <= 1 << 20, "largest allocation {largest} bytes");
}
