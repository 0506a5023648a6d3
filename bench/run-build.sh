#!/usr/bin/env bash
# Image builds side by side: `kiln build` vs BuildKit (the peer dockerd's, DOCKER_BUILDKIT=1) vs
# `buildah bud`, one hyperfine run per scenario with the three tools in it, and a summary table
# (kiln's time as a fraction of BuildKit's next to the issue's targets) written into BENCHMARKS.md
# between the build-bench markers.
#
#   S1  30 `RUN echo $i > /f$i` steps, cold
#   S2  a generated 20,000-file / 230 MB context, `COPY . /ctx` + one RUN, cold
#   S3  S2 rebuilt with nothing changed (warm cache)
#   S4  S2 with one file changed (the prepare step rewrites `changing.txt` before every run)
#   S5  four independent stages each hashing 600 MB of zeros, then a final stage copying the four
#       results (`COPY --from=`), cold
#
# Every scenario starts from the same base, identical for all tools: `FROM scratch`,
# `COPY busybox /bin/busybox` (Debian's busybox-static, copied into each context) and
# `RUN ["/bin/busybox","--install","-s","/bin"]`. What hyperfine measures is the wall time of the
# whole build command: reading and sending/hashing the context, every step (the base steps too;
# cached in S3 and S4), exporting the layers and tagging the image.
#
# Cold means an empty cache before every timed run: kiln gets a fresh `--root`; BuildKit loses its
# whole build cache (`docker builder prune -af`) and the image; buildah, which runs on a private
# storage root under WORK so that no one else's images are touched, loses every image in it
# (`buildah rmi -af`: its `--layers` cache is those intermediate images). kiln's previous root is
# moved aside (into WORK/kiln-trash, deleted at the end), not deleted, in the prepare step: on
# ext4, creating files right after tens of thousands were deleted nearby costs seconds of system
# time (the inode allocator skips recently freed inodes, fs/ext4/ialloc.c `recently_deleted()`),
# which would charge the deletion of one run's output to the next run. Every tool's cold prepare
# then ends with `sync`, so no run pays for the writeback of the one before it. Warm means the same
# cache across runs; an untimed build fills it, and the logged build below (itself a warm build)
# is the warm-up, so hyperfine needs no --warmup of its own.
#
# Before hyperfine, each tool builds the scenario once with its output logged to
# RESULTS/SN-TOOL.log (`--progress plain`, for where the time goes). A tool whose logged build fails
# is left out of that scenario's hyperfine run, and the failure is shown in the table. So is a
# tool whose timed build fails twice (buildah 1.28 fails now and then with "Close_Fd sealing memfd
# copy: Device or resource busy"); after its first failure the scenario runs again.
#
# Needs root, hyperfine, python3, /bin/busybox; the peers come from ../shared/peers:
#   ../shared/peers/start-peers.sh docker buildah
# A tool that is absent is skipped with a notice.
#
#   [RUNS=3] [SCENARIOS="S1 S2 S3 S4 S5"] [KILN=build|skip|PATH] [BUILDKIT=auto|skip]
#   [BUILDAH=auto|skip] [WORK=/var/tmp/kiln-bench-build] [RESULTS=DIR] [UPDATE=1|0] [KEEP=0|1]
#   [KILN_BASELINE=PATH] bench/run-build.sh
#
# KILN_BASELINE=PATH adds a second kiln binary ("kiln-baseline", with a root of its own) to every
# hyperfine run, for an old-vs-new comparison of kiln itself in one run (the summary table of
# BENCHMARKS.md ignores it; read RESULTS/SN.md).
#
# KILN=build (the default) runs `cargo build --release` and uses target/release/kiln; a path uses
# that binary. UPDATE=0 leaves BENCHMARKS.md alone. KEEP=1 keeps the tools' caches and images at
# the end (the generated context under WORK is always kept, and reused while the generator is
# unchanged).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

