#!/usr/bin/env python3
"""Turns a bench/run-build.sh results directory into the markdown section of BENCHMARKS.md.

    bench/build-report.py RESULTS_DIR [BENCHMARKS.md]

Prints the section; with a BENCHMARKS.md path, also puts it between the build-bench markers there
(replacing what was between them), or appends a new section with the markers when they are absent.
"""
import json
import os
import sys

START = "<!-- build-bench:start -->"
END = "<!-- build-bench:end -->"
HEADING = "## Image builds: `kiln build` vs BuildKit vs buildah (issue 4)"

SCENARIOS = {
    "S1": ("30 `RUN echo $i > /f$i` steps, cold", 1 / 5),
    "S2": ("20,000-file / 230 MB context, `COPY . /ctx` + one RUN, cold", 1 / 3),
    "S3": ("S2 again, nothing changed (warm)", 1 / 10),
    "S4": ("S2 with one file changed (warm)", 1 / 5),
    "S5": ("4 stages hashing 600 MB each + `COPY --from=` of each, cold", 1.0),
}
TOOLS = [("kiln", "kiln"), ("buildkit", "BuildKit"), ("buildah", "buildah")]


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
    return f"{result['mean']:.2f} ± {result['stddev']:.2f}" if result["stddev"] is not None else f"{result['mean']:.2f}"


def fraction(value):
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f} (1/{1 / value:.1f})"


def section(results):
    meta = read_meta(results)
    tools = meta.get("tools", "").split()
    lines = [
        f"Command: `{meta['command']}` (root; hyperfine, {meta['runs']} timed runs per tool and "
        f"scenario). {meta['date']}.",
        "",
        f"Machine: {meta['machine']}; load average {meta['load_start']} at the start, "
        f"{meta.get('load_end', '?')} at the end (the VM is shared with other work).",
        "",
        "Versions: "
        + "; ".join(meta[key] for key in ("version_kiln", "version_buildkit", "version_buildah", "version_hyperfine", "version_busybox") if key in meta)
        + ".",
        "",
        "Wall time of the whole build command in seconds, mean ± standard deviation. Cold = empty "
        "cache before every run; warm = the cache left by untimed builds of the same context.",
        "",
        "| scenario | what | kiln [s] | BuildKit [s] | buildah [s] | kiln / BuildKit | target | met |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    notes = []
    for scenario, (what, target) in SCENARIOS.items():
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
                outcome = "failed in two timed runs" if status == "?" else f"exited with {status}"
                notes.append(f"- {scenario}, {name}: `{command}` {outcome}; log `{log}`.")
            elif key in tools:
                cells.append("?")
            else:
                cells.append("skipped")
        if "kiln" in times and "BuildKit" in times:
            ratio = times["kiln"]["mean"] / times["BuildKit"]["mean"]
            ratio_cell = fraction(ratio)
            met = "met" if ratio <= target else "not met"
        else:
            ratio_cell, met = "n/a", "n/a"
        target_cell = "no slower (≤ 1)" if target == 1.0 else f"≤ 1/{round(1 / target)}"
        lines.append(f"| {scenario} | {what} | {' | '.join(cells)} | {ratio_cell} | {target_cell} | {met} |")
    lines += [
        "",
        "Commands (N = scenario number, SN its name, CONTEXT its directory; output of the timed "
        "runs to a log file). Warm scenarios have no prepare (S3) or rewrite "
        "`CONTEXT/files/changing.txt` (S4).",
        "",
    ]
    for key, name in TOOLS:
        if f"cmd_{key}" in meta:
            lines.append(f"- {name}: `{meta[f'cmd_{key}']}`; cold prepare: `{meta[f'prepare_{key}']}`")
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
