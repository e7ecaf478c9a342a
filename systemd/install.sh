#!/usr/bin/env bash
# Install lineside as a systemd service from a source checkout. Idempotent: run it again
# after `git pull` to update the code and the unit; site files in /etc/lineside are kept.
#
#   sudo systemd/install.sh [--extras gpu,aravis] [--python python3.11] /path/to/checkout
#   systemd/install.sh --dry-run /path/to/checkout     # print the actions, change nothing
#
# What it does:
#   1. creates the system user and group `lineside` (no login, home = state directory);
#   2. creates /opt/lineside/.venv and pip-installs the checkout into it (not editable:
#      the service must not depend on the checkout staying where it is);
#   3. creates /etc/lineside (root:lineside 0750) and copies lineside.env and
#      configs/sim.toml (as lineside.toml) there unless they already exist;
#   4. installs the units (lineside.service, lineside-web.service) to /etc/systemd/system
#      (replaced on every run: local changes belong in `systemctl edit lineside`) and runs
#      `systemctl daemon-reload`.
# It never enables or starts the service: that is the operator's decision.
set -euo pipefail

readonly PREFIX=/opt/lineside
readonly VENV=${PREFIX}/.venv
readonly ETC_DIR=/etc/lineside
readonly UNIT_DIR=/etc/systemd/system
readonly SERVICE_USER=lineside
readonly STATE_DIR=/var/lib/lineside

dry_run=0
python=python3
extras=""
checkout=""

usage() {
    cat <<EOF
usage: $(basename "$0") [--dry-run] [--python PYTHON] [--extras LIST] CHECKOUT

  CHECKOUT        path to a lineside source checkout (holds pyproject.toml)
  --dry-run       print the actions instead of executing them (no root needed)
  --python PATH   interpreter (>= 3.11) used to create the venv (default: python3)
  --extras LIST   optional dependency groups to install, e.g. gpu,aravis
EOF
}

die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}

note() {
    printf '%s\n' "$*"
}

# Run a command, or in --dry-run print it (shell-quoted, so it can be pasted).
run() {
    if ((dry_run)); then
        printf '[dry-run]'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

while (($#)); do
    case $1 in
    --dry-run) dry_run=1 ;;
    --python)
        (($# >= 2)) || die "--python needs a value"
        python=$2
        shift
        ;;
    --extras)
        (($# >= 2)) || die "--extras needs a value"
        extras=$2
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *)
        [[ -z $checkout ]] || die "only one CHECKOUT may be given"
        checkout=$1
        ;;
    esac
    shift
done

# Refuse early, before touching or even inspecting anything else.
if ((EUID != 0)) && ! ((dry_run)); then
    die "must run as root (use --dry-run to see what it would do)"
fi

[[ -n $checkout ]] || {
    usage >&2
    exit 2
}
[[ -d $checkout ]] || die "checkout not found: $checkout"
checkout=$(cd "$checkout" && pwd -P)
for f in pyproject.toml systemd/lineside.service systemd/lineside-web.service systemd/lineside.env \
    configs/sim.toml; do
    [[ -f $checkout/$f ]] || die "not a lineside checkout, missing $f: $checkout"
done
if [[ -n $extras && ! $extras =~ ^[A-Za-z0-9_-]+(,[A-Za-z0-9_-]+)*$ ]]; then
    die "--extras must be a comma-separated list of names, got: $extras"
fi
command -v "$python" >/dev/null || die "python not found: $python"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$python is older than Python 3.11"

((dry_run)) && note "dry run: nothing will be changed"

# 1. service user ------------------------------------------------------------------------
if getent group "$SERVICE_USER" >/dev/null; then
    note "group $SERVICE_USER exists"
else
    run groupadd --system "$SERVICE_USER"
fi
if getent passwd "$SERVICE_USER" >/dev/null; then
    note "user $SERVICE_USER exists"
else
    run useradd --system --gid "$SERVICE_USER" --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "lineside inspection node" "$SERVICE_USER"
fi

# 2. code --------------------------------------------------------------------------------
# Owned by root and read-only to the service: the node cannot modify its own code.
run install -d -m 0755 -o root -g root "$PREFIX"
if [[ -x $VENV/bin/python ]]; then
    note "venv $VENV exists"
else
    run "$python" -m venv "$VENV"
fi
target=$checkout
[[ -z $extras ]] || target="$checkout[$extras]"
# --upgrade: a re-run after `git pull` replaces the installed copy.
run "$VENV/bin/pip" install --no-cache-dir --disable-pip-version-check --upgrade "$target"
if ! ((dry_run)); then
    [[ -x $VENV/bin/lineside ]] || die "pip did not install $VENV/bin/lineside"
fi

# 3. site configuration (never overwritten) ----------------------------------------------
run install -d -m 0750 -o root -g "$SERVICE_USER" "$ETC_DIR"
install_if_absent() { # SRC DEST
    if [[ -e $2 ]]; then
        note "kept existing $2"
    else
        run install -m 0640 -o root -g "$SERVICE_USER" "$1" "$2"
    fi
}
install_if_absent "$checkout/systemd/lineside.env" "$ETC_DIR/lineside.env"
install_if_absent "$checkout/configs/sim.toml" "$ETC_DIR/lineside.toml"

# 4. units -------------------------------------------------------------------------------
for unit in lineside.service lineside-web.service; do
    unit_src=$checkout/systemd/$unit
    unit_dst=$UNIT_DIR/$unit
    if [[ -f $unit_dst ]] && cmp -s "$unit_src" "$unit_dst"; then
        note "unit $unit_dst is up to date"
    else
        run install -m 0644 -o root -g root "$unit_src" "$unit_dst"
    fi
done
if [[ -d /run/systemd/system ]] || ((dry_run)); then
    run systemctl daemon-reload
else
    note "systemd is not running here: skipped 'systemctl daemon-reload'"
fi

if ((dry_run)); then
    headline="dry run complete; after a real run:"
else
    headline="lineside is installed. Next:"
fi
cat <<EOF

$headline
  edit   $ETC_DIR/lineside.toml (an example simulated line) and $ETC_DIR/lineside.env
  check  $VENV/bin/lineside --help
  enable systemctl enable --now lineside.service
         systemctl enable --now lineside-web.service   (the web view, [web] in the config)
  watch  systemctl status lineside; journalctl -u lineside -f
EOF
