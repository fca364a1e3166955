//! The auto traits of every public type, stated in one table (the negatives, guards that are
//! tied to the locking thread, are `compile_fail` doctests on `LockGuard` and `RLockGuard`).

use ipc_sem::*;

fn send_sync<T: Send + Sync>() {}
fn error_type<T: std::error::Error + Send + Sync + 'static>() {}

#[test]
fn handles_are_send_and_sync() {
    // Handles may be shared between the threads of a process (every operation is atomic or
    // goes through the kernel), and moved to another thread.
    send_sync::<Semaphore>();
    send_sync::<BoundedSemaphore>();
    send_sync::<PosixSemaphore>();
    send_sync::<Lock>();
    send_sync::<RLock>();
    send_sync::<Event>();
    send_sync::<Condition>();
    send_sync::<Barrier>();
    send_sync::<BarrierWaitResult>();
    // A semaphore unit has no owner: its guard may be released from another thread.
    send_sync::<SemaphoreGuard<'static>>();
}

#[test]
fn errors_are_send_sync_errors() {
    error_type::<Error>();
    error_type::<LockError<()>>();
}
