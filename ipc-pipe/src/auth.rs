//! The authkey handshake of [`Listener`](crate::Listener) and
//! [`Client`](crate::Client) (feature `auth`): an HMAC-SHA256
//! challenge-response in both directions (the listener challenges first, so
//! nobody gets an HMAC computed without first proving the key), 32 random
//! bytes from `getrandom(2)`, verified in constant time by `hmac`. Messages
//! are limited to 1 KiB and the whole exchange to [`AUTH_TIMEOUT`], so an
//! unauthenticated peer can neither make us allocate nor hang `accept`.
//!
//! The listener runs the handshakes of every pending peer side by side (each
//! a small state machine driven by non-blocking receives, with its own
//! deadline) and returns the first that completes, so a peer that connects
//! and never answers delays nobody else.

use std::os::fd::AsRawFd;
use std::sync::{Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::frame::DEFAULT_MAX_MESSAGE_SIZE;
use crate::listener::Listener;
use crate::TrySendError;
use crate::{sys, Connection, Error, RecvTimeoutError, Result, SendTimeoutError, TryRecvError};

/// Longest time the authentication exchange may take on either side.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes `accept` runs at once; further peers wait in the kernel's
/// backlog until one ends (completes, fails or times out).
pub const MAX_PENDING_HANDSHAKES: usize = 64;

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const NONCE_LEN: usize = 32;
const AUTH_MAX_MESSAGE: usize = 1024;

/// A listener's key and the handshakes under way.
pub(crate) struct Auth {
    key: Vec<u8>,
    pending: Mutex<Vec<Handshake>>,
}

impl Auth {
    pub(crate) fn new(key: &[u8]) -> Auth {
        Auth {
            key: key.to_vec(),
            pending: Mutex::new(Vec::new()),
        }
    }

    /// The next authenticated peer by `deadline` (`Err(Timeout)` then); with
    /// `nonblocking`, `Err(Timeout)` also when another thread is accepting.
    pub(crate) fn accept(
        &self,
        listener: &Listener,
        deadline: Option<Instant>,
        nonblocking: bool,
    ) -> Result<Connection> {
        let mut pending = if nonblocking {
            match self.pending.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return Err(Error::Timeout),
            }
        } else {
            self.pending.lock().unwrap_or_else(PoisonError::into_inner)
        };
        let key = self.key.as_slice();
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
                let Some(conn) = listener.accept_raw()? else {
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
                    fd: listener.as_raw_fd(),
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

/// A `try_send` of the exchange: a peer that leaves no room for a few dozen
/// bytes is not reading its challenge.
fn try_send(conn: &mut Connection, msg: &[u8]) -> Result<()> {
    conn.try_send_bytes(msg).map_err(|e| match e {
        TrySendError::Full => Error::AuthenticationFailed,
        e => auth_error(e.into()),
    })
}

impl Handshake {
    /// Sends the challenge (a fresh socket always has room for it).
    fn start(mut conn: Connection) -> Result<Handshake> {
        conn.set_max_message_size(AUTH_MAX_MESSAGE);
        let nonce = new_nonce()?;
        try_send(&mut conn, &challenge_message(&nonce))?;
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
                Ok(m) => m,
                Err(TryRecvError::Empty) => return Progress::Waiting,
                Err(TryRecvError::Disconnected) if matches!(self.step, Step::Verdict) => {
                    return Progress::Failed(Error::AuthenticationFailed)
                }
                Err(e) => return Progress::Failed(auth_error(e.into())),
            };
            let res = match &self.step {
                Step::Response { nonce } => {
                    if verify_response(key, nonce, &msg) {
                        self.step = Step::Challenge;
                        try_send(&mut self.conn, WELCOME)
                    } else {
                        // Best effort: the peer may already be gone.
                        let _ = self.conn.try_send_bytes(FAILURE);
                        Err(Error::AuthenticationFailed)
                    }
                }
                Step::Challenge => match challenge_nonce(&msg) {
                    Some(nonce) => {
                        self.step = Step::Verdict;
                        try_send(&mut self.conn, &hmac_of(key, nonce))
                    }
                    None => Err(Error::AuthenticationFailed),
                },
                Step::Verdict if msg == WELCOME => return Progress::Done,
                Step::Verdict => Err(Error::AuthenticationFailed),
            };
            if let Err(e) = res {
                return Progress::Failed(e);
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
        e => e,
    }
}

fn new_nonce() -> Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    sys::fill_random(&mut nonce)?;
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

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("hmac takes any key length"))
}

/// The client's side of the exchange (blocking, bounded by [`AUTH_TIMEOUT`]).
pub(crate) fn authenticate(conn: &mut Connection, key: &[u8]) -> Result<()> {
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

/// A receive of the exchange by `deadline`.
fn recv(conn: &mut Connection, deadline: Instant) -> Result<Vec<u8>> {
    conn.recv_bytes_timeout(left(deadline))
        .map_err(|e| match e {
            RecvTimeoutError::Timeout => Error::Timeout,
            e => auth_error(e.into()),
        })
}

/// A send of the exchange by `deadline`.
fn send(conn: &mut Connection, msg: &[u8], deadline: Instant) -> Result<()> {
    conn.send_bytes_timeout(msg, left(deadline))
        .map_err(|e: SendTimeoutError| e.into())
}

/// Sends a random challenge and checks the peer's HMAC of it.
fn deliver_challenge(conn: &mut Connection, key: &[u8], deadline: Instant) -> Result<()> {
    let nonce = new_nonce()?;
    send(conn, &challenge_message(&nonce), deadline)?;
    let response = recv(conn, deadline)?;
    if verify_response(key, &nonce, &response) {
        send(conn, WELCOME, deadline)
    } else {
        // Best effort: the peer may already be gone.
        let _ = conn.try_send_bytes(FAILURE);
        Err(Error::AuthenticationFailed)
    }
}

/// Answers the peer's challenge with our HMAC and waits for its verdict.
fn answer_challenge(conn: &mut Connection, key: &[u8], deadline: Instant) -> Result<()> {
    let challenge = recv(conn, deadline)?;
    let Some(nonce) = challenge_nonce(&challenge) else {
        return Err(Error::AuthenticationFailed);
    };
    send(conn, &hmac_of(key, nonce), deadline)?;
    match recv(conn, deadline) {
        Ok(v) if v == WELCOME => Ok(()),
        Ok(_) | Err(Error::Disconnected) => Err(Error::AuthenticationFailed),
        Err(e) => Err(e),
    }
}
