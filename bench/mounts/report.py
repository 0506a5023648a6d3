#!/usr/bin/env python3
"""Turns a bench/run-mounts.sh results directory into the markdown of BENCHMARKS.md's issue-13
section.

    bench/mounts/report.py RESULTS_DIR [BENCHMARKS.md]

Prints the table; with a BENCHMARKS.md path, also puts it between the mounts-bench markers there
(replacing what was between them), or appends a new section with the markers when they are absent.
"""
import json
import os
import sys

START = "<!-- mounts-bench:start -->"
END = "<!-- mounts-bench:end -->"
HEADING = "## RUN --mount=type=cache: apt and pip, `kiln build` vs BuildKit v0.32 (issue 13)"

SCENARIOS = {
    "M1": "cold: empty cache and cache mounts (base image present)",
    "M2": "app.py changed (warm)",
    "M3": "requirements.txt changed (warm): pip reinstalls from its cache mount",
    "M4": "requirements.txt changed on a fresh store/builder importing the registry cache (mode=max)",
}
TOOLS = [("kiln", "kiln"), ("buildkit", "BuildKit")]


def read_meta(results):
    meta = {}
    with open(os.path.join(results, "meta.tsv"), encoding="utf-8") as file:
        for line in file:
            key, _, value = line.rstrip("\n").partition("\t")
            meta[key] = value
    return meta


def read_scenario(results, scenario):
    """(times by tool name, failures by tool key) of one scenario; None when it did not run."""
    path = os.path.join(results, f"{scenario}.json")
    failed_path = os.path.join(results, f"{scenario}.failed")
    times, failed = {}, {}
    if os.path.exists(failed_path):
        with open(failed_path, encoding="utf-8") as file:
            for line in file:
                tool, status, command, log = line.rstrip("\n").split("\t")
                failed[tool] = (status, command, log)
    if not os.path.exists(path) and not failed:
        return None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as file:
            for result in json.load(file)["results"]:
                times[result["command"]] = result
    return times, failed


def seconds(result):
    if result["stddev"] is None:
        return f"{result['mean']:.2f}"
    return f"{result['mean']:.2f} ± {result['stddev']:.2f}"


def section(results):
    meta = read_meta(results)
    tools = meta.get("tools", "").split()
    lines = [
        f"Command: `{meta['command']}` (root; hyperfine, {meta['runs']} timed runs per tool and "
        f"scenario). {meta['date']}.",
        "",
        f"Machine: {meta['machine']}; load average {meta['load_start']} at the start, "
        f"{meta.get('load_end', '?')} at the end.",
        "",
        "Versions: "
        + "; ".join(meta[key] for key in ("version_kiln", "version_buildkit", "version_hyperfine") if key in meta)
        + f". Base: {meta.get('base', '?')}.",
        "",
        "Wall time of the whole build command in seconds, mean ± standard deviation.",
        "",
        "| scenario | what | kiln [s] | BuildKit [s] | kiln / BuildKit |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    notes = []
    for scenario, what in SCENARIOS.items():
        read = read_scenario(results, scenario)
        if read is None:
            continue
        times, failed = read
        cells = []
        for key, name in TOOLS:
            if name in times:
                cells.append(seconds(times[name]))
            elif key in failed:
                status, command, log = failed[key]
                cells.append("failed")
                outcome = "failed in a timed run" if status == "?" else f"exited with {status}"
                notes.append(f"- {scenario}, {name}: `{command}` {outcome}; log `{log}`.")
            elif key in tools:
                cells.append("?")
            else:
                cells.append("skipped")
        if "kiln" in times and "BuildKit" in times:
            ratio = f"{times['kiln']['mean'] / times['BuildKit']['mean']:.2f}"
        else:
            ratio = "n/a"
        lines.append(f"| {scenario} | {what} | {' | '.join(cells)} | {ratio} |")
    lines += [
        "",
        "Commands (one kiln root and one buildkitd for all scenarios; the output of the timed "
        "runs goes to a log file). M1 and M4 run the fresh command as hyperfine's prepare; M2 "
        "appends a comment line to app.py, M3 and M4 one to requirements.txt.",
        "",
    ]
    for key, name in TOOLS:
        if f"cmd_{key}" in meta:
            lines.append(f"- {name}: `{meta[f'cmd_{key}']}`; fresh: `{meta[f'fresh_{key}']}`")
            lines.append(f"  - M4's cache export (once, untimed): `{meta[f'export_{key}']}`")
            lines.append(f"  - M4's timed build: `{meta[f'import_{key}']}`")
    if notes:
        lines += ["", "Failures:", ""] + notes
    return "\n".join(lines) + "\n"


def splice(path, body):
    with open(path, encoding="utf-8") as file:
        text = file.read()
    block = f"{START}\n{body}{END}"
    start, end = text.find(START), text.find(END)
    if start != -1 and end > start:
        text = text[:start] + block + text[end + len(END):]
    else:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{block}\n"
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(f"usage: {sys.argv[0]} RESULTS_DIR [BENCHMARKS.md]")
    body = section(sys.argv[1])
    print(body, end="")
    if len(sys.argv) == 3:
        splice(sys.argv[2], body)


if __name__ == "__main__":
    main()
