//! [`Listener`] and [`Client`]: connections between unrelated processes over a
//! Unix socket path or TCP, with an optional shared key (Python's
//! `multiprocessing.connection.Listener`/`Client` with `authkey`).
//!
//! Authentication, when a key is given, is an HMAC-SHA256 challenge-response
//! in both directions (the listener challenges first, so nobody gets an HMAC
//! computed without first proving the key): 32 random bytes from `getrandom`,
//! verified in constant time by `hmac`. Messages are limited to 1 KiB and the
//! whole exchange to [`AUTH_TIMEOUT`], so an unauthenticated peer can neither
//! make us allocate nor hang `accept`.
//!
//! `accept` runs the handshakes of every pending peer side by side (each a
//! small state machine driven by non-blocking receives, with its own
//! deadline) and returns the first that completes, so a peer that connects
//! and never answers delays nobody else.
//!
//! A Unix socket file is bound inside a fresh private (0700) directory next
//! to its path, given mode 0600 there, and renamed into place without
//! replacing anything: it never exists at its path with a looser mode.

use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::frame::DEFAULT_MAX_MESSAGE_SIZE;
use crate::{sys, Connection, Error, Result};

/// Longest time the authentication exchange may take on either side.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const NONCE_LEN: usize = 32;
const AUTH_MAX_MESSAGE: usize = 1024;
/// Most handshakes `accept` runs at once; further peers wait in the kernel's
/// backlog until one ends (completes, fails or times out).
pub const MAX_PENDING_HANDSHAKES: usize = 64;

/// Where a [`Listener`] listens and a [`Client`] connects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix stream socket at this filesystem path (Python's `AF_UNIX`).
    Unix(PathBuf),
    /// A TCP address (Python's `AF_INET`); port 0 binds any free port, see
    /// [`Listener::address`].
    Tcp(SocketAddr),
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Address {
        Address::Unix(p)
    }
}

impl From<&Path> for Address {
    fn from(p: &Path) -> Address {
        Address::Unix(p.to_path_buf())
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Tcp(a)
    }
}

impl From<&str> for Address {
    /// `"host-ip:port"` (anything that parses as a [`SocketAddr`]) is TCP;
    /// anything else is a Unix socket path.
    fn from(s: &str) -> Address {
        match s.parse::<SocketAddr>() {
            Ok(a) => Address::Tcp(a),
            Err(_) => Address::Unix(PathBuf::from(s)),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

enum Socket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Who may remove a Unix socket file: the process that bound it, and only
/// while the path still names the socket it bound.
#[derive(Debug, Clone, Copy)]
struct SocketFile {
    pid: u32,
    dev: u64,
    ino: u64,
}

/// A listening socket that yields authenticated [`Connection`]s.
///
/// A Unix socket file is created with mode 0600 (it never exists at its path
/// with another mode) and removed when the listener drops, only by the process
/// that bound it: a forked child's copy leaves it alone.
///
/// With a key, concurrent calls of `accept` on one listener take turns.
///
/// # Example
/// ```
/// use ipc_pipe::{Client, Listener};
/// let path = std::env::temp_dir().join(format!("ipc-pipe-doc-{}.sock", std::process::id()));
/// let listener = Listener::bind(path.as_path(), Some(b"secret"))?;
/// let t = std::thread::spawn(move || -> ipc_pipe::Result<()> {
///     let mut c = Client::connect(path.as_path(), Some(b"secret"))?;
///     c.send(&"hello")?;
///     Ok(())
/// });
/// let mut conn = listener.accept()?;
/// assert_eq!(conn.recv::<String>()?, "hello");
/// t.join().unwrap()?;
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
pub struct Listener {
    socket: Socket,
    address: Address,
    authkey: Option<Vec<u8>>,
    file: Option<SocketFile>,
    pending: Mutex<Vec<Handshake>>,
}

/// Binds a Unix socket at `path` with mode 0600 from the start: bound in a
/// fresh 0700 directory beside `path`, chmod-ed there, then renamed into place
/// (never replacing an existing file).
fn bind_unix(path: &Path) -> Result<(UnixListener, SocketFile)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut rnd = [0u8; 6];
    getrandom::fill(&mut rnd).map_err(getrandom_error)?;
    let hex: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    let private = dir.join(format!(".{hex}"));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let tmp = private.join("s");
    let res = (|| {
        let l = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        match sys::rename_noreplace(&tmp, path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, e))
            }
            r => r,
        }?;
        let meta = std::fs::symlink_metadata(path)?;
        Ok::<_, std::io::Error>((l, meta))
    })();
    // Best effort: on success only the empty directory is left to remove.
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    let (l, meta) = res?;
    let file = SocketFile {
        pid: std::process::id(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    Ok((l, file))
}

fn getrandom_error(e: getrandom::Error) -> Error {
    Error::Io(match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::other(e.to_string()),
    })
}

