#!/usr/bin/env bash
# Container start-up latency, side by side in one hyperfine run:
#   kiln run --rm IMG true   vs   docker run --rm --network none IMG true   vs   runc run (prepared bundle)
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
kiln=$PWD/target/release/kiln
work=$(mktemp -d /var/tmp/kiln-bench-run.XXXXXX)
trap 'rm -rf "$work"' EXIT
export KILN_ROOT=$work/root

# One busybox rootfs tarball for every tool.
mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in sh true; do ln -s busybox "$work/rootfs/bin/$applet"; done
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
"$kiln" import "$work/rootfs.tar" bench-startup:latest >/dev/null

commands=(-n "kiln run" "$kiln run --rm --network none bench-startup true")

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
fi

hyperfine --warmup 10 --runs "$runs" -N --export-json "$work/results.json" \
  ${export_md:+--export-markdown "$export_md"} "${commands[@]}"
# The issue's target is a median; hyperfine's table shows means.
python3 - "$work/results.json" <<'PY'
import json, sys
for result in json.load(open(sys.argv[1]))["results"]:
    print(f"median {result['command']}: {result['median'] * 1000:.1f} ms")
PY
