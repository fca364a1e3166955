//! Test support for the workspace's cross-process tests, written once.
//!
//! - [`fork`] runs a closure in a forked child that leaves with `_exit` (never returning into
//!   the test harness), dies with its test thread (`PR_SET_PDEATHSIG`), and turns a panic into
//!   exit code 101.
//! - [`Child::wait`] is the watchdog: a child that outlives its deadline is killed and the
//!   test fails; [`Child::kill`] injects a `SIGKILL` fault.
//! - [`Leaks`] snapshots open fds, `/dev/shm` and `sem.*` names, threads, shared mappings,
//!   watched socket directories and children, and asserts (or reports) nothing was left;
//!   [`Leaks::exclusive`] takes that snapshot under a binary-wide lock (a [`LeakGuard`]), so
//!   leak-checked tests of one binary run one at a time and the process-wide checks are exact;
//!   [`unique_name`] gives each test its own random segment name.
//!
//! Tests that fork should run in a test binary whose other tests do not hold locks across the
//! fork (the child only runs the closure and `_exit`s).

#![deny(unsafe_code)]

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `_exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// A forked child; waited for (and killed if still running) on drop, so no zombie is left.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
    reaped: bool,
}

/// Runs an example's `body` in a forked child (single-threaded, so its leak check is exact)
/// and fails the test if `body` returns an error or panics, leaves an fd, a thread, a shared
/// mapping, a child or a `/dev/shm` (or `sem.`) name starting with `prefix`, or still runs
/// after `timeout`. The binary's leak lock ([`Leaks::exclusive`]) is held throughout, so the
/// examples of one test binary run one at a time.
///
/// # Panics
/// As described: that is how the test fails.
pub fn run_example<E: std::fmt::Debug>(
    timeout: Duration,
    prefix: &str,
    body: impl FnOnce() -> Result<(), E>,
) {
    run_example_with(timeout, prefix, |leaks| leaks, body);
}

/// [`run_example`], with the child's snapshot extended by `watch` (evaluated in the child,
/// for example to [`Leaks::watch_dir_prefix`] a directory where the example binds sockets
/// named after its pid).
///
/// # Panics
/// As [`run_example`].
pub fn run_example_with<E: std::fmt::Debug>(
    timeout: Duration,
    prefix: &str,
    watch: impl FnOnce(Leaks) -> Leaks,
    body: impl FnOnce() -> Result<(), E>,
) {
    let _guard = Leaks::exclusive(prefix);
    fork(|| {
        // The harness captures the test thread's output, and the child's copy of that
        // capture is lost at `_exit`: write panics straight to fd 2.
        std::panic::set_hook(Box::new(|info| {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "[child {}] {info}", std::process::id());
        }));
        let leaks = watch(Leaks::snapshot(prefix));
        if let Err(e) = body() {
            panic!("the example failed: {e:?}");
        }
        leaks.assert_all_clean(Duration::from_secs(5));
        0
    })
    .wait_success(timeout);
}

/// Forks; the child runs `f` and `_exit`s with its return value (101 if it panics).
///
/// # Panics
/// If `fork` fails.
pub fn fork(f: impl FnOnce() -> i32) -> Child {
    // Another test thread may be printing: hold stdout's and stderr's locks across the fork,
    // so the child's copies are held by its own (only) thread, which releases them below,
    // instead of by a thread that does not exist in the child (it would hang in `println!`,
    // a panic message or exit's flush).
    let stdio = (std::io::stdout().lock(), std::io::stderr().lock());
    // SAFETY: the child only runs `f` and then `_exit`s; test closures avoid locks that
    // another thread of the harness could hold across the fork (documented above).
    #[allow(unsafe_code)]
    let pid = unsafe { libc::fork() };
    drop(stdio);
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: plain prctl/getppid calls in the child.
        #[allow(unsafe_code)]
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        let code = catch_unwind(AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: `_exit` ends the child without running the parent's destructors or atexit
        // handlers.
        #[allow(unsafe_code)]
        unsafe {
            libc::_exit(code)
        }
    }
    Child { pid, reaped: false }
}

impl Child {
    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `SIGKILL`.
    pub fn kill(&self) {
        self.signal(libc::SIGKILL);
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: i32) {
        if !self.reaped {
            // SAFETY: signalling our own unreaped child; its pid cannot be reused yet.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(self.pid, sig);
            }
        }
    }

    fn try_reap(&mut self) -> Option<Exit> {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        #[allow(unsafe_code)]
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if r != self.pid {
            return None;
        }
        self.reaped = true;
        Some(if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        })
    }

    /// The child's exit if it has ended (reaping it), without waiting.
    pub fn try_wait(&mut self) -> Option<Exit> {
        if self.reaped {
            return None;
        }
        self.try_reap()
    }

    /// Waits for the child to end within `timeout`; `None` (the child left running) if it
    /// does not. Unlike [`Child::wait`] it never panics: the caller decides what a hang is.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Exit> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_wait() {
                return Some(e);
            }
            if self.reaped || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Whether the child is stopped (`SIGSTOP`), from `/proc/<pid>/stat`.
    pub fn is_stopped(&self) -> bool {
        !self.reaped && matches!(proc_state(self.pid), Some('T' | 't'))
    }

    /// Waits for the child to end within `timeout`; the watchdog kills it and panics (failing
    /// the test) if it does not.
    ///
    /// # Panics
    /// If the child is still running after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Exit {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_reap() {
                return e;
            }
            if Instant::now() >= deadline {
                self.kill();
                let _ = self.wait_blocking();
                panic!(
                    "watchdog: child {} still running after {timeout:?}; killed",
                    self.pid
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits and asserts the child exited with code 0.
    ///
    /// # Panics
    /// On any other end, or on the watchdog.
    pub fn wait_success(self, timeout: Duration) {
        let pid = self.pid;
        let e = self.wait(timeout);
        assert_eq!(e, Exit::Code(0), "child {pid} failed");
    }

    fn wait_blocking(&mut self) -> Option<Exit> {
        let mut status = 0;
        // SAFETY: as in `try_reap`, blocking.
        #[allow(unsafe_code)]
        let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        self.reaped = true;
        (r == self.pid).then(|| {
            if libc::WIFSIGNALED(status) {
                Exit::Signal(libc::WTERMSIG(status))
            } else {
                Exit::Code(libc::WEXITSTATUS(status))
            }
        })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.wait_blocking();
        }
    }
}

/// A test-unique segment name: `/ipct-<tag>-<16 random hex digits>`.
pub fn unique_name(tag: &str) -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("getrandom");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("/ipct-{tag}-{hex}")
}

/// The open file descriptors of this process.
pub fn open_fds() -> BTreeSet<i32> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The names in `/dev/shm` that start with `prefix` (no leading slash).
pub fn shm_entries(prefix: &str) -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// The pids of this process's live (or zombie) children, from `/proc/self/task/*/children`.
pub fn child_pids() -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// A snapshot of what a test may leak, to compare against later: open fds, `/dev/shm`
/// entries (with a prefix) and POSIX semaphore names (`/dev/shm/sem.*`), threads of this
/// process, mappings of `/dev/shm` files and memfds, the entries of watched directories (Unix
/// socket files a test creates) and this process's children.
///
/// Fds, threads and mappings are process-wide and tests run in parallel threads, so those
/// checks belong in tests that run alone in their binary, or that take the binary-wide lock
/// with [`Leaks::exclusive`] (the other tests of the binary holding [`serial`]); use
/// [`Leaks::assert_no_new_shm`] otherwise. Children are only seen as leaks once reaped ones
/// are gone: call the checks after every child was waited for. Orphans (grandchildren whose
/// parent died) are only seen if this process was made a subreaper first
/// ([`become_subreaper`]).
#[derive(Debug)]
pub struct Leaks {
    fds: BTreeSet<i32>,
    shm_prefix: String,
    shm: BTreeSet<String>,
    sems: BTreeSet<String>,
    threads: BTreeSet<i32>,
    maps: BTreeSet<String>,
    children: BTreeSet<i32>,
    watched: Vec<(std::path::PathBuf, String, BTreeSet<String>)>,
}

impl Leaks {
    /// Records the current state; `shm_prefix` selects the `/dev/shm` names to watch (and the
    /// `sem.<prefix>` names of named POSIX semaphores).
    pub fn snapshot(shm_prefix: &str) -> Leaks {
        let shm_prefix = shm_prefix.trim_start_matches('/').to_owned();
        Leaks {
            fds: open_fds(),
            shm: shm_entries(&shm_prefix),
            sems: shm_entries(&format!("sem.{shm_prefix}")),
            shm_prefix,

            threads: snapshot_thread_ids(),
            maps: shared_mappings(),
            children: child_pids(),
            watched: Vec::new(),
        }
    }

    /// Takes this test binary's leak lock (waiting for any other holder), then snapshots as
    /// [`Leaks::snapshot`]: leak-checked tests of one binary run one at a time, so the
    /// process-wide checks are exact. Tests of the binary that do not check leaks but make
    /// fds, threads or children should hold [`serial`]. The lock tolerates poisoning (a test
    /// that failed while holding it does not fail the next).
    ///
    /// Do not hold it across a call that waits for another leak-checked test (it would
    /// deadlock). A child forked while it is held inherits a held copy: never call
    /// `exclusive` or [`serial`] in a forked child (it would wait forever); use
    /// [`Leaks::snapshot`] there (a forked child is single-threaded, so its checks are exact).
    pub fn exclusive(shm_prefix: &str) -> LeakGuard {
        let lock = lock_exclusive();
        LeakGuard {
            leaks: Leaks::snapshot(shm_prefix),
            done: false,
            _lock: lock,
        }
    }

    /// Also watches `dir` (for example the directory a test binds its Unix sockets in): an
    /// entry that appears there after this call is a leak.
    pub fn watch_dir(self, dir: impl Into<std::path::PathBuf>) -> Leaks {
        self.watch_dir_prefix(dir, "")
    }

    /// Also watches the entries of `dir` whose names start with `prefix`: for a directory
    /// other processes use too (`/tmp`), with a prefix only this test binary's files have.
    pub fn watch_dir_prefix(mut self, dir: impl Into<std::path::PathBuf>, prefix: &str) -> Leaks {
        let dir = dir.into();
        let now = dir_entries_with(&dir, prefix);
        self.watched.push((dir, prefix.to_owned(), now));
        self
    }

    /// Everything left behind since the snapshot, one line per kind, without panicking
    /// (empty when clean). Checks fds, `/dev/shm` names and `sem.*` names, threads, shared
    /// mappings, watched directories and children.
    pub fn report(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut diff = |what: &str, now: Vec<String>| {
            if !now.is_empty() {
                out.push(format!("{what}: {}", now.join(", ")));
            }
        };
        let shm = shm_entries(&self.shm_prefix);
        diff("/dev/shm entries left", new_of(&shm, &self.shm));
        diff(
            "/dev/shm/sem.* names left",
            new_of(
                &shm_entries(&format!("sem.{}", self.shm_prefix)),
                &self.sems,
            ),
        );
        diff("file descriptors left open", new_of(&open_fds(), &self.fds));
        let waiters = waiting().clone();
        let threads: BTreeSet<i32> = thread_ids().difference(&waiters).copied().collect();
        diff("threads still running", new_of(&threads, &self.threads));
        diff(
            "shared mappings left",
            new_of(&shared_mappings(), &self.maps),
        );
        for (dir, prefix, before) in &self.watched {
            diff(
                &format!("entries left in {}", dir.display()),
                new_of(&dir_entries_with(dir, prefix), before),
            );
        }
        let kids: Vec<String> = child_pids()
            .difference(&self.children)
            .map(|p| format!("{p} ({})", proc_state(*p).unwrap_or('?')))
            .collect();
        diff("children still existing (pid (state), Z = zombie)", kids);
        out
    }

    /// [`Leaks::report`], retried until clean or `timeout` passes (threads and children take
    /// a moment to go after the objects that own them are dropped).
    pub fn report_within(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.report();
            if r.is_empty() || Instant::now() >= deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asserts nothing of any kind [`Leaks::report`] checks was left, allowing `timeout` for
    /// threads and children to go.
    ///
    /// # Panics
    /// If something was left.
    pub fn assert_all_clean(&self, timeout: Duration) {
        let r = self.report_within(timeout);
        assert!(r.is_empty(), "leaks: {}", r.join("; "));
    }

    /// Asserts no watched `/dev/shm` name (nor `sem.*` name) appeared since the snapshot.
    ///
    /// # Panics
    /// If one did.
    pub fn assert_no_new_shm(&self) {
        let now = shm_entries(&self.shm_prefix);
        let new: Vec<_> = now.difference(&self.shm).collect();
        assert!(new.is_empty(), "/dev/shm entries left behind: {new:?}");
        let sems = new_of(
            &shm_entries(&format!("sem.{}", self.shm_prefix)),
            &self.sems,
        );
        assert!(
            sems.is_empty(),
            "/dev/shm/sem.* names left behind: {sems:?}"
        );
    }

    /// Asserts no fd opened since the snapshot is still open.
    ///
    /// # Panics
    /// If one is.
    pub fn assert_no_new_fds(&self) {
        let now = open_fds();
        let new: Vec<_> = now.difference(&self.fds).collect();
        assert!(new.is_empty(), "file descriptors left open: {new:?}");
    }

    /// Asserts no child of this process (zombie or running) appeared since the snapshot.
    ///
    /// # Panics
    /// If one exists.
    pub fn assert_no_children(&self) {
        let new: Vec<_> = child_pids().difference(&self.children).copied().collect();
        assert!(new.is_empty(), "children left (zombie or running): {new:?}");
    }

    /// Both the `/dev/shm` and the fd check (the original pair; see
    /// [`Leaks::assert_all_clean`] for every kind).
    ///
    /// # Panics
    /// As each check.
    pub fn assert_clean(&self) {
        self.assert_no_new_shm();
        self.assert_no_new_fds();
    }
}

/// The lock [`Leaks::exclusive`] and [`serial`] take: one per test binary (process).
static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The thread ids waiting in [`lock_exclusive`]: the harness starts the next tests' threads
/// while a test holds the lock, and they wait for it; the thread check of [`Leaks::report`]
/// does not count them (they are not the holder's leftovers).
static WAITING: std::sync::Mutex<BTreeSet<i32>> = std::sync::Mutex::new(BTreeSet::new());

fn waiting() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    WAITING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn gettid() -> i32 {
    // SAFETY: gettid(2) has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::gettid()
    }
}

fn lock_exclusive() -> std::sync::MutexGuard<'static, ()> {
    let me = gettid();
    waiting().insert(me);
    // Poison-tolerant: a test that failed while holding the lock must not fail the others.
    let guard = EXCLUSIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    waiting().remove(&me);
    guard
}

/// Holds the binary-wide lock of [`Leaks::exclusive`] without a snapshot, for a test that
/// checks no leaks itself but opens fds, threads, mappings or children that would show up in
/// a leak-checked test running at the same time in another thread of the same binary.
#[must_use = "the lock is released when the guard is dropped"]
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    lock_exclusive()
}

/// How long [`LeakGuard::finish`] (and an unfinished guard's drop) allows threads and
/// children to go.
pub const LEAK_SETTLE: Duration = Duration::from_secs(5);

/// A [`Leaks`] snapshot taken while holding a lock shared by every [`Leaks::exclusive`] (and
/// [`serial`]) caller of this test binary, so the process-wide checks (fds, threads, shared
/// mappings, children) see only this test's leftovers. Made by [`Leaks::exclusive`].
///
/// Check with [`LeakGuard::finish`] or [`LeakGuard::assert_all_clean`], which release the
/// lock after checking. A guard dropped unchecked checks on drop (unless its thread is already
/// panicking, then it only releases the lock), so a forgotten `finish` still checks.
#[derive(Debug)]
#[must_use = "a leak guard checks when finished or dropped; bind it for the test's duration"]
pub struct LeakGuard {
    leaks: Leaks,
    done: bool,
    // Declared last: released after the check in `drop`.
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl LeakGuard {
    /// Also watches `dir`, as [`Leaks::watch_dir`].
    pub fn watch_dir(self, dir: impl Into<std::path::PathBuf>) -> LeakGuard {
        self.watch_dir_prefix(dir, "")
    }

    /// Also watches the entries of `dir` starting with `prefix`, as
    /// [`Leaks::watch_dir_prefix`].
    pub fn watch_dir_prefix(
        mut self,
        dir: impl Into<std::path::PathBuf>,
        prefix: &str,
    ) -> LeakGuard {
        let dir = dir.into();
        let now = dir_entries_with(&dir, prefix);
        self.leaks.watched.push((dir, prefix.to_owned(), now));
        self
    }

    /// The snapshot (for [`Leaks::report`] or the single-kind checks).
    pub fn leaks(&self) -> &Leaks {
        &self.leaks
    }

    /// Asserts nothing of any kind was left ([`Leaks::assert_all_clean`]), allowing
    /// `timeout` for threads and children to go, then releases the lock.
    ///
    /// # Panics
    /// If something was left.
    pub fn assert_all_clean(mut self, timeout: Duration) {
        self.done = true;
        self.leaks.assert_all_clean(timeout);
    }

    /// [`LeakGuard::assert_all_clean`] with [`LEAK_SETTLE`].
    ///
    /// # Panics
    /// If something was left.
    pub fn finish(self) {
        self.assert_all_clean(LEAK_SETTLE);
    }
}

impl std::ops::Deref for LeakGuard {
    type Target = Leaks;
    fn deref(&self) -> &Leaks {
        &self.leaks
    }
}

impl Drop for LeakGuard {
    fn drop(&mut self) {
        if !self.done && !std::thread::panicking() {
            self.done = true;
            self.leaks.assert_all_clean(LEAK_SETTLE);
        }
    }
}

fn new_of<T: Ord + ToString>(now: &BTreeSet<T>, before: &BTreeSet<T>) -> Vec<String> {
    now.difference(before).map(ToString::to_string).collect()
}

fn dir_entries_with(dir: &std::path::Path, prefix: &str) -> BTreeSet<String> {
    dir_entries(dir)
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn dir_entries(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// How many threads of this process carry the name `name` (`/proc/self/task/*/comm`): a
/// count of a library's own threads that other tests' harness threads cannot disturb.
pub fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|comm| comm.trim_end() == name)
                .count()
        })
        .unwrap_or(0)
}

/// The thread ids for a snapshot: the calling thread's own id, and the union of two listings
/// of `/proc/self/task`. A listing can skip a live thread when another thread exits while it
/// is read (the kernel walks the thread list by position), and a thread missing from the
/// snapshot would later be reported as left running.
fn snapshot_thread_ids() -> BTreeSet<i32> {
    let mut ids = thread_ids();
    ids.extend(thread_ids());
    ids.insert(gettid());
    ids
}

/// The thread ids of this process (`/proc/self/task`).
pub fn thread_ids() -> BTreeSet<i32> {
    dir_entries(std::path::Path::new("/proc/self/task"))
        .iter()
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// The mappings of this process backed by a `/dev/shm` file or a memfd, one entry per
/// mapping (`start-end path`, from `/proc/self/maps`).
pub fn shared_mappings() -> BTreeSet<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let path = f.nth(4)?;
            let shared = path.starts_with("/dev/shm/") || path.starts_with("/memfd:");
            let at = l.find(path)?;
            shared.then(|| format!("{range} {}", l[at..].trim()))
        })
        .collect()
}

/// The state letter of process `pid` (`R`, `S`, `T`, `Z`, ...), from `/proc/<pid>/stat`.
pub fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..].trim_start().chars().next()
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`): orphans of its
/// descendants are re-parented to it instead of to init, so [`Leaks`] sees them as children.
/// The process must then reap them ([`reap_children`]).
///
/// # Errors
/// The OS error if `prctl` fails.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: plain prctl with integer arguments.
    #[allow(unsafe_code)]
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reaps the children in `pids` that have ended (zombies), without waiting; returns the
/// pids reaped. Never touches a child not in `pids`, so handles that reap their own children
/// (pidfds, [`Child`]) are not robbed.
pub fn reap_children(pids: &BTreeSet<i32>) -> Vec<i32> {
    let mut out = Vec::new();
    for &pid in pids {
        let mut status = 0;
        // SAFETY: non-blocking waitpid on one pid with a valid status pointer.
        #[allow(unsafe_code)]
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            out.push(pid);
        }
    }
    out
}

