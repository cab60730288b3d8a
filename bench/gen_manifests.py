#!/usr/bin/env python3
"""Writes a large cluster's manifests for `modelsplit render`: N InferenceServices in
G groups across S namespaces, all on one gateway (so one WasmPlugin holds every group),
one ServingRuntime with enable-route per namespace, one file per namespace.

Groups get 3 or 4 members (weights 50/30/20 or 40/30/20/10) so that the member count
comes out exactly N. Names are realistic lengths (ns "team-042", group
"fraud-detector-0123", member "fraud-detector-0123-v2").

Usage: gen_manifests.py OUT_DIR [--isvcs 10000] [--groups 3000] [--namespaces 100]
"""

import argparse
import os

NAMESPACE = """apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels:
    opendatahub.io/service-mesh: "true"
  annotations:
    maistra.io/gateway-namespace: istio-system
    maistra.io/gateway-name: odh-gateway
---
apiVersion: serving.kserve.io/v1alpha1
kind: ServingRuntime
metadata:
  name: runtime
  namespace: {ns}
  annotations:
    enable-route: "true"
spec:
  multiModel: true
  supportedModelFormats:
    - {{name: sklearn, version: "1", autoSelect: true}}
  containers:
    - {{name: mlserver, image: seldonio/mlserver:1.3.2}}
"""

ISVC = """---
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {name}
  namespace: {ns}
  creationTimestamp: "2024-01-01T00:00:00Z"
  labels:
    serving.kserve.io/model-tag: {group}
  annotations:
    serving.kserve.io/deploymentMode: ModelMesh
    serving.kserve.io/canaryTrafficPercent: "{weight}"
spec:
  predictor:
    model:
      modelFormat: {{name: sklearn}}
      runtime: runtime
      storage: {{key: localMinIO, path: models/{name}.joblib}}
"""

WEIGHTS = {3: [50, 30, 20], 4: [40, 30, 20, 10]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--isvcs", type=int, default=10000)
    p.add_argument("--groups", type=int, default=3000)
    p.add_argument("--namespaces", type=int, default=100)
    a = p.parse_args()
    four = a.isvcs - 3 * a.groups  # groups with a 4th member
    if not 0 <= four <= a.groups:
        raise SystemExit("isvcs must be between 3 and 4 times groups")
    os.makedirs(a.out, exist_ok=True)
    docs = {i: [NAMESPACE.format(ns=f"team-{i:03d}")] for i in range(a.namespaces)}
    for g in range(a.groups):
        i = g % a.namespaces
        ns, group = f"team-{i:03d}", f"fraud-detector-{g:04d}"
        for v, weight in enumerate(WEIGHTS[4 if g < four else 3], start=1):
            docs[i].append(ISVC.format(ns=ns, group=group, name=f"{group}-v{v}", weight=weight))
    for i, parts in docs.items():
        with open(os.path.join(a.out, f"team-{i:03d}.yaml"), "w") as f:
            f.write("".join(parts))


if __name__ == "__main__":
    main()
