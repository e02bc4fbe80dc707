#!/usr/bin/env bash
# Build and install a free-threaded CPython 3.13 ("3.13t", --disable-gil).
#
# No prebuilt free-threaded binary is reachable from here, so the interpreter
# is built from the upstream tarball inside Debian trixie's `python3.13` source
# package, fetched with `apt-get source` through a private apt configuration:
# a temporary directory with its own sources list (one `deb-src <mirror> trixie
# main` line) and its own state and cache directories, so the system's apt
# state is left as it was. The mirror is read from this machine's own apt
# sources (/etc/apt/sources.list, /etc/apt/sources.list.d/*).
#
# Usage:
#     bash scripts/install-python313t.sh [PREFIX]
# PREFIX defaults to $PARABATCH_PY313T_PREFIX, else <repo>/.interpreters/python3.13t.
# PARABATCH_APT_ETC (default /etc/apt) is where the machine's apt sources are read.
#
# Idempotent: an existing, working free-threaded interpreter under PREFIX is
# kept; build dependencies already installed are not touched.
# Progress goes to stderr; the last (and only) line on stdout is the absolute
# path of the interpreter:
#     PY313T=$(bash scripts/install-python313t.sh)
# Exits non-zero with a message when something cannot be installed.
set -euo pipefail

SUITE=trixie
SRC_PACKAGE=python3.13
# Headers for the stdlib modules that matter here: ssl (pip), ctypes (ffi),
# zlib/bz2/lzma (archives, wheels), sqlite3 (coverage), readline/curses (REPL).
BUILD_DEPS=(build-essential pkg-config xz-utils ca-certificates
            libssl-dev zlib1g-dev libffi-dev libbz2-dev liblzma-dev
            libsqlite3-dev libreadline-dev libncurses-dev uuid-dev libexpat1-dev)
# Imported after the build; a failure here means a header was missing.
REQUIRED_MODULES="ssl _ctypes zlib bz2 lzma sqlite3 hashlib"

log() { printf 'install-python313t: %s\n' "$*" >&2; }
die() { printf 'install-python313t: ERROR: %s\n' "$*" >&2; exit 1; }