/// Sends `sig` to `pid` (for killing leftover orphans after a report).
pub fn signal_pid(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_reports_codes_panics_and_kills() {
        assert_eq!(fork(|| 3).wait(Duration::from_secs(10)), Exit::Code(3));
        assert_eq!(
            fork(|| panic!("boom")).wait(Duration::from_secs(10)),
            Exit::Code(101)
        );
        let c = fork(|| {
            std::thread::sleep(Duration::from_secs(30));
            0
        });
        c.kill();
        assert_eq!(c.wait(Duration::from_secs(10)), Exit::Signal(libc::SIGKILL));
    }

    #[test]
    fn watchdog_fails_a_hung_child() {
        let r = std::panic::catch_unwind(|| {
            fork(|| {
                std::thread::sleep(Duration::from_secs(30));
                0
            })
            .wait(Duration::from_millis(50))
        });
        assert!(r.is_err());
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("a"), unique_name("a"));
    }
}

/// A hostile peer's view of a named segment: maps the whole `/dev/shm` file read-write with
/// no header check, so a test can scribble over a typed object's memory (which
/// `ipc_shm::SharedMemory::open_named` refuses). Bytes are written and read with relaxed
/// atomic byte accesses, so the scribbling itself is no data race in this process.
#[derive(Debug)]
pub struct Hostile {
    ptr: *mut u8,
    len: usize,
}

