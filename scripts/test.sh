#!/usr/bin/env bash
# The README's test command: everything needed to pass Kassa's tests on a fresh machine.
# Embedded mode needs no services: the end-to-end tests build and start the real `kassa`
# binary (SQLite under a temp dir, the in-process sandbox) and talk HTTP to it. The dashboard
# test drives headless Chromium, installed here if missing (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ./scripts/install-test-deps.sh; then
    # In CI a missing browser is a failure; on a laptop the browser test skips and says so.
    if [ "${CI:-}" = "true" ]; then exit 1; fi
    echo "test.sh: Chromium could not be installed; the dashboard browser test will skip" >&2
fi
cargo test --workspace --locked "$@"
