#!/usr/bin/env bash
# The README's run command: Kassa on the embedded default (SQLite under ./data, the in-process
# sandbox card channel, HTTP on 127.0.0.1:8080). Extra arguments go to `kassa serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --locked -p kassa -- serve "$@"
