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
#   Z1  push a 5-layer, ~300 MB compressible image gzip-compressed (issue 16): kiln from a store
#       that has never compressed it (`kiln push`, and `-o type=registry` of the cached build),
#       kiln's second push (every layer's gzip variant kept: it compresses nothing), `skopeo copy
#       --dest-compress-format gzip` and `docker push`
#   Z2  the same zstd-compressed: kiln `-o type=registry,compression=zstd` (first and second
#       push) and `skopeo copy --dest-compress-format zstd`
#   Z1 and Z2 also report each tool's CPU time (hyperfine's user and system) and the bytes the
#   registry holds after one push (its blob files: what was sent).
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
#   [RUNS=3] [SCENARIOS="P1 P2 C1 Z1 Z2"] [KILN=build|PATH] [PORT=5001]
#   [WORK=/var/tmp/kiln-bench-registry] [RESULTS=DIR] [UPDATE=1|0] bench/run-registry.sh
#
# Needs root, hyperfine, python3, docker-registry, /bin/busybox; skopeo and the peer dockerd
# (../shared/peers/start-peers.sh docker) are measured when present, skipped with a notice when not.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-P1 P2 C1 Z1 Z2}
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
  [[ $scenario =~ ^(P1|P2|C1|Z1|Z2)$ ]] || die "unknown scenario '$scenario' (P1 P2 C1 Z1 Z2)"
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

# --- the compressible image of Z1/Z2 -----------------------------------------------------------
# Four COPY layers of 75 MB of log-like text from a fixed seed (gzip takes it to about a third)
# and busybox; kept in its own store, copied fresh before each timed first push so every one
# compresses from scratch.
text_root=$WORK/kiln-text
text_image=$registry/bench/text:v1
text_ctx=$WORK/ctx/text-image
if [[ " ${scenarios[*]} " == *" Z"* ]]; then
  if [[ ! -f $text_ctx/Dockerfile ]]; then
    notice "generating the compressible image's context in $text_ctx"
    mkdir -p "$text_ctx"
    python3 - "$text_ctx" <<'PY'
import random, sys
rng = random.Random(20261207)
words = [("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))))
         for _ in range(5000)]
levels = ["INFO", "WARN", "DEBUG", "ERROR"]
for i in range(1, 5):
    with open(f"{sys.argv[1]}/part{i}", "w") as f:
        written = 0
        while written < 75_000_000:
            line = "%010d %s %s %08x %s\n" % (
                rng.randrange(10**10), rng.choice(levels), " ".join(rng.choices(words, k=8)),
                rng.getrandbits(32), rng.random())
            f.write(line)
            written += len(line)
PY
    cp /bin/busybox "$text_ctx/busybox"
    {
      echo "FROM scratch"
      echo "COPY busybox /bin/busybox"
      for i in 1 2 3 4; do echo "COPY part$i /data/part$i"; done
    } >"$text_ctx/Dockerfile"
  fi
  rm -rf --one-file-system "$text_root"
  "$kiln" --root "$text_root" build -q -t "$text_image" "$text_ctx" >/dev/null
  text_oci=$WORK/oci-text
  rm -rf --one-file-system "$text_oci" && mkdir -p "$text_oci"
  "$kiln" --root "$text_root" build -q -t "$text_image" \
    -o "type=oci,dest=$text_oci/image.tar,compression=uncompressed" "$text_ctx" >/dev/null
  tar -xf "$text_oci/image.tar" -C "$text_oci" && rm "$text_oci/image.tar"
  if [[ $have_docker == 1 ]]; then
    "$kiln" --root "$text_root" build -q -t "$text_image" \
      -o "type=docker,dest=$WORK/text-docker.tar,compression=uncompressed" "$text_ctx" >/dev/null
    "$docker" load -i "$WORK/text-docker.tar" >/dev/null
  fi
  # A copy that has pushed once (gzip and zstd variants kept) for the second-push rows.
  warm_root=$WORK/kiln-text-warm
  rm -rf --one-file-system "$warm_root" && cp -a "$text_root" "$warm_root"
  "$WORK/registry-restart.sh"
  "$kiln" --root "$warm_root" build -q -t bench/text-warm \
    -o "type=registry,name=$text_image" "$text_ctx" >/dev/null
  "$kiln" --root "$warm_root" build -q -t bench/text-warm \
    -o "type=registry,name=$text_image,compression=zstd" "$text_ctx" >/dev/null
fi

# registry_bytes COMMAND: the bytes of the blobs the emptied registry holds after COMMAND.
registry_bytes() {
  "$WORK/registry-restart.sh" >/dev/null
  bash -c "$1" >/dev/null 2>&1
  find "$reg_dir/data" -path '*/blobs/*' -name data -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}'
}

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
  Z1 | Z2)
    if [[ $scenario == Z1 ]]; then format=gzip; else format=zstd; fi
    fresh="$restart && rm -rf --one-file-system $(q "$WORK/kiln-text-run") && cp -a $(q "$text_root") $(q "$WORK/kiln-text-run")"
    export_cmd() { # export_cmd ROOT: the cached build pushed with compression=$format
      echo "$(q "$kiln") --root $(q "$1") build -q -t bench/text-run -o type=registry,name=$text_image,compression=$format $(q "$text_ctx")"
    }
    set --
    [[ $format == gzip ]] && set -- "kiln push" "$fresh" "$(q "$kiln") --root $(q "$WORK/kiln-text-run") push $text_image"
    set -- "$@" "kiln -o compression=$format" "$fresh" "$(export_cmd "$WORK/kiln-text-run")" \
      "kiln -o compression=$format, second push" "$restart" "$(export_cmd "$warm_root")"
    [[ $have_skopeo == 1 ]] && set -- "$@" "skopeo copy --dest-compress-format $format" "$restart" \
      "skopeo copy --dest-tls-verify=false --dest-compress-format $format oci:$(q "$text_oci"):$text_image docker://$text_image"
    [[ $format == gzip && $have_docker == 1 ]] && set -- "$@" "docker push" "$restart" "$docker push $text_image"
    run_scenario "$scenario" "$@"
    # Bytes sent, and the CPU time hyperfine measured, per command.
    bytes_file=$RESULTS/$scenario.bytes
    : >"$bytes_file"
    while [[ $# -gt 0 ]]; do
      bash -c "$2" >/dev/null 2>&1
      printf '%s\t%s\n' "$1" "$(registry_bytes "$3")" >>"$bytes_file"
      shift 3
    done
    python3 - "$RESULTS/$scenario.json" "$bytes_file" >"$RESULTS/$scenario.cpu.md" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))["results"]
