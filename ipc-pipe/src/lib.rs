//! `ipc_pipe`: work in progress, see the workspace README.
