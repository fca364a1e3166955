//! [`Listener`] and [`Client`]: connections between unrelated processes over a
//! Unix socket path or TCP (Python's `multiprocessing.connection.Listener` /
//! `Client`), with an optional shared key (feature `auth`, see the `auth`
//! module).
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
use std::time::{Duration, Instant};

#[cfg(feature = "auth")]
use crate::auth::{self, Auth};
use crate::{sys, AcceptTimeoutError, Connection, Error, Result, TryAcceptError};

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

/// A listening socket that yields [`Connection`]s (Python's
/// `multiprocessing.connection.Listener`), authenticated when it was bound
/// with a key (feature `auth`).
///
/// A Unix socket file is created with mode 0600 (it never exists at its path
/// with another mode) and removed when the listener drops, only by the process
/// that bound it: a forked child's copy leaves it alone.
///
/// Accepting comes in the three forms of every blocking call,
/// [`accept`](Self::accept), [`try_accept`](Self::try_accept) and
/// [`accept_timeout`](Self::accept_timeout), and as an iterator,
/// [`incoming`](Self::incoming), as std's `TcpListener`.
///
/// # Example
/// ```
/// use ipc_pipe::{Client, Listener};
/// let path = std::env::temp_dir().join(format!("ipc-pipe-doc-{}.sock", std::process::id()));
/// let listener = Listener::bind(path.as_path())?;
/// let t = std::thread::spawn(move || -> ipc_pipe::Result<()> {
///     let mut c = Client::connect(path.as_path())?;
///     c.send_bytes(b"hello")?;
///     Ok(())
/// });
/// let mut conn = listener.accept()?;
/// assert_eq!(conn.recv_bytes()?, b"hello");
/// t.join().unwrap()?;
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
pub struct Listener {
    socket: Socket,
    address: Address,
    file: Option<SocketFile>,
    #[cfg(feature = "auth")]
    auth: Option<Auth>,
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
    sys::fill_random(&mut rnd)?;
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

impl Listener {
    /// Binds and listens on `address` (`&Path`/`PathBuf` for a Unix socket,
    /// `SocketAddr` for TCP), without authentication: on a Unix socket the
    /// file's mode (0600) lets only the same user connect; a TCP port is open
    /// to anyone who can reach it (use
    /// `bind_with_authkey`, feature `auth`, there).
    ///
    /// A Unix socket is bound in a private directory created beside the path
    /// (`.<12 hex digits>`, removed again), so that directory must be
    /// writable and the longer temporary path must fit a socket address.
    ///
    /// # Errors
    /// [`Error::Io`] if binding fails (for a Unix path: `AddrInUse` when the
    /// file exists).
    pub fn bind(address: impl Into<Address>) -> Result<Listener> {
        let (socket, address, file) = bind_socket(address.into())?;
        Ok(Listener {
            socket,
            address,
            file,
            #[cfg(feature = "auth")]
            auth: None,
        })
    }

    /// [`bind`](Self::bind) with a shared key: every accepted peer must
    /// prove it holds `authkey`, and the listener proves it in turn (an
    /// HMAC-SHA256 challenge-response both ways, bounded by
    /// `AUTH_TIMEOUT`). Peers connect with
    /// [`Client::connect_with_authkey`].
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    ///
    /// # Example
    /// ```
    /// use ipc_pipe::{Client, Listener};
    /// let path = std::env::temp_dir().join(format!("ipc-pipe-auth-{}.sock", std::process::id()));
    /// let listener = Listener::bind_with_authkey(path.as_path(), b"secret")?;
    /// let t = std::thread::spawn(move || -> ipc_pipe::Result<()> {
    ///     let mut c = Client::connect_with_authkey(path.as_path(), b"secret")?;
    ///     c.send_bytes(b"hello")?;
    ///     Ok(())
    /// });
    /// let mut conn = listener.accept()?;
    /// assert_eq!(conn.recv_bytes()?, b"hello");
    /// t.join().unwrap()?;
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    pub fn bind_with_authkey(address: impl Into<Address>, authkey: &[u8]) -> Result<Listener> {
        let (socket, address, file) = bind_socket(address.into())?;
        Ok(Listener {
            socket,
            address,
            file,
            auth: Some(Auth::new(authkey)),
        })
    }

