#!/bin/sh
# Install the Debian packages that `make demo` and `make test` need (lintian: the
# installer's tests check the .deb with it), and
# nothing when they are all present. Uses sudo when not root.
set -eu

PACKAGES="
python3-venv
qemu-system-x86
qemu-utils
mmdebstrap
cpio
kmod
e2fsprogs
zstd
openssh-client
systemd-journal-remote
mosquitto
rsyslog
rsyslog-gnutls
shellcheck
nftables
lintian
"

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *" installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done

if [ -z "$missing" ]; then
    echo "system packages: all present"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "error: need root or sudo to install:$missing" >&2
    exit 1
fi

echo "system packages: installing$missing"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
