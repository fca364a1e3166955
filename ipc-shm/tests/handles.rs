//! Handle passing: `Value`, `Array`, `AtomicValue`, `RawValue`, `RawArray` and `SharedMemory`
//! sent as descriptors (`SCM_RIGHTS`, through `ipc_pipe`) to a process that did not inherit
//! them, rebuilt there with `from_fd`, and refused when the descriptor is not what it claims.
//!
//! Each cross-process test forks its peer *before* the object exists, so the peer can only
//! reach it through the descriptor it receives.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_pipe::Connection;
use ipc_shm::{Array, AtomicValue, Error, RawArray, RawValue, SharedMemory, Value};
use ipc_testkit::{fork, unique_name, Child, Hostile, LeakGuard, Leaks};

const WATCHDOG: Duration = Duration::from_secs(30);

/// The leak guard every test holds for its whole run (`Leaks::exclusive`: the tests of this
/// binary run one at a time, so fds, mappings and children are checked exactly); its
/// `/dev/shm` check watches the names made with `unique_name(tag)`.
fn leaks(tag: &str) -> LeakGuard {
    Leaks::exclusive(&format!("ipct-{tag}-"))
}

fn name(tag: &str) -> String {
    unique_name(tag)
}

/// Forks a peer that shares nothing with the parent but one end of a fresh connection; the
/// parent's copy of that end is closed when `fork` drops the closure.
fn peer(f: impl FnOnce(Connection) -> i32) -> (Connection, Child) {
    let (here, there) = ipc_pipe::duplex().unwrap();
    let child = fork(move || f(there));
    (here, child)
}

fn code(ok: bool) -> i32 {
    i32::from(!ok)
}

#[test]
fn a_value_counter_is_shared_with_a_process_that_did_not_inherit_it() {
    let _leaks = leaks("anon");
    const N: u64 = 20_000;
    let (mut conn, child) = peer(|mut conn| {
        let Ok(mut fds) = conn.recv_fds() else {
            return 2;
        };
        let Some(fd) = fds.pop() else { return 3 };
        let Ok(v) = Value::<u64>::from_fd(fd) else {
            return 4;
        };
        // The parent increments at the same time.
        let ok = conn.send_bytes(b"go").is_ok() && (0..N).all(|_| v.update(|x| *x += 1).is_ok());
        code(ok)
    });
    let v = Value::new(0u64).unwrap();
    conn.send_fds(&[v.as_fd()]).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"go");
    for _ in 0..N {
        v.update(|x| *x += 1).unwrap();
    }
    child.wait_success(WATCHDOG);
    assert_eq!(v.get().unwrap(), 2 * N);
}

#[test]
fn every_value_type_travels_in_one_message() {
    let _leaks = leaks("anon");
    let (mut conn, child) = peer(|mut conn| {
        let Ok(fds) = conn.recv_fds() else { return 2 };
        let Ok([a, b, c, d, e]) = <[OwnedFd; 5]>::try_from(fds) else {
            return 3;
        };
        let run = || -> Result<(), Error> {
            let array = Array::<u32>::from_fd(a)?;
            let atomic = AtomicValue::<AtomicU64>::from_fd(b)?;
            let raw = RawValue::<i16>::from_fd(c)?;
            let raw_array = RawArray::<u8>::from_fd(d)?;
            let shm = SharedMemory::from_fd(e)?;
            let sum: u32 = array.to_vec()?.iter().sum();
            array.set(0, sum)?;
            atomic.fetch_add(5, Ordering::SeqCst);
            raw.set(raw.get() * 2);
            raw_array.set(2, raw_array.len() as u8)?;
            shm.write_at(10, b"from the child")?;
            Ok(())
        };
        code(run().is_ok())
    });
    let array = Array::<u32>::from_slice(&[1, 2, 3, 4]).unwrap();
    let atomic = AtomicValue::<AtomicU64>::new(10).unwrap();
    let raw = RawValue::new(-21i16).unwrap();
    let raw_array = RawArray::<u8>::new(3).unwrap();
    let shm = SharedMemory::new(4096).unwrap();
    conn.send_fds(&[
        array.as_fd(),
        atomic.as_fd(),
        raw.as_fd(),
        raw_array.as_fd(),
        shm.as_fd(),
    ])
    .unwrap();
    child.wait_success(WATCHDOG);
    assert_eq!(array.to_vec().unwrap(), [10, 2, 3, 4]);
    assert_eq!(atomic.load(Ordering::SeqCst), 15);
    assert_eq!(raw.get(), -42);
    assert_eq!(raw_array.to_vec(), [0, 0, 3]);
    let mut buf = [0u8; 14];
    shm.read_at(10, &mut buf).unwrap();
    assert_eq!(&buf, b"from the child");
}

