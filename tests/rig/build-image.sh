#!/usr/bin/env bash
# Builds the TimescaleDB host image: Debian trixie (debootstrap minbase) + PostgreSQL 17 +
# TimescaleDB + python3 + systemd, imported with `docker import`. Skipped when an image with
# the recipe's hash already exists. Nothing from trixie is installed into the host.
source "$(dirname "$0")/lib.sh"

ref=$(image_ref)
if "$DOCKER" image inspect "$ref" >/dev/null 2>&1; then
  log "image $ref is current"
  exit 0
fi

mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
build="$LOCAL_DIR/image-build"
rootfs="$build/rootfs"
cleanup() {
  for m in proc sys dev/pts; do mountpoint -q "$rootfs/$m" && umount -l "$rootfs/$m"; done
  rm -rf "$build"
}
trap cleanup EXIT
cleanup
mkdir -p "$rootfs" "$RIG_CACHE/debs"

log "debootstrap trixie into $rootfs"
# The debs are cached outside the checkout so a fresh clone does not fetch them again.
debootstrap --variant=minbase --include=ca-certificates --cache-dir="$RIG_CACHE/debs" \
  trixie "$rootfs" "$mirror" >"$build.log" 2>&1 || { tail -20 "$build.log"; die "debootstrap failed"; }

mount -t proc proc "$rootfs/proc"
mount --bind /dev/pts "$rootfs/dev/pts"
# No service may start inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
mkdir -p "$rootfs/var/cache/apt/archives"
mount --bind "$RIG_CACHE/debs" "$rootfs/var/cache/apt/archives"

log "installing $(tr '\n' ' ' <"$RIG_DIR/image/packages.txt")"
chroot "$rootfs" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c \
  "apt-get update -qq && apt-get install -y -qq --no-install-recommends $(tr '\n' ' ' <"$RIG_DIR/image/packages.txt")" \
  >>"$build.log" 2>&1 || { tail -20 "$build.log"; umount "$rootfs/var/cache/apt/archives"; die "package install failed"; }
umount "$rootfs/var/cache/apt/archives"

install -m 0644 "$RIG_DIR/image/timescaledb.conf" "$rootfs/etc/postgresql/17/main/conf.d/10-rig.conf"
# Local sockets keep peer auth; TCP (loopback only, see listen_addresses) needs a password.
cat >"$rootfs/etc/postgresql/17/main/pg_hba.conf" <<'HBA'
local   all  postgres                peer
local   all  all                     peer
host    all  all       127.0.0.1/32  scram-sha-256
host    all  all       ::1/128       scram-sha-256
HBA
# Units that make no sense in a container.
for u in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
         getty.target console-getty.service systemd-firstboot.service; do
  chroot "$rootfs" systemctl mask "$u" >/dev/null 2>&1 || true
done
rm -f "$rootfs/usr/sbin/policy-rc.d" "$rootfs/etc/resolv.conf"
chroot "$rootfs" apt-get clean
umount "$rootfs/dev/pts" "$rootfs/proc"

log "docker import as $ref"
tar -C "$rootfs" -c . | "$DOCKER" import \
  --change 'ENV container=docker' \
  --change 'CMD ["/lib/systemd/systemd"]' - "$ref" >/dev/null
"$DOCKER" tag "$ref" "$IMAGE_REPO:latest"
log "image $ref built"