RUNS=${RUNS:-3}
# NETWORK=default (each tool's own private network for RUN steps) or host (the host's; kiln then
# needs --allow network.host, as BuildKit's entitlement rule says).
NETWORK=${NETWORK:-default}
# BuildKit's network: the host's by default, since the peer dockerd has no bridge network
# ("network bridge not found"); its host network is the cheaper one, so kiln's private network
# is compared with BuildKit at its fastest.
BUILDKIT_NETWORK=${BUILDKIT_NETWORK:-host}
SCENARIOS=${SCENARIOS:-S1 S2 S3 S4 S5}
KILN=${KILN:-build}
BUILDKIT=${BUILDKIT:-auto}
BUILDAH=${BUILDAH:-auto}
WORK=${WORK:-/var/tmp/kiln-bench-build}
RESULTS=${RESULTS:-$WORK/results/$(date +%Y%m%dT%H%M%S)}
UPDATE=${UPDATE:-1}
KEEP=${KEEP:-0}

notice() { echo "run-build: $*" >&2; }
die() { notice "$*"; exit 2; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
read -r -a scenarios <<<"$SCENARIOS"
[[ ${#scenarios[@]} -gt 0 ]] || die "SCENARIOS is empty; give some of: S1 S2 S3 S4 S5"
for scenario in "${scenarios[@]}"; do
  [[ $scenario =~ ^S[1-5]$ ]] || die "unknown scenario '$scenario' (S1 S2 S3 S4 S5)"
done
command -v hyperfine >/dev/null || die "hyperfine is missing: apt-get install hyperfine"
[[ -x /bin/busybox ]] || die "/bin/busybox is missing: apt-get install busybox-static"
mkdir -p "$WORK" "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)

# --- tools -------------------------------------------------------------------------------------
tools=()
kiln=
case $KILN in
skip) notice "kiln skipped (KILN=skip)" ;;
build)
  if cargo build --release --quiet; then kiln=$repo/target/release/kiln
  else notice "kiln skipped: cargo build --release failed"; fi
  ;;
*) kiln=$KILN ;;
esac
if [[ -n $kiln ]]; then
  if [[ ! -x $kiln ]]; then
    notice "kiln skipped: $kiln is not an executable"; kiln=
  elif ! help=$("$kiln" build --help 2>&1) || [[ $help != *--network* || $help != *--progress* ]]; then
    notice "kiln skipped: '$kiln build --help' shows no --network/--progress (kiln build not there yet?)"; kiln=
  else
    tools+=(kiln)
  fi
fi

# The 20.10 client that comes with the peer dockerd: it drives BuildKit itself, where a newer
# client elsewhere on PATH wants a buildx plugin that is not installed.
docker=/usr/bin/docker
export DOCKER_HOST=${DOCKER_HOST:-unix:///var/tmp/kiln-peers/docker.sock}
export DOCKER_BUILDKIT=1
if [[ $BUILDKIT == skip ]]; then
  notice "BuildKit skipped (BUILDKIT=skip)"
elif [[ ! -x $docker ]] || ! "$docker" version >/dev/null 2>&1; then
  notice "BuildKit skipped: no dockerd at $DOCKER_HOST (start it: ../shared/peers/start-peers.sh docker buildah)"
else
  tools+=(buildkit)
fi

buildah_store=$WORK/buildah
buildah=(buildah --root "$buildah_store/root" --runroot "$buildah_store/run")
if [[ $BUILDAH == skip ]]; then
  notice "buildah skipped (BUILDAH=skip)"
elif ! command -v buildah >/dev/null; then
  notice "buildah skipped: not installed (../shared/peers/start-peers.sh docker buildah)"
else
  tools+=(buildah)
fi
KILN_BASELINE=${KILN_BASELINE:-}
if [[ -n $KILN_BASELINE ]]; then
  [[ -x $KILN_BASELINE ]] || die "KILN_BASELINE=$KILN_BASELINE is not an executable"
  tools+=(baseline)
fi
[[ ${#tools[@]} -gt 0 ]] || die "no tool to measure"

# --- contexts ----------------------------------------------------------------------------------
base='FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]'

# context DIR: a directory with busybox in it (Dockerfile written by the caller).
context() {
  mkdir -p "$1"
  cmp -s /bin/busybox "$1/busybox" || cp /bin/busybox "$1/busybox"
}

big_context() {
  local dir=$WORK/ctx/big stamp
  stamp=$(sha256sum <"$repo/bench/gen-context.py")
  if [[ ! -f $WORK/ctx/big.stamp || $(cat "$WORK/ctx/big.stamp") != "$stamp" ]]; then
    notice "generating the 20,000-file context in $dir"
    rm -rf --one-file-system "$dir" "$WORK/ctx/big.stamp"
    python3 "$repo/bench/gen-context.py" "$dir/files"
    echo "$stamp" >"$WORK/ctx/big.stamp"
  fi
  context "$dir"
  printf '%s\nCOPY . /ctx\nRUN find /ctx -type f | wc -l > /count\n' "$base" >"$dir/Dockerfile"
  echo "$dir"
}

# scenario_context SN: prints the scenario's context directory, ready.
scenario_context() {
  local dir=$WORK/ctx/$1
  case $1 in
  S1)
    context "$dir"
    { echo "$base"; for i in $(seq 1 30); do echo "RUN echo $i > /f$i"; done; } >"$dir/Dockerfile"
    echo "$dir"
    ;;
  S2 | S3 | S4) big_context ;;
  S5)
    context "$dir"
    {
      echo "${base/FROM scratch/FROM scratch AS base}"
      # Distinct output names keep the four RUNs distinct steps (BuildKit merges identical ones).
      for i in 1 2 3 4; do printf 'FROM base AS hash%s\nRUN head -c 600000000 /dev/zero | sha256sum > /h%s\n' "$i" "$i"; done
      echo "FROM scratch"
      for i in 1 2 3 4; do echo "COPY --from=hash$i /h$i /h$i"; done
    } >"$dir/Dockerfile"
    echo "$dir"
    ;;
  esac
}

# --- commands ----------------------------------------------------------------------------------
q() { printf '%q' "$1"; }
kiln_root() { echo "$WORK/kiln-root/$1"; }
# network_flags TOOL: the --network flags for $NETWORK (none for the default network).
network_flags() {
  local network=$NETWORK
  [[ $1 == buildkit ]] && network=$BUILDKIT_NETWORK
  [[ $network == default ]] && return
  echo -n " --network $network"
  [[ $1 == kiln && $network == host ]] && echo -n " --allow network.host"
}

# build_command TOOL SN CONTEXT
build_command() {
  local tag=bench${2#S}
  case $1 in
  kiln) echo "$(q "$kiln") --root $(q "$(kiln_root "$2")") build -t $tag$(network_flags kiln) --progress plain $(q "$3")" ;;
  baseline) echo "$(q "$KILN_BASELINE") --root $(q "$(kiln_root "$2-baseline")") build -t $tag$(network_flags kiln) --progress plain $(q "$3")" ;;
  buildkit) echo "$docker build$(network_flags buildkit) --progress plain -t $tag $(q "$3")" ;;
  buildah) echo "$(printf '%q ' "${buildah[@]}")bud --isolation chroot --storage-driver overlay --layers -t $tag $(q "$3")" ;;
  esac
}

