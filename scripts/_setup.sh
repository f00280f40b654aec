# Sourced by scripts/demo and scripts/test: install what this checkout needs, idempotently.
# System: gnupg, p7zip-full and systemd (apt, only when missing); Python: a venv in .venv with the project.
set -euo pipefail

python_ok() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

apt_install() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing system packages: $*" >&2
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_system() {
    local need=()
    command -v gpg >/dev/null 2>&1 || need+=(gnupg)
    command -v 7z >/dev/null 2>&1 || need+=(p7zip-full)
    # systemd-analyze, -sysusers and -tmpfiles check the units offline (tests/integration/test_systemd.py).
    command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
    # Debian and Ubuntu ship venv's ensurepip separately.
    python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
    if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi
}

# ensure_venv EXTRAS: create .venv and install the project with EXTRAS when pyproject.toml changed.
ensure_venv() {
    local extras="$1" stamp
    python_ok python3 || { echo "iom-gateway needs Python 3.11 or newer as python3" >&2; exit 2; }
    [ -x .venv/bin/python ] || python3 -m venv .venv
    stamp="$(sha256sum pyproject.toml | cut -c1-16)-$extras"
    if [ "$(cat .venv/.iom-installed 2>/dev/null)" != "$stamp" ]; then
        .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
        .venv/bin/python -m pip install --quiet -e ".[$extras]"
        echo "$stamp" > .venv/.iom-installed
    fi
}
