//! Auto traits of every public type, stated in one table.

use ipc_pipe::frame::{Decoder, Frame, FrameError, Header};
use ipc_pipe::{
    AcceptTimeoutError, Address, Client, Connection, Error, Incoming, Listener, Receiver,
    RecvTimeoutError, SendTimeoutError, Sender, TryAcceptError, TryRecvError, TrySendError,
};

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
    send_sync::<Incoming<'static>>();
    send_sync::<TryRecvError>();
    send_sync::<RecvTimeoutError>();
    send_sync::<TrySendError>();
    send_sync::<SendTimeoutError>();
    send_sync::<TryAcceptError>();
    send_sync::<AcceptTimeoutError>();
    #[cfg(feature = "serde")]
    send_sync::<ipc_pipe::CodecError>();
}

#[test]
fn error_is_std_error() {
    fn is_error<E: std::error::Error + Send + Sync + 'static>() {}
    is_error::<Error>();
    is_error::<FrameError>();
    is_error::<TryRecvError>();
    is_error::<RecvTimeoutError>();
    is_error::<TrySendError>();
    is_error::<SendTimeoutError>();
    is_error::<TryAcceptError>();
    is_error::<AcceptTimeoutError>();
}
