#!/usr/bin/env bash
# The README's test command: everything needed to pass Kassa's tests on a fresh machine.
# Embedded mode needs no services: the end-to-end tests build and start the real `kassa`
# binary (SQLite under a temp dir, the in-process sandbox) and talk HTTP to it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
