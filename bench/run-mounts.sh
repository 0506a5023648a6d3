#!/usr/bin/env bash
# RUN --mount=type=cache side by side (issue 13): `kiln build` vs BuildKit v0.32.2 (buildctl
# against a private buildkitd), one hyperfine run per scenario with both tools in it, and a table
# written into BENCHMARKS.md between the mounts-bench markers.
#
# The build (bench/mounts/): FROM a Debian bookworm minbase made by mmdebstrap; BuildKit's apt
# recipe (keep the downloaded .debs); `RUN --mount=type=cache,target=/var/cache/apt,sharing=locked
# --mount=type=cache,target=/var/lib/apt,sharing=locked apt-get update && apt-get install` of
# python3-pip, python3-venv and four small packages; `COPY requirements.txt` and
# `RUN --mount=type=cache,target=/root/.cache/pip` with `pip download` of 12 pinned packages (26 MB
# of wheels) into a directory of that mount and `pip install --no-index` from it (why not pip's
# own HTTP cache: see the Dockerfile); `COPY app.py` and a RUN of it. Run time: about 11 minutes
# with RUNS=2 on the 2-core VM (the mmdebstrap tar, made once, takes 2-3 more).
#
#   M1  cold: empty cache and empty cache mounts (the base image is there)
#   M2  app.py changed (warm): the COPY of app.py and the RUN after it run again
#   M3  requirements.txt changed (warm): pip installs everything again, from its warm cache mount
#   M4  requirements.txt changed on a fresh store / fresh builder that imports the registry cache
#       of an earlier build with mode=max: kiln `--cache-from type=registry` of its `--cache-to
#       type=registry,...,mode=max`, BuildKit `--import-cache type=registry` of its
#       `--export-cache type=registry,...,mode=max`. The apt step comes from the cache, the pip
#       step runs: kiln's cache export carries cache-mount contents (the pip cache), BuildKit's
#       does not, so BuildKit downloads every wheel again.
#
# pip in the build trusts the CA bundle HOST_CA (default: $SSL_CERT_FILE, else Debian's bundle),
# copied into the context as host-ca.crt and bind-mounted into the pip step: a machine that
# reaches PyPI through a TLS-inspecting proxy (this VM) needs its CA there.
#
# A change is a comment line with a fresh nanosecond stamp appended to app.py (M2) or
# requirements.txt (M3, M4) in WORK/ctx, the copy of bench/mounts/ that both tools build; the
# repository's files stay as they are. Every timed build is a cache miss from that step on.
#
# The base: `mmdebstrap --variant=minbase --format=tar bookworm` from the machine's Debian mirror
# (the tar is kept in WORK and reused; delete WORK/rootfs.tar for a new one), imported with
# `kiln import` and pushed with `kiln push` to the loopback registry REGISTRY as
# REGISTRY/bench/mounts-base:bookworm, which both tools pull: the same manifest, the same bytes.
#
# BuildKit runs as a private buildkitd (the peer's binaries, the peer's flags: OCI worker, runc,
# host network) with its root and socket under WORK, so that emptying its cache touches no one
# else's. RUN steps of both tools use the host network: kiln's default; buildkitd's
# `--oci-worker-net=host`. BuildKit exports an image (`--output type=image,name=...`, no push; its
# default gzip layers), as kiln's `-t` tags one in its store.
#
# Cold (M1) and fresh (M4) mean, before every timed run: kiln gets a fresh --root, BuildKit a
# restarted buildkitd on a fresh --root; the previous roots are moved aside into WORK/trash, not
# deleted (deleting many files slows the next creations on ext4: see bench/run-build.sh), and the
# trash is emptied after each scenario. Then an untimed build of `FROM base` + `RUN true` pulls
# and unpacks the base, and `sync`. Warm (M2, M3) means the cache and cache mounts of the builds
# before, on one kiln root and one buildkitd that go from scenario to scenario (an untimed build
# fills them when no scenario before did). M4's registry caches are exported once, by an untimed
# build on that warm state, to REGISTRY/bench/mounts-cache:kiln and :buildkit.
#
# Before hyperfine, each tool builds the scenario once with its output in RESULTS/MN-TOOL.log
# (`--progress plain`); a tool whose logged build fails is left out of that scenario and the
# failure is shown in the table. The RUN steps reach deb.debian.org and PyPI: the cold numbers
# include those downloads and vary with the network.
#
# Needs root, hyperfine, python3, mmdebstrap (apt-get install mmdebstrap), runc, the registry
# peer and the BuildKit binaries: ../shared/peers/start-peers.sh registry buildkit
#
#   [RUNS=3] [SCENARIOS="M1 M2 M3 M4"] [KILN=build|PATH] [BUILDKIT=auto|skip]
#   [BUILDKIT_BIN=/var/tmp/kiln-peers/bin] [REGISTRY=127.0.0.1:5000]
#   [WORK=/var/tmp/kiln-bench-mounts] [RESULTS=DIR] [UPDATE=1|0] [KEEP=0|1] [HOST_CA=FILE]
#   bench/run-mounts.sh
#
# KILN=build (the default) runs `cargo build --release` and uses the kiln it built (in
# CARGO_TARGET_DIR when set); a path uses that binary. UPDATE=0 leaves BENCHMARKS.md alone.
# KEEP=1 keeps kiln's roots and the buildkitd root at the end (the rootfs tar is always kept).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-M1 M2 M3 M4}
KILN=${KILN:-build}
BUILDKIT=${BUILDKIT:-auto}
BUILDKIT_BIN=${BUILDKIT_BIN:-/var/tmp/kiln-peers/bin}
REGISTRY=${REGISTRY:-127.0.0.1:5000}
WORK=${WORK:-/var/tmp/kiln-bench-mounts}
RESULTS=${RESULTS:-$WORK/results/$(date +%Y%m%dT%H%M%S)}
UPDATE=${UPDATE:-1}
KEEP=${KEEP:-0}
HOST_CA=${HOST_CA:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}

