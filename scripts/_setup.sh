# Sourced by scripts/demo and scripts/test: install what this checkout needs, idempotently.
# System (apt, only what is missing): every tool the gateway, its tests and its units run; Python: a venv
# in .venv with the project. A test never skips for a missing tool: it fails naming the package added here.
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
    { command -v gpg && command -v gpgconf; } >/dev/null 2>&1 || need+=(gnupg)
    command -v 7z >/dev/null 2>&1 || need+=(p7zip-full)
    # Info-ZIP, to show it cannot open the AES packages (tests/integration/test_crypto_zip.py)
    command -v unzip >/dev/null 2>&1 || need+=(unzip)
    # systemd-analyze, -sysusers and -tmpfiles check the units offline (tests/integration/test_systemd.py),
    # and `verify` wants every binary a unit runs: ExecReload=/bin/kill is procps's (not the shell's kill)
    command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
    [ -x /bin/kill ] || need+=(procps)
    # a real full disk: a 64 KiB tmpfs, when run as root (test_daemon.py, attacks/test_process_hardening.py)
    command -v mount >/dev/null 2>&1 || need+=(mount)
    # ssh-keygen makes the officers' SSH keys the register's parser is checked against (tests/unit/test_sshkey.py)
    command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
    # the access model's tests make test-only groups and run processes as other users (test_access_model.py)
    { command -v groupadd && command -v groupdel; } >/dev/null 2>&1 || need+=(passwd)
    command -v getent >/dev/null 2>&1 || need+=(libc-bin)
    command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
    # the access model's check prints setfacl fixes, and its tests set and read ACLs (test_access_model.py)
    command -v setfacl >/dev/null 2>&1 || need+=(acl)
    # officers reach their chroots through the system's own sshd; the tests start a real one on a free port
    # and drive it with the real sftp and ssh clients, which come with openssh-client above
    # (tests/integration/test_sshd_harness.py)
    [ -x /usr/sbin/sshd ] || need+=(openssh-server)
    # Debian and Ubuntu ship venv's ensurepip separately.
    python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
    if [ ${#need[@]} -gt 0 ]; then apt_install_quietly "${need[@]}"; fi
}

# What only the tests need beyond ensure_system: PostgreSQL's server binaries, for the throw-away clusters
# the tests make (tests/integration/pg_harness.py: installed without starting Debian's own cluster), and
# headless Chromium, which renders the quality scorecard's HTML once as a reader's browser would
# (tests/integration/test_quality.py). Debian calls it chromium, Ubuntu chromium-browser (a snap there;
# the test says it skipped if neither runs).
ensure_test_tools() {
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 ||
        apt_install_quietly postgresql
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 && return 0
    if apt-cache show chromium >/dev/null 2>&1; then apt_install_quietly chromium; else apt_install_quietly chromium-browser; fi
}

# apt_install_quietly PACKAGES: apt_install, but no package's maintainer script may start a service:
# installing openssh-server would otherwise start the system's sshd on port 22 (invoke-rc.d asks
# /usr/sbin/policy-rc.d, and exit 101 means "action forbidden"). An existing policy-rc.d is the admin's and
# is left alone; one made here is removed afterwards, even when the install fails.
apt_install_quietly() {
    local sudo="" policy=/usr/sbin/policy-rc.d
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if [ -e "$policy" ]; then
        apt_install "$@"
        return
    fi
    $sudo sh -c 'umask 022 && printf "#!/bin/sh\nexit 101\n" > "$1" && chmod 755 "$1"' sh "$policy"
    # a subshell, so the trap removes the file however apt_install ends and leaves the caller's traps be
    (
        trap '$sudo rm -f "$policy"' EXIT
        apt_install "$@"
    )
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