impl Hostile {
    /// Maps the named segment `name` (`/name` or `name`).
    ///
    /// # Panics
    /// If it cannot be opened or mapped.
    pub fn open(name: &str) -> Hostile {
        let path = format!("/dev/shm/{}", name.trim_start_matches('/'));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
        let len = usize::try_from(file.metadata().map(|m| m.len()).unwrap_or(0)).unwrap_or(0);
        assert!(len > 0, "{path} is empty");
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of a file we opened read-write; the kernel picks the
        // address; failure is checked below.
        #[allow(unsafe_code)]
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert!(
            ptr != libc::MAP_FAILED,
            "mmap {path}: {}",
            std::io::Error::last_os_error()
        );
        Hostile {
            ptr: ptr.cast(),
            len,
        }
    }

    /// The mapped length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: an empty file is refused by `open`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn byte(&self, i: usize) -> &std::sync::atomic::AtomicU8 {
        assert!(
            i < self.len,
            "offset {i} outside the {} mapped bytes",
            self.len
        );
        // SAFETY: `i` is inside the live mapping; AtomicU8 has alignment 1 and is valid for
        // every bit pattern.
        #[allow(unsafe_code)]
        unsafe {
            &*self.ptr.add(i).cast::<std::sync::atomic::AtomicU8>()
        }
    }

    /// Writes `data` at `offset`.
    ///
    /// # Errors
    /// Never (the `Result` matches `SharedMemory::write_at`).
    ///
    /// # Panics
    /// If the range is outside the mapping.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> std::io::Result<()> {
        for (i, &b) in data.iter().enumerate() {
            self.byte(offset + i)
                .store(b, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    /// Never.
    ///
    /// # Panics
    /// If the range is outside the mapping.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> std::io::Result<()> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self
                .byte(offset + i)
                .load(std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `open`, once.
        #[allow(unsafe_code)]
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}
