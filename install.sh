#!/usr/bin/env bash
# Installs edge-alarm on Raspberry Pi OS Bookworm, or a development venv on any
# Debian/Ubuntu machine. Safe to run again: a re-run upgrades, and never touches an
# existing config or token. `./install.sh --help` lists the modes.
set -euo pipefail
# The venv and the files are read by the service user: no root-only umask here.
umask 022

readonly APP=edge-alarm
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SRC
PYTHON_FROM_ENV=${PYTHON:-}
PYTHON=${PYTHON:-python3}
# Groups whose devices the daemon opens: GPIO, the modem's tty, the camera.
readonly DEVICE_GROUPS=(gpio dialout video)
# From Raspberry Pi OS: picamera2 and lgpio are built against its libcamera and
# kernel, so the venv sees them through --system-site-packages instead of pip; so is
# cryptography (the SIA link's AES), which pip would have to build with Rust on 32-bit Pis.
readonly PI_APT_PACKAGES=(python3-venv python3-picamera2 python3-lgpio python3-cryptography)

usage() {
    cat <<EOF
Usage: ./install.sh [MODE] [--root DIR]

Modes:
  (none)        install or upgrade the daemon (as root, on the Pi): apt packages, the
                system user $APP, a venv in /opt/$APP/venv, the config template
                and an empty token in /etc/$APP (both kept if present), the systemd
                units ($APP; $APP-web, the guard-room page, never enabled here)
                and the udev rule for the modem; then runs \`$APP check\`, and
                enables and (re)starts $APP only when check accepts the config: never
                on the template's placeholders, which are to be edited first.
  --dev         a development venv in .venv of this checkout: the package editable,
                with the test extras; installs with apt only what is missing
                (python3-venv, libgammu-dev, pkg-config, gcc, python3-dev).
  --uninstall   stop and remove the units, the udev rule and /opt/$APP; keeps
                /etc/$APP (config, token) and /var/lib/$APP (events, snapshots).
  --purge       as --uninstall, and also removes /etc/$APP, /var/lib/$APP
                and the user $APP.
  --help        this text.

Options:
  --root DIR    lay the install out under DIR instead of / (packaging, tests): no apt,
                no user, no ownership changes, no udevadm; the unit is enabled offline
                (systemctl --root) when check accepts the config.

Environment:
  PYTHON        the Python that creates the venvs (default: /usr/bin/python3 for the
                daemon, whose venv must see apt's picamera2 and lgpio; python3 otherwise).
EOF
}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

# --- Command line -------------------------------------------------------------

MODE=install
ROOT=""
while (($#)); do
    case $1 in
        --dev) MODE=dev ;;
        --uninstall) MODE=uninstall ;;
        --purge) MODE=purge ;;
        --root)
            (($# >= 2)) || die "--root needs a directory"
            ROOT=$2
            shift
            ;;
        --root=*) ROOT=${1#--root=} ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

if [[ -n $ROOT ]]; then
    [[ $MODE != dev ]] || die "--dev works on the checkout; it takes no --root"
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
    [[ $ROOT != / ]] || ROOT=""
fi
readonly MODE ROOT

# Paths on the target system; ROOT prefixes them for a staged install.
readonly OPT_DIR=/opt/$APP
readonly VENV=$OPT_DIR/venv
readonly ETC_DIR=/etc/$APP
readonly DATA_DIR=/var/lib/$APP
readonly UNIT=/etc/systemd/system/$APP.service
readonly WEB_UNIT=/etc/systemd/system/$APP-web.service
readonly UDEV_RULE=/etc/udev/rules.d/99-$APP-modem.rules
readonly BIN_LINK=/usr/local/bin/$APP

staged() { [[ -n $ROOT ]]; }

# True when this is the live system and systemd runs it (not a container or chroot).
have_systemd() { ! staged && [[ -d /run/systemd/system ]]; }

# --- Packages -------------------------------------------------------------------

APT_UPDATED=0

as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root for: $* (run as root, or install sudo)"
    fi
}

apt_install() {
    (($#)) || return 0
    command -v apt-get >/dev/null || die "apt-get not found; install by hand: $*"
    if ((APT_UPDATED == 0)); then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@"
}

deb_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# Whether apt knows a package (python3-picamera2 exists only in Raspberry Pi OS).
deb_known() {
    [[ -n $(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ && $2 != "(none)"') ]]
}

python_can_make_venv() { "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; }

python_has_headers() {
    "$PYTHON" -c 'import os, sysconfig
raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        2>/dev/null
}

# --- Files ----------------------------------------------------------------------

# install(1) a file from the checkout: MODE DEST [GROUP]. GROUP is applied only on
# the live system, where the user exists.
put_file() {
    local src=$1 mode=$2 dest=$3 group=${4:-root}
    if staged; then
        install -D -m "$mode" "$src" "$ROOT$dest"
    else
        install -D -m "$mode" -o root -g "$group" "$src" "$dest"
    fi
}

# Creates a file from SRC only when DEST does not exist yet: the admin's edits win.
keep_or_create() {
    local src=$1 dest=$2
    if [[ -e $ROOT$dest ]]; then
        say "kept $dest"
    else
        put_file "$src" 0640 "$dest" "$APP"
        say "created $dest"
    fi
}

make_dir() {
    local mode=$1 dir=$2 owner=${3:-root} group=${4:-root}
    if staged; then
        install -d -m "$mode" "$ROOT$dir"
    else
        install -d -m "$mode" -o "$owner" -g "$group" "$dir"
    fi
}

# A venv whose interpreter no longer runs (Python upgraded by the OS) is rebuilt.
ensure_venv() {
    local venv=$1
    shift
    if [[ -x $venv/bin/python ]] && "$venv/bin/python" -c '' 2>/dev/null; then
        say "reusing venv $venv"
    else
        rm -rf "$venv"
        say "creating venv $venv"
        "$PYTHON" -m venv "$@" "$venv"
    fi
}

pip_in() {
    local venv=$1
    shift
    PIP_NO_INPUT=1 "$venv/bin/python" -m pip --disable-pip-version-check -q "$@"
}

BUILD_DIR=""
cleanup() { if [[ -n $BUILD_DIR ]]; then rm -rf "$BUILD_DIR"; fi; }
trap cleanup EXIT

# A copy of the checkout to build from: setuptools writes build/ and *.egg-info next to
# the sources, which would leave root-owned files in the user's checkout.
source_copy() {
    BUILD_DIR=$(mktemp -d)
    tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./build \
        --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -C "$BUILD_DIR" -xf -
}

# --- Modes ----------------------------------------------------------------------

install_dev() {
    local missing=()
    python_can_make_venv || missing+=(python3-venv)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    # python-gammu compiles against libgammu.
    if ! pkg-config --exists gammu 2>/dev/null; then
        deb_installed libgammu-dev || missing+=(libgammu-dev)
    fi
    command -v cc >/dev/null || missing+=(gcc)
    python_has_headers || missing+=(python3-dev)
    apt_install "${missing[@]}"
    python_can_make_venv || die "$PYTHON cannot create a venv (ensurepip missing)"

    ensure_venv "$SRC/.venv"
    say "pip install -e '.[test]'"
    pip_in "$SRC/.venv" install -e "${SRC}[test]"
    say "done: run the tests with .venv/bin/pytest"
}

ensure_user() {
    local group groups=()
    for group in "${DEVICE_GROUPS[@]}"; do
        if ! getent group "$group" >/dev/null; then
            # The unit's SupplementaryGroups= fails the start when a group is missing.
            # Raspberry Pi OS has all three; elsewhere the group owns no device yet.
            warn "group $group does not exist on this machine; creating it (empty)"
            groupadd --system "$group"
        fi
        groups+=("$group")
    done
    if id -u "$APP" >/dev/null 2>&1; then
        say "user $APP exists"
    else
        say "creating system user $APP"
        local group_opt=--user-group
        # A group left over from an earlier install (it had other members) is reused.
        if getent group "$APP" >/dev/null; then group_opt=--gid=$APP; fi
        useradd --system "$group_opt" --home-dir "$DATA_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "edge-alarm daemon" "$APP"
    fi
    usermod --append --groups "$(IFS=,; echo "${groups[*]}")" "$APP"
    # The admin who ran sudo may read the config and use the control socket.
    if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]] && ! id -nG "$SUDO_USER" | grep -qw "$APP"; then
        usermod --append --groups "$APP" "$SUDO_USER"
        say "added $SUDO_USER to the group $APP (takes effect at the next login)"
    fi
}

install_system() {
    if staged; then
        say "staged install into $ROOT: skipping apt, the user $APP, ownership, systemctl and udevadm"
    else
        ((EUID == 0)) || die "run as root: sudo ./install.sh (or --dev, or --root DIR)"
        local wanted=() pkg
        for pkg in "${PI_APT_PACKAGES[@]}"; do
            if deb_installed "$pkg"; then
                continue
            elif [[ $pkg == python3-venv ]] || deb_known "$pkg"; then
                wanted+=("$pkg")
            else
                warn "$pkg is not in this machine's apt sources (not Raspberry Pi OS?); skipped"
            fi
        done
        apt_install "${wanted[@]}"
        # apt's picamera2 and lgpio are visible only to the system Python's venvs.
        if [[ -z $PYTHON_FROM_ENV && -x /usr/bin/python3 ]]; then PYTHON=/usr/bin/python3; fi
        python_can_make_venv || die "$PYTHON cannot create a venv (install python3-venv)"
        ensure_user
    fi

    make_dir 0755 "$OPT_DIR"
    make_dir 0750 "$ETC_DIR" root "$APP"
    make_dir 0750 "$DATA_DIR" "$APP" "$APP"

    ensure_venv "$ROOT$VENV" --system-site-packages
    say "pip install $SRC -> $ROOT$VENV"
    source_copy
    # pip always reinstalls from a directory, so a re-run upgrades even when the version
    # number is unchanged; dependencies are fetched only when missing.
    pip_in "$ROOT$VENV" install "$BUILD_DIR"
    mkdir -p "$ROOT$(dirname "$BIN_LINK")"
    ln -sfn "$VENV/bin/$APP" "$ROOT$BIN_LINK"

    keep_or_create "$SRC/edge/config.example.toml" "$ETC_DIR/config.toml"
    keep_or_create /dev/null "$ETC_DIR/token"

    put_file "$SRC/systemd/$APP.service" 0644 "$UNIT"
    # The guard-room page: installed, never enabled here (it needs [web] set first).
    put_file "$SRC/systemd/$APP-web.service" 0644 "$WEB_UNIT"
    put_file "$SRC/systemd/99-$APP-modem.rules" 0644 "$UDEV_RULE"
    say "installed $UNIT, $WEB_UNIT (not enabled) and $UDEV_RULE"

    if have_systemd; then
        # Applies the modem rule to a modem that is already plugged in.
        if ! { udevadm control --reload && udevadm trigger --subsystem-match=tty --action=change; }; then
            warn "udevadm failed: replug the modem to get /dev/$APP-modem"
        fi
        systemctl daemon-reload
        # A page already running (enabled by the admin) runs the new version.
        systemctl try-restart "$APP-web.service" || warn "$APP-web did not restart"
    fi
    if ! config_accepted; then
        # The template's placeholders (school, device id, phone, platform) are refused:
        # an alarm daemon started on them would text a stranger, so it is not enabled.
        say "$APP is NOT enabled: check refuses $ETC_DIR/config.toml (lines above). Next:"
        say "  1. edit $ETC_DIR/config.toml, and put the platform's token in $ETC_DIR/token"
        say "  2. check them:         sudo -u $APP $APP check"
        say "  3. enable and start:   sudo systemctl enable --now $APP"
        if [[ -L $ROOT/etc/systemd/system/multi-user.target.wants/$APP.service ]]; then
            # An upgrade: the unit stays enabled, and its next start (a restart, a reboot)
            # would refuse this config and leave the alarm off. A fleet script must see it.
            warn "$APP.service is enabled and refuses this config at its next start (a restart,"
            warn "a reboot): the alarm would be off. Fix $ETC_DIR/config.toml now."
            return 1
        fi
        return 0
    fi
    if staged; then
        enable_offline
        return 0
    fi
    if ! have_systemd; then
        warn "systemd is not running here: enable and start $APP.service by hand"
        return 0
    fi
    systemctl enable "$APP.service"
    say "systemctl restart $APP"
    if systemctl restart "$APP.service"; then
        say "$APP is running: $APP status"
    else
        warn "$APP did not start; see: journalctl -u $APP -n 50"
        warn "edit $ETC_DIR/config.toml and $ETC_DIR/token, run"
        warn "  sudo -u $APP $APP check"
        warn "then: sudo systemctl restart $APP"
    fi
}

# Whether `edge-alarm check` accepts the installed config: exit 78 is a refused config
# (the template, until edited). A faulty part (a modem not plugged in yet) is no reason
# to leave the alarm off: the daemon reports it as a fault.
config_accepted() {
    local status=0
    say "$APP check"
    if staged; then
        "$ROOT$VENV/bin/$APP" check -c "$ROOT$ETC_DIR/config.toml" || status=$?
    else
        runuser -u "$APP" -- "$VENV/bin/$APP" check -c "$ETC_DIR/config.toml" || status=$?
    fi
    ((status != 78))
}

# A staged root is enabled as an image build would do it: symlinks, no running systemd.
enable_offline() {
    if command -v systemctl >/dev/null; then
        systemctl --root="$ROOT" --quiet enable "$APP.service"
        say "enabled $APP in $ROOT"
    else
        warn "systemctl not found: enable $APP.service in $ROOT by hand"
    fi
}

uninstall_system() {
    local purge=$1
    if staged; then
        say "staged uninstall from $ROOT"
    else
        ((EUID == 0)) || die "run as root: sudo ./install.sh --uninstall"
        if have_systemd && [[ -e $UNIT ]]; then
            say "stopping and disabling $APP"
            systemctl disable --now "$APP.service" || warn "could not stop $APP.service"
        fi
        if have_systemd && [[ -e $WEB_UNIT ]]; then
            systemctl disable --now "$APP-web.service" || warn "could not stop $APP-web.service"
        fi
    fi
    rm -f "$ROOT$UNIT" "$ROOT$WEB_UNIT" "$ROOT$UDEV_RULE"
    if [[ -L $ROOT$BIN_LINK ]]; then
        rm -f "$ROOT$BIN_LINK"
    fi
    rm -rf "$ROOT$OPT_DIR"
    say "removed the unit, the udev rule and $OPT_DIR"
    if have_systemd; then
        systemctl daemon-reload
        udevadm control --reload || warn "udevadm failed; the old modem rule lasts until reboot"
    fi

    if ((purge)); then
        rm -rf "$ROOT$ETC_DIR" "$ROOT$DATA_DIR"
        say "removed $ETC_DIR and $DATA_DIR"
        if ! staged && id -u "$APP" >/dev/null 2>&1; then
            userdel "$APP"
            say "removed the user $APP"
        fi
        # userdel keeps the group while other users (the admin) are in it.
        if ! staged && getent group "$APP" >/dev/null; then
            groupdel "$APP"
            say "removed the group $APP"
        fi
    else
        say "kept $ETC_DIR and $DATA_DIR (--purge removes them)"
    fi
}

case $MODE in
    install) install_system ;;
    dev) install_dev ;;
    uninstall) uninstall_system 0 ;;
    purge) uninstall_system 1 ;;
esac
