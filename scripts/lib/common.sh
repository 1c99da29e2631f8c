# Shared by scripts/test and scripts/demo: installing what a fresh Debian
# machine lacks (only what is missing, so a second run starts fast), and timing.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Debian packages each script needs. `postgresql` brings initdb and postgres
# under /usr/lib/postgresql/<version>/bin; `mosquitto` the broker and
# mosquitto_passwd; `openssl` makes the certificates (examples/deploy/make-certs).
# `systemd` (systemd-analyze), `adduser` and `binutils` (strip, objdump):
# scripts/check-package builds, installs and verifies the Debian package.
# `nginx`: the live page is tested behind a real reverse proxy.
PACKAGES_TEST=(mosquitto postgresql socat prometheus-alertmanager openssl chromium influxdb clickhouse-server systemd adduser binutils nginx)
PYTHON_REQUIREMENTS="$ROOT/testkit/python/requirements.txt"
PACKAGES_DEMO=(mosquitto postgresql prometheus-alertmanager openssl)
# The crates published on crates.io, in dependency order.
PUBLISHED=(shopfloor-schemas shopfloor-sparkplug shopfloor-mapping shopfloor-mqtt shopfloor-bridge-modbus shopfloor-bridge-opcua shopfloor-ingest shopfloor-alerting shopfloor-testkit shopfloor-examples)

missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
    done
}

ensure_packages() {
    local missing
    missing=$(missing_packages "$@" | tr '\n' ' ')
    [ -z "${missing// /}" ] && return 0
    command -v apt-get >/dev/null || die "missing packages: $missing (and no apt-get to install them)"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "missing packages: $missing; run as root or: sudo apt-get install -y $missing"
        sudo="sudo"
    fi
    say "installing $missing(apt-get)"
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# Whether what was installed from a lock file is still current: PROBE (a
# file or folder the install makes) exists and STAMP holds WANT, the hash
# of the lock file it was installed from.
stamp_current() { [ -e "$3" ] && [ "$(cat "$1" 2>/dev/null)" = "$2" ]; }

# The project-local venv with the pinned Python peers (.venv). Rebuilt only
# when testkit/python/requirements.txt changes.
ensure_venv() {
    local venv="$ROOT/.venv" stamp="$ROOT/.venv/.requirements.sha256" want
    want=$(sha256 "$PYTHON_REQUIREMENTS")
    stamp_current "$stamp" "$want" "$venv/bin/python" && return 0
    command -v python3 >/dev/null || die "python3 not found: apt-get install -y python3"
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        ensure_packages python3-venv
    fi
    say "creating .venv with the pinned test peers ($PYTHON_REQUIREMENTS)"
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv failed"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$PYTHON_REQUIREMENTS" || die "pip install of the test peers failed"
    echo "$want" > "$stamp"
}

# The Node.js peers (Eclipse Tahu's JavaScript Sparkplug codec) in .node/,
# from testkit/node's lock file. Rebuilt only when the lock file changes.
ensure_node_peers() {
    local dir="$ROOT/.node" stamp="$ROOT/.node/.lock.sha256" want
    want=$(sha256 "$ROOT/testkit/node/package-lock.json")
    stamp_current "$stamp" "$want" "$dir/node_modules/sparkplug-payload" && return 0
    command -v npm >/dev/null || die "npm not found: apt-get install -y nodejs npm"
    say "installing the Node.js test peers into .node (npm ci)"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$ROOT/testkit/node/package.json" "$ROOT/testkit/node/package-lock.json" "$dir/"
    npm ci --prefix "$dir" --silent --no-audit --no-fund || die "npm ci of the Node.js test peers failed"
    echo "$want" > "$stamp"
}

# The PostgreSQL major the tests use: the highest /usr/lib/postgresql/*/bin
# with initdb and postgres (as testkit picks it), else pg_config's.
pg_major() {
    local initdb
    initdb=$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | while read -r f; do
        [ -x "$f" ] && [ -x "${f%/initdb}/postgres" ] && echo "$f"
    done | tail -n 1)
    if [ -n "$initdb" ]; then
        basename "$(dirname "$(dirname "$initdb")")"
    elif command -v pg_config >/dev/null; then
        pg_config --version | sed -nE 's/^PostgreSQL ([0-9]+).*/\1/p'
    fi
}

