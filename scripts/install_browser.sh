#!/usr/bin/env bash
# Installs what the browser tests need: Debian's chromium and chromium-driver (for Selenium).
# Does nothing when both are already installed. Needs root (or sudo) and apt-get.
# Exit status: 0 installed or already present, 1 could not install (the browser tests then skip
# with a message, or fail when CI=true).
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: apt-get not found; install chromium and chromedriver yourself" \
         "to run the browser tests." >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "install_browser.sh: need root (or password-less sudo) to apt-get install chromium" \
         "chromium-driver; the browser tests will skip." >&2
    exit 1
fi
echo "Installing chromium and chromium-driver for the browser tests (apt-get)..."
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
