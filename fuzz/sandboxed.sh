#!/bin/sh
# Runs an already built fuzz target (`cargo fuzz build`) in a private mount namespace where `/`
# is read-only, `/tmp` is a fresh tmpfs (where the targets make their temporary roots and
# stores) and only corpus/TARGET and artifacts/TARGET are writable. layer_apply and
# archive_load unpack hostile tars as root: if kiln's confinement had a hole, an absolute path
# would otherwise land on this machine's real filesystem; here the write fails and the target's
# checks report it. Needs root (unshare, mount). The mounts vanish with the process.
#
# Usage: ./sandboxed.sh TARGET [libFuzzer options...]
set -eu
cd "$(dirname "$0")"
target=$1
shift
bin=$(ls target/*/release/"$target")
mkdir -p "corpus/$target" "artifacts/$target"
exec unshare --mount --propagation private sh -eu -c '
    target=$1; bin=$2; shift 2
    mount --bind "corpus/$target" "corpus/$target"
    mount --bind "artifacts/$target" "artifacts/$target"
    mount -t tmpfs -o size=2g,mode=1777 tmpfs /tmp
    mount -o remount,bind,ro /
    exec "$bin" -artifact_prefix="artifacts/$target/" "$@" "corpus/$target"
' sandboxed "$target" "$bin" "$@"
