#!/usr/bin/env bash
# Records what the peer BuildKit (v0.32.2, ../shared/peers) finds for every case of the build
# checks' case table, tests/it/lint_cases/NAME/, into NAME/expected.json, so the table is
# BuildKit's behaviour and not our reading of its rules. A case is a directory holding:
#   Dockerfile      the Dockerfile checked (the directory is the build context)
#   .dockerignore   optional, for CopyIgnoredFile
#   build-args      optional, one KEY=VALUE a line (e.g. BUILDKIT_DOCKERFILE_CHECK=...)
#   expected.json   written here: scripts/peer-lint.sh --stub-bases's output (findings as
#                   rule, start line, detail, url; base images stubbed; a build error, if any)
# tests/it/lint_conformance.rs runs `kiln build --call check,format=json` on each case and
# compares. Run again after adding or changing a case:
#   eval "$(../shared/peers/start-peers.sh --env)" && scripts/lint-cases-record.sh [NAME...]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cases=$here/../tests/it/lint_cases
names=("$@")
if [[ ${#names[@]} -eq 0 ]]; then
  mapfile -t names < <(ls "$cases")
fi
for name in "${names[@]}"; do
  dir=$cases/$name
  [[ -f $dir/Dockerfile ]] || { echo "lint-cases-record: $dir/Dockerfile is missing" >&2; exit 1; }
  flags=()
  if [[ -f $dir/build-args ]]; then
    while IFS= read -r arg; do
      [[ -n $arg ]] && flags+=(--build-arg "$arg")
    done <"$dir/build-args"
  fi
  "$here/peer-lint.sh" ${flags[@]+"${flags[@]}"} --stub-bases "$dir" "$dir/Dockerfile" >"$dir/expected.json.new"
  mv "$dir/expected.json.new" "$dir/expected.json"
  echo "$name: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(", ".join("%s:%s" % (f["rule"], f["line"]) for f in d["findings"]) or "no findings", "(error: %s)" % d["error"] if d["error"] else "")' "$dir/expected.json")"
done
