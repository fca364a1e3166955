//! `ipc_sem`: work in progress, see the workspace README.
