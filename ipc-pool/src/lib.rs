//! `ipc_pool`: work in progress, see the workspace README.
