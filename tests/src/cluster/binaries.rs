//! Where the control-plane binaries are: built from Go modules by
//! `tests/control-plane/build.sh`, found through `$MODELSPLIT_CONTROL_PLANE` (its bin dir).

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct ControlPlaneBinaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kubectl: PathBuf,
    pub istiod: PathBuf,
    /// Istio's CRDs from the same Istio module istiod was built from.
    pub istio_crds: PathBuf,
}

impl ControlPlaneBinaries {
    /// The binaries, or a panic saying how to build them.
    pub fn require() -> ControlPlaneBinaries {
        let dir = std::env::var_os("MODELSPLIT_CONTROL_PLANE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!(
                    "MODELSPLIT_CONTROL_PLANE is not set: build the control plane with \
                 `export MODELSPLIT_CONTROL_PLANE=$(tests/control-plane/build.sh)` \
                 (scripts/test.sh and scripts/test-cluster.sh do this)"
                )
            });
        let binaries = ControlPlaneBinaries {
            etcd: dir.join("etcd"),
            kube_apiserver: dir.join("kube-apiserver"),
            kubectl: dir.join("kubectl"),
            istiod: dir.join("istiod"),
            istio_crds: dir.join("../crd-all.gen.yaml"),
        };
        for path in [
            &binaries.etcd,
            &binaries.kube_apiserver,
            &binaries.kubectl,
            &binaries.istiod,
            &binaries.istio_crds,
        ] {
            assert!(
                path.is_file(),
                "{} is missing: run tests/control-plane/build.sh",
                path.display()
            );
        }
        binaries
    }
}
