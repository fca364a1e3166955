//! `ipc_shm`: work in progress, see the workspace README.
