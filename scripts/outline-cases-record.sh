#!/usr/bin/env bash
# Records what the peer BuildKit (v0.32.2, ../shared/peers) prints for `--call outline` and
# `--call targets` on every case of tests/it/outline_cases/NAME/ (a Dockerfile, optional
# `target` and `build-args` files, one KEY=VALUE a line) into NAME/outline.txt and
# NAME/targets.txt: buildctl's result.txt of the frontend.outline and frontend.targets
# subrequests, the text buildx prints (scripts/peer-lint.sh --request). tests/it/call_outline.rs
# compares `kiln build --call outline|targets` with them. Run again after changing a case:
#   eval "$(../shared/peers/start-peers.sh --env)" && scripts/outline-cases-record.sh [NAME...]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cases=$here/../tests/it/outline_cases
names=("$@")
if [[ ${#names[@]} -eq 0 ]]; then
  mapfile -t names < <(ls "$cases")
fi
for name in "${names[@]}"; do
  dir=$cases/$name
  [[ -f $dir/Dockerfile ]] || { echo "outline-cases-record: $dir/Dockerfile is missing" >&2; exit 1; }
  flags=()
  if [[ -f $dir/build-args ]]; then
    while IFS= read -r arg; do
      [[ -n $arg ]] && flags+=(--build-arg "$arg")
    done <"$dir/build-args"
  fi
  if [[ -f $dir/target ]]; then
    flags+=(--target "$(cat "$dir/target")")
  fi
  for request in outline targets; do
    "$here/peer-lint.sh" ${flags[@]+"${flags[@]}"} --stub-bases --request "$request" "$dir" "$dir/Dockerfile" >"$dir/$request.txt.new"
    mv "$dir/$request.txt.new" "$dir/$request.txt"
  done
  echo "$name: recorded"
done
