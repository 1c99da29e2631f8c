# Shared by scripts/test and scripts/demo: installing what a fresh Debian
# machine lacks (only what is missing, so a second run starts fast), and timing.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Debian packages each script needs. `postgresql` brings initdb and postgres
# under /usr/lib/postgresql/<version>/bin; `mosquitto` the broker and
# mosquitto_passwd; `openssl` makes the certificates (examples/deploy/make-certs).
PACKAGES_TEST=(mosquitto postgresql socat prometheus-alertmanager openssl chromium)
PYTHON_REQUIREMENTS="$ROOT/testkit/python/requirements.txt"
PACKAGES_DEMO=(mosquitto postgresql prometheus-alertmanager openssl)
# The crates published on crates.io, in dependency order.
PUBLISHED=(shopfloor-schemas shopfloor-sparkplug shopfloor-bridge-modbus shopfloor-bridge-opcua shopfloor-ingest shopfloor-alerting)

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

# The project-local venv with the pinned Python peers (.venv). Rebuilt only
# when testkit/python/requirements.txt changes.
ensure_venv() {
    local venv="$ROOT/.venv" stamp want
    want=$(sha256sum "$PYTHON_REQUIREMENTS" | cut -d' ' -f1)
    stamp="$venv/.requirements.sha256"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
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
