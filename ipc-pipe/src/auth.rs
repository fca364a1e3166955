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

use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::frame::DEFAULT_MAX_MESSAGE_SIZE;
use crate::listener::Listener;
use crate::TrySendError;
use crate::{sys, Connection, Error, Result, TryRecvError};

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
    pub(crate) key: Vec<u8>,
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

pub(crate) enum Progress {
    Waiting,
    Done,
    Failed(Error),
}

/// The listener's side of the challenge exchange with one accepted peer, as
/// a state machine driven by non-blocking receives.
pub(crate) struct Handshake {
    conn: Connection,
    step: Step,
    pub(crate) deadline: Instant,
}

impl AsRawFd for Handshake {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.conn.as_raw_fd()
    }
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
    pub(crate) fn start(mut conn: Connection) -> Result<Handshake> {
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
    pub(crate) fn advance(&mut self, key: &[u8]) -> Progress {
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

    pub(crate) fn into_connection(mut self) -> Connection {
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

/// The client's side of the exchange (blocking, bounded by [`AUTH_TIMEOUT`]):
/// [`ClientHandshake`] driven by `poll`.
pub(crate) fn authenticate(conn: &mut Connection, key: &[u8]) -> Result<()> {
    let deadline = Instant::now() + AUTH_TIMEOUT;
    let mut hs = ClientHandshake::start(conn);
    let res = loop {
        match hs.advance(conn, key) {
            Progress::Done => break Ok(()),
            Progress::Failed(e) => break Err(e),
            Progress::Waiting => match sys::poll_one(conn.as_fd(), sys::POLLIN, Some(deadline)) {
                Ok(true) => {}
                Ok(false) => break Err(Error::Timeout),
                Err(e) => break Err(e.into()),
            },
        }
    };
    hs.finish(conn);
    res
}

/// Where the client's side of the exchange stands.
enum ClientStep {
    /// Waiting for the listener's challenge.
    Challenge,
    /// We answered; waiting for the listener's verdict.
    Verdict,
    /// Our challenge is sent; waiting for the listener's HMAC of `nonce`.
    Response { nonce: [u8; NONCE_LEN] },
}

/// The client's side of the challenge exchange (answer the listener's
/// challenge, then challenge it), as a state machine driven by non-blocking
/// receives: one implementation for the blocking and the async client. It
/// holds no connection; the caller passes the same one to every call.
pub(crate) struct ClientHandshake {
    step: ClientStep,
    saved_max: usize,
}

impl ClientHandshake {
    /// Limits the connection's messages for the exchange.
    pub(crate) fn start(conn: &mut Connection) -> ClientHandshake {
        let saved_max = conn.max_message_size();
        conn.set_max_message_size(AUTH_MAX_MESSAGE);
        ClientHandshake {
            step: ClientStep::Challenge,
            saved_max,
        }
    }

    /// Goes as far as the bytes already here allow.
    pub(crate) fn advance(&mut self, conn: &mut Connection, key: &[u8]) -> Progress {
        loop {
            let msg = match conn.try_recv_bytes() {
                Ok(m) => m,
                Err(TryRecvError::Empty) => return Progress::Waiting,
                Err(TryRecvError::Disconnected) if matches!(self.step, ClientStep::Verdict) => {
                    return Progress::Failed(Error::AuthenticationFailed)
                }
                Err(e) => return Progress::Failed(auth_error(e.into())),
            };
            let res = match &self.step {
                ClientStep::Challenge => match challenge_nonce(&msg) {
                    Some(nonce) => {
                        self.step = ClientStep::Verdict;
                        try_send(conn, &hmac_of(key, nonce))
                    }
                    None => Err(Error::AuthenticationFailed),
                },
                ClientStep::Verdict if msg == WELCOME => match new_nonce() {
                    Ok(nonce) => {
                        self.step = ClientStep::Response { nonce };
                        try_send(conn, &challenge_message(&nonce))
                    }
                    Err(e) => Err(e),
                },
                ClientStep::Verdict => Err(Error::AuthenticationFailed),
                ClientStep::Response { nonce } => {
                    if verify_response(key, nonce, &msg) {
                        return match try_send(conn, WELCOME) {
                            Ok(()) => Progress::Done,
                            Err(e) => Progress::Failed(e),
                        };
                    }
                    // Best effort: the peer may already be gone.
                    let _ = conn.try_send_bytes(FAILURE);
                    Err(Error::AuthenticationFailed)
                }
            };
            if let Err(e) = res {
                return Progress::Failed(e);
            }
        }
    }

    /// Restores the connection's message limit.
    pub(crate) fn finish(self, conn: &mut Connection) {
        conn.set_max_message_size(self.saved_max);
    }
}
