//! The gateways' own numbers for `modelsplit run`'s rollouts: the filter's per-member
//! counters and latency histograms, scraped from every gateway pod's Prometheus endpoint
//! (an Istio gateway serves `:15090/stats/prometheus`, the only Envoy stats port reachable
//! from another pod; the admin port is bound to localhost) and summed over the pods.
//!
//! Envoy names a `wasmcustom.` stat in Prometheus without that prefix and with every
//! character outside `[a-zA-Z0-9_]` turned into `_`, so
//! `wasmcustom.modelsplit.requests.apps.ai-model.v2` reads as
//! `modelsplit_requests_apps_ai_model_v2`; the names are looked up from the plan's
//! groups and members, never parsed back.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::local::admin::Admin;
use crate::rollouts::GatewayNumbers;
use modelsplit_core::histogram::{self, Buckets};
use modelsplit_core::rollout::Tally;

/// Only the filter's stats: Envoy applies the filter before formatting.
const FILTER_QUERY: &str = "?filter=%5Ewasmcustom%5C.modelsplit%5C.";

/// Where the gateway pods serve their statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsEndpoint {
    pub port: u16,
    pub path: String,
}

impl Default for StatsEndpoint {
    fn default() -> Self {
        StatsEndpoint {
            port: 15090,
            path: "/stats/prometheus".to_string(),
        }
    }
}

/// Samples of a Prometheus text exposition, summed over the pods that were read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Samples {
    /// Counters and gauges by name (labels dropped: the filter's stats have none).
    values: BTreeMap<String, f64>,
    /// Histograms by name (without `_bucket`): cumulative `(le, count)`, finite bounds.
    histograms: BTreeMap<String, Buckets>,
}

impl Samples {
    /// Parses one exposition (`# ` lines and malformed lines are skipped).
    pub fn parse(text: &str) -> Samples {
        let mut samples = Samples::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            match name.strip_suffix("_bucket") {
                Some(histogram) => {
                    let Some(le) = label(labels, "le") else {
                        continue;
                    };
                    // The finite buckets only, as the admin API gives them: `+Inf` would
                    // not survive the rollouts' JSON state (Envoy's last bound is an hour).
                    let Ok(bound) = le.parse::<f64>() else {
                        continue;
                    };
                    if !bound.is_finite() {
                        continue;
                    }
                    let buckets = samples.histograms.entry(histogram.to_string()).or_default();
                    buckets.push((bound, value as u64));
                    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                }
                None => {
                    *samples.values.entry(name.to_string()).or_default() += value;
                }
            }
        }
        samples
    }

    /// Adds another pod's samples.
    pub fn add(&mut self, other: Samples) {
        for (name, value) in other.values {
            *self.values.entry(name).or_default() += value;
        }
        for (name, buckets) in other.histograms {
            let sum = match self.histograms.get(&name) {
                Some(mine) => histogram::sum(mine, &buckets),
                None => buckets,
            };
            self.histograms.insert(name, sum);
        }
    }

    fn value(&self, name: &str) -> u64 {
        self.values.get(name).copied().unwrap_or(0.0) as u64
    }
}

fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// Envoy's Prometheus name of the filter's stat `modelsplit.<kind>.<ns>.<group>.<member>`.
pub fn prometheus_name(kind: &str, namespace: &str, group: &str, member: &str) -> String {
    format!("modelsplit.{kind}.{namespace}.{group}.{member}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl GatewayNumbers for Samples {
    /// Requests routed to the member, its errors (REST 5xx or no answer, gRPC not OK)
    /// and its latency histogram — the last two exist for groups that declare a rollout.
    fn tally(&self, namespace: &str, group: &str, member: &str) -> Tally {
        let name = |kind| prometheus_name(kind, namespace, group, member);
        Tally {
            responses: self.value(&name("requests")),
            errors: self.value(&name("rest_errors")) + self.value(&name("grpc_errors")),
            latency: self
                .histograms
                .get(&name("latency_ms"))
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// Reads and sums the filter's stats of every running pod of each gateway: `gateways`
/// are (namespace, label selector) pairs. Fails, naming the pod or the selector, when a
/// gateway has no running pod or one cannot be read — a rollout waits rather than judge
/// from some of the pods.
pub async fn scrape(
    client: &Client,
    gateways: &[(String, String)],
    endpoint: &StatsEndpoint,
) -> Result<Samples, String> {
    let mut total = Samples::default();
    for (namespace, selector) in gateways {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let listed = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| format!("cannot list the gateway pods ({selector}) in {namespace}: {e}; the controller needs list on pods (ClusterRole modelsplit-controller in controller/deploy/clusterrole.yaml)"))?;
        let running: Vec<(String, String)> = listed
            .items
            .iter()
            .filter_map(|pod| {
                let status = pod.status.as_ref()?;
                (status.phase.as_deref() == Some("Running")).then_some(())?;
                Some((pod.metadata.name.clone()?, status.pod_ip.clone()?))
            })
            .collect();
        if running.is_empty() {
            return Err(format!(
                "no running gateway pod matches {selector} in {namespace}"
            ));
        }
        for (pod, ip) in running {
            let host = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip
            };
            let url = format!("http://{host}:{}", endpoint.port);
            let path = format!("{}{FILTER_QUERY}", endpoint.path);
            let admin = Admin::parse(&url).map_err(|e| e.to_string())?;
            let read = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::task::spawn_blocking(move || admin.get(&path)),
            )
            .await;
            let text = match read {
                Ok(Ok(Ok(text))) => text,
                Ok(Ok(Err(e))) => {
                    return Err(format!(
                    "cannot read the statistics of gateway pod {namespace}/{pod} at {url}{}: {e}",
                    endpoint.path
                ))
                }
                _ => {
                    return Err(format!(
                        "gateway pod {namespace}/{pod} did not answer at {url}{} in time",
                        endpoint.path
                    ))
                }
            };
            total.add(Samples::parse(&text));
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# TYPE modelsplit_requests_apps_ai_model_v1 counter
modelsplit_requests_apps_ai_model_v1{} 90
modelsplit_requests_apps_ai_model_v2{} 10
modelsplit_rest_errors_apps_ai_model_v2{} 2
modelsplit_grpc_errors_apps_ai_model_v2{} 1
# TYPE modelsplit_latency_ms_apps_ai_model_v2 histogram
modelsplit_latency_ms_apps_ai_model_v2_bucket{le=\"1\"} 4
modelsplit_latency_ms_apps_ai_model_v2_bucket{le=\"5\"} 9
modelsplit_latency_ms_apps_ai_model_v2_bucket{le=\"+Inf\"} 10
modelsplit_latency_ms_apps_ai_model_v2_sum{} 31.5
modelsplit_latency_ms_apps_ai_model_v2_count{} 10
";

    #[test]
    fn names_are_envoys_prometheus_names() {
        assert_eq!(
            prometheus_name("requests", "team-b", "ai.model", "v-2"),
            "modelsplit_requests_team_b_ai_model_v_2"
        );
    }

    #[test]
    fn a_member_tally_sums_its_errors_and_keeps_its_histogram() {
        let samples = Samples::parse(EXPOSITION);
        let canary = samples.tally("apps", "ai-model", "v2");
        assert_eq!(canary.responses, 10);
        assert_eq!(canary.errors, 3);
        assert_eq!(canary.latency, vec![(1.0, 4), (5.0, 9)]);
        let stable = samples.tally("apps", "ai-model", "v1");
        assert_eq!((stable.responses, stable.errors), (90, 0));
        assert!(stable.latency.is_empty());
        assert_eq!(samples.tally("apps", "ai-model", "v3"), Tally::default());
    }

    #[test]
    fn pods_add_up() {
        let mut total = Samples::parse(EXPOSITION);
        total.add(Samples::parse(EXPOSITION));
        let canary = total.tally("apps", "ai-model", "v2");
        assert_eq!((canary.responses, canary.errors), (20, 6));
        assert_eq!(canary.latency, vec![(1.0, 8), (5.0, 18)]);
    }

    /// What Envoy 1.40 answered at `/stats/prometheus` (tests/tests/local_observe.rs).
    #[test]
    fn reads_a_real_prometheus_reading() {
        let samples = Samples::parse(include_str!("../status/testdata/prometheus-observed.txt"));
        let canary = samples.tally("apps", "risky-model", "canary-v2");
        assert!(canary.errors > 0, "{canary:?}");
        assert!(!canary.latency.is_empty(), "{canary:?}");
        assert!(canary.latency.iter().all(|(bound, _)| bound.is_finite()));
        let state = serde_json::to_string(&canary).expect("a tally is JSON");
        assert_eq!(
            serde_json::from_str::<Tally>(&state).expect("and back"),
            canary
        );
    }
}
