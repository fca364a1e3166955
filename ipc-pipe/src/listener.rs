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

use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Connection, Error, Result};

/// Longest time the authentication exchange may take on either side.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const NONCE_LEN: usize = 32;
const AUTH_MAX_MESSAGE: usize = 1024;

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

/// A listening socket that yields authenticated [`Connection`]s.
///
/// A Unix socket file is created with mode 0600 and removed when the listener
/// drops (only by the listener that created it).
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
}

impl Listener {
    /// Binds and listens on `address` (`&Path`/`PathBuf` for a Unix socket,
    /// `SocketAddr` for TCP). With `authkey`, every accepted peer must prove
    /// it holds the same key.
    ///
    /// # Errors
    /// [`Error::Io`] if binding fails (for a Unix path: `AddrInUse` when the
    /// file exists).
    pub fn bind(address: impl Into<Address>, authkey: Option<&[u8]>) -> Result<Listener> {
        let address = address.into();
        let (socket, address) = match address {
            Address::Unix(path) => {
                let l = UnixListener::bind(&path)?;
                if let Err(e) =
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                {
                    let _ = std::fs::remove_file(&path);
                    return Err(e.into());
                }
                (Socket::Unix(l), Address::Unix(path))
            }
            Address::Tcp(addr) => {
                let l = TcpListener::bind(addr)?;
                let local = l.local_addr()?;
                (Socket::Tcp(l), Address::Tcp(local))
            }
        };
        Ok(Listener {
            socket,
            address,
            authkey: authkey.map(<[u8]>::to_vec),
        })
    }

    /// Waits for the next peer, authenticates it if a key was given, and
    /// returns the connection.
    ///
    /// # Errors
    /// [`Error::AuthenticationFailed`] if the peer does not prove the key (it
    /// is told so, then the connection is closed; call `accept` again for the
    /// next peer); [`Error::Timeout`] if the exchange exceeds [`AUTH_TIMEOUT`];
    /// [`Error::Disconnected`] if the peer leaves during it; [`Error::Io`].
    pub fn accept(&self) -> Result<Connection> {
        let fd: OwnedFd = match &self.socket {
            Socket::Unix(l) => l.accept()?.0.into(),
            Socket::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                s.into()
            }
        };
        let mut conn = Connection::from(fd);
        if let Some(key) = &self.authkey {
            authenticate(&mut conn, key, Role::Server)?;
        }
        Ok(conn)
    }

    /// The bound address (for TCP, with the port actually bound).
    pub fn address(&self) -> &Address {
        &self.address
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Address::Unix(path) = &self.address {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl AsFd for Listener {
    /// The listening socket: readable (for [`wait`](crate::wait)) when a
    /// peer is waiting to be accepted.
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
            authenticate(&mut conn, key, Role::Client)?;
        }
        Ok(conn)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Server,
    Client,
}

fn authenticate(conn: &mut Connection, key: &[u8], role: Role) -> Result<()> {
    let deadline = Instant::now() + AUTH_TIMEOUT;
    let saved = conn.max_message_size();
    conn.set_max_message_size(AUTH_MAX_MESSAGE);
    let res = match role {
        Role::Server => deliver_challenge(conn, key, deadline)
            .and_then(|()| answer_challenge(conn, key, deadline)),
        Role::Client => answer_challenge(conn, key, deadline)
            .and_then(|()| deliver_challenge(conn, key, deadline)),
    };
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
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| {
        Error::Io(match e.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::other(e.to_string()),
        })
    })?;
    let mut msg = CHALLENGE.to_vec();
    msg.extend_from_slice(&nonce);
    conn.send_bytes(&msg)?;
    let response = match conn.recv_bytes_timeout(left(deadline)) {
        Ok(r) => r,
        Err(Error::TooLarge { .. } | Error::UnexpectedFrame { .. } | Error::Poisoned) => {
            return Err(Error::AuthenticationFailed)
        }
        Err(e) => return Err(e),
    };
    let mut m = mac(key);
    m.update(&nonce);
    if m.verify_slice(&response).is_ok() {
        conn.send_bytes(WELCOME)?;
        Ok(())
    } else {
        // Best effort: the peer may already be gone.
        let _ = conn.send_bytes(FAILURE);
        Err(Error::AuthenticationFailed)
    }
}

/// Answers the peer's challenge with our HMAC and waits for its verdict.
fn answer_challenge(conn: &mut Connection, key: &[u8], deadline: Instant) -> Result<()> {
    let challenge = match conn.recv_bytes_timeout(left(deadline)) {
        Ok(c) => c,
        Err(Error::TooLarge { .. } | Error::UnexpectedFrame { .. } | Error::Poisoned) => {
            return Err(Error::AuthenticationFailed)
        }
        Err(e) => return Err(e),
    };
    let Some(nonce) = challenge.strip_prefix(CHALLENGE) else {
        return Err(Error::AuthenticationFailed);
    };
    if nonce.len() != NONCE_LEN {
        return Err(Error::AuthenticationFailed);
    }
    let mut m = mac(key);
    m.update(nonce);
    conn.send_bytes(&m.finalize().into_bytes())?;
    match conn.recv_bytes_timeout(left(deadline)) {
        Ok(v) if v == WELCOME => Ok(()),
        Ok(_) | Err(Error::Disconnected) => Err(Error::AuthenticationFailed),
        Err(Error::TooLarge { .. } | Error::UnexpectedFrame { .. } | Error::Poisoned) => {
            Err(Error::AuthenticationFailed)
        }
        Err(e) => Err(e),
    }
}