    /// Whether accepted peers must prove a key.
    pub fn authenticated(&self) -> bool {
        #[cfg(feature = "auth")]
        {
            self.auth.is_some()
        }
        #[cfg(not(feature = "auth"))]
        false
    }

    /// Waits for the next peer, authenticates it if the listener has a key,
    /// and returns the connection.
    ///
    /// With a key, the handshakes of all pending peers run side by side, each
    /// bounded by `AUTH_TIMEOUT`; the first to
    /// complete is returned, and the others go on in the next call. A peer
    /// that never answers delays nobody else. Concurrent calls on one
    /// listener take turns.
    ///
    /// # Errors
    /// `Error::AuthenticationFailed` (feature `auth`) if a peer does not
    /// prove the key in time (it is told so if it answered wrongly, then its
    /// connection is closed; call `accept` again for the next peer);
    /// [`Error::Disconnected`] if a peer leaves during the exchange;
    /// [`Error::Io`].
    ///
    /// # Peer death
    /// A peer that dies during its handshake is `Disconnected` or
    /// `AuthenticationFailed` for that call; others are unaffected.
    pub fn accept(&self) -> Result<Connection> {
        self.accept_until(None, false)
    }

    /// [`accept`](Self::accept) without blocking: a peer already waiting (and,
    /// with a key, whose handshake completes with the bytes already here).
    /// Handshakes started go on in the next call of any accept form.
    ///
    /// # Errors
    /// [`TryAcceptError::WouldBlock`] when no peer is ready now (or another
    /// thread is in an accept call on this listener);
    /// [`TryAcceptError::Failed`] with the errors of `accept`.
    ///
    /// # Peer death
    /// As [`accept`](Self::accept).
    pub fn try_accept(&self) -> Result<Connection, TryAcceptError> {
        self.accept_until(Some(Instant::now()), true)
            .map_err(TryAcceptError::from_internal)
    }

    /// [`accept`](Self::accept) waiting at most `timeout` (monotonic clock)
    /// for a peer to complete its handshake.
    ///
    /// # Errors
    /// [`AcceptTimeoutError::Timeout`] when none did in time (handshakes
    /// under way go on in the next call); [`AcceptTimeoutError::Failed`] with
    /// the errors of `accept`.
    ///
    /// # Peer death
    /// As [`accept`](Self::accept).
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection, AcceptTimeoutError> {
        self.accept_until(Instant::now().checked_add(timeout), false)
            .map_err(AcceptTimeoutError::from_internal)
    }

