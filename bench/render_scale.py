#!/usr/bin/env python3
"""`modelsplit render` at scale: 10,000 InferenceServices in 3,000 groups across 100
namespaces (bench/gen_manifests.py), rendered several times under /usr/bin/time -v.

Records wall time and peak RSS (median and range), the size of the WasmPlugin's
pluginConfig (compact JSON, as the API server stores a custom resource) per member,
and from that the group/member count at which the WasmPlugin would pass the
Kubernetes object size limit (etcd's default request limit, 1.5 MiB).

Usage: render_scale.py --modelsplit BIN --out results.json [--runs 3]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
OBJECT_LIMIT = 1572864  # 1.5 MiB: etcd's default max request size, the practical object limit


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--modelsplit", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--isvcs", type=int, default=10000)
    p.add_argument("--groups", type=int, default=3000)
    p.add_argument("--namespaces", type=int, default=100)
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="modelsplit-render-bench-")
    try:
        manifests = os.path.join(work, "manifests")
        subprocess.run(
            [sys.executable, os.path.join(HERE, "gen_manifests.py"), manifests,
             "--isvcs", str(a.isvcs), "--groups", str(a.groups), "--namespaces", str(a.namespaces)],
            check=True,
        )
        manifest_bytes = sum(os.path.getsize(os.path.join(manifests, f)) for f in os.listdir(manifests))
        runs = []
        out_path, err_path = os.path.join(work, "out.yaml"), os.path.join(work, "report.txt")
        for _ in range(a.runs):
            with open(out_path, "w") as out, open(err_path, "w") as err:
                timed = subprocess.run(
                    ["/usr/bin/time", "-v", a.modelsplit, "render", "--strict", "-f", manifests],
                    stdout=out, stderr=err,
                )
            text = open(err_path).read()
            if timed.returncode != 0:
                sys.exit(f"render failed ({timed.returncode}):\n{text[-3000:]}")
            wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", text)
            seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
            rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
            runs.append({"wall_s": seconds, "peak_rss_mib": rss_kib / 1024})

        rendered = open(out_path).read()
        docs = [d for d in rendered.split("\n---\n") if d.strip()]
        kinds = {}
        plugins = []
        for d in docs:
            kind = re.search(r"^kind: (\S+)", d, re.M).group(1)
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind == "WasmPlugin":
                plugins.append(yaml.load(d.removeprefix("---\n"), Loader=yaml.CSafeLoader))
        if len(plugins) != 1:
            sys.exit(f"expected one WasmPlugin (one gateway), got {len(plugins)}")
        plugin = plugins[0]
        config = plugin["spec"]["pluginConfig"]
        groups = config["groups"]
        members = sum(len(g["members"]) for g in groups)
        if members != a.isvcs or len(groups) != a.groups:
            sys.exit(f"rendered {len(groups)} groups / {members} members, expected {a.groups} / {a.isvcs}")
        config_bytes = len(json.dumps(config, separators=(",", ":")))
        object_bytes = len(json.dumps(plugin, separators=(",", ":")))
        per_member = config_bytes / members
        fixed = object_bytes - config_bytes + len(json.dumps({k: v for k, v in config.items() if k != "groups"}, separators=(",", ":")))
        result = {
            "isvcs": a.isvcs,
            "groups": a.groups,
            "namespaces": a.namespaces,
            "manifest_bytes": manifest_bytes,
            "runs": runs,
            "rendered_bytes": len(rendered),
            "rendered_kinds": kinds,
            "plugin_config_bytes": config_bytes,
            "wasm_plugin_object_bytes": object_bytes,
            "plugin_config_bytes_per_member": per_member,
            "object_limit_bytes": OBJECT_LIMIT,
            # Same shape of groups (3.33 members each, names of these lengths) until the limit.
            "members_at_limit": int((OBJECT_LIMIT - fixed) / (object_bytes - fixed) * members),
            "groups_at_limit": int((OBJECT_LIMIT - fixed) / (object_bytes - fixed) * len(groups)),
            "sample_group": groups[0],
        }
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