kiln_trash=$WORK/kiln-trash

# cold_prepare TOOL SN: empties the tool's cache (kiln's root is moved aside, see the header),
# then syncs.
cold_prepare() {
  case $1 in
  kiln | baseline)
    local root
    root=$(q "$(kiln_root "$2")")
    [[ $1 == baseline ]] && root=$(q "$(kiln_root "$2-baseline")")
    echo "mkdir -p $(q "$kiln_trash") && { [ ! -e $root ] || mv $root \"\$(mktemp -d -p $(q "$kiln_trash"))\"/root; } && sync"
    ;;
  buildkit) echo "$docker builder prune -af >/dev/null && { $docker rmi -f bench${2#S} >/dev/null 2>&1 || true; } && sync" ;;
  buildah) echo "{ $(printf '%q ' "${buildah[@]}")rmi -af >/dev/null 2>&1 || true; } && sync" ;;
  esac
}

name_of() {
  case $1 in kiln) echo kiln ;; baseline) echo kiln-baseline ;; buildkit) echo BuildKit ;; buildah) echo buildah ;; esac
}

# --- run ---------------------------------------------------------------------------------------
cleanup() {
  [[ $KEEP == 1 ]] && return 0
  rm -rf --one-file-system "$WORK/kiln-root" "$kiln_trash" || notice "could not remove $WORK/kiln-root or $kiln_trash"
  if [[ " ${tools[*]} " == *" buildkit "* ]]; then
    for n in 1 2 3 4 5; do "$docker" rmi -f "bench$n" >/dev/null 2>&1 || true; done
    "$docker" builder prune -af >/dev/null 2>&1 || true
  fi
  if [[ " ${tools[*]} " == *" buildah "* ]]; then
    "${buildah[@]}" rmi -af >/dev/null 2>&1 || true
    rm -rf --one-file-system "$buildah_store" || notice "could not remove $buildah_store"
  fi
}
trap cleanup EXIT