notice() { echo "run-mounts: $*" >&2; }
die() { notice "$*"; exit 2; }
q() { printf '%q' "$1"; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
read -r -a scenarios <<<"$SCENARIOS"
[[ ${#scenarios[@]} -gt 0 ]] || die "SCENARIOS is empty; give some of: M1 M2 M3 M4"
for scenario in "${scenarios[@]}"; do
  [[ $scenario =~ ^M[1-4]$ ]] || die "unknown scenario '$scenario' (M1 M2 M3 M4)"
done
for tool in hyperfine python3 mmdebstrap curl; do
  command -v $tool >/dev/null || die "$tool is missing (apt-get install hyperfine python3 mmdebstrap curl)"
done
[[ -f $HOST_CA ]] || die "no CA bundle at $HOST_CA (HOST_CA=FILE: the pip step's PIP_CERT)"
curl -sf "http://$REGISTRY/v2/" >/dev/null ||
  die "no registry at $REGISTRY (../shared/peers/start-peers.sh registry)"
mkdir -p "$WORK" "$RESULTS"
WORK=$(cd "$WORK" && pwd)
RESULTS=$(cd "$RESULTS" && pwd)
free_gb=$(df -P --block-size=1G "$WORK" | awk 'NR == 2 {print $4}')
[[ $free_gb -ge 15 ]] || notice "only $free_gb GB free under $WORK: a cold scenario keeps about 1 GB per build until it ends"

# --- tools -------------------------------------------------------------------------------------
tools=()
if [[ $KILN == build ]]; then
  cargo build --release --quiet || die "cargo build --release failed"
  kiln=${CARGO_TARGET_DIR:-$repo/target}/release/kiln
else
  kiln=$KILN
fi
[[ -x $kiln ]] || die "$kiln is not an executable"
tools+=(kiln)

buildkitd=$BUILDKIT_BIN/buildkitd
buildctl_bin=$BUILDKIT_BIN/buildctl
bk_sock=$WORK/buildkitd.sock
bk_root=$WORK/buildkit
if [[ $BUILDKIT == skip ]]; then
  notice "BuildKit skipped (BUILDKIT=skip)"
elif [[ ! -x $buildkitd || ! -x $buildctl_bin ]]; then
  notice "BuildKit skipped: no buildkitd/buildctl in $BUILDKIT_BIN (../shared/peers/start-peers.sh buildkit unpacks them)"
elif ! command -v runc >/dev/null; then
  notice "BuildKit skipped: runc is missing (apt-get install runc)"
else
  tools+=(buildkit)
fi
buildctl="$(q "$buildctl_bin") --addr unix://$(q "$bk_sock")"

# --- the base image ----------------------------------------------------------------------------
base=$REGISTRY/bench/mounts-base:bookworm
rootfs=$WORK/rootfs.tar
if [[ ! -f $rootfs ]]; then
  notice "making the Debian base: mmdebstrap --variant=minbase bookworm (a few minutes)"
  mmdebstrap --variant=minbase --format=tar bookworm "$rootfs.tmp" >"$WORK/mmdebstrap.log" 2>&1 ||
    { tail -n 20 "$WORK/mmdebstrap.log" >&2; die "mmdebstrap failed; log in $WORK/mmdebstrap.log"; }
  mv "$rootfs.tmp" "$rootfs"
fi
# Imported into a root of its own and pushed: the registry then holds the base both tools pull.
base_root=$WORK/kiln-base
if [[ ! -f $WORK/base.stamp || $(cat "$WORK/base.stamp") != "$(stat -c %Y-%s "$rootfs") $base" ]] ||
  ! curl -sf -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY/v2/bench/mounts-base/manifests/bookworm"; then
  notice "importing $rootfs and pushing it as $base"
  rm -rf --one-file-system "$base_root"
  "$kiln" --root "$base_root" import -m "mmdebstrap --variant=minbase bookworm" "$rootfs" "$base" >/dev/null
  "$kiln" --root "$base_root" push "$base" >"$WORK/base-push.log" 2>&1 ||
    { cat "$WORK/base-push.log" >&2; die "kiln push $base failed"; }
  echo "$(stat -c %Y-%s "$rootfs") $base" >"$WORK/base.stamp"
fi

# --- contexts ----------------------------------------------------------------------------------
ctx=$WORK/ctx/mounts
rm -rf "$ctx"
mkdir -p "$ctx"
cp "$repo/bench/mounts/Dockerfile" "$repo/bench/mounts/requirements.txt" "$repo/bench/mounts/app.py" "$ctx/"
cp "$HOST_CA" "$ctx/host-ca.crt"
preload=$WORK/ctx/preload
mkdir -p "$preload"
printf 'FROM %s\nRUN true\n' "$base" >"$preload/Dockerfile"
change_app="echo \"# change \$(date +%s%N)\" >> $(q "$ctx/app.py")"
change_requirements="echo \"# change \$(date +%s%N)\" >> $(q "$ctx/requirements.txt")"

# --- the private buildkitd ---------------------------------------------------------------------
trash=$WORK/trash
# WORK/buildkit.sh start|stop|fresh: fresh stops buildkitd, moves its root into the trash, starts
# it again on an empty root and pulls and unpacks the base with an untimed build.
cat >"$WORK/buildkit.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
stop() {
  if [[ -f $(q "$WORK/buildkitd.pid") ]]; then
    pid=\$(cat $(q "$WORK/buildkitd.pid"))
    kill "\$pid" 2>/dev/null || true
    for _ in \$(seq 1 100); do kill -0 "\$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f $(q "$WORK/buildkitd.pid")
  fi
}
start() {
  setsid sh -c 'echo \$\$ >"\$0"; exec "\$@"' $(q "$WORK/buildkitd.pid") $(q "$buildkitd") \\
    --root $(q "$bk_root") --addr unix://$(q "$bk_sock") \\
    --oci-worker=true --containerd-worker=false --oci-worker-net=host \\
    --allow-insecure-entitlement network.host >>$(q "$WORK/buildkitd.log") 2>&1 </dev/null &
  for _ in \$(seq 1 100); do $buildctl debug workers >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "buildkitd did not start; see $(q "$WORK/buildkitd.log")" >&2
  exit 1
}
case \$1 in
start) start ;;
stop) stop ;;
fresh)
  stop
  mkdir -p $(q "$trash")
  [ ! -e $(q "$bk_root") ] || mv $(q "$bk_root") "\$(mktemp -d -p $(q "$trash"))/buildkit"
  start
  $buildctl build --frontend dockerfile.v0 --local context=$(q "$preload") --local dockerfile=$(q "$preload") >/dev/null 2>&1
  sync
  ;;
esac
SH
chmod +x "$WORK/buildkit.sh"

# WORK/kiln-fresh.sh SN: moves scenario SN's kiln root into the trash, then pulls and unpacks the
# base into a new one with an untimed build.
kiln_root() { echo "$WORK/kiln-root/$1"; }
cat >"$WORK/kiln-fresh.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
root=$(q "$WORK/kiln-root")/\$1
mkdir -p $(q "$trash")
[ ! -e "\$root" ] || mv "\$root" "\$(mktemp -d -p $(q "$trash"))/root"
$(q "$kiln") --root "\$root" build --progress plain $(q "$preload") >/dev/null 2>&1
sync
SH
chmod +x "$WORK/kiln-fresh.sh"

cleanup() {
  if [[ " ${tools[*]} " == *" buildkit "* ]]; then "$WORK/buildkit.sh" stop || true; fi
  rm -rf --one-file-system "$trash" || notice "could not empty $trash"
  [[ $KEEP == 1 ]] && return 0
  rm -rf --one-file-system "$WORK/kiln-root" "$bk_root" "$base_root" || notice "could not remove the roots under $WORK"
}
trap cleanup EXIT
rm -rf --one-file-system "$trash" "$WORK/kiln-root"

# --- commands ----------------------------------------------------------------------------------
cache_ref() { echo "$REGISTRY/bench/mounts-cache:$1"; }

# build_command TOOL SN [EXTRA]: EXTRA is `export` (write the registry cache) or `import` (read it).
build_command() {
  local extra=${3:-}
  case $1 in
  kiln)
    local cmd
    cmd="$(q "$kiln") --root $(q "$(kiln_root "$2")") build -t bench/mounts --progress plain"
    [[ $extra == export ]] && cmd+=" --cache-to type=registry,ref=$(cache_ref kiln),mode=max"
    [[ $extra == import ]] && cmd+=" --cache-from type=registry,ref=$(cache_ref kiln)"
    echo "$cmd $(q "$ctx")"
    ;;
  buildkit)
    local cmd
    cmd="$buildctl build --progress plain --frontend dockerfile.v0 --local context=$(q "$ctx") --local dockerfile=$(q "$ctx") --output type=image,name=bench/mounts"
    [[ $extra == export ]] && cmd+=" --export-cache type=registry,ref=$(cache_ref buildkit),mode=max"
    [[ $extra == import ]] && cmd+=" --import-cache type=registry,ref=$(cache_ref buildkit)"
    echo "$cmd"
    ;;
  esac
}

