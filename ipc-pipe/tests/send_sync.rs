//! Auto traits of every public type, stated in one table.

use ipc_pipe::frame::{Decoder, Frame, FrameError, Header};
use ipc_pipe::{Address, Client, Connection, Error, Listener, Receiver, Sender};

fn send_sync<T: Send + Sync>() {}

#[test]
fn public_types_are_send_and_sync() {
    send_sync::<Connection>();
    send_sync::<Receiver>();
    send_sync::<Sender>();
    send_sync::<Listener>();
    send_sync::<Client>();
    send_sync::<Address>();
    send_sync::<Error>();
    send_sync::<Decoder>();
    send_sync::<Frame>();
    send_sync::<FrameError>();
    send_sync::<Header>();
}

#[test]
fn error_is_std_error() {
    fn is_error<E: std::error::Error + Send + Sync + 'static>() {}
    is_error::<Error>();
    is_error::<FrameError>();
}
