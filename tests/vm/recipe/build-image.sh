#!/usr/bin/env bash
# Builds the VM lane guest into OUTDIR (must not exist): vmlinuz, initramfs
# (busybox and the few modules needed to mount the root disk), rootfs.ext4
# and packages.txt (what is installed). Called by `tests/vm/lane.sh build`,
# which decides when to rebuild; run as root.
#
# Environment: VSS_VM_MIRROR (default http://deb.debian.org/debian) and
# VSS_VM_SECURITY_MIRROR (default http://deb.debian.org/debian-security).
set -euo pipefail
recipe=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build-image.sh OUTDIR}
mirror=${VSS_VM_MIRROR:-http://deb.debian.org/debian}
security=${VSS_VM_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

for tool in mmdebstrap mke2fs cpio xz; do
	command -v "$tool" >/dev/null || { echo "build-image.sh: $tool is missing (run scripts/install-deps.sh)" >&2; exit 1; }
done
busybox=/bin/busybox
if ! [ -x "$busybox" ] || [[ $(LC_ALL=C ldd "$busybox" 2>&1) != *"not a dynamic executable"* ]]; then
	echo "build-image.sh: a static $busybox is missing (package busybox-static)" >&2
	exit 1
fi

mkdir "$out"
rootfs=$out/rootfs
include=$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$recipe/packages" | paste -sd, -)

echo "== mmdebstrap (bookworm minbase + $include)"
# update-initramfs is diverted to true: the guest boots with its own tiny
# initramfs, and building Debian's would take about a minute under dpkg.
# shellcheck disable=SC2016 # the hook is expanded by mmdebstrap, not here
mmdebstrap --mode=root --variant=minbase --components=main \
	--include="$include" \
	--dpkgopt=force-unsafe-io \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/info/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--dpkgopt='path-exclude=/usr/share/lintian/*' \
	--essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.lane --add /usr/sbin/update-initramfs && ln -sf /bin/true "$1/usr/sbin/update-initramfs"' \
	bookworm "$rootfs" \
	"deb $mirror bookworm main" \
	"deb $mirror bookworm-updates main" \
	"deb $security bookworm-security main" \
	"deb $mirror bookworm-backports main"

kvers=("$rootfs"/lib/modules/*)
[ ${#kvers[@]} -eq 1 ] || { echo "build-image.sh: expected one kernel, found: ${kvers[*]}" >&2; exit 1; }
kver=${kvers[0]##*/}
echo "== guest kernel $kver"

echo "== configure and prune the root filesystem"
install -m 0644 "$recipe/lvmlocal.conf" "$rootfs/etc/lvm/lvmlocal.conf"
install -m 0755 "$recipe/lane-init" "$rootfs/sbin/lane-init"
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$rootfs/etc/machine-id"
echo >>"$rootfs/etc/machine-id"
echo vss-lane >"$rootfs/etc/hostname"
# shellcheck disable=SC2016 # a dpkg-query format
chroot "$rootfs" dpkg-query -W -f '${Package} ${Version}\n' >"$out/packages.txt"
cp "$rootfs/boot/vmlinuz-$kver" "$out/vmlinuz"
rm -rf "${rootfs:?}"/boot/* "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* \
	"$rootfs"/var/log/* "$rootfs"/usr/share/doc "$rootfs"/usr/share/man \
	"$rootfs"/usr/share/locale "$rootfs"/usr/share/info
# Module trees no test needs (hardware drivers, wireless, sound, graphics).
kmod=$rootfs/lib/modules/$kver/kernel
for d in drivers/gpu drivers/media drivers/net/wireless drivers/net/ethernet \
	drivers/infiniband drivers/staging drivers/usb drivers/bluetooth drivers/iio \
	drivers/input drivers/isdn drivers/hid drivers/mmc drivers/mtd drivers/hwmon \
	drivers/video drivers/platform drivers/net/can drivers/net/usb drivers/leds \
	drivers/thunderbolt drivers/firewire drivers/edac drivers/i2c drivers/spi \
	drivers/pinctrl drivers/watchdog drivers/scsi/aacraid drivers/scsi/lpfc \
	drivers/scsi/qla2xxx drivers/scsi/mpt3sas drivers/scsi/megaraid \
	drivers/net/dsa drivers/net/phy drivers/crypto drivers/gpio drivers/power \
	drivers/rtc drivers/char/tpm drivers/atm drivers/nfc drivers/ntb \
	sound net/wireless net/mac80211 net/bluetooth net/netfilter net/ipv4/netfilter \
	net/ipv6/netfilter net/sched net/openvswitch net/rxrpc; do
	rm -rf "${kmod:?}/$d"
done
# The modules lane-init loads, with their dependencies, uncompressed.
grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$recipe/modules" | while read -r _ m; do
	chroot "$rootfs" modprobe --show-depends --set-version "$kver" "$m"
done | awk '$1 == "insmod" { print $2 }' | sort -u | while read -r path; do
	case $path in
	*.ko.xz) xz -d "$rootfs$path" ;;
	*.ko.zst) zstd -q -d --rm "$rootfs$path" ;;
	esac
done
install -D -m 0644 "$recipe/modules" "$rootfs/etc/lane/modules"
# The host may not have depmod (or a different kmod); use the guest's.
chroot "$rootfs" depmod -a "$kver"

echo "== initramfs"
ird=$out/initramfs.d
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,modules}
cp "$busybox" "$ird/bin/busybox"
for applet in sh mount umount insmod cat mkdir usleep switch_root sleep; do
	ln -s busybox "$ird/bin/$applet"
done
# The modules needed to mount the root disk, in load order, uncompressed.
: >"$ird/modules/order"
for m in virtio_pci virtio_blk ext4; do
	chroot "$rootfs" modprobe --show-depends --set-version "$kver" "$m"
done | while read -r kind path _; do
	[ "$kind" = insmod ] || continue
	name=${path##*/}
	name=${name%.xz}
	name=${name%.zst}
	grep -qxF "$name" "$ird/modules/order" && continue
	case $path in
	*.xz) xz -dc "$rootfs$path" >"$ird/modules/$name" ;;
	*.zst) zstd -qdc "$rootfs$path" >"$ird/modules/$name" ;;
	*) cp "$rootfs$path" "$ird/modules/$name" ;;
	esac
	echo "$name" >>"$ird/modules/order"
done
install -m 0755 "$recipe/initramfs-init" "$ird/init"
(cd "$ird" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$out/initramfs.cpio"
rm -rf "$ird"

echo "== root filesystem image"
used_mb=$(du -sm "$rootfs" | cut -f1)
size_mb=$((used_mb + used_mb / 2 + 512))
mke2fs -q -t ext4 -m 0 -L lane-root -d "$rootfs" "$out/rootfs.ext4" "${size_mb}M"
rm -rf "$rootfs"
echo "== guest built: rootfs ${used_mb} MiB used, image ${size_mb} MiB (sparse)"