    /// An endless iterator of accepted connections: each `next` is
    /// [`accept`](Self::accept), so it blocks, and a peer that fails its
    /// handshake or leaves is an `Err` item, after which the iterator goes
    /// on (as std's `TcpListener::incoming`).
    ///
    /// # Example
    /// ```
    /// use ipc_pipe::{Client, Listener};
    /// let path = std::env::temp_dir().join(format!("ipc-pipe-inc-{}.sock", std::process::id()));
    /// let listener = Listener::bind(path.as_path())?;
    /// let t = std::thread::spawn(move || -> ipc_pipe::Result<()> {
    ///     for i in 0..3u8 {
    ///         Client::connect(path.as_path())?.send_bytes(&[i])?;
    ///     }
    ///     Ok(())
    /// });
    /// for (i, conn) in listener.incoming().take(3).enumerate() {
    ///     assert_eq!(conn?.recv_bytes()?, [i as u8]);
    /// }
    /// t.join().unwrap()?;
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The bound address (for TCP, with the port actually bound).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// One non-blocking `accept`: `None` if no peer is waiting (the
    /// listening socket said `EAGAIN`: an async accept clears its readiness
    /// on that). A peer that left before it was accepted (`ECONNABORTED`) is
    /// skipped for the next one in the queue.
    pub(crate) fn accept_raw(&self) -> Result<Option<Connection>> {
        loop {
            let res = match &self.socket {
                Socket::Unix(l) => l.accept().map(|(s, _)| OwnedFd::from(s)),
                Socket::Tcp(l) => l.accept().and_then(|(s, _)| {
                    s.set_nodelay(true)?;
                    Ok(OwnedFd::from(s))
                }),
            };
            return match res {
                Ok(fd) => Ok(Some(Connection::from(fd))),
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
    }

    /// The listener's key, when it authenticates its peers.
    #[cfg(all(feature = "auth", feature = "tokio"))]
    pub(crate) fn authkey(&self) -> Option<&[u8]> {
        self.auth.as_ref().map(|a| a.key.as_slice())
    }

    /// The next connection by `deadline`, `Err(Timeout)` when none; with
    /// `nonblocking`, never waits for another thread's accept either.
    fn accept_until(&self, deadline: Option<Instant>, nonblocking: bool) -> Result<Connection> {
        #[cfg(feature = "auth")]
        if let Some(auth) = &self.auth {
            return auth.accept(self, deadline, nonblocking);
        }
        let _ = nonblocking;
        loop {
            if let Some(conn) = self.accept_raw()? {
                return Ok(conn);
            }
            if !sys::poll_one(self.as_fd(), sys::POLLIN, deadline)? {
                return Err(Error::Timeout);
            }
        }
    }
}

/// Binds and listens on `address`, non-blocking (accepts wait with `poll`,
/// so a peer taken by another process in between cannot block them).
fn bind_socket(address: Address) -> Result<(Socket, Address, Option<SocketFile>)> {
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
    match &socket {
        Socket::Unix(l) => l.set_nonblocking(true)?,
        Socket::Tcp(l) => l.set_nonblocking(true)?,
    }
    Ok((socket, address, file))
}

/// The iterator of [`Listener::incoming`]: [`accept`](Listener::accept) per
/// item, without end.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a Listener,
}

impl Iterator for Incoming<'_> {
    type Item = Result<Connection>;

    fn next(&mut self) -> Option<Result<Connection>> {
        Some(self.listener.accept())
    }
}

impl std::iter::FusedIterator for Incoming<'_> {}

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
            .field("authenticated", &self.authenticated())
            .finish()
    }
}

/// Connects to a [`Listener`] (Python's `multiprocessing.connection.Client`).
/// A namespace for [`Client::connect`]; it has no values.
#[derive(Debug)]
pub enum Client {}

impl Client {
    /// Connects to `address` without authentication (the listener must have
    /// been bound with [`Listener::bind`]).
    ///
    /// # Errors
    /// [`Error::Io`] if the connection fails (`NotFound`, `ConnectionRefused`,
    /// `PermissionDenied` for a Unix socket of another user).
    pub fn connect(address: impl Into<Address>) -> Result<Connection> {
        connect_socket(address.into())
    }

    /// Connects to `address`, answers the listener's challenge with
    /// `authkey`, then challenges it in turn (see
    /// [`Listener::bind_with_authkey`]).
    ///
    /// # Errors
    /// `Error::AuthenticationFailed` if the keys differ (the connection is
    /// closed); [`Error::Timeout`] after `AUTH_TIMEOUT`;
    /// [`Error::Io`] if the connection fails.
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    pub fn connect_with_authkey(address: impl Into<Address>, authkey: &[u8]) -> Result<Connection> {
        let mut conn = connect_socket(address.into())?;
        auth::authenticate(&mut conn, authkey)?;
        Ok(conn)
    }
}

fn connect_socket(address: Address) -> Result<Connection> {
    let fd: OwnedFd = match address {
        Address::Unix(p) => UnixStream::connect(p)?.into(),
        Address::Tcp(a) => {
            let s = TcpStream::connect(a)?;
            s.set_nodelay(true)?;
            s.into()
        }
    };
    Ok(Connection::from(fd))
}
