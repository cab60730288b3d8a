#!/usr/bin/env python3
"""Turns the measurements of scripts/bench.sh into tables: prints them and writes
BENCHMARKS.md (tables between the markers, the hand-written analysis kept).

Usage: report.py --dataplane D.json --criterion C.txt --render R.json --env E.json --out BENCHMARKS.md
"""

import argparse
import json
import re
import statistics

BEGIN, END = "<!-- bench.sh tables: begin -->", "<!-- bench.sh tables: end -->"


def med(xs):
    return statistics.median(xs)


def rng(xs, fmt):
    return f"{fmt.format(min(xs))}–{fmt.format(max(xs))}"


def dataplane_tables(d):
    cells = {c["name"]: c for c in d["cells"]}
    rounds = d["rounds"]

    def per_round(name, key):
        return [s[key] for s in cells[name]["samples"]]

    def baseline(name):
        if name.startswith("up-"):
            return "up-none"
        grpc = name.endswith("grpc") and name != "none-grpc" and "none-grpc" in cells
        return "none-grpc" if grpc else "none"

    def added(name):
        base = baseline(name)
        return [a - b for a, b in zip(per_round(name, "cpu_us"), per_round(base, "cpu_us"))]

    floor = added("bare") if "bare" in cells else None
    # gRPC cells are compared with the floor that reads and writes one header (3g), when measured.
    grpc_floor = added("bare-grpc") if "bare-grpc" in cells else floor

    def floor_for(name):
        return grpc_floor if name.endswith("grpc") else floor

    two_pass = per_round("two-pass", "rps") if "two-pass" in cells else None
    lines = [
        f"Envoy 1.40, one worker (`--concurrency 1`) pinned to CPU {d['pinned']['envoy']}; wrk, 1 thread, "
        f"{d['connections']} keep-alive connections, pinned to CPU {d['pinned']['wrk']}; {rounds} rounds × "
        f"{d['seconds']} s per cell, all cells alternating within each round. Median (min–max over rounds). "
        "*CPU/req* is the Envoy worker thread's CPU time per request; *added* is CPU/req minus the baseline's in "
        "the same round ((1); (1g) for gRPC-style requests; (1u) for the upstream family); *× floor* is added ÷ "
        "the floor's added, per round: the floor (3) for REST requests, the gRPC floor (3g) for gRPC-style ones.",
        "",
        "| variant | requests/s | CPU µs/req | added µs/req over (1)/(1g) | × floor (3)/(3g) | req/s × two-pass (6) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, c in cells.items():
        rps, cpu = per_round(name, "rps"), per_round(name, "cpu_us")
        base = baseline(name)
        add = "—" if name in (base, "none-grpc") else f"{med(added(name)):.2f} ({rng(added(name), '{:.2f}')})"
        xfloor = "—"
        if floor and name not in ("none", "none-grpc") and not name.startswith("up-"):
            ratios = [a / f for a, f in zip(added(name), floor_for(name))]
            xfloor = f"{med(ratios):.2f} ({rng(ratios, '{:.2f}')})"
        xtwo = "—"
        if two_pass and not name.startswith("up-"):
            ratios = [a / b for a, b in zip(rps, two_pass)]
            xtwo = f"{med(ratios):.2f}"
        lines.append(
            f"| {c['label']} | {med(rps):,.0f} ({rng(rps, '{:,.0f}')}) | {med(cpu):.2f} ({rng(cpu, '{:.2f}')}) "
            f"| {add} | {xfloor} | {xtwo} |"
        )

    targets = []
    if floor and "ms-rest" in cells:
        for name, goal in (("ms-rest", 1.15), ("ms-sticky", 1.2), ("ms-grpc", 1.25)):
            if name in cells:
                r = med([a / f for a, f in zip(added(name), floor_for(name))])
                which = "(3g)" if floor_for(name) is grpc_floor and name.endswith("grpc") else "(3)"
                targets.append(
                    f"| {cells[name]['label']}: added cost ÷ floor {which}'s | ≤ {goal} | {r:.2f} | "
                    f"{'met' if r <= goal else 'missed'} |"
                )
    if two_pass and "ms-rest" in cells:
        r = med([a / b for a, b in zip(per_round("ms-rest", "rps"), two_pass)])
        cpu_r = med([b / a for a, b in zip(per_round("ms-rest", "cpu_us"), per_round("two-pass", "cpu_us"))])
        targets.append(
            f"| modelsplit REST requests/s ÷ two-pass (CPU/req: two-pass ÷ modelsplit = {cpu_r:.2f}) | ≥ 1.5 | {r:.2f} | "
            f"{'met' if r >= 1.5 else 'missed'} |"
        )
    if all(n in cells for n in ("ms-rest", "ms-1000", "ms-10000")):
        base = added("ms-rest")
        spread = max(base) - min(base)
        for n in ("ms-1000", "ms-10000"):
            diff = med([a - b for a, b in zip(added(n), base)])
            ok = abs(diff) <= max(0.1 * med(base), spread)
            targets.append(
                f"| {cells[n]['label']}: added cost − 10 groups' (µs) | flat (within 10% or the 10-group spread) | "
                f"{diff:+.2f} | {'met' if ok else 'missed'} |"
            )
    counters = d.get("modelsplit_counters") or {}
    counter_line = ", ".join(f"`{k}`: {v:,}" for k, v in sorted(counters.items()))
    return lines, targets, counter_line


def criterion_table(text):
    rows = []
    for m in re.finditer(r"test (\S+) \.\.\. bench:\s+([\d,]+) ns/iter \(\+/- ([\d,]+)\)", text):
        name, ns, pm = m.group(1), int(m.group(2).replace(",", "")), int(m.group(3).replace(",", ""))
        shown = f"{ns / 1e6:.1f} ms" if ns > 100_000 else f"{ns} ns"
        spread = f"{pm / 1e6:.1f} ms" if ns > 100_000 else f"{pm} ns"
        rows.append(f"| `{name}` | {shown} | ± {spread} |")
    memory = [l.strip() for l in text.splitlines() if l.startswith(("plan memory", "compile peak"))]
    return ["| benchmark | time | spread |", "|---|---:|---:|"] + rows, memory


def render_table(r):
    wall = [x["wall_s"] for x in r["runs"]]
    rss = [x["peak_rss_mib"] for x in r["runs"]]
    per_member = r["plugin_config_bytes_per_member"]
    rows = [
        "| measure | value | target |",
        "|---|---:|---|",
        f"| input | {r['isvcs']:,} InferenceServices, {r['groups']:,} groups, {r['namespaces']} namespaces, one gateway "
        f"({r['manifest_bytes'] / 2**20:.1f} MiB of YAML) | |",
        f"| wall time, `render --strict` ({len(wall)} runs) | {med(wall):.2f} s ({rng(wall, '{:.2f}')}) | < 1 s: "
        f"{'met' if med(wall) < 1 else 'missed'} |",
        f"| peak RSS | {med(rss):.0f} MiB ({rng(rss, '{:.0f}')}) | < 200 MiB: {'met' if med(rss) < 200 else 'missed'} |",
        f"| output | {r['rendered_bytes'] / 2**20:.1f} MiB: "
        + ", ".join(f"{v} {k}" for k, v in sorted(r["rendered_kinds"].items()))
        + " | |",
        f"| pluginConfig (compact JSON) | {r['plugin_config_bytes']:,} bytes; whole WasmPlugin {r['wasm_plugin_object_bytes']:,} bytes | |",
        f"| pluginConfig bytes per member | {per_member:.1f} | < 100: {'met' if per_member < 100 else 'missed'} |",
        f"| 1.5 MiB object limit reached at | ≈ {r['members_at_limit']:,} members ≈ {r['groups_at_limit']:,} groups on one gateway | |",
    ]
    return rows


def previous_sections(text):
    """The tables of the previous run, as (first line, lines) blocks, with the run's header line."""
    if BEGIN not in text or END not in text:
        return None, []
    body = text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n").split("\n")
    measured = next((l for l in body if l.startswith("Measured ")), None)
    blocks, current = [], None
    for line in body:
        if line.startswith("### ") or line.startswith("Counters of the"):
            current = [line]
            blocks.append(current)
        elif current is not None:
            current.append(line)
    return measured, blocks


def kept(previous, starts):
    """Sections of a part not run this time: kept from the previous run, and marked so."""
    measured, blocks = previous
    out = []
    for block in blocks:
        if block[0].startswith(starts):
            lines = list(block)
            if lines[0].startswith("### ") and measured and "(kept from" not in lines[0]:
                when = measured.split(" on ", 1)[0].removeprefix("Measured ")
                lines[0] += f" (kept from the run of {when}: not re-run this time)"
            out += lines
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataplane")
    p.add_argument("--criterion")
    p.add_argument("--render")
    p.add_argument("--env", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    env = json.load(open(a.env))
    try:
        current = open(a.out).read()
    except FileNotFoundError:
        current = f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    previous = previous_sections(current)
    parts = [
        BEGIN,
        "",
        f"Measured {env['date']} on {env['host']}; load average before: {env['load_before']}, after: "
        f"{env['load_after']}; commit `{env['commit']}`; {env['envoy']}; {env['wrk']}. Command: `{env['command']}`.",
        "",
    ]
    if a.dataplane:
        d = json.load(open(a.dataplane))
        lines, targets, counters = dataplane_tables(d)
        parts += ["### Data path", ""] + lines + [""]
        if targets:
            parts += ["### Targets (data path)", "", "| target | goal | measured | |", "|---|---|---:|---|"] + targets + [""]
        if counters:
            parts += [f"Counters of the 10-group modelsplit Envoy after the run (checks, warm-up and all its cells): {counters}.", ""]
    else:
        parts += kept(previous, ("### Data path", "### Targets (data path)", "Counters of the"))
    if a.criterion:
        rows, memory = criterion_table(open(a.criterion).read())
        parts += ["### Filter core (criterion, native, `cargo bench -p modelsplit-filter --bench core`)", ""] + rows + [""]
        parts += [f"- {m}" for m in memory] + [""]
    else:
        parts += kept(previous, ("### Filter core",))
    if a.render:
        parts += ["### Controller: `modelsplit render` at scale", ""] + render_table(json.load(open(a.render))) + [""]
    else:
        parts += kept(previous, ("### Controller",))
    parts.append(END)
    tables = "\n".join(parts)
    print(tables)
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        current = head + tables + tail
    else:
        current += "\n" + tables + "\n"
    with open(a.out, "w") as f:
        f.write(current)


if __name__ == "__main__":
    main()
