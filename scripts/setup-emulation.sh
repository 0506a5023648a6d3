#!/usr/bin/env bash
# Prepares this Debian machine for kiln's multi-platform tests (run as root; safe to run again):
#   - qemu-user-static (QEMU user-mode emulators, statically linked),
#   - binfmt_misc mounted at /proc/sys/fs/binfmt_misc and every qemu emulator of
#     /usr/lib/binfmt.d registered with its flags (Debian's give `F`: the kernel opens the
#     interpreter at registration, so it works inside a sandbox's mount namespace). On a machine
#     with systemd, systemd-binfmt does this at boot; here (a VM without it) this script does,
#   - the arm64 busybox-static (dpkg's arm64 architecture added, the package downloaded and
#     unpacked, not installed) at $KILN_TEST_ARM64 (default /var/tmp/kiln-arm64), the base of
#     the arm64 test images.
# kiln itself never registers anything: it only reads /proc/sys/fs/binfmt_misc (`kiln info`).
set -euo pipefail
arm64_dir=${KILN_TEST_ARM64:-/var/tmp/kiln-arm64}
if [[ $(id -u) -ne 0 ]]; then
  echo "setup-emulation: needs root" >&2
  exit 1
fi
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
if ! installed qemu-user-static; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static >/dev/null
fi
binfmt=/proc/sys/fs/binfmt_misc
if [[ ! -e $binfmt/register ]]; then
  mount -t binfmt_misc binfmt_misc "$binfmt"
fi
for conf in /usr/lib/binfmt.d/qemu-*.conf; do
  [[ -f $conf ]] || continue
  line=$(grep -v '^#' "$conf" | head -n1)
  name=$(cut -d: -f2 <<<"$line")
  [[ -n $name && ! -e $binfmt/$name ]] || continue
  # The register file takes one entry per write.
  printf '%s' "$line" >"$binfmt/register"
done
if [[ ! -x $arm64_dir/bin/busybox ]]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
  fi
  apt-get update -q >/dev/null
  work=$(mktemp -d)
  chmod 755 "$work" # apt-get download drops to the _apt user
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download -q busybox-static:arm64 >/dev/null)
  mkdir -p "$arm64_dir"
  dpkg-deb -x "$work"/busybox-static_*_arm64.deb "$arm64_dir"
fi
echo "emulators: $(cd "$binfmt" && ls -d qemu-* 2>/dev/null | tr '\n' ' ')"
echo "arm64 busybox: $arm64_dir/bin/busybox"
