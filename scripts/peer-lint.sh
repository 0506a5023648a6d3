#!/usr/bin/env bash
# Prints the peer BuildKit's build-check findings for one Dockerfile as JSON, one object:
#   {"findings":[{"rule","line","detail","url"}...], "stubbed":[NAME...], "error":null|"..."}
#
#   scripts/peer-lint.sh [--build-arg K=V]... [--target T] [--stub-bases] [--request NAME] DIR [FILE]
#
# --request outline|targets asks for that subrequest (frontend.outline, frontend.targets) instead
# and prints buildctl's stdout as it is: its result.txt, the text buildx prints for
# `--call outline|targets` (buildctl prints no result.json).
#
# DIR is the build context (its .dockerignore counts for CopyIgnoredFile), FILE the Dockerfile
# (default DIR/Dockerfile). The peer is `buildctl build --frontend dockerfile.v0 --opt
# requestid=frontend.lint` against ../shared/peers' buildkitd (PEER_BUILDCTL, BUILDKIT_HOST as
# `start-peers.sh --env` prints them).
#
# Where the findings come out: the lint subrequest answers with result metadata (result.json,
# result.txt, result.statuscode), not an exporter response, so --metadata-file stays empty;
# buildctl (cmd/buildctl/build.go) prints only result.txt to stdout when it is there, and
# result.txt is LintResults.PrintTo: per warning "WARNING: RULE - URL", the detail line, then
# "FILE:LINE" (the first range's start line) and a source excerpt. This script parses that text;
# the JSON's columns and the `buildError` are not printed by buildctl, so they are not here.
# A build error (e.g. a base image that cannot be resolved) shows only as an `ERROR` step in the
# progress on stderr: it is reported in "error", since the checks that run while dispatching
# (UndefinedVar, WorkdirRelativePath, JSONArgsRecommended, ...) stop at it.
#
# A `# syntax=` line would make the peer fetch that frontend image from Docker Hub; `--opt
# cmdline=...` (set by a forwarded frontend, builder/build.go) makes it use its built-in
# Dockerfile frontend (1.26.0) instead, as kiln ignores the line too.
#
# --stub-bases: this machine has no Docker Hub, so every base image whose metadata cannot be
# loaded is replaced, through a named context (`--opt context:NAME=docker-image://...`, what
# `--build-context NAME=...` sends), by the stub image $PEER_LINT_STUB (default
# $PEER_REGISTRY/kiln-lint/stub: one small file and ENV PATH, built and pushed by the peer here
# when the registry lacks it), and the check runs again (up to 8 rounds); "stubbed" lists the
# names replaced, for kiln to be given the same `--build-context` flags. The checks that read
# the base image (UndefinedVar sees its ENV) therefore see the stub's, on both sides.
set -euo pipefail
buildctl=${PEER_BUILDCTL:-/var/tmp/kiln-peers/bin/buildctl}
export BUILDKIT_HOST=${BUILDKIT_HOST:-unix:///var/tmp/kiln-peers/buildkitd.sock}
registry=${PEER_REGISTRY:-127.0.0.1:5000}
stub=${PEER_LINT_STUB:-$registry/kiln-lint/stub}
opts=()
stub_bases=false
request=lint
while [[ $# -gt 0 ]]; do
  case $1 in
  --build-arg) opts+=(--opt "build-arg:$2"); shift 2 ;;
  --target) opts+=(--opt "target=$2"); shift 2 ;;
  --stub-bases) stub_bases=true; shift ;;
  --request) request=$2; shift 2 ;;
  --) shift; break ;;
  -*) echo "peer-lint: unknown option $1" >&2; exit 2 ;;
  *) break ;;
  esac
