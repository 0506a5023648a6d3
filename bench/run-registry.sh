#!/usr/bin/env bash
# Registry transfers and the shared build cache side by side: kiln vs `skopeo copy` vs the peer
# docker (20.10), one hyperfine run per scenario with every tool in it, written into BENCHMARKS.md
# between the registry-bench markers.
#
#   P1  push a 5-layer, ~300 MB image to an empty registry
#   P2  pull that image into an empty store
#   C1  S2 of bench/run-build.sh (20,000 files / 230 MB `COPY . /ctx` + one RUN) built on an empty
#       store with the cache of an earlier build in the registry: kiln `--cache-from
#       type=registry`, BuildKit `--cache-from` of an image built with BUILDKIT_INLINE_CACHE=1
#       (docker 20.10's only registry cache), and each tool's cold build of it for scale. kiln
#       writes an image built from a cache without downloading its layers (they are fetched when
#       something needs them); "kiln --cache-from + layers" adds a `kiln save` that fetches them
#       all, which is what BuildKit always does (docker's image store needs the layers).
#
# The image of P1/P2: `FROM scratch`, `COPY busybox /bin/busybox` and four `COPY` steps of 75 MB
# of random bytes each (incompressible, from a fixed seed), built by kiln. Every tool moves the
# same image: kiln pushes it from its store, skopeo from kiln's OCI layout export (`-o type=oci`),
# docker after `docker load` of kiln's docker archive. kiln and skopeo send the layers as they are
# (uncompressed tar); docker compresses them with gzip while it pushes, as it always does. P2
# pulls the image kiln pushed, for every tool.
#
# The registry is a private docker-registry on 127.0.0.1:$PORT (default 5001) with its storage
# under WORK. Before every timed push it is stopped, its storage deleted and started again, so
# every push finds it empty (no blob to skip, nothing to mount). Before every timed pull the
# puller's store is emptied: a fresh kiln --root, a fresh skopeo OCI directory, `docker rmi`.
#
#   [RUNS=3] [SCENARIOS="P1 P2 C1"] [KILN=build|PATH] [PORT=5001]
#   [WORK=/var/tmp/kiln-bench-registry] [RESULTS=DIR] [UPDATE=1|0] bench/run-registry.sh
#
# Needs root, hyperfine, python3, docker-registry, /bin/busybox; skopeo and the peer dockerd
# (../shared/peers/start-peers.sh docker) are measured when present, skipped with a notice when not.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-P1 P2 C1}
KILN=${KILN:-build}
PORT=${PORT:-5001}
WORK=${WORK:-/var/tmp/kiln-bench-registry}
RESULTS=${RESULTS:-$WORK/results/$(date +%Y%m%dT%H%M%S)}
UPDATE=${UPDATE:-1}