# TimescaleDB for the PostgreSQL the tests use. Installed already: returns
# at once. Else built from the source release that SHOPFLOOR_TIMESCALEDB_SRC
# names (a tarball, or an unpacked folder; built in a temporary copy, never
# in place), with SHOPFLOOR_BUILD_JOBS make jobs (default: nproc). Else a
# loud warning: the TimescaleDB tests will fail, everything else runs.
ensure_timescaledb() {
    local major src="${SHOPFLOOR_TIMESCALEDB_SRC:-}"
    major=$(pg_major)
    if [ -z "$major" ]; then
        say "no PostgreSQL found under /usr/lib/postgresql: not installing TimescaleDB"
        return 0
    fi
    local control="/usr/share/postgresql/$major/extension/timescaledb.control"
    local lib="/usr/lib/postgresql/$major/lib/timescaledb.so"
    [ -f "$control" ] && [ -f "$lib" ] && return 0

    if [ -z "$src" ] || { [ ! -f "$src" ] && [ ! -f "$src/bootstrap" ]; }; then
        {
            printf '\n\033[1;31m'
            printf '!!! TimescaleDB is NOT installed for PostgreSQL %s (no %s).\n' "$major" "$lib"
            printf '!!! The TimescaleDB tests will FAIL; everything else runs.\n'
            if [ -n "$src" ]; then
                printf '!!! SHOPFLOOR_TIMESCALEDB_SRC=%s is neither a tarball nor a source folder.\n' "$src"
            fi
            printf '!!! To fix it, either:\n'
            printf '!!!   - point SHOPFLOOR_TIMESCALEDB_SRC at its source release and rerun, e.g.\n'
            printf '!!!       SHOPFLOOR_TIMESCALEDB_SRC=/path/to/timescaledb-2.28.3.tar.gz scripts/test\n'
            printf '!!!     (TimescaleDB 2.28.x is the last line supporting PostgreSQL 15), or\n'
            printf "!!!   - install the package timescaledb-2-postgresql-%s from Timescale's apt repository.\n" "$major"
            printf '\033[0m\n'
        } >&2
        return 0
    fi

    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "installing TimescaleDB needs root: run as root or with sudo"
        sudo="sudo"
    fi
    # gcc, make and libc6-dev: PostgreSQL's extension build (pg_config --cc).
    ensure_packages cmake "postgresql-server-dev-$major" libkrb5-dev gcc make libc6-dev || return 1

    local tmp log jobs="${SHOPFLOOR_BUILD_JOBS:-$(nproc)}"
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/shopfloor-timescaledb.XXXXXX") || return 1
    log=$(mktemp "${TMPDIR:-/tmp}/shopfloor-timescaledb-build.XXXXXX.log") || { rm -rf "$tmp"; return 1; }
    say "building TimescaleDB from $src, about 80 s (log: $log)"
    local rc=0
    (
        set -e
        if [ -f "$src" ]; then
            tar -xf "$src" -C "$tmp"
        else
            cp -a "$src/." "$tmp/"
        fi
        # The release tarball has no top folder; a git archive may have one.
        cd "$tmp"
        if [ ! -f bootstrap ]; then
            cd "$(dirname "$(find . -mindepth 2 -maxdepth 2 -name bootstrap -print -quit)")"
        fi
        BUILD_FORCE_REMOVE=true ./bootstrap -DPG_CONFIG="/usr/lib/postgresql/$major/bin/pg_config" \
            -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DLINTER=OFF </dev/null
        make -C build -j"$jobs"
        $sudo make -C build install
    ) >"$log" 2>&1 || rc=$?
    rm -rf "$tmp" 2>/dev/null || $sudo rm -rf "$tmp"
    if [ $rc -ne 0 ]; then
        printf 'error: building TimescaleDB from %s failed; the build log: %s\n' "$src" "$log" >&2
        return 1
    fi
    if [ ! -f "$control" ] || [ ! -f "$lib" ]; then
        printf 'error: TimescaleDB built, but %s or %s is missing; the build log: %s\n' "$control" "$lib" "$log" >&2
        return 1
    fi
    rm -f "$log"
}

ensure_rust() {
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs), version 1.95 or newer"
    cargo fmt --version >/dev/null 2>&1 || die "rustfmt missing: rustup component add rustfmt"
    cargo clippy --version >/dev/null 2>&1 || die "clippy missing: rustup component add clippy"
}

# step NAME COMMAND...: runs a command, records how long it took.
STEP_NAMES=()
STEP_TIMES=()
step() {
    local name=$1; shift
    say "$name: $*"
    local t0 t1
    t0=$(date +%s.%N)
    "$@"
    local rc=$?
    t1=$(date +%s.%N)
    STEP_NAMES+=("$name")
    STEP_TIMES+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')")
    return $rc
}

print_times() {
    local i total=0
    printf '\nwhere the time went:\n' >&2
    for i in "${!STEP_NAMES[@]}"; do
        printf '  %-28s %8s s\n' "${STEP_NAMES[$i]}" "${STEP_TIMES[$i]}" >&2
        total=$(awk -v a="$total" -v b="${STEP_TIMES[$i]}" 'BEGIN { printf "%.1f", a + b }')
    done
    printf '  %-28s %8s s\n' "total" "$total" >&2
}

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_port PORT SECONDS: until something listens on 127.0.0.1:PORT.
wait_for_port() {
    local port=$1 deadline=$((SECONDS + $2))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        [ $SECONDS -lt "$deadline" ] || return 1
        sleep 0.05
    done
}