sent = dict(line.rstrip("\n").split("\t") for line in open(sys.argv[2]) if line.strip())
print("| Command | Mean wall [s] | User [s] | System [s] | CPU / wall | Bytes in the registry |")
print("|:---|---:|---:|---:|---:|---:|")
for run in runs:
    name = run["command"]
    cpu = run["user"] + run["system"]
    print(f"| `{name}` | {run['mean']:.2f} | {run['user']:.2f} | {run['system']:.2f} | "
          f"{cpu / run['mean']:.2f} | {int(sent.get(name, 0)):,} |")
PY
    ;;
  esac
done

# --- report ------------------------------------------------------------------------------------
# write_section FILE MARKER TITLE SCENARIO...: the results of those scenarios that ran, into
# BENCHMARKS.md between MARKER's start and end comments (a new section TITLE when missing).
write_section() {
  local section=$1 marker=$2 title=$3 ran=() scenario
  shift 3
  for scenario in "$@"; do [[ -f $RESULTS/$scenario.md ]] && ran+=("$scenario"); done
  [[ ${#ran[@]} -gt 0 ]] || return 0
  {
    echo "Command: \`RUNS=$RUNS SCENARIOS=\"${ran[*]}\" bench/run-registry.sh\` (root; hyperfine, $RUNS timed runs each). $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo
    sed 's/^/- /' "$RESULTS/meta.txt" | grep -v '^- command\|^- date'
    for scenario in "${ran[@]}"; do
      echo
      case $scenario in
      P1) echo "**P1: push a 5-layer, 300 MB image to an empty registry**" ;;
      P2) echo "**P2: pull it into an empty store**" ;;
      C1) echo "**C1: S2 on an empty store with the registry cache of an earlier build (and cold for scale)**" ;;
      Z1) echo "**Z1: push a 5-layer, 300 MB compressible image gzip-compressed to an empty registry**" ;;
      Z2) echo "**Z2: the same zstd-compressed**" ;;
      esac
      echo
      cat "$RESULTS/$scenario.md"
      if [[ -f $RESULTS/$scenario.cpu.md ]]; then
        echo
        cat "$RESULTS/$scenario.cpu.md"
      fi
    done
  } >"$section"
  if [[ $UPDATE == 1 ]]; then
    python3 - "$repo/BENCHMARKS.md" "$section" "$marker" "$title" <<'PY'
import sys
path, section = sys.argv[1], open(sys.argv[2], encoding="utf-8").read().rstrip("\n")
start, end = f"<!-- {sys.argv[3]}:start -->", f"<!-- {sys.argv[3]}:end -->"
text = open(path, encoding="utf-8").read()
if start in text and end in text:
    head, rest = text.split(start, 1)
    text = head + start + "\n" + section + "\n" + end + rest.split(end, 1)[1]
else:
    text = text.rstrip("\n") + f"\n\n## {sys.argv[4]}\n\n" + start + "\n" + section + "\n" + end + "\n"
open(path, "w", encoding="utf-8").write(text)
PY
  fi
  cat "$section"
}
write_section "$RESULTS/section.md" registry-bench \
  "Registry transfers and the shared build cache (issue 5)" P1 P2 C1
write_section "$RESULTS/section-compression.md" compression-bench \
  "Compressed pushes: gzip and zstd, kiln vs skopeo vs docker push (issue 16)" Z1 Z2
notice "results in $RESULTS"
