//! The routing model's two encoders: golden files for each, and a check that both say
//! the same thing route by route (so the local gateway cannot drift from a cluster).
//! Set `UPDATE_GOLDEN=1` to rewrite the golden files after an intended change.

use modelsplit_core::encode::envoy_routes::{self, cluster_name};
use modelsplit_core::encode::virtual_service::virtual_service;
use modelsplit_core::routing::{self, ExposedModel, ModelMeshPort, NamespaceRoutes};
use modelsplit_core::settings::GatewayRef;
use serde_json::Value;
use std::path::PathBuf;

fn team_routes() -> NamespaceRoutes {
    NamespaceRoutes {
        namespace: "team".into(),
        gateway: GatewayRef::new("istio-system", "odh-gateway"),
        plugin_namespace: "istio-system".into(),
        rest_prefix: "/modelmesh".into(),
        models: vec![
            ExposedModel {
                name: "fraud-v1".into(),
                grpc: true,
            },
            ExposedModel {
                name: "shared".into(),
                grpc: false,
            },
        ],
    }
}

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{} differs", path.display());
}

fn envoy_json(routes: &NamespaceRoutes) -> Value {
    let isvcs: Vec<_> = routes.isvcs().collect();
    envoy_routes::route_configuration(envoy_routes::envoy_routes(&routing::routes(
        &isvcs,
        &routes.rest_prefix,
    )))
}

#[test]
fn virtual_service_golden() {
    let yaml = serde_yaml::to_string(&virtual_service(&team_routes())).unwrap();
    golden("virtual-service.yaml", &yaml);
}

#[test]
fn envoy_routes_golden() {
    let json = serde_json::to_string_pretty(&envoy_json(&team_routes())).unwrap() + "\n";
    golden("envoy-routes.json", &json);
}

/// Route by route: same name, same match, same rewrite, same ModelMesh port.
#[test]
fn both_encoders_express_the_same_routes() {
    let routes = team_routes();
    let service = serde_json::to_value(virtual_service(&routes)).unwrap();
    let envoy = envoy_json(&routes);
    let http = service["spec"]["http"].as_array().unwrap();
    let rds = envoy["resources"][0]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap();
    assert_eq!(http.len(), rds.len());
    assert_eq!(
        http.len(),
        5,
        "3 routes for the gRPC owner, 2 for the other"
    );
    let names = [
        ("fraud-v1", "grpc"),
        ("fraud-v1", "rest"),
        ("fraud-v1", "rest-paths"),
        ("shared", "rest"),
        ("shared", "rest-paths"),
    ];
    for ((istio, envoy), (model, kind)) in http.iter().zip(rds).zip(names) {
        assert_eq!(istio["name"], format!("{model}-{kind}"));
        assert_eq!(envoy["name"], format!("team.{model}.{kind}"));
        let m = &istio["match"][0];
        if let Some(exact) = m["uri"]["exact"].as_str() {
            assert_eq!(envoy["match"]["path"], exact);
        } else if let Some(prefix) = m["uri"]["prefix"].as_str() {
            assert_eq!(envoy["match"]["prefix"], prefix);
        } else {
            assert_eq!(m["method"]["exact"], "POST");
            let headers = envoy["match"]["headers"].as_array().unwrap();
            let header = |name: &str| headers.iter().find(|h| h["name"] == name).unwrap();
            assert_eq!(header(":method")["string_match"]["exact"], "POST");
            assert_eq!(
                header("content-type")["string_match"]["prefix"],
                m["headers"]["content-type"]["prefix"]
            );
            assert_eq!(
                header("mm-vmodel-id")["string_match"]["exact"],
                m["headers"]["mm-vmodel-id"]["exact"]
            );
        }
        assert_eq!(
            envoy["route"]["prefix_rewrite"].as_str(),
            istio["rewrite"]["uri"].as_str()
        );
        let port = match istio["route"][0]["destination"]["port"]["number"].as_u64() {
            Some(8008) => ModelMeshPort::Rest,
            Some(8033) => ModelMeshPort::Grpc,
            other => panic!("unexpected port {other:?}"),
        };
        assert_eq!(envoy["route"]["cluster"], cluster_name("team", port));
        assert_eq!(
            istio["route"][0]["destination"]["host"],
            "modelmesh-serving.team.svc.cluster.local"
        );
    }
}
