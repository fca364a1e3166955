#!/usr/bin/env bash
# Builds the workspace's own docs with warnings as errors (missing docs, broken links).
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --exclude benches
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --exclude benches --all-features