apt_etc=${PARABATCH_APT_ETC:-/etc/apt}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${1:-${PARABATCH_PY313T_PREFIX:-$repo_root/.interpreters/python3.13t}}
case "$prefix" in
    /*) ;;
    *) prefix="$(pwd)/$prefix" ;;
esac

# Echo the free-threaded interpreter under $prefix, if there is one that works.
find_interpreter() {
    local candidate
    for candidate in "$prefix/bin/python3.13t" "$prefix/bin/python3.13"; do
        if [ -x "$candidate" ] && "$candidate" -c '
import sys
assert sys.version_info[:2] == (3, 13), sys.version
assert not sys._is_gil_enabled(), "GIL is enabled"
' >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if interp=$(find_interpreter); then
    log "already installed: $interp (GIL disabled; skipping the build)"
    echo "$interp"
    exit 0
fi

# One build per prefix at a time (a session and its CI may share a machine).
mkdir -p "$(dirname "$prefix")"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$prefix.lock"
    flock 9
    if interp=$(find_interpreter); then
        log "built meanwhile by another run: $interp"
        echo "$interp"
        exit 0
    fi
fi

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    die "this script needs a Debian-based system (dpkg-query and apt-get)"
fi

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

t_total=$(date +%s)

# --- 1. build dependencies (installed by name: build-dep would need deb-src) --
missing=()
for pkg in "${BUILD_DEPS[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
    log "build dependencies already installed"
else
    log "installing build dependencies: ${missing[*]}"
    as_root apt-get update >&2 \
        || die "apt-get update failed; are the Debian package repositories reachable?"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
        || die "could not install build dependencies: ${missing[*]}"
fi

# --- 2. the mirror, from the machine's own apt sources ------------------------
# Prints "URI<TAB>SIGNED_BY" for every enabled deb/deb-src entry of the main
# Debian archive (a plain suite name with component main; not -security,
# -updates, -backports), in the order apt reads them.
list_archive_entries() {
    local f files=()
    [ -f "$apt_etc/sources.list" ] && files+=("$apt_etc/sources.list")
    for f in "$apt_etc"/sources.list.d/*.list "$apt_etc"/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ "${#files[@]}" -gt 0 ] || return 0
    for f in "${files[@]}"; do
        case "$f" in
            *.sources) awk -v OFS='\t' '
                function flush() {
                    if (uris != "" && enabled != "no" && types ~ /(^| )deb(-src)?( |$)/ \
                        && (" " comps " ") ~ / main / && suites_ok(suites)) {
                        n = split(uris, u, " ")
                        for (i = 1; i <= n; i++) print u[i], signed
                    }
                    uris = ""; suites = ""; comps = ""; types = ""; signed = ""; enabled = ""; key = ""
                }
                function suites_ok(s,   n, a, i) {
                    n = split(s, a, " ")
                    for (i = 1; i <= n; i++)
                        if (a[i] ~ /^[a-z]+$/) return 1
                    return 0
                }
                /^[ \t]*#/ { next }
                /^[ \t]*$/ { flush(); next }
                /^[ \t]/ { next }   # continuation line (e.g. an inline key)
                {
                    key = tolower($0); sub(/:.*/, "", key)
                    val = $0; sub(/^[^:]*:[ \t]*/, "", val); gsub(/[ \t]+/, " ", val)
                    if (key == "uris") uris = val
                    else if (key == "suites") suites = val
                    else if (key == "components") comps = val
                    else if (key == "types") types = val
                    else if (key == "enabled") enabled = tolower(val)
                    else if (key == "signed-by" && val ~ /^\//) signed = val
                }
                END { flush() }' "$f" ;;
            *) awk -v OFS='\t' '
                /^[ \t]*(#|$)/ { next }
                $1 == "deb" || $1 == "deb-src" {
                    line = $0; signed = ""
                    if (match(line, /\[[^]]*\]/)) {
                        opts = substr(line, RSTART + 1, RLENGTH - 2)
                        line = substr(line, 1, RSTART - 1) " " substr(line, RSTART + RLENGTH)
                        if (match(opts, /signed-by=[^ ]+/))
                            signed = substr(opts, RSTART + 10, RLENGTH - 10)
                    }
                    n = split(line, w, /[ \t]+/)
                    # w[1]=type w[2]=uri w[3]=suite w[4..]=components
                    if (w[3] !~ /^[a-z]+$/) next
                    for (i = 4; i <= n; i++) if (w[i] == "main") { print w[2], signed; next }
                }' "$f" ;;
        esac
    done
}