#[test]
fn a_named_value_passed_by_fd_is_never_unlinked_by_the_receiver() {
    let name = name("named");
    let leaks = leaks("named");
    let (mut conn, child) = peer(|mut conn| {
        let Ok(mut fds) = conn.recv_fds() else {
            return 2;
        };
        let Some(fd) = fds.pop() else { return 3 };
        let ok = match Value::<u32>::from_fd(fd) {
            // Rebuilt from a descriptor: no name, nothing to remove on drop.
            Ok(v) => v.name().is_none() && v.set(7).is_ok(),
            Err(_) => false,
        };
        code(ok)
    });
    let v = Value::create_named(&name, 1u32).unwrap();
    conn.send_fds(&[v.as_fd()]).unwrap();
    child.wait_success(WATCHDOG);
    assert_eq!(v.get().unwrap(), 7);
    assert!(
        ipc_testkit::shm_entries(name.trim_start_matches('/'))
            .iter()
            .any(|n| name.ends_with(n.as_str())),
        "the receiver's drop removed the creator's name"
    );
    drop((v, conn));
    leaks.finish();
}

#[test]
fn into_fd_gives_up_the_handle_and_a_creator_removes_its_name() {
    let name = name("into");
    let leaks = leaks("into");
    let v = Value::create_named(&name, 5u64).unwrap();
    let fd = v.into_fd();
    // The name is gone (as on drop), the memory is not.
    assert!(matches!(
        Value::<u64>::open_named(&name),
        Err(Error::NotFound(_))
    ));
    let back = Value::<u64>::from_fd(fd).unwrap();
    assert_eq!(back.get().unwrap(), 5);
    assert!(back.name().is_none());
    // And round again, through SharedMemory's and Array's forms.
    let a = Array::<u8>::from_fd(Array::<u8>::from_slice(&[9, 8]).unwrap().into_fd()).unwrap();
    assert_eq!(a.to_vec().unwrap(), [9, 8]);
    let s = SharedMemory::from_fd(SharedMemory::new(100).unwrap().into_fd()).unwrap();
    assert_eq!(s.len(), 100);
    drop((back, a, s));
    leaks.finish();
}

fn is_mismatch(r: Result<impl std::fmt::Debug, Error>, want: &str) -> bool {
    match r {
        Err(Error::LayoutMismatch { field, .. }) => field.starts_with(want),
        other => panic!("expected LayoutMismatch in {want}, got {other:?}"),
    }
}

/// A fresh descriptor of `v`'s segment (the handle keeps its own).
fn dup(fd: &impl AsFd) -> OwnedFd {
    fd.as_fd().try_clone_to_owned().unwrap()
}

#[test]
fn a_descriptor_opened_as_another_type_is_a_layout_mismatch() {
    let _leaks = leaks("anon");
    let v = Value::new(1u64).unwrap();
    assert!(is_mismatch(Value::<u32>::from_fd(dup(&v)), "kind"));
    assert!(is_mismatch(Value::<i64>::from_fd(dup(&v)), "kind"));
    assert!(is_mismatch(Array::<u64>::from_fd(dup(&v)), "kind"));
    assert!(is_mismatch(RawValue::<u64>::from_fd(dup(&v)), "kind"));
    assert!(is_mismatch(
        AtomicValue::<AtomicU64>::from_fd(dup(&v)),
        "kind"
    ));
    let atomic = AtomicValue::<AtomicU64>::new(0).unwrap();
    assert!(is_mismatch(
        AtomicValue::<AtomicU32>::from_fd(dup(&atomic)),
        "kind"
    ));
    // Raw bytes cannot be laid over a typed object.
    assert!(matches!(
        SharedMemory::from_fd(dup(&v)),
        Err(Error::TypedSegment(_))
    ));
    // ... and a raw segment is not a typed one (its zero magic stays zero: waits, then
    // reports the magic).
    let shm = SharedMemory::new(4096).unwrap();
    shm.write_at(0, &[0xAB; 8]).unwrap();
    assert!(is_mismatch(Value::<u64>::from_fd(dup(&shm)), "magic"));
    // The right type still opens it.
    assert_eq!(Value::<u64>::from_fd(dup(&v)).unwrap().get().unwrap(), 1);
}

#[test]
fn a_pipe_or_a_socket_is_not_a_memory_file() {
    let _leaks = leaks("anon");
    let (r, w) = std::io::pipe().unwrap();
    for fd in [OwnedFd::from(r), OwnedFd::from(w)] {
        match Value::<u64>::from_fd(fd) {
            Err(Error::NotMemoryFile { file_type, .. }) => assert_eq!(file_type, "pipe"),
            other => panic!("expected NotMemoryFile, got {other:?}"),
        }
    }
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    match SharedMemory::from_fd(a.into()) {
        Err(e @ Error::NotMemoryFile { .. }) => {
            assert!(e.to_string().contains("socket"), "{e}");
        }
        other => panic!("expected NotMemoryFile, got {other:?}"),
    }
    let dir = std::fs::File::open("/").unwrap();
    assert!(matches!(
        Array::<u8>::from_fd(dir.into()),
        Err(Error::NotMemoryFile {
            file_type: "directory",
            ..
        })
    ));
}

