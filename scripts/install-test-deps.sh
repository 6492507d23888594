#!/usr/bin/env bash
# What Kassa's tests need beyond a Rust toolchain, on Debian/Ubuntu: headless Chromium and
# chromedriver for the dashboard's browser test (tests/dashboard.rs).
#
# Idempotent and quiet when everything is there already; `apt-get update` runs at most once.
# Runs as root, or through sudo when it is available.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

missing=()
[ -x "$CHROMIUM" ] || missing+=(chromium)
[ -x "$CHROMEDRIVER" ] || missing+=(chromium-driver)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: need ${missing[*]} (for $CHROMIUM and $CHROMEDRIVER) but this is" \
        "not a Debian-like system (no apt-get); install them by hand" >&2
    exit 1
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "install-test-deps: need root (or sudo) to install ${missing[*]}" >&2
        exit 1
    fi
fi

echo "install-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

for binary in "$CHROMIUM" "$CHROMEDRIVER"; do
    if [ ! -x "$binary" ]; then
        echo "install-test-deps: installed ${missing[*]} but $binary is still missing" >&2
        exit 1
    fi
done
echo "install-test-deps: $("$CHROMEDRIVER" --version 2>/dev/null | head -n 1)"
