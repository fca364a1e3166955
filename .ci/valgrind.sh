#!/usr/bin/env bash
# Runs each mechanism crate's single-process unit tests (the unsafe cores: mappings, futex,
# raw lock, ring, frame codec, pool task trampolines) under valgrind memcheck. Skipped with a message when valgrind
# is not installed. Cross-process integration tests are not run here (they fork).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1; then
    echo "valgrind or python3 not installed: skipped"; exit 0
fi
for crate in ipc-shm ipc-sem ipc-pipe ipc-queue ipc-pool; do
    name=${crate//-/_}
    bin=$(cargo test -p "$crate" --lib --no-run --message-format=json 2>/dev/null | python3 -c "
import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get('reason') == 'compiler-artifact' and m.get('executable') and m['target']['name'] == '$name':
        print(m['executable'])")
    [ -n "$bin" ] || { echo "no test binary for $crate"; exit 1; }
    echo "-- valgrind $crate"
    PROPTEST_CASES=32 valgrind --error-exitcode=1 --leak-check=no -q "$bin" --test-threads=1 -q
done