meta=$RESULTS/meta.tsv
{
  command="RUNS=$RUNS SCENARIOS=\"${scenarios[*]}\""
  [[ $KILN == build ]] || command+=" KILN=$KILN"
  [[ $BUILDKIT == auto ]] || command+=" BUILDKIT=$BUILDKIT"
  [[ $BUILDAH == auto ]] || command+=" BUILDAH=$BUILDAH"
  [[ -z $KILN_BASELINE ]] || command+=" KILN_BASELINE=$KILN_BASELINE"
  printf 'command\t%s bench/run-build.sh\n' "$command"
  printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf 'machine\t%s cores (%s), %s GiB, Linux %s\n' "$(nproc)" \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" \
    "$(awk '/^MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)" "$(uname -r)"
  printf 'load_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf 'runs\t%s\n' "$RUNS"
  printf 'tools\t%s\n' "${tools[*]}"
  if [[ -n $kiln ]]; then
    printf 'version_kiln\tkiln %s (%s, commit %s%s)\n' \
      "$("$kiln" --version 2>/dev/null | awk '{print $NF}' || echo '?')" \
      "$([[ $KILN == build ]] && echo "release build of this tree" || echo "$kiln")" "$(git rev-parse --short HEAD)" \
      "$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ', with uncommitted changes')"
  fi
  [[ -z $KILN_BASELINE ]] || printf 'version_baseline\t%s\n' "$KILN_BASELINE"
  if [[ " ${tools[*]} " == *" buildkit "* ]]; then
    printf 'version_buildkit\tdockerd %s (its embedded BuildKit), client %s\n' \
      "$("$docker" version --format '{{.Server.Version}}')" "$("$docker" version --format '{{.Client.Version}}')"
  fi
  if [[ " ${tools[*]} " == *" buildah "* ]]; then printf 'version_buildah\t%s\n' "$(buildah --version)"; fi
  printf 'version_hyperfine\t%s\n' "$(hyperfine --version)"
  printf 'version_busybox\t%s\n' "$(/bin/busybox | head -1 | sed 's/ multi-call binary.*//')"
  for tool in "${tools[@]}"; do
    printf 'cmd_%s\t%s\n' "$tool" "$(build_command "$tool" SN CONTEXT)"
    printf 'prepare_%s\t%s\n' "$tool" "$(cold_prepare "$tool" SN)"
  done
} >"$meta"

# record_failure SN TOOL STATUS COMMAND LOG: one line of RESULTS/SN.failed, shown in the table.
record_failure() {
  notice "$1 $(name_of "$2") FAILED (exit $3): $4"
  tail -n 20 "$5" >&2
  printf '%s\t%s\t%s\t%s\n' "$2" "$3" "$4" "$5" >>"$RESULTS/$1.failed"
}

for scenario in "${scenarios[@]}"; do
  ctx=$(scenario_context "$scenario")
  warm=0
  [[ $scenario == S3 || $scenario == S4 ]] && warm=1
  change="date +%s%N > $(q "$ctx/files/changing.txt")"
  # A warm scenario starts from an empty cache, filled by the logged build below.
  rm -rf --one-file-system "$(kiln_root "$scenario")" "$(kiln_root "$scenario-baseline")"
  declare -A prepares=() commands=()
  measured=()
  for tool in "${tools[@]}"; do
    cmd=$(build_command "$tool" "$scenario" "$ctx")
    case $scenario in
    S3) prepare=true ;;
    S4) prepare=$change ;;
    *) prepare=$(cold_prepare "$tool" "$scenario") ;;
    esac
    log=$RESULTS/$scenario-$tool.log
    notice "$scenario $(name_of "$tool"): logged build -> $log"
    : >"$log"
    # Warm scenarios: a first build fills the cache; the logged one is a warm (S3) or
    # one-file-changed (S4) build like the timed ones, and the warm-up for them.
    if [[ $warm == 1 ]]; then bash -c "$cmd" >>"$log" 2>&1 || true; fi
    start=$(date +%s.%N)
    if bash -c "$prepare" && bash -c "$cmd" >>"$log" 2>&1; then
      awk -v start="$start" -v end="$(date +%s.%N)" 'BEGIN { printf "\n# wall time %.2f s\n", end - start }' >>"$log"
      measured+=("$tool")
      prepares[$tool]=$prepare
      commands[$tool]=$cmd
    else
      record_failure "$scenario" "$tool" $? "$cmd" "$log"
    fi
  done
  # A timed run that fails stops hyperfine. Each command's output goes to SN-TOOL.last.log
  # (overwritten by every run), so the newest of those names the tool that failed: its first
  # failure gets the scenario run again, its second leaves it out of the scenario.
  failed_once=()
  while [[ ${#measured[@]} -gt 0 ]]; do
    args=(--runs "$RUNS" --export-json "$RESULTS/$scenario.json" --export-markdown "$RESULTS/$scenario.md")
    for tool in "${measured[@]}"; do
      args+=(--prepare "${prepares[$tool]}" -n "$(name_of "$tool")"
        "${commands[$tool]} >$(q "$RESULTS/$scenario-$tool.last.log") 2>&1")
    done
    hyperfine "${args[@]}" && break
    rm -f "$RESULTS/$scenario.json" "$RESULTS/$scenario.md" # hyperfine leaves them empty
    failing=$(cd "$RESULTS" && for tool in "${measured[@]}"; do echo "$scenario-$tool.last.log"; done |
      { xargs ls -t 2>/dev/null || true; } | head -1 | sed "s/^$scenario-//; s/\.last\.log\$//")
    [[ -n $failing ]] || die "$scenario: hyperfine failed before any build ran"
    if [[ " ${failed_once[*]} " == *" $failing "* ]]; then
      log=$RESULTS/$scenario-$failing.failed.log
      cp "$RESULTS/$scenario-$failing.last.log" "$log"
      record_failure "$scenario" "$failing" "?" "${commands[$failing]}" "$log"
      remaining=()
      for tool in "${measured[@]}"; do [[ $tool == "$failing" ]] || remaining+=("$tool"); done
      measured=("${remaining[@]}")
    else
      notice "$scenario: a timed $(name_of "$failing") build failed; running the scenario again"
      tail -n 5 "$RESULTS/$scenario-$failing.last.log" >&2
      failed_once+=("$failing")
    fi
  done
  unset prepares commands
done
printf 'load_end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$meta"

report=("$RESULTS")
[[ $UPDATE == 1 ]] && report+=("$repo/BENCHMARKS.md")
python3 "$repo/bench/build-report.py" "${report[@]}"
notice "results (hyperfine JSON and markdown, build logs) in $RESULTS"
