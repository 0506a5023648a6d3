#!/usr/bin/env bash
# Multi-platform builds side by side: `kiln build --platform linux/amd64,linux/arm64` vs BuildKit
# v0.32 (`buildctl build --opt platform=linux/amd64,linux/arm64` against a private buildkitd:
# the peer's binaries and flags, a root of its own, so pruning it touches no one else's), one
# hyperfine run per scenario, cold:
#
#   P1  emulated: the work (a 200,000-step shell loop and sha256 of 64 MB) in a RUN of each
#       target, so linux/amd64's runs natively and linux/arm64's under qemu-aarch64
#   P2  cross-compiled: the same work in a `FROM --platform=$BUILDPLATFORM` stage that reads
#       `ARG TARGETARCH` (so it runs natively, once per target); each target's final stage only
#       copies the results
#
# Both start from the same base, `multibase` (Debian's busybox-static for amd64 and arm64, one
# index), which kiln builds and pushes to the loopback registry first; both pull it from there.
# Cold means: kiln gets a fresh --root (its previous one moved aside, deleted at the end);
# the private buildkitd loses its whole cache (`buildctl prune --all`). Neither exports
# anything: kiln writes the index into its store, BuildKit keeps the result in its cache.
#
# Needs root, hyperfine, the emulator and arm64 busybox of scripts/setup-emulation.sh, the
# registry peer and the BuildKit binaries (../shared/peers/start-peers.sh registry buildkit).
#
#   [RUNS=5] [SCENARIOS="P1 P2"] [KILN=build|PATH] [WORK=/var/tmp/kiln-bench-platform]
#   [RESULTS=DIR] bench/run-platform.sh
# (KILN=build runs `cargo build --release`, honouring CARGO_TARGET_DIR.)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

RUNS=${RUNS:-5}
SCENARIOS=${SCENARIOS:-P1 P2}
KILN=${KILN:-build}
WORK=${WORK:-/var/tmp/kiln-bench-platform}
RESULTS=${RESULTS:-$WORK/results/$(date +%Y%m%dT%H%M%S)}
ARM64=${KILN_TEST_ARM64:-/var/tmp/kiln-arm64}/bin/busybox

notice() { echo "run-platform: $*" >&2; }
die() { notice "$*"; exit 2; }

command -v hyperfine >/dev/null || die "hyperfine is missing: apt-get install hyperfine"
[[ -x /bin/busybox ]] || die "/bin/busybox is missing: apt-get install busybox-static"
[[ -f $ARM64 ]] || die "$ARM64 is missing: scripts/setup-emulation.sh"
eval "$(../shared/peers/start-peers.sh --env)"
curl -sf "http://$PEER_REGISTRY/v2/" >/dev/null || die "no registry: ../shared/peers/start-peers.sh registry"
bin=$(dirname "$PEER_BUILDCTL")
[[ -x $bin/buildkitd && -x $bin/buildctl ]] || die "no BuildKit binaries in $bin: ../shared/peers/start-peers.sh buildkit"
case $KILN in
build) cargo build --release --quiet; kiln=${CARGO_TARGET_DIR:-$repo/target}/release/kiln ;;
*) kiln=$KILN ;;
esac
[[ -x $kiln ]] || die "$kiln is not an executable"
emulated='linux/arm64 +emulated'
[[ $("$kiln" info) =~ $emulated ]] || die "no arm64 emulator (kiln info): scripts/setup-emulation.sh"
mkdir -p "$WORK" "$RESULTS"

# The private buildkitd, stopped at the end.
bk_sock=$WORK/buildkitd.sock
buildctl=("$bin/buildctl" --addr "unix://$bk_sock")
setsid sh -c 'echo $$ >"$0"; exec "$@"' "$WORK/buildkitd.pid" "$bin/buildkitd" \
  --root "$WORK/buildkit" --addr "unix://$bk_sock" \
  --oci-worker=true --containerd-worker=false --oci-worker-net=host \
  >>"$WORK/buildkitd.log" 2>&1 </dev/null &
trap 'kill "$(cat "$WORK/buildkitd.pid")" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do "${buildctl[@]}" debug workers >/dev/null 2>&1 && break; sleep 0.1; done
"${buildctl[@]}" debug workers >/dev/null 2>&1 || die "the private buildkitd did not start; see $WORK/buildkitd.log"

# The shared base.
base=$PEER_REGISTRY/kiln-bench/multibase:latest
mkdir -p "$WORK/base"
cp /bin/busybox "$WORK/base/busybox-amd64"
cp "$ARM64" "$WORK/base/busybox-arm64"
printf 'FROM scratch\nARG TARGETARCH\nCOPY busybox-$TARGETARCH /bin/busybox\nRUN ["/bin/busybox","--install","-s","/bin"]\n' >"$WORK/base/Dockerfile"
"$kiln" --root "$WORK/base-root" build -q --platform linux/amd64,linux/arm64 -t "$base" --push "$WORK/base" >/dev/null

work='RUN i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo $i > /n; head -c 67108864 /dev/zero | sha256sum > /h'
mkdir -p "$WORK/P1" "$WORK/P2"
printf 'ARG BASE\nFROM ${BASE}\n%s\n' "$work" >"$WORK/P1/Dockerfile"
printf 'ARG BASE\nFROM --platform=$BUILDPLATFORM ${BASE} AS build\nARG TARGETARCH\n%s && echo $TARGETARCH > /arch\nFROM ${BASE}\nCOPY --from=build /n /h /arch /\n' "$work" >"$WORK/P2/Dockerfile"

q() { printf '%q' "$1"; }
platforms=linux/amd64,linux/arm64
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$RESULTS/load.txt"
for scenario in $SCENARIOS; do
  dir=$WORK/$scenario
  root=$WORK/kiln-root
  kiln_cmd="$(q "$kiln") --root $(q "$root") build --progress plain --platform $platforms --build-arg BASE=$base -t bench-${scenario,,} $(q "$dir")"
  buildkit_cmd="$(printf '%q ' "${buildctl[@]}")build --progress plain --frontend dockerfile.v0 --local context=$(q "$dir") --local dockerfile=$(q "$dir") --opt platform=$platforms --opt build-arg:BASE=$base"
  # (hyperfine runs these with sh: no $RANDOM there, hence mktemp.)
  kiln_prepare="if [ -d $(q "$root") ]; then mkdir -p $(q "$WORK/trash") && mv $(q "$root") \"\$(mktemp -d -p $(q "$WORK/trash"))/root\"; fi; sync"
  buildkit_prepare="$(printf '%q ' "${buildctl[@]}")prune --all >/dev/null; sync"
  # One logged build each, for where the time goes.
  eval "$kiln_prepare"; eval "$kiln_cmd" >"$RESULTS/$scenario-kiln.log" 2>&1
  eval "$buildkit_prepare"; eval "$buildkit_cmd" >"$RESULTS/$scenario-buildkit.log" 2>&1
  hyperfine --runs "$RUNS" \
    --prepare "$kiln_prepare" -n "kiln $scenario" "$kiln_cmd" \
    --prepare "$buildkit_prepare" -n "buildkit $scenario" "$buildkit_cmd" \
    --export-markdown "$RESULTS/$scenario.md" --export-json "$RESULTS/$scenario.json"
done
rm -rf --one-file-system "$WORK/trash"
notice "results in $RESULTS"
{
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "kiln: $kiln ($("$kiln" --version)), BuildKit: $("$bin/buildkitd" --version | cut -d' ' -f3), $(hyperfine --version)"
} | tee "$RESULTS/versions.txt"
cat "$RESULTS"/P*.md
