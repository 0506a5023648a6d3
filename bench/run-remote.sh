#!/usr/bin/env bash
# Remote sources side by side (issue 14): `kiln build` vs BuildKit v0.32.2 (`buildctl` against
# the peer buildkitd), one hyperfine run per scenario with both tools in it; the summary goes to
# RESULTS/summary.md (copy it into BENCHMARKS.md by hand, with this command).
#
#   R1  ADD of a 256 MiB file from a loopback HTTP server (ETag, Last-Modified), cold
#   R2  R1 again, the URL unchanged (warm: a conditional request, nothing downloaded)
#   R3  ADD of a git repository (4,000 files in 40 directories, served by `git daemon` on
#       loopback) at a branch, cold
#   R4  R3 again, the branch unchanged (warm: one ls-remote, nothing fetched)
#   R5  COPY --link of 4,000 files onto a stage whose RUN changes on every build (warm: the
#       linked copy is reused, only the RUN and the merge run)
#
# Every Dockerfile starts FROM scratch with Debian's static busybox copied in (the context
# holds it), identical for both tools. Cold means an empty build cache before every timed run:
# kiln gets a fresh --root (the old one moved aside into WORK/trash, deleted at the end: see
# bench/run-build.sh for why not deleted in place); BuildKit loses its whole cache
# (`buildctl prune --all`, which takes its git and http source caches too). Warm means the cache
# of the build before; an untimed build fills it. Both make an image in their own store (kiln
# `-t`, BuildKit `--output type=image` into its content store, no push): both compress the new
# layers.
#
# Needs root, hyperfine, python3, git, /bin/busybox, and the peer buildkitd:
#   ../shared/peers/start-peers.sh buildkit
#
#   [RUNS=5] [SCENARIOS="R1 R2 R3 R4 R5"] [KILN=build|PATH] [WORK=/var/tmp/kiln-bench-remote]
#   [RESULTS=DIR] bench/run-remote.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

RUNS=${RUNS:-5}
SCENARIOS=${SCENARIOS:-R1 R2 R3 R4 R5}
KILN=${KILN:-build}
WORK=${WORK:-/var/tmp/kiln-bench-remote}
RESULTS=${RESULTS:-$WORK/results/$(date +%Y%m%dT%H%M%S)}

notice() { echo "run-remote: $*" >&2; }
die() { notice "$*"; exit 2; }
q() { printf '%q' "$1"; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
read -r -a scenarios <<<"$SCENARIOS"
for scenario in "${scenarios[@]}"; do
  [[ $scenario =~ ^R[1-5]$ ]] || die "unknown scenario '$scenario' (R1 R2 R3 R4 R5)"
done
for tool in hyperfine python3 git; do
  command -v $tool >/dev/null || die "$tool is missing (apt-get install hyperfine python3 git)"
done
[[ -x /bin/busybox ]] || die "/bin/busybox is missing: apt-get install busybox-static"
eval "$(../shared/peers/start-peers.sh --env)"
buildctl_bin=$PEER_BUILDCTL
"$buildctl_bin" debug workers >/dev/null 2>&1 ||
  die "no buildkitd at $BUILDKIT_HOST (../shared/peers/start-peers.sh buildkit)"
mkdir -p "$WORK" "$RESULTS"
WORK=$(cd "$WORK" && pwd)
RESULTS=$(cd "$RESULTS" && pwd)

if [[ $KILN == build ]]; then
  cargo build --release --quiet || die "cargo build --release failed"
  kiln=${CARGO_TARGET_DIR:-$repo/target}/release/kiln
else
  kiln=$KILN
fi
[[ -x $kiln ]] || die "$kiln is not an executable"

# --- servers -----------------------------------------------------------------------------------
served=$WORK/served
mkdir -p "$served"
[[ -f $served/big.bin ]] || head -c $((256 << 20)) /dev/urandom >"$served/big.bin"
# A static file server with ETag and Last-Modified (python's http.server sends no ETag).
cat >"$WORK/serve.py" <<'PY'
import hashlib, http.server, os, sys
root = sys.argv[1]
etags = {}
class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=root, **k)
    def end_headers(self):
        path = self.translate_path(self.path)
        if os.path.isfile(path):
            st = os.stat(path)
            self.send_header("ETag", '"%x-%x"' % (st.st_mtime_ns, st.st_size))
        super().end_headers()
    def do_GET(self):
        path = self.translate_path(self.path)
        if os.path.isfile(path):
            st = os.stat(path)
            if self.headers.get("If-None-Match") == '"%x-%x"' % (st.st_mtime_ns, st.st_size):
                self.send_response(304)
                self.end_headers()
                return
        super().do_GET()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