# fresh TOOL SN: the command that gives the tool an empty cache with the base in it.
fresh() {
  case $1 in
  kiln) echo "$(q "$WORK/kiln-fresh.sh") $2" ;;
  buildkit) echo "$(q "$WORK/buildkit.sh") fresh" ;;
  esac
}

name_of() { case $1 in kiln) echo kiln ;; buildkit) echo BuildKit ;; esac; }

meta=$RESULTS/meta.tsv
{
  command="RUNS=$RUNS SCENARIOS=\"${scenarios[*]}\""
  [[ $KILN == build ]] || command+=" KILN=$KILN"
  [[ $BUILDKIT == auto ]] || command+=" BUILDKIT=$BUILDKIT"
  printf 'command\t%s bench/run-mounts.sh\n' "$command"
  printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf 'machine\t%s cores (%s), %s GiB, Linux %s\n' "$(nproc)" \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" \
    "$(awk '/^MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)" "$(uname -r)"
  printf 'load_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf 'runs\t%s\n' "$RUNS"
  printf 'tools\t%s\n' "${tools[*]}"
  printf 'version_kiln\tkiln %s (%s, commit %s%s)\n' \
    "$("$kiln" --version 2>/dev/null | awk '{print $NF}' || echo '?')" \
    "$([[ $KILN == build ]] && echo "release build of this tree" || echo "$kiln")" "$(git rev-parse --short HEAD)" \
    "$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ', with uncommitted changes')"
  if [[ " ${tools[*]} " == *" buildkit "* ]]; then
    printf 'version_buildkit\tBuildKit %s (buildkitd, private instance), buildctl %s\n' \
      "$("$buildkitd" --version | cut -d' ' -f3)" "$("$buildctl_bin" --version | cut -d' ' -f3)"
  fi
  printf 'version_hyperfine\t%s\n' "$(hyperfine --version)"
  printf 'base\t%s (%s)\n' "$base" "$(mmdebstrap --version | head -1)"
  for tool in "${tools[@]}"; do
    printf 'cmd_%s\t%s\n' "$tool" "$(build_command "$tool" main)"
    printf 'fresh_%s\t%s\n' "$tool" "$(fresh "$tool" main)"
    printf 'export_%s\t%s\n' "$tool" "$(build_command "$tool" main export)"
    printf 'import_%s\t%s\n' "$tool" "$(build_command "$tool" main import)"
  done
} >"$meta"

record_failure() {
  notice "$1 $(name_of "$2") FAILED (exit $3): $4"
  tail -n 20 "$5" >&2
  printf '%s\t%s\t%s\t%s\n' "$2" "$3" "$4" "$5" >>"$RESULTS/$1.failed"
}

# run_logged LOG COMMAND...: runs a shell command line with its output appended to LOG.
run_logged() {
  local log=$1
  shift
  echo "\$ $*" >>"$log"
  bash -c "$*" >>"$log" 2>&1
}

# One kiln root ("main") and one buildkitd carry the state from scenario to scenario, as a
# developer's machine would: M1 ends warm for M2, M2 for M3, M3 for M4's cache export.
if [[ " ${tools[*]} " == *" buildkit "* ]]; then "$WORK/buildkit.sh" fresh; fi

for scenario in "${scenarios[@]}"; do
  declare -A prepares=() commands=()
  measured=()
  for tool in "${tools[@]}"; do
    log=$RESULTS/$scenario-$tool.log
    : >"$log"
    notice "$scenario $(name_of "$tool"): logged build -> $log"
    cmd=$(build_command "$tool" main)
    case $scenario in
    M1) prepare=$(fresh "$tool" main) ;;
    M2 | M3)
      # An untimed build first: it fills the cache when no scenario before did (its output
      # also goes to the log); the logged build after it is a warm one like the timed ones.
      run_logged "$log" "$cmd" || true
      if [[ $scenario == M2 ]]; then prepare=$change_app; else prepare=$change_requirements; fi
      ;;
    M4)
      # The registry cache is exported from the warm state; every timed build then starts from
      # a fresh store/builder that imports it.
      export_cmd=$(build_command "$tool" main export)
      run_logged "$log" "$export_cmd" || {
        record_failure "$scenario" "$tool" $? "$export_cmd" "$log"
        continue
      }
      prepare="$(fresh "$tool" main) && $change_requirements"
      cmd=$(build_command "$tool" main import)
      ;;
    esac
    start=$(date +%s.%N)
    if run_logged "$log" "$prepare" && run_logged "$log" "$cmd"; then
      awk -v start="$start" -v end="$(date +%s.%N)" 'BEGIN { printf "\n# wall time %.2f s (prepare included)\n", end - start }' >>"$log"
      measured+=("$tool")
      prepares[$tool]=$prepare
      commands[$tool]=$cmd
    else
      record_failure "$scenario" "$tool" $? "$cmd" "$log"
    fi
  done
  if [[ ${#measured[@]} -gt 0 ]]; then
    args=(--runs "$RUNS" --export-json "$RESULTS/$scenario.json" --export-markdown "$RESULTS/$scenario.md")
    for tool in "${measured[@]}"; do
      args+=(--prepare "${prepares[$tool]}" -n "$(name_of "$tool")"
        "${commands[$tool]} >$(q "$RESULTS/$scenario-$tool.last.log") 2>&1")
    done
    if ! hyperfine "${args[@]}"; then
      rm -f "$RESULTS/$scenario.json" "$RESULTS/$scenario.md"
      failing=$(cd "$RESULTS" && for tool in "${measured[@]}"; do echo "$scenario-$tool.last.log"; done |
        { xargs ls -t 2>/dev/null || true; } | head -1 | sed "s/^$scenario-//; s/\.last\.log\$//")
      [[ -n $failing ]] || failing=${measured[0]}
      cp "$RESULTS/$scenario-$failing.last.log" "$RESULTS/$scenario-$failing.failed.log" 2>/dev/null || true
      record_failure "$scenario" "$failing" "?" "${commands[$failing]}" "$RESULTS/$scenario-$failing.failed.log"
    fi
  fi
  unset prepares commands
  rm -rf --one-file-system "$trash"
done
printf 'load_end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$meta"

report=("$RESULTS")
[[ $UPDATE == 1 ]] && report+=("$repo/BENCHMARKS.md")
python3 "$repo/bench/mounts/report.py" "${report[@]}"
notice "results (hyperfine JSON and markdown, build logs) in $RESULTS"
