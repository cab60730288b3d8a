#!/usr/bin/env python3
"""Data-path benchmark of gRPC splits by `model_name` (issue 12), next to the header
route and no filter, at 1 KiB and 1 MiB request messages.

The same method as dataplane.py (whose Envoy, route and measuring helpers it uses):
one Envoy 1.40 per variant (--concurrency 1, pinned to one core), wrk on the other
core, CPU time of the Envoy worker thread per request from schedstat, variants
alternating within each round. Requests are POSTs of one gRPC frame
(`inference.GRPCInferenceService/ModelInfer`, content-type application/grpc) over
HTTP/1.1 (wrk), which the filter treats exactly like HTTP/2: it holds the headers
until the message's model name is read. Routes end in direct_response, behind
Envoy's buffer filter in every variant (see buffer_filter).

The filter runs with `allow_on_headers_stop_iteration: true`, as it must for reading
`model_name`. Every cell is checked before measuring (route, routed header, split).

Usage: grpc_body.py --modelsplit-wasm W --out results.json [--rounds N --seconds S]
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dataplane import (  # noqa: E402
    GRPC_PATH,
    GROUP_PATH,
    ROUTED_HEADER,
    bootstrap,
    cpu_ns,
    direct_routes,
    envoy_binary,
    filter_config,
    free_port,
    hcm,
    listener,
    start_envoy,
    wait_ready,
    wasm_filter,
    worker_thread,
)

MEMBERS = {"ai-model-one", "ai-model-two"}


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number, value):
    return varint(number << 3 | 2) + varint(len(value)) + value


def infer_frame(model_name, tensor_bytes):
    """One gRPC frame of a ModelInferRequest: model_name (field 1, omitted when empty),
    id (3) and one raw tensor (7) so that the frame is `tensor_bytes` + a few bytes."""
    message = (field(1, model_name) if model_name else b"") + field(3, b"bench")
    message += field(7, bytes(i % 251 for i in range(tensor_bytes)))
    return b"\x00" + len(message).to_bytes(4, "big") + message


def modelsplit_filter(wasm):
    f = wasm_filter(wasm, filter_config(10))
    f["typed_config"]["config"]["allow_on_headers_stop_iteration"] = True
    return f


SIZES = {"1k": 1024, "1m": 1 << 20}


def buffer_filter():
    """Envoy's buffer filter before the router: the direct_response then comes after the
    whole request, as a real upstream's would, and HTTP/1.1 connections stay open (an
    answer sent before the request body ends makes Envoy close the connection, and the
    cells would measure connection set-up)."""
    return {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": 4 << 20,
        },
    }


def cells():
    """(cell, instance, headers, model_name, size, label, expected routes, routed header)."""
    out = []
    for size in SIZES:
        out += [
            (f"rest-{size}", "modelsplit", {"content-type": "application/json"}, b"", size,
             f"modelsplit, REST group path (reference: no body reading), {size}", MEMBERS, True),
            (f"none-{size}", "none", {"mm-vmodel-id": "ai-model-one"}, b"", size,
             f"no filter, header names a member, {size}", {"ai-model-one"}, False),
            (f"hdr-{size}", "modelsplit", {"mm-vmodel-id": "ai-model"}, b"", size,
             f"modelsplit, group in mm-vmodel-id, {size}", MEMBERS, True),
            (f"name-{size}", "modelsplit", {}, b"ai-model", size,
             f"modelsplit, group in model_name, {size}", MEMBERS, True),
        ]
    return out


def path_of(cell):
    return GROUP_PATH if cell[0].startswith("rest-") else GRPC_PATH


def post(port, path, headers, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", path, body=body, headers={"content-type": "application/grpc", **headers})
    resp = conn.getresponse()
    resp.read()
    out = resp.status, resp.getheader("x-bench-route"), resp.getheader(ROUTED_HEADER)
    conn.close()
    return out


def check(cell, port, body):
    name, _, headers, _, _, label, routes, wants_routed = cell
    seen = set()
    for _ in range(30):
        status, route, routed = post(port, path_of(cell), headers, body)
        if status != 200 or route not in routes:
            sys.exit(f"{label}: got {status} {route!r}, expected one of {sorted(routes)}")
        if wants_routed and routed != route:
            sys.exit(f"{label}: {ROUTED_HEADER} {routed!r} but route {route!r}")
        seen.add(route)
    if len(routes) > 1 and len(seen) < 2:
        sys.exit(f"{label}: 30 requests all went to {seen}")


WRK_SCRIPT = """
wrk.method = "POST"
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
"""


def run_wrk(cell, port, body_file, script, seconds, connections, cpu):
    headers = {"content-type": "application/grpc", **cell[2]}
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(f"http://127.0.0.1:{port}{path_of(cell)}")
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu)] + cmd
    env = dict(os.environ, BENCH_BODY=body_file)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    import re

    total = int(re.search(r"(\d+) requests in", out).group(1))
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out) or re.search(r"Socket errors: (.*)", out):
        sys.exit(f"{cell[5]}: wrk saw failures:\n{out}")
    return total


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--modelsplit-wasm", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 5)))
    p.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", 5)))
    p.add_argument("--connections", type=int, default=16)
    args = p.parse_args()
    ncpu = os.cpu_count() or 1
    envoy_cpu, wrk_cpu = (0, 1) if ncpu >= 2 else (None, None)
    insts = {}
    for name, filters in [
        ("none", [buffer_filter()]),
        ("modelsplit", [modelsplit_filter(args.modelsplit_wasm), buffer_filter()]),
    ]:
        port, admin = free_port(), free_port()
        insts[name] = dict(
            port=port,
            admin=admin,
            bootstrap=bootstrap(admin, [listener("main", port, hcm("main", filters, direct_routes()))]),
        )
    workdir = tempfile.mkdtemp(prefix="modelsplit-grpc-bench-")
    script = os.path.join(workdir, "post.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    bodies = {}
    for cell in cells():
        path = os.path.join(workdir, f"{cell[0]}.bin")
        body = infer_frame(cell[3], SIZES[cell[4]])
        with open(path, "wb") as f:
            f.write(body)
        bodies[cell[0]] = (path, body)
    procs = {}
    try:
        binary = envoy_binary()
        for name, inst in insts.items():
            procs[name] = start_envoy(binary, name, inst, workdir, envoy_cpu)
        for name, proc in procs.items():
            wait_ready(insts[name], proc, name, workdir)
        time.sleep(1)
        tids = {name: worker_thread(proc.pid) for name, proc in procs.items()}
        all_cells = cells()
        for cell in all_cells:
            check(cell, insts[cell[1]]["port"], bodies[cell[0]][1])
        for cell in all_cells:
            run_wrk(cell, insts[cell[1]]["port"], bodies[cell[0]][0], script, 1, args.connections, wrk_cpu)
        samples = {c[0]: [] for c in all_cells}
        for r in range(args.rounds):
            order = all_cells[r % len(all_cells):] + all_cells[: r % len(all_cells)]
            for cell in order:
                pid, tid = procs[cell[1]].pid, tids[cell[1]]
                before = cpu_ns(pid, tid)
                total = run_wrk(cell, insts[cell[1]]["port"], bodies[cell[0]][0], script,
                                args.seconds, args.connections, wrk_cpu)
                used = cpu_ns(pid, tid) - before
                samples[cell[0]].append({"requests": total, "rps": total / args.seconds,
                                         "cpu_us": used / total / 1000})
            print(f"# round {r + 1}/{args.rounds} done", file=sys.stderr)
        result = {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "connections": args.connections,
            "cells": [{"name": c[0], "label": c[5], "samples": samples[c[0]]} for c in all_cells],
        }
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(table(result))
    finally:
        for proc in procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


def table(result):
    import statistics

    rows = ["| cell | µs CPU / request (median of rounds) | min–max | requests/s (median) |",
            "|---|---:|---:|---:|"]
    for c in result["cells"]:
        cpu = [s["cpu_us"] for s in c["samples"]]
        rps = [s["rps"] for s in c["samples"]]
        rows.append(f"| {c['label']} | {statistics.median(cpu):.1f} | {min(cpu):.1f}–{max(cpu):.1f} "
                    f"| {statistics.median(rps):,.0f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
