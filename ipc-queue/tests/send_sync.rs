//! Auto traits of every public type, in one table. Queues move values as bytes, so they are
//! `Send + Sync` whatever `T` is (like a pipe, not like a shared `T`).

use ipc_queue::{
    Error, GetTimeoutError, JoinTimeoutError, PodQueue, PodQueueBuilder, PutError, PutTimeoutError,
    TryGetError, TryPutError,
};
#[cfg(feature = "serde")]
use ipc_queue::{Queue, QueueBuilder};
#[cfg(feature = "serde")]
use std::rc::Rc;

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>() {}
fn unpin<T: Unpin>() {}

#[test]
fn public_types_are_send_and_sync() {
    send_sync::<PodQueue<u64>>();
    send_sync::<PodQueue<[u8; 64]>>();
    send_sync::<PodQueueBuilder<u64>>();
    send_sync::<Error>();
    send_sync::<TryGetError>();
    send_sync::<GetTimeoutError>();
    send_sync::<JoinTimeoutError>();
    send_sync::<TryPutError<u64>>();
    send_sync::<PutTimeoutError<String>>();
    send_sync::<PutError<&'static str>>();
    // Errors hand back exactly what was passed, so they are `Send` only if it is.
    send::<TryPutError<Vec<u8>>>();
    unpin::<PodQueue<u64>>();
}

#[cfg(feature = "serde")]
#[test]
fn serde_types_are_send_and_sync() {
    send_sync::<Queue<String>>();
    // Even for a `T` that is neither: only its encoding crosses threads.
    send_sync::<Queue<Rc<u64>>>();
    send_sync::<QueueBuilder<Rc<u64>>>();
    unpin::<Queue<String>>();
}

/// Errors box into `Box<dyn Error + Send + Sync>` for values that are.
#[test]
fn errors_box_as_std_errors() {
    let e: Box<dyn std::error::Error + Send + Sync> = Box::new(TryPutError::Full(1u64));
    assert_eq!(e.to_string(), "queue is full");
    let e: Box<dyn std::error::Error + Send + Sync> = Box::new(Error::Empty);
    assert_eq!(e.to_string(), "queue is empty");
    let e: Box<dyn std::error::Error + Send + Sync> = Box::new(TryGetError::Closed);
    assert_eq!(e.to_string(), "queue is closed");
    let e: Box<dyn std::error::Error + Send + Sync> = Box::new(GetTimeoutError::Timeout);
    assert_eq!(e.to_string(), "timed out");
    let e: Box<dyn std::error::Error + Send + Sync> =
        Box::new(JoinTimeoutError::PeerDied { dropped: 2 });
    assert_eq!(
        e.to_string(),
        "2 task(s) were lost with consumers that died"
    );
}
