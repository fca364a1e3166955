//! Auto traits of every public type, in one table.

use std::sync::atomic::AtomicU64;

fn send_sync<T: Send + Sync>() {}

#[test]
fn public_types_are_send_and_sync() {
    send_sync::<ipc_shm::SharedMemory>();
    send_sync::<ipc_shm::lowlevel::Segment>();
    send_sync::<ipc_shm::Value<u64>>();
    send_sync::<ipc_shm::Array<f64>>();
    send_sync::<ipc_shm::RawValue<u32>>();
    send_sync::<ipc_shm::RawArray<u8>>();
    send_sync::<ipc_shm::AtomicValue<AtomicU64>>();
    send_sync::<ipc_shm::lowlevel::sync::Futex>();
    send_sync::<ipc_shm::lowlevel::sync::RawLock>();
    send_sync::<ipc_shm::lowlevel::sync::Deadline>();
    send_sync::<ipc_shm::Error>();
    // Guards are neither: see the compile_fail doctests on `ValueGuard` and `ArrayGuard`.
}
