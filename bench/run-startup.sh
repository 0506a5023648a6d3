#!/usr/bin/env bash
# Container start-up latency, side by side in one hyperfine run:
#   kiln run --rm IMG true   vs   docker run --rm --network none IMG true   vs   runc run (prepared bundle)
#   kiln run -d --rm IMG true   vs   docker run -d --rm IMG true   (returns once the container started)
#   kiln run --rm IMG true on kiln's default private network (slirp4netns)
# and a process started in a running (detached) container:
#   kiln exec C true   vs   docker exec C true
# The image is the same busybox rootfs everywhere (imported into each tool from one tarball).
# Needs root, /bin/busybox (busybox-static), hyperfine, umoci and runc; the docker column appears
# when the peer dockerd from ../shared/peers is running (start-peers.sh docker).
#
#   bench/run-startup.sh [--runs N] [--export FILE.md]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=200
export_md=
while [[ $# -gt 0 ]]; do
  case $1 in
  --runs) runs=$2; shift 2 ;;
  --export) export_md=$2; shift 2 ;;
  *) echo "usage: $0 [--runs N] [--export FILE.md]" >&2; exit 2 ;;
  esac
done
cargo build --release --quiet
kiln=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
work=$(mktemp -d /var/tmp/kiln-bench-run.XXXXXX)
docker_container=
cleanup() {
  # `rm -f` kills the detached container (its sleep is pid 1 without a handler) and its
  # supervisor.
  "$kiln" rm -f bench-exec >/dev/null 2>&1 || true
  if [[ -n $docker_container ]]; then docker rm -f "$docker_container" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
export KILN_ROOT=$work/root

# One busybox rootfs tarball for every tool.
mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in sh true sleep; do ln -s busybox "$work/rootfs/bin/$applet"; done
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
"$kiln" import "$work/rootfs.tar" bench-startup:latest >/dev/null

commands=(-n "kiln run" "$kiln run --rm --network none bench-startup true")

# Detached: the command returns once the supervisor reports the container started; `--rm`
# removes each one when `true` ends.
commands+=(-n "kiln run -d" "$kiln run -d --rm --network none bench-startup true")
# The default private network (a namespace and its slirp4netns stack per container).
commands+=(-n "kiln run (private network)" "$kiln run --rm bench-startup true")

# kiln exec: into a detached container that runs `sleep` for the whole benchmark.
"$kiln" run -d --name bench-exec --network none bench-startup sleep 100000 >/dev/null
commands+=(-n "kiln exec" "$kiln exec bench-exec true")

# runc: a bundle unpacked by umoci from kiln's own store (an OCI layout), args set to `true`.
umoci unpack --image "$KILN_ROOT:bench-startup:latest" "$work/bundle" >/dev/null
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["process"]["args"] = ["/bin/true"]
config["process"]["terminal"] = False
json.dump(config, open(path, "w"))
PY
commands+=(-n "runc run" "runc run --bundle $work/bundle kiln-bench-startup")

if [[ -S /var/tmp/kiln-peers/docker.sock ]]; then
  export DOCKER_HOST=unix:///var/tmp/kiln-peers/docker.sock
  docker import "$work/rootfs.tar" bench-startup:latest >/dev/null
  commands+=(-n "docker run" "docker run --rm --network none bench-startup:latest /bin/true")
  commands+=(-n "docker run -d" "docker run -d --rm --network none bench-startup:latest /bin/true")
  docker_container=$(docker run -d --network none bench-startup:latest /bin/sleep 100000)
  commands+=(-n "docker exec" "docker exec $docker_container /bin/true")
fi

hyperfine --warmup 10 --runs "$runs" -N --export-json "$work/results.json" \
  ${export_md:+--export-markdown "$export_md"} "${commands[@]}"
# The issue's target is a median; hyperfine's table shows means.
python3 - "$work/results.json" <<'PY'
import json, sys
for result in json.load(open(sys.argv[1]))["results"]:
    print(f"median {result['command']}: {result['median'] * 1000:.1f} ms")
PY