impl Listener {
    /// Binds and listens on `address` (`&Path`/`PathBuf` for a Unix socket,
    /// `SocketAddr` for TCP). With `authkey`, every accepted peer must prove
    /// it holds the same key.
    ///
    /// A Unix socket is bound in a private directory created beside the path
    /// (`.<12 hex digits>`, removed again), so that directory must be
    /// writable and the longer temporary path must fit a socket address.
    ///
    /// # Errors
    /// [`Error::Io`] if binding fails (for a Unix path: `AddrInUse` when the
    /// file exists).
    pub fn bind(address: impl Into<Address>, authkey: Option<&[u8]>) -> Result<Listener> {
        let address = address.into();
        let (socket, address, file) = match address {
            Address::Unix(path) => {
                let (l, file) = bind_unix(&path)?;
                (Socket::Unix(l), Address::Unix(path), Some(file))
            }
            Address::Tcp(addr) => {
                let l = TcpListener::bind(addr)?;
                let local = l.local_addr()?;
                (Socket::Tcp(l), Address::Tcp(local), None)
            }
        };
        // Accepts are non-blocking: `accept` waits with `poll`, so a peer
        // taken by another process in between cannot block it.
        match &socket {
            Socket::Unix(l) => l.set_nonblocking(true)?,
            Socket::Tcp(l) => l.set_nonblocking(true)?,
        }
        Ok(Listener {
            socket,
            address,
            authkey: authkey.map(<[u8]>::to_vec),
            file,
            pending: Mutex::new(Vec::new()),
        })
    }

    /// Waits for the next peer, authenticates it if a key was given, and
    /// returns the connection.
    ///
    /// With a key, the handshakes of all pending peers run side by side, each
    /// bounded by [`AUTH_TIMEOUT`]; the first to complete is returned, and
    /// the others go on in the next call. A peer that never answers delays
    /// nobody else.
    ///
    /// # Errors
    /// [`Error::AuthenticationFailed`] if a peer does not prove the key in
    /// time (it is told so if it answered wrongly, then its connection is
    /// closed; call `accept` again for the next peer);
    /// [`Error::Disconnected`] if a peer leaves during the exchange;
    /// [`Error::Io`].
    ///
    /// # Peer death
    /// A peer that dies during its handshake is `Disconnected` or
    /// `AuthenticationFailed` for that call; others are unaffected.
    pub fn accept(&self) -> Result<Connection> {
        self.accept_until(None)
    }

    /// [`accept`](Self::accept) waiting at most `timeout` for a peer to
    /// complete its handshake.
    ///
    /// # Errors
    /// [`Error::Timeout`] when none did in time (handshakes under way go on
    /// in the next call); otherwise as `accept`.
    ///
    /// # Peer death
    /// As [`accept`](Self::accept).
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection> {
        self.accept_until(Instant::now().checked_add(timeout))
    }

