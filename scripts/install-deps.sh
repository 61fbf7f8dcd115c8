#!/usr/bin/env bash
# Installs what building and testing vss needs on a fresh Debian machine.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: run as root (it uses apt-get)" >&2
  exit 1
fi
pkgs=(btrfs-progs xfsprogs e2fsprogs util-linux mount dbus-daemon dbus-bin
      python3 python3-dbus python3-gi passwd fio restic borgbackup zstd
      postgresql-15 mariadb-server mariadb-client
      # The VM lane (scripts/vm-test.sh, docs/VM-LANE.md): QEMU, and what
      # builds its Debian guest.
      qemu-system-x86 mmdebstrap busybox-static cpio xz-utils debian-archive-keyring)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Loop devices are needed by the privileged tests and the demo.
modprobe loop 2>/dev/null || true