entry=$(list_archive_entries | head -n 1)
[ -n "$entry" ] || die "no Debian archive entry (deb <mirror> <suite> main) found in $apt_etc/sources.list or $apt_etc/sources.list.d/"
mirror=${entry%%$'\t'*}
signed_by=${entry#*$'\t'}
log "mirror taken from this machine's apt sources: $mirror"

# --- 3. the source package, through a private apt configuration --------------
work=$(mktemp -d "${TMPDIR:-/tmp}/python313t-build.XXXXXX")
if [ -n "${PARABATCH_KEEP_BUILD:-}" ]; then
    log "keeping the build directory: $work"
else
    trap 'rm -rf "$work"' EXIT
fi
aptdir="$work/apt"
mkdir -p "$aptdir/sources.list.d" "$aptdir/state/lists/partial" "$aptdir/cache/archives/partial"
if [ -n "$signed_by" ]; then
    echo "deb-src [signed-by=$signed_by] $mirror $SUITE main" > "$aptdir/sources.list"
else
    echo "deb-src $mirror $SUITE main" > "$aptdir/sources.list"
fi
apt_private=(apt-get
    -o "Dir::Etc::SourceList=$aptdir/sources.list"
    -o "Dir::Etc::SourceParts=$aptdir/sources.list.d"
    -o "Dir::State=$aptdir/state"
    -o "Dir::State::Lists=$aptdir/state/lists"
    -o "Dir::Cache=$aptdir/cache"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
    -o "APT::Sandbox::User=root")

t_fetch=$(date +%s)
log "fetching the $SUITE source index (private apt state in $aptdir)"
# --error-on=any: without it apt-get update exits 0 when the mirror cannot be reached.
"${apt_private[@]}" update --error-on=any >&2 \
    || die "could not fetch the '$SUITE' source index from $mirror (is the Debian mirror reachable?)"
mkdir -p "$work/src"
(cd "$work/src" && "${apt_private[@]}" source --download-only "$SRC_PACKAGE" >&2) \
    || die "apt-get source $SRC_PACKAGE ($SUITE) failed"
orig=$(find "$work/src" -maxdepth 1 \( -name "${SRC_PACKAGE}_*.orig.tar.xz" \
    -o -name "${SRC_PACKAGE}_*.orig.tar.gz" -o -name "${SRC_PACKAGE}_*.orig.tar.bz2" \) | head -n 1)
[ -n "$orig" ] || die "no upstream tarball (${SRC_PACKAGE}_*.orig.tar.*) in the source package"
log "source: $(basename "$orig") ($(( $(date +%s) - t_fetch )) s to fetch)"

# The .orig tarball is the pristine upstream CPython release; Debian's patches
# (install layout, multiarch) are for Debian's own packaging and are not applied.
tar -xf "$orig" -C "$work/src" || die "could not unpack $orig"
srcdir=$(find "$work/src" -maxdepth 1 -type d -name 'Python-3.13*' | head -n 1)
[ -n "$srcdir" ] || die "the tarball did not unpack to Python-3.13*"

# --- 4. configure, build, install -------------------------------------------
jobs=$(nproc 2>/dev/null || echo 2)
t_build=$(date +%s)
log "configuring $(basename "$srcdir") --disable-gil --prefix=$prefix"
(cd "$srcdir" && ./configure --disable-gil --disable-test-modules --prefix="$prefix" \
    > "$work/configure.log" 2>&1) \
    || { tail -n 30 "$work/configure.log" >&2; die "configure failed"; }
log "building with make -j$jobs"
(cd "$srcdir" && make -j"$jobs" > "$work/make.log" 2>&1) \
    || { tail -n 40 "$work/make.log" >&2; die "make failed"; }
# Modules that could not be built are listed in the make output.
grep -A3 -E 'necessary bits to build these optional modules|Failed to build these modules' \
    "$work/make.log" >&2 || true
mkdir -p "$prefix"
(cd "$srcdir" && make altinstall > "$work/install.log" 2>&1) \
    || { tail -n 30 "$work/install.log" >&2; die "make altinstall failed"; }
log "configure + make + altinstall took $(( $(date +%s) - t_build )) s"

# --- 5. verify ------------------------------------------------------------
interp=$(find_interpreter) \
    || die "no working free-threaded interpreter in $prefix/bin after the build"
"$interp" -c "
import importlib, sys
missing = []
for name in '$REQUIRED_MODULES'.split():
    try:
        importlib.import_module(name)
    except ImportError as exc:
        missing.append('%s (%s)' % (name, exc))
if missing:
    sys.exit('stdlib modules not built: ' + ', '.join(missing))
" || die "the interpreter lacks required stdlib modules (a -dev package missing?)"
"$interp" -m pip --version >&2 || die "pip does not run under $interp"

log "$("$interp" -c 'import sys; print(sys.version.replace(chr(10), " "), "| GIL enabled:", sys._is_gil_enabled())')"
log "total $(( $(date +%s) - t_total )) s"
echo "$interp"
