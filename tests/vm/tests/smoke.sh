#!/usr/bin/env bash
# VM lane smoke test (runs in the guest, as root): the kernel modules are
# there, device-mapper works directly and through LVM (thick and thin
# snapshots of mounted filesystems), and the workspace binaries built on the
# host run in the guest from the shared target directory.
# vm-lane-timeout: 300
set -euo pipefail

[ "${VSS_VM_LANE:-}" = 1 ] || { echo "smoke.sh: not in the VM lane" >&2; exit 1; }
disk=${VSS_VM_DISK:?}
target=${CARGO_TARGET_DIR:?}
vg=lanesmoke
mnt=$(mktemp -d)

cleanup() {
	set +e
	for m in "$mnt"/*; do
		mountpoint -q "$m" && umount "$m"
	done
	vgchange -an "$vg" >/dev/null 2>&1
	vgremove -ff -y "$vg" >/dev/null 2>&1
	dmsetup remove lane-linear >/dev/null 2>&1
	wipefs -a "$disk" >/dev/null 2>&1
	rm -rf "$mnt"
}
trap cleanup EXIT

step() { echo "== $*"; }

step "kernel $(uname -r), modules"
for m in dm_mod dm_snapshot dm_thin_pool loop fuse xfs btrfs 9p 9pnet_virtio; do
	[ -d "/sys/module/$m" ] || { echo "module $m is not loaded" >&2; exit 1; }
done
[ -c /dev/fuse ] && [ -c /dev/loop-control ] && [ -c /dev/mapper/control ]
echo "ok: modules, /dev/fuse, /dev/loop-control, /dev/mapper/control"

step "dmsetup: a linear target on the test disk"
dmsetup version
# No udev in the guest: with DM_DISABLE_UDEV=1 (set by the lane's init)
# libdevmapper makes and removes the /dev/mapper node itself.
dmsetup create lane-linear --table "0 2048 linear $disk 0"
[ "$(blockdev --getsz /dev/mapper/lane-linear)" = 2048 ]
dmsetup remove lane-linear
[ ! -e /dev/mapper/lane-linear ]
echo "ok"

step "LVM: volume group on $disk"
pvcreate -q -ff -y "$disk"
vgcreate -q "$vg" "$disk"

# check_snapshot ORIGIN_MOUNT SNAP_MOUNT: the snapshot shows the origin as it
# was before write_after.
write_before() { echo before >"$1/before.txt"; sync; }
write_after() { echo changed >"$1/before.txt"; echo after >"$1/after.txt"; sync; }
check_snapshot() {
	[ "$(cat "$2/before.txt")" = before ] || { echo "snapshot lost the old content" >&2; exit 1; }
	[ ! -e "$2/after.txt" ] || { echo "snapshot has a file written after it" >&2; exit 1; }
	[ "$(cat "$1/before.txt")" = changed ] && [ -e "$1/after.txt" ]
}

step "LVM: thick volume, ext4, thick snapshot"
lvcreate -q -y -W y -n thick -L 128m "$vg"
mkfs.ext4 -q -F "/dev/$vg/thick"
mkdir "$mnt/thick" "$mnt/thicksnap"
mount "/dev/$vg/thick" "$mnt/thick"
write_before "$mnt/thick"
lvcreate -q -y -s -n thicksnap -L 32m "$vg/thick"
write_after "$mnt/thick"
mount -o ro "/dev/$vg/thicksnap" "$mnt/thicksnap"
check_snapshot "$mnt/thick" "$mnt/thicksnap"
umount "$mnt/thicksnap" "$mnt/thick"
echo "ok"

step "LVM: thin pool, thin volume, xfs, thin snapshot"
lvcreate -q -y --type thin-pool -n pool -L 512m "$vg"
lvcreate -q -y -W y --type thin -n thin -V 1g --thinpool "$vg/pool"
mkfs.xfs -q -f "/dev/$vg/thin"
mkdir "$mnt/thin" "$mnt/thinsnap"
mount "/dev/$vg/thin" "$mnt/thin"
write_before "$mnt/thin"
lvcreate -q -y -s -n thinsnap "$vg/thin"
lvchange -ay -K "$vg/thinsnap"
write_after "$mnt/thin"
mount -o ro,nouuid "/dev/$vg/thinsnap" "$mnt/thinsnap"
check_snapshot "$mnt/thin" "$mnt/thinsnap"
umount "$mnt/thinsnap" "$mnt/thin"
lvs "$vg"
echo "ok"

step "btrfs: snapshot of a subvolume on a thin volume"
lvcreate -q -y -W y --type thin -n bt -V 1g --thinpool "$vg/pool"
mkfs.btrfs -q -f "/dev/$vg/bt"
mkdir "$mnt/bt"
mount "/dev/$vg/bt" "$mnt/bt"
btrfs -q subvolume create "$mnt/bt/data"
write_before "$mnt/bt/data"
btrfs -q subvolume snapshot -r "$mnt/bt/data" "$mnt/bt/snap"
write_after "$mnt/bt/data"
check_snapshot "$mnt/bt/data" "$mnt/bt/snap"
umount "$mnt/bt"
echo "ok"

step "workspace binaries from $target/debug"
for b in vssd vss-volumed vssadmin vssbackup; do
	exe=$target/debug/$b
	[ -x "$exe" ] || { echo "$exe is missing: build the workspace first (cargo build --workspace --bins)" >&2; exit 1; }
	if ldd "$exe" | grep 'not found'; then
		echo "$b needs shared libraries the guest lacks: add their packages to tests/vm/recipe/packages" >&2
		exit 1
	fi
done
"$target/debug/vssadmin" --help >"$mnt/help.txt"
head -n 3 "$mnt/help.txt"
"$target/debug/vssd" --help >/dev/null
echo "ok"

echo "smoke: all passed"
