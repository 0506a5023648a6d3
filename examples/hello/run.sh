#!/usr/bin/env bash
# kiln's main job on this example, end to end with what has landed so far:
#   1. plan the example's Dockerfile (`kiln build --dry-run`: stages, order, context reads);
#   2. make its base image: a busybox root filesystem imported into kiln's store as `hello-base`
#      (the builder that runs the Dockerfile's RUN steps itself comes with issue 4);
#   3. run it in kiln's sandbox: install busybox's applets, then print a greeting and who we are.
# Needs /bin/busybox from Debian's busybox-static. The store is $KILN_ROOT (default /var/lib/kiln).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kiln=${KILN:-$here/../../target/release/kiln}
cp /bin/busybox "$here/busybox"

"$kiln" build --dry-run "$here"

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/bin" "$rootfs/etc"
cp /bin/busybox "$rootfs/bin/busybox"
printf 'root:x:0:0:root:/root:/bin/sh\nkiln:x:1000:1000:kiln:/home/kiln:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nkiln:x:1000:\n' >"$rootfs/etc/group"
tar -C "$rootfs" -cf - . | "$kiln" import - hello-base
"$kiln" images hello-base

"$kiln" run --rm --network none hello-base /bin/busybox sh -c \
  '/bin/busybox --install -s /bin && echo "hello from kiln: $(id), pid $$, host $(hostname)"'