#[test]
fn a_file_of_another_size_is_refused() {
    let name = name("size");
    let leaks = leaks("size");
    // Grown: a memfd is sealed against shrinking, not growing.
    let v = Value::new(3u64).unwrap();
    let grown = std::fs::File::from(dup(&v));
    grown.set_len(8192).unwrap();
    assert!(is_mismatch(
        Value::<u64>::from_fd(grown.into()),
        "total size"
    ));
    // Shrunk: a named segment has no seals; a same-user process truncates it.
    let named = Value::create_named(&name, 3u64).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/{}", name.trim_start_matches('/')))
        .unwrap();
    file.set_len(128 + 16).unwrap();
    assert!(is_mismatch(
        Value::<u64>::from_fd(file.into()),
        "total size"
    ));
    drop(named); // its mapping now ends past the file: never touched again
                 // Too short for a header: waits for a creator to size it, then gives up.
    let start = Instant::now();
    let tiny = SharedMemory::new(64).unwrap();
    assert!(matches!(
        Value::<u64>::from_fd(dup(&tiny)),
        Err(Error::NotReady(_))
    ));
    assert!(start.elapsed() >= ipc_shm::lowlevel::DEFAULT_OPEN_TIMEOUT);
    drop((v, tiny));
    leaks.finish();
}

/// A named `Value<u64>` whose header a hostile same-user writer changed at `offset`; returns
/// the descriptor of its segment (the creator's handle is gone: its name with it).
fn scribbled(tag: &str, offset: usize, bytes: &[u8]) -> OwnedFd {
    let name = name(tag);
    let v = Value::create_named(&name, 9u64).unwrap();
    Hostile::open(&name).write_at(offset, bytes).unwrap();
    v.into_fd()
}

#[test]
fn a_header_corrupted_by_a_hostile_writer_is_refused() {
    let leaks = leaks("hostile");
    // Magic, kind, capacity, payload length: each is named in the error.
    assert!(is_mismatch(
        Value::<u64>::from_fd(scribbled("hostile", 0, &[1; 8])),
        "magic"
    ));
    assert!(is_mismatch(
        Value::<u64>::from_fd(scribbled("hostile", 8, &[9, 0, 0, 0])),
        "header abi"
    ));
    assert!(is_mismatch(
        Value::<u64>::from_fd(scribbled("hostile", 16, &[0x5A; 8])),
        "kind"
    ));
    assert!(is_mismatch(
        Value::<u64>::from_fd(scribbled("hostile", 32, &2u64.to_ne_bytes())),
        "capacity"
    ));
    assert!(is_mismatch(
        Value::<u64>::from_fd(scribbled("hostile", 48, &1u64.to_ne_bytes())),
        "payload size"
    ));
    // Another pid namespace: refused rather than trusting thread ids of other tasks.
    match Value::<u64>::from_fd(scribbled("hostile", 80, &7u64.to_ne_bytes())) {
        Err(Error::ForeignPidNamespace { name, creator, .. }) => {
            assert!(name.starts_with("fd "), "{name}");
            assert_eq!(creator, 7);
        }
        other => panic!("expected ForeignPidNamespace, got {other:?}"),
    }
    // A header left in INIT (a creator that died initialising): waits, then NotReady.
    let start = Instant::now();
    assert!(matches!(
        Value::<u64>::from_fd(scribbled("hostile", 12, &[0; 4])),
        Err(Error::NotReady(_))
    ));
    assert!(start.elapsed() >= ipc_shm::lowlevel::DEFAULT_OPEN_TIMEOUT);
    leaks.finish();
}

#[test]
fn a_received_memfd_is_sealed_against_shrinking() {
    let _leaks = leaks("anon");
    // A memfd that allows sealing but has no seal, holding a copy of a valid segment.
    let v = Value::new(77u64).unwrap();
    let len = usize::try_from(std::fs::File::from(dup(&v)).metadata().unwrap().len()).unwrap();
    let src = RawCopy::of(&v, len);
    // SAFETY: a plain memfd_create call with a valid C string.
    let raw = unsafe {
        libc::memfd_create(
            c"ipct-unsealed".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    assert!(raw >= 0);
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let memfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    let mut file = std::fs::File::from(memfd);
    std::io::Write::write_all(&mut file, &src.0).unwrap();
    let seals = |f: &std::fs::File| {
        // SAFETY: F_GET_SEALS on a valid descriptor.
        unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(f), libc::F_GET_SEALS) }
    };
    assert_eq!(seals(&file) & libc::F_SEAL_SHRINK, 0);
    let kept = file.try_clone().unwrap();
    let copy = Value::<u64>::from_fd(file.into()).unwrap();
    assert_eq!(copy.get().unwrap(), 77);
    assert_ne!(seals(&kept) & libc::F_SEAL_SHRINK, 0);
    assert!(
        kept.set_len(128).is_err(),
        "the sender could still shrink it"
    );
}

/// The bytes of a segment, read through a second shared mapping of its descriptor.
struct RawCopy(Vec<u8>);

impl RawCopy {
    fn of(fd: &impl AsFd, len: usize) -> RawCopy {
        let file = std::fs::File::from(dup(fd));
        let mut out = vec![0u8; len];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut out, 0).unwrap();
        RawCopy(out)
    }
}