done
[[ $# -ge 1 && $# -le 2 ]] || { echo "usage: $0 [--build-arg K=V]... [--target T] [--stub-bases] [--request NAME] DIR [FILE]" >&2; exit 2; }
dir=$1
file=${2:-$dir/Dockerfile}
[[ -d $dir ]] || { echo "peer-lint: $dir is not a directory" >&2; exit 2; }
[[ -f $file ]] || { echo "peer-lint: $file is not a file" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The frontend reads the Dockerfile by its base name from the `dockerfile` local.
filedir=$(cd "$(dirname "$file")" && pwd)
filename=$(basename "$file")
# The default stub, made once per registry.
ensure_stub() {
  local accept="application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json"
  curl -sf -o /dev/null -H "Accept: $accept" "http://$registry/v2/kiln-lint/stub/manifests/latest" && return 0
  mkdir -p "$work/stub"
  printf '%s\n' 'FROM scratch' 'COPY <<EOF /etc/kiln-lint-stub' \
    'A stand-in base image for build checks: this machine has no Docker Hub.' 'EOF' \
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' >"$work/stub/Dockerfile"
  "$buildctl" build --progress plain --frontend dockerfile.v0 --opt cmdline=builtin \
    --local "context=$work/stub" --local "dockerfile=$work/stub" \
    --output "type=image,name=$registry/kiln-lint/stub:latest,push=true,registry.insecure=true" \
    >"$work/stub.log" 2>&1 || {
    cat "$work/stub.log" >&2
    echo "peer-lint: cannot push the stub image to $registry" >&2
    exit 1
  }
}
if $stub_bases && [[ -z ${PEER_LINT_STUB:-} ]]; then ensure_stub; fi
stubbed=()
for round in 1 2 3 4 5 6 7 8; do
  ctx=()
  for name in ${stubbed[@]+"${stubbed[@]}"}; do ctx+=(--opt "context:$name=docker-image://$stub"); done
  status=0
  timeout 120 "$buildctl" build --progress plain --frontend dockerfile.v0 \
    --local "context=$dir" --local "dockerfile=$filedir" --opt "filename=$filename" \
    --opt "requestid=frontend.$request" --opt cmdline=builtin ${opts[@]+"${opts[@]}"} ${ctx[@]+"${ctx[@]}"} \
    >"$work/stdout" 2>"$work/stderr" || status=$?
  # Base images whose metadata failed to load: "#N [...] load metadata for REF" then "#N ERROR".
  mapfile -t failed < <(python3 -c '
import re, sys
names, failed = {}, set()
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = re.match(r"^#(\d+) \[[^]]*\] load metadata for (.*)$", line.rstrip("\n"))
    if m:
        names[m.group(1)] = m.group(2)
    m = re.match(r"^#(\d+) ERROR", line)
    if m and m.group(1) in names:
        failed.add(names[m.group(1)])
print("\n".join(sorted(failed)))
' "$work/stderr" | sed '/^$/d')
  if ! $stub_bases || [[ ${#failed[@]} -eq 0 ]]; then break; fi
  for ref in "${failed[@]}"; do
    # The named context's key is the reference's familiar form without ":latest"
    # (dockerui.Client.NamedContext).
    name=${ref#docker.io/}
    name=${name#library/}
    name=${name%:latest}
    stubbed+=("$name")
  done
  mapfile -t stubbed < <(printf '%s\n' "${stubbed[@]}" | sort -u)
done
if [[ $request != lint ]]; then
  if [[ $status -ne 0 ]]; then
    cat "$work/stderr" >&2
    exit "$status"
  fi
  cat "$work/stdout"
  exit 0
fi
python3 - "$work/stdout" "$work/stderr" "$status" "$filename" ${stubbed[@]+"${stubbed[@]}"} <<'PY'
import json, re, sys
stdout, stderr, status, filename, stubbed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
text = open(stdout, encoding="utf-8", errors="replace").read()
findings = []
lines = text.split("\n")
i = 0
head = re.compile(r"^WARNING: (\S+)(?: - (\S+))?$")
where = re.compile(r"^" + re.escape(filename) + r":(\d+)$")
while i < len(lines):
    m = head.match(lines[i])
    if not m:
        i += 1
        continue
    rule, url = m.group(1), m.group(2) or ""
    i += 1
    detail, line = [], None
    while i < len(lines) and not head.match(lines[i]):
        w = where.match(lines[i])
        if w and i + 1 < len(lines) and lines[i + 1].startswith("-----"):
            line = int(w.group(1))
            i += 2
            while i < len(lines) and not lines[i].startswith("-----"):
                i += 1
            i += 1
            break
        detail.append(lines[i])
        i += 1
    while detail and detail[-1] == "":
        detail.pop()
    findings.append({"rule": rule, "line": line, "detail": "\n".join(detail), "url": url})
errors = []
err_text = open(stderr, encoding="utf-8", errors="replace").read()
for l in err_text.split("\n"):
    m = re.match(r"^#\d+ ERROR: (.*)$", l)
    if m:
        errors.append(m.group(1))
if status != 0:
    tail = [l for l in err_text.strip().split("\n") if l][-3:]
    errors.append("buildctl exited with %d: %s" % (status, " / ".join(tail)))
findings.sort(key=lambda f: (f["line"] or 0, f["rule"], f["detail"]))
print(json.dumps({"findings": findings, "stubbed": stubbed,
                  "error": "; ".join(errors) if errors else None}, indent=1))
PY
