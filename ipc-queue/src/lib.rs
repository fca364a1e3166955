//! `ipc_queue`: work in progress, see the workspace README.
