#!/usr/bin/env bash
# kiln's main job on this example, end to end:
#   1. build the example's three-stage Dockerfile into the image `hello` (a busybox base made
#      FROM scratch, a stage that writes a greeting, a final image that copies it);
#   2. build it again: every step comes from the cache;
#   3. run the image in kiln's sandbox (the same runtime that ran the RUN steps).
# Needs /bin/busybox from Debian's busybox-static. The store is $KILN_ROOT (default /var/lib/kiln).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kiln=${KILN:-$here/../../target/release/kiln}
cp /bin/busybox "$here/busybox"

"$kiln" build -t hello --build-arg GREETING=hello "$here"
"$kiln" build -t hello --build-arg GREETING=hello --progress plain "$here" 2>&1 | grep -c CACHED |
  xargs printf 'second build: %s steps CACHED\n'
"$kiln" images hello
"$kiln" run --rm hello
