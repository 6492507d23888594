#!/usr/bin/env bash
# The README's test command: everything needed to pass Kassa's tests on a fresh machine.
# The end-to-end tests build and start the real `kassa` binary (SQLite under a temp dir, the
# in-process sandbox) and talk HTTP to it. The dashboard test drives headless Chromium, and the
# RabbitMQ notifier tests use the broker on 127.0.0.1:5672; both are installed and started here
# if missing (Debian packages; scripts/install-test-deps.sh, scripts/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ./scripts/install-test-deps.sh; then
    # In CI a missing browser is a failure; on a laptop the browser test skips and says so.
    if [ "${CI:-}" = "true" ]; then exit 1; fi
    echo "test.sh: Chromium could not be installed; the dashboard browser test will skip" >&2
fi
if ! ./scripts/services.sh; then
    # In CI a missing service is a failure; on a laptop the service-backed tests skip and say so.
    if [ "${CI:-}" = "true" ]; then exit 1; fi
    echo "test.sh: a service could not be started; the tests that need it will skip" >&2
fi
cargo test --workspace --locked "$@"