notice() { echo "run-registry: $*" >&2; }
die() { notice "$*"; exit 2; }
q() { printf '%q' "$1"; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
read -r -a scenarios <<<"$SCENARIOS"
for scenario in "${scenarios[@]}"; do
  [[ $scenario =~ ^(P1|P2|C1)$ ]] || die "unknown scenario '$scenario' (P1 P2 C1)"
done
for tool in hyperfine python3 docker-registry; do
  command -v $tool >/dev/null || die "$tool is missing (apt-get install hyperfine python3 docker-registry)"
done
[[ -x /bin/busybox ]] || die "/bin/busybox is missing: apt-get install busybox-static"
mkdir -p "$WORK" "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
registry=127.0.0.1:$PORT

# --- tools -------------------------------------------------------------------------------------
if [[ $KILN == build ]]; then
  cargo build --release --quiet || die "cargo build --release failed"
  kiln=$repo/target/release/kiln
else
  kiln=$KILN
fi
[[ -x $kiln ]] || die "$kiln is not an executable"
have_skopeo=0
if command -v skopeo >/dev/null; then have_skopeo=1; else notice "skopeo skipped: not installed (apt-get install skopeo)"; fi
docker=/usr/bin/docker
export DOCKER_HOST=${DOCKER_HOST:-unix:///var/tmp/kiln-peers/docker.sock}
export DOCKER_BUILDKIT=1
have_docker=0
if [[ -x $docker ]] && "$docker" version >/dev/null 2>&1; then have_docker=1
else notice "docker skipped: no dockerd at $DOCKER_HOST (../shared/peers/start-peers.sh docker)"; fi

# --- the private registry ----------------------------------------------------------------------
reg_dir=$WORK/registry
cat >"$WORK/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $reg_dir/data
  delete:
    enabled: true
http:
  addr: $registry
YML
cat >"$WORK/registry-restart.sh" <<SH
#!/usr/bin/env bash
# Stops the bench registry, deletes its storage, starts it again and waits until it answers.
set -euo pipefail
if [[ -f $(q "$reg_dir/pid") ]]; then
  kill "\$(cat $(q "$reg_dir/pid"))" 2>/dev/null || true
  for _ in \$(seq 1 50); do curl -sf http://$registry/v2/ >/dev/null || break; sleep 0.1; done
fi
rm -rf --one-file-system $(q "$reg_dir/data")
mkdir -p $(q "$reg_dir/data")
setsid docker-registry serve $(q "$WORK/registry.yml") >$(q "$reg_dir/log") 2>&1 </dev/null &
echo \$! >$(q "$reg_dir/pid")
for _ in \$(seq 1 100); do curl -sf http://$registry/v2/ >/dev/null && exit 0; sleep 0.1; done
echo "the bench registry did not start; see $(q "$reg_dir/log")" >&2
exit 1
SH
chmod +x "$WORK/registry-restart.sh"
mkdir -p "$reg_dir"
"$WORK/registry-restart.sh"
stop_registry() {
  if [[ -f $reg_dir/pid ]]; then kill "$(cat "$reg_dir/pid")" 2>/dev/null || true; fi
}
trap stop_registry EXIT

# --- the image of P1/P2 ------------------------------------------------------------------------
src_root=$WORK/kiln-src
image=$registry/bench/big:v1
ctx=$WORK/ctx/big-image
if [[ ! -f $ctx/Dockerfile ]]; then
  notice "generating the 5-layer image's context in $ctx"
  mkdir -p "$ctx"
  python3 - "$ctx" <<'PY'
import random, sys
rng = random.Random(20261123)
for i in range(1, 5):
    with open(f"{sys.argv[1]}/part{i}", "wb") as f:
        for _ in range(75):
            f.write(rng.randbytes(1_000_000))
PY
  cp /bin/busybox "$ctx/busybox"
  {
    echo "FROM scratch"
    echo "COPY busybox /bin/busybox"
    for i in 1 2 3 4; do echo "COPY part$i /data/part$i"; done
  } >"$ctx/Dockerfile"
fi
"$kiln" --root "$src_root" build -q -t "$image" "$ctx" >/dev/null
oci_dir=$WORK/oci-src
rm -rf --one-file-system "$oci_dir" && mkdir -p "$oci_dir"
"$kiln" --root "$src_root" build -q -t "$image" -o "type=oci,dest=$oci_dir/image.tar" "$ctx" >/dev/null
tar -xf "$oci_dir/image.tar" -C "$oci_dir" && rm "$oci_dir/image.tar"
if [[ $have_docker == 1 ]]; then
  "$kiln" --root "$src_root" build -q -t "$image" -o "type=docker,dest=$WORK/image-docker.tar" "$ctx" >/dev/null
  "$docker" load -i "$WORK/image-docker.tar" >/dev/null
fi

# --- run ---------------------------------------------------------------------------------------
# run_scenario SN NAME PREPARE COMMAND [NAME PREPARE COMMAND]...: one hyperfine run.
run_scenario() {
  local scenario=$1 args
  shift
  args=(--runs "$RUNS" --export-json "$RESULTS/$scenario.json" --export-markdown "$RESULTS/$scenario.md")
  while [[ $# -gt 0 ]]; do
    args+=(-n "$1" --prepare "$2" "$3 >>$(q "$RESULTS/$scenario.log") 2>&1")
    shift 3
  done
  hyperfine "${args[@]}"
}

{
  printf 'command: RUNS=%s SCENARIOS="%s" bench/run-registry.sh\n' "$RUNS" "${scenarios[*]}"
  printf 'date: %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf 'kiln: %s (commit %s)\n' "$("$kiln" --version)" "$(git rev-parse --short HEAD)"
  [[ $have_skopeo == 1 ]] && printf 'skopeo: %s\n' "$(skopeo --version)"
  [[ $have_docker == 1 ]] && printf 'docker: %s\n' "$("$docker" version --format '{{.Server.Version}}')"
  printf 'registry: %s\n' "$(docker-registry --version 2>&1 | head -1)"
} >"$RESULTS/meta.txt"

restart=$(q "$WORK/registry-restart.sh")
for scenario in "${scenarios[@]}"; do
  notice "$scenario"
  case $scenario in
  P1)
    set -- kiln "$restart" "$(q "$kiln") --root $(q "$src_root") push $image"
    [[ $have_skopeo == 1 ]] && set -- "$@" "skopeo copy" "$restart" \
      "skopeo copy --dest-tls-verify=false oci:$(q "$oci_dir"):$image docker://$image"
    [[ $have_docker == 1 ]] && set -- "$@" "docker push" "$restart" "$docker push $image"
    run_scenario P1 "$@"
    ;;
  P2)
    "$WORK/registry-restart.sh"
    "$kiln" --root "$src_root" push "$image" >/dev/null
    pull_root=$WORK/kiln-pull
    set -- kiln "rm -rf --one-file-system $(q "$pull_root")" "$(q "$kiln") --root $(q "$pull_root") pull $image"
    [[ $have_skopeo == 1 ]] && set -- "$@" "skopeo copy" "rm -rf --one-file-system $(q "$WORK/skopeo-pull")" \
      "skopeo copy --src-tls-verify=false docker://$image oci:$(q "$WORK/skopeo-pull"):v1"
    [[ $have_docker == 1 ]] && set -- "$@" "docker pull" "$docker rmi -f $image >/dev/null 2>&1 || true" \
      "$docker pull $image"
    run_scenario P2 "$@"
    ;;
  C1)
    big=$WORK/ctx/s2
    if [[ ! -f $big/Dockerfile ]]; then
      notice "generating S2's context in $big"
      python3 "$repo/bench/gen-context.py" "$big/files"
      cp /bin/busybox "$big/busybox"
      printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox","--install","-s","/bin"]\nCOPY . /ctx\nRUN find /ctx -type f | wc -l > /count\n' >"$big/Dockerfile"
    fi
    "$WORK/registry-restart.sh"
    cache=$registry/cache/s2
    "$kiln" --root "$WORK/kiln-cache-a" build -q -t s2 --network host \
      --cache-to "type=registry,ref=$cache:kiln,mode=max" "$big" >/dev/null
    b_root=$WORK/kiln-cache-b
    set -- "kiln --cache-from" "rm -rf --one-file-system $(q "$b_root")" \
      "$(q "$kiln") --root $(q "$b_root") build -t s2 --network host --progress plain --cache-from type=registry,ref=$cache:kiln $(q "$big")" \
      "kiln --cache-from + layers" "rm -rf --one-file-system $(q "$b_root")" \
      "$(q "$kiln") --root $(q "$b_root") build -t s2 --network host --progress plain --cache-from type=registry,ref=$cache:kiln $(q "$big") && $(q "$kiln") --root $(q "$b_root") save -o /dev/null s2" \
      "kiln cold" "rm -rf --one-file-system $(q "$b_root")" \
      "$(q "$kiln") --root $(q "$b_root") build -t s2 --network host --progress plain $(q "$big")"
    if [[ $have_docker == 1 ]]; then
      "$docker" build -q --network host --build-arg BUILDKIT_INLINE_CACHE=1 -t "$cache:buildkit" "$big" >/dev/null
      "$docker" push "$cache:buildkit" >/dev/null
      bk_clean="$docker builder prune -af >/dev/null && { $docker rmi -f s2 $cache:buildkit >/dev/null 2>&1 || true; }"
      set -- "$@" "BuildKit --cache-from" "$bk_clean" \
        "$docker build --network host --progress plain --cache-from $cache:buildkit -t s2 $(q "$big")" \
        "BuildKit cold" "$bk_clean" "$docker build --network host --progress plain -t s2 $(q "$big")"
    fi
    run_scenario C1 "$@"
    ;;
  esac
done

# --- report ------------------------------------------------------------------------------------
section=$RESULTS/section.md
{
  echo "Command: \`RUNS=$RUNS SCENARIOS=\"${scenarios[*]}\" bench/run-registry.sh\` (root; hyperfine, $RUNS timed runs each). $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo
  sed 's/^/- /' "$RESULTS/meta.txt" | grep -v '^- command\|^- date'
  for scenario in "${scenarios[@]}"; do
    [[ -f $RESULTS/$scenario.md ]] || continue
    echo
    case $scenario in
    P1) echo "**P1: push a 5-layer, 300 MB image to an empty registry**" ;;
    P2) echo "**P2: pull it into an empty store**" ;;
    C1) echo "**C1: S2 on an empty store with the registry cache of an earlier build (and cold for scale)**" ;;
    esac
    echo
    cat "$RESULTS/$scenario.md"
  done
} >"$section"
if [[ $UPDATE == 1 ]]; then
  python3 - "$repo/BENCHMARKS.md" "$section" <<'PY'
import sys
path, section = sys.argv[1], open(sys.argv[2], encoding="utf-8").read().rstrip("\n")
start, end = "<!-- registry-bench:start -->", "<!-- registry-bench:end -->"
text = open(path, encoding="utf-8").read()
if start in text and end in text:
    head, rest = text.split(start, 1)
    text = head + start + "\n" + section + "\n" + end + rest.split(end, 1)[1]
else:
    text = text.rstrip("\n") + "\n\n## Registry transfers and the shared build cache (issue 5)\n\n" + start + "\n" + section + "\n" + end + "\n"
open(path, "w", encoding="utf-8").write(text)
PY
fi
cat "$section"
notice "results in $RESULTS"