    /// The bound address (for TCP, with the port actually bound).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// One non-blocking `accept`: `None` if no peer is waiting.
    fn accept_raw(&self) -> Result<Option<Connection>> {
        let res = match &self.socket {
            Socket::Unix(l) => l.accept().map(|(s, _)| OwnedFd::from(s)),
            Socket::Tcp(l) => l.accept().and_then(|(s, _)| {
                s.set_nodelay(true)?;
                Ok(OwnedFd::from(s))
            }),
        };
        match res {
            Ok(fd) => Ok(Some(Connection::from(fd))),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.raw_os_error() == Some(libc::ECONNABORTED) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn accept_until(&self, deadline: Option<Instant>) -> Result<Connection> {
        let Some(key) = self.authkey.as_deref() else {
            loop {
                if let Some(conn) = self.accept_raw()? {
                    return Ok(conn);
                }
                if !sys::poll_one(self.as_fd(), sys::POLLIN, deadline)? {
                    return Err(Error::Timeout);
                }
            }
        };
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            // Drive every handshake as far as its bytes allow.
            let now = Instant::now();
            let mut i = 0;
            while i < pending.len() {
                match pending[i].advance(key) {
                    Progress::Waiting if now < pending[i].deadline => i += 1,
                    Progress::Waiting => {
                        pending.swap_remove(i);
                        return Err(Error::AuthenticationFailed);
                    }
                    Progress::Done => return Ok(pending.swap_remove(i).into_connection()),
                    Progress::Failed(e) => {
                        pending.swap_remove(i);
                        return Err(e);
                    }
                }
            }
            // Take new peers while there is room.
            let mut started = false;
            while pending.len() < MAX_PENDING_HANDSHAKES {
                let Some(conn) = self.accept_raw()? else {
                    break;
                };
                pending.push(Handshake::start(conn)?);
                started = true;
            }
            if started {
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout);
            }
            let mut fds: Vec<libc::pollfd> = pending
                .iter()
                .map(|h| libc::pollfd {
                    fd: h.conn.as_raw_fd(),
                    events: sys::POLLIN,
                    revents: 0,
                })
                .collect();
            if pending.len() < MAX_PENDING_HANDSHAKES {
                fds.push(libc::pollfd {
                    fd: self.as_raw_fd(),
                    events: sys::POLLIN,
                    revents: 0,
                });
            }
            let first_expiry = pending.iter().map(|h| h.deadline).min();
            let wake = match (deadline, first_expiry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            sys::poll(&mut fds, wake)?;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let (Address::Unix(path), Some(file)) = (&self.address, self.file) else {
            return;
        };
        // Only the binding process, and only if the path still is our socket
        // (not a file someone put there since).
        if file.pid != std::process::id() {
            return;
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.dev() == file.dev && meta.ino() == file.ino {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl AsFd for Listener {
    /// The listening socket: readable (for [`wait`](crate::wait)) when a
    /// peer is waiting to be accepted. It is in non-blocking mode (`accept`
    /// waits with `poll`).
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.socket {
            Socket::Unix(l) => l.as_fd(),
            Socket::Tcp(l) => l.as_fd(),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authkey", &self.authkey.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Where the listener's side of one handshake stands.
enum Step {
    /// Our challenge is sent; waiting for the peer's HMAC of `nonce`.
    Response { nonce: [u8; NONCE_LEN] },
    /// We accepted the peer; waiting for its challenge to us.
    Challenge,
    /// We answered; waiting for the peer's verdict.
    Verdict,
}

enum Progress {
    Waiting,
    Done,
    Failed(Error),
}

/// The listener's side of the challenge exchange with one accepted peer, as
/// a state machine driven by non-blocking receives.
struct Handshake {
    conn: Connection,
    step: Step,
    deadline: Instant,
}

impl Handshake {
    /// Sends the challenge (a fresh socket always has room for it).
    fn start(mut conn: Connection) -> Result<Handshake> {
        conn.set_max_message_size(AUTH_MAX_MESSAGE);
        let nonce = new_nonce()?;
        conn.try_send_bytes(&challenge_message(&nonce))
            .map_err(auth_error)?;
        Ok(Handshake {
            conn,
            step: Step::Response { nonce },
            deadline: Instant::now() + AUTH_TIMEOUT,
        })
    }

    /// Goes as far as the bytes already here allow.
    fn advance(&mut self, key: &[u8]) -> Progress {
        loop {
            let msg = match self.conn.try_recv_bytes() {
                Ok(Some(m)) => m,
                Ok(None) => return Progress::Waiting,
                Err(Error::Disconnected) if matches!(self.step, Step::Verdict) => {
                    return Progress::Failed(Error::AuthenticationFailed)
                }
                Err(e) => return Progress::Failed(auth_error(e)),
            };
            let res = match &self.step {
                Step::Response { nonce } => {
                    if verify_response(key, nonce, &msg) {
                        self.step = Step::Challenge;
                        self.conn.try_send_bytes(WELCOME)
                    } else {
                        // Best effort: the peer may already be gone.
                        let _ = self.conn.try_send_bytes(FAILURE);
                        Err(Error::AuthenticationFailed)
                    }
                }
                Step::Challenge => match challenge_nonce(&msg) {
                    Some(nonce) => {
                        self.step = Step::Verdict;
                        self.conn.try_send_bytes(&hmac_of(key, nonce))
                    }
                    None => Err(Error::AuthenticationFailed),
                },
                Step::Verdict if msg == WELCOME => return Progress::Done,
                Step::Verdict => Err(Error::AuthenticationFailed),
            };
            if let Err(e) = res {
                return Progress::Failed(auth_error(e));
            }
        }
    }

    fn into_connection(mut self) -> Connection {
        self.conn.set_max_message_size(DEFAULT_MAX_MESSAGE_SIZE);
        self.conn
    }
}

/// Errors of the exchange that mean "not a peer holding the key".
fn auth_error(e: Error) -> Error {
    match e {
        Error::TooLarge { .. } | Error::UnexpectedFrame { .. } | Error::Poisoned => {
            Error::AuthenticationFailed
        }
        // A send that found no room: a peer that does not read its challenge.
        Error::Timeout => Error::AuthenticationFailed,
        e => e,
    }
}

fn new_nonce() -> Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(getrandom_error)?;
    Ok(nonce)
}

fn challenge_message(nonce: &[u8]) -> Vec<u8> {
    let mut msg = CHALLENGE.to_vec();
    msg.extend_from_slice(nonce);
    msg
}

/// The nonce of a well-formed challenge message.
fn challenge_nonce(msg: &[u8]) -> Option<&[u8]> {
    msg.strip_prefix(CHALLENGE)
        .filter(|nonce| nonce.len() == NONCE_LEN)
}

fn hmac_of(key: &[u8], nonce: &[u8]) -> Vec<u8> {
    let mut m = mac(key);
    m.update(nonce);
    m.finalize().into_bytes().to_vec()
}

/// Whether `response` is the HMAC of `nonce` under `key` (constant time).
fn verify_response(key: &[u8], nonce: &[u8], response: &[u8]) -> bool {
    let mut m = mac(key);
    m.update(nonce);
    m.verify_slice(response).is_ok()
}

/// Connects to a [`Listener`] (Python's `multiprocessing.connection.Client`).
/// A namespace for [`Client::connect`]; it has no values.
#[derive(Debug)]
pub enum Client {}

impl Client {
    /// Connects to `address` and, with `authkey`, answers the listener's
    /// challenge and then challenges it in turn.
    ///
    /// # Errors
    /// [`Error::AuthenticationFailed`] if the keys differ (the connection is
    /// closed); [`Error::Timeout`] after [`AUTH_TIMEOUT`]; [`Error::Io`] if the
    /// connection fails.
    pub fn connect(address: impl Into<Address>, authkey: Option<&[u8]>) -> Result<Connection> {
        let fd: OwnedFd = match address.into() {
            Address::Unix(p) => UnixStream::connect(p)?.into(),
            Address::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                s.into()
            }
        };
        let mut conn = Connection::from(fd);
        if let Some(key) = authkey {
            authenticate(&mut conn, key)?;
        }
        Ok(conn)
    }
}

/// The client's side of the exchange (blocking, bounded by [`AUTH_TIMEOUT`]).
fn authenticate(conn: &mut Connection, key: &[u8]) -> Result<()> {
    let deadline = Instant::now() + AUTH_TIMEOUT;
    let saved = conn.max_message_size();
    conn.set_max_message_size(AUTH_MAX_MESSAGE);
    let res =
        answer_challenge(conn, key, deadline).and_then(|()| deliver_challenge(conn, key, deadline));
    conn.set_max_message_size(saved);
    res
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("hmac takes any key length"))
}

/// Sends a random challenge and checks the peer's HMAC of it.
fn deliver_challenge(conn: &mut Connection, key: &[u8], deadline: Instant) -> Result<()> {
    let nonce = new_nonce()?;
    conn.send_bytes_timeout(&challenge_message(&nonce), left(deadline))?;
    let response = conn
        .recv_bytes_timeout(left(deadline))
        .map_err(|e| match e {
            Error::Timeout => Error::Timeout,
            e => auth_error(e),
        })?;
    if verify_response(key, &nonce, &response) {
        conn.send_bytes_timeout(WELCOME, left(deadline))?;
        Ok(())
    } else {
        // Best effort: the peer may already be gone.
        let _ = conn.try_send_bytes(FAILURE);
        Err(Error::AuthenticationFailed)
    }
}

/// Answers the peer's challenge with our HMAC and waits for its verdict.
fn answer_challenge(conn: &mut Connection, key: &[u8], deadline: Instant) -> Result<()> {
    let challenge = conn
        .recv_bytes_timeout(left(deadline))
        .map_err(|e| match e {
            Error::Timeout => Error::Timeout,
            e => auth_error(e),
        })?;
    let Some(nonce) = challenge_nonce(&challenge) else {
        return Err(Error::AuthenticationFailed);
    };
    conn.send_bytes_timeout(&hmac_of(key, nonce), left(deadline))?;
    match conn.recv_bytes_timeout(left(deadline)) {
        Ok(v) if v == WELCOME => Ok(()),
        Ok(_) | Err(Error::Disconnected) => Err(Error::AuthenticationFailed),
        Err(Error::Timeout) => Err(Error::Timeout),
        Err(e) => Err(auth_error(e)),
    }
}