PY
http_port=$((20000 + RANDOM % 10000))
python3 "$WORK/serve.py" "$served" "$http_port" &
http_pid=$!
git_root=$WORK/git
if [[ ! -d $git_root/bench.git ]]; then
  rm -rf "$git_root"
  mkdir -p "$git_root/src"
  for d in $(seq 1 40); do
    mkdir -p "$git_root/src/dir$d"
    for f in $(seq 1 100); do echo "file $d/$f $(head -c 200 /dev/urandom | base64 -w0)" >"$git_root/src/dir$d/f$f.txt"; done
  done
  git -C "$git_root/src" init -q -b main
  git -C "$git_root/src" add -A
  git -C "$git_root/src" -c user.name=bench -c user.email=bench@localhost commit -q -m bench
  git clone -q --bare "$git_root/src" "$git_root/bench.git"
fi
git_port=$((30000 + RANDOM % 10000))
git daemon --reuseaddr --export-all --base-path="$git_root" --listen=127.0.0.1 --port="$git_port" "$git_root" &
git_pid=$!
trash=$WORK/trash
cleanup() {
  kill "$http_pid" "$git_pid" 2>/dev/null || true
  rm -rf --one-file-system "$trash" "$WORK/kiln-root"
}
trap cleanup EXIT
sleep 1

# --- contexts ----------------------------------------------------------------------------------
ctx=$WORK/ctx
rm -rf "$ctx"
for scenario in url git link; do
  mkdir -p "$ctx/$scenario"
  cp /bin/busybox "$ctx/$scenario/busybox"
done
base='FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]'
printf '%s\nADD http://127.0.0.1:%s/big.bin /big.bin\n' "$base" "$http_port" >"$ctx/url/Dockerfile"
printf '%s\nADD git://127.0.0.1:%s/bench.git#main /src\n' "$base" "$git_port" >"$ctx/git/Dockerfile"
cp -r "$git_root/src" "$ctx/link/files"
rm -rf "$ctx/link/files/.git"
printf '%s\nARG N\nRUN echo $N > /n\nCOPY --link files/ /app/\n' "$base" >"$ctx/link/Dockerfile"

# --- commands ----------------------------------------------------------------------------------
mkdir -p "$trash"
kiln_root=$WORK/kiln-root
kiln_cmd() { # kiln_cmd CONTEXT [EXTRA...]
  echo "$(q "$kiln") --root $(q "$kiln_root") build --progress plain -t bench/remote ${*:2} $(q "$ctx/$1")"
}
bk_cmd() {
  echo "$(q "$buildctl_bin") build --progress plain --frontend dockerfile.v0 --local context=$(q "$ctx/$1") --local dockerfile=$(q "$ctx/$1") --output type=image,name=bench/remote ${*:2}"
}
kiln_fresh="[ ! -e $(q "$kiln_root") ] || mv $(q "$kiln_root") \$(mktemp -d -p $(q "$trash")); sync"
bk_fresh="$(q "$buildctl_bin") prune --all >/dev/null; sync"
changing='--build-arg N=$(date +%s%N)'
bk_changing='--opt build-arg:N=$(date +%s%N)'

{
  echo "command: RUNS=$RUNS SCENARIOS=\"${scenarios[*]}\" bench/run-remote.sh"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), load at start $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "kiln: $("$kiln" --version 2>/dev/null || echo '?') (commit $(git rev-parse --short HEAD))"
  echo "BuildKit: $("$buildctl_bin" --version | cut -d' ' -f3) (peer buildkitd)"
  echo
} >"$RESULTS/summary.md"

for scenario in "${scenarios[@]}"; do
  case $scenario in
  R1 | R2) name=url ;;
  R3 | R4) name=git ;;
  R5) name=link ;;
  esac
  args=()
  case $scenario in
  R1 | R3)
    args=(--prepare "$kiln_fresh" "$(kiln_cmd $name)" --prepare "$bk_fresh" "$(bk_cmd $name)")
    ;;
  R2 | R4)
    bash -c "$(kiln_cmd $name)" >"$RESULTS/$scenario-kiln.log" 2>&1
    bash -c "$(bk_cmd $name)" >"$RESULTS/$scenario-buildkit.log" 2>&1
    args=("$(kiln_cmd $name)" "$(bk_cmd $name)")
    ;;
  R5)
    bash -c "$(kiln_cmd $name "$changing")" >"$RESULTS/$scenario-kiln.log" 2>&1
    bash -c "$(bk_cmd $name "$bk_changing")" >"$RESULTS/$scenario-buildkit.log" 2>&1
    args=("$(kiln_cmd $name "$changing")" "$(bk_cmd $name "$bk_changing")")
    ;;
  esac
  notice "$scenario"
  hyperfine --runs "$RUNS" --command-name "$scenario kiln" --command-name "$scenario BuildKit" \
    --export-markdown "$RESULTS/$scenario.md" --export-json "$RESULTS/$scenario.json" "${args[@]}" |
    tee "$RESULTS/$scenario.txt"
  tail -n +3 "$RESULTS/$scenario.md" >>"$RESULTS/summary.md"
done
notice "results in $RESULTS/summary.md"
cat "$RESULTS/summary.md"
