#!/usr/bin/env bash
# Install PyPy 3 (Python 3.9 language level) from Debian's packages `pypy3`
# and `pypy3-venv`, and check that it can create a virtual environment with pip.
#
# Idempotent: packages already installed are not touched.
# Progress goes to stderr; the last (and only) line on stdout is the absolute
# path of the interpreter, so callers can do:
#     PYPY=$(bash scripts/install-pypy.sh)
# Exits non-zero with a message when PyPy cannot be installed or does not work.
set -euo pipefail

PACKAGES=(pypy3 pypy3-venv)

log() { printf 'install-pypy: %s\n' "$*" >&2; }
die() { printf 'install-pypy: ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    die "this script needs a Debian-based system (dpkg-query and apt-get)"
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
    log "already installed: ${PACKAGES[*]} (skipping apt-get)"
else
    log "installing: ${missing[*]}"
    start=$(date +%s)
    as_root apt-get update >&2 \
        || die "apt-get update failed; are the Debian package repositories reachable?"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
    log "apt-get install took $(( $(date +%s) - start )) s"
fi

pypy=$(command -v pypy3 || true)
[ -n "$pypy" ] || die "pypy3 is not on PATH after installing ${PACKAGES[*]}"
case "$pypy" in
    /*) ;;
    *) pypy="$(cd "$(dirname "$pypy")" && pwd)/$(basename "$pypy")" ;;
esac

"$pypy" -c 'import sys; assert sys.implementation.name == "pypy", sys.implementation' \
    || die "$pypy is not a PyPy interpreter"

# The venv check catches a missing pypy3-venv (ensurepip) before tox does.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$pypy" -m venv "$tmp/venv" >&2 \
    || die "'$pypy -m venv' failed (is pypy3-venv installed?)"
"$tmp/venv/bin/python" -m pip --version >&2 \
    || die "pip does not run inside a PyPy virtual environment"

log "$("$pypy" -c 'import sys, platform; print("PyPy", sys.pypy_version_info[:3], "Python", platform.python_version())')"
echo "$pypy"
