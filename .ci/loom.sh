#!/usr/bin/env bash
# Model-checks the lock-free cores with loom (threads stand in for processes; the futex is a
# mutex+condvar model, so a missed wake-up shows as a deadlock). Own target dir, release.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_LOOM:-target/loom}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
for crate in ipc-shm ipc-sem ipc-queue; do
    cargo test -p "$crate" --lib --release loom
done
