//! How each member of an *observed* group answered, as the filter itself measures it
//! (groups with `observe: true`: the planner sets it for a group with a declared rollout).
//! Unlike the member routes' statistics of [`super::outcomes`], these exist on any
//! gateway the filter runs on, an Istio gateway included (whose routes have no
//! `stat_prefix`, and whose stats inclusion list exports `wasm`-prefixed stats):
//!
//! - `wasmcustom.modelsplit.latency_ms.<ns>.<group>.<member>`: histogram, milliseconds
//!   from routing the request to its response headers, one value per answered request;
//! - `wasmcustom.modelsplit.rest_errors.<ns>.<group>.<member>`: counter, REST requests
//!   answered 5xx or reset before their response headers;
//! - `wasmcustom.modelsplit.grpc_errors.<ns>.<group>.<member>`: counter, gRPC calls not OK
//!   (every group's, defined at a member's first one).
//!
//! Read from `/stats?format=json&histogram_buckets=cumulative` ([`OBSERVED_STATS_QUERY`]).
//! Kubernetes namespace and InferenceService names have no dots, so a name's first segment
//! is the namespace, its last the member and the group (which may have dots) is between.

use std::collections::BTreeMap;

use modelsplit_core::histogram::{self, Buckets};

use super::outcomes::{admin_buckets, Outcome};
use modelsplit_filter::plan::ENVOY_STATS_PREFIX;
use serde_json::Value;

/// The admin query: the filter's latency histograms (cumulative buckets) and its REST and
/// gRPC error counters, nothing else.
pub const OBSERVED_STATS_QUERY: &str = "/stats?format=json&histogram_buckets=cumulative&filter=%5Ewasmcustom%5C.modelsplit%5C.(latency_ms%7Crest_errors%7Cgrpc_errors)%5C.";

/// The same statistics in Prometheus' text format (`/stats/prometheus`, as Istio's agent
/// and Prometheus scrape them; see filter/README.md for their names there).
pub const OBSERVED_PROMETHEUS_QUERY: &str =
    "/stats/prometheus?filter=%5Ewasmcustom%5C.modelsplit%5C.(latency_ms%7Crest_errors%7Cgrpc_errors)%5C.";

/// (namespace, group, member).
pub type MemberKey = (String, String, String);

/// What the filter measured of one member, since the gateway started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberObserved {
    /// REST requests answered 5xx or reset (observed groups only).
    pub rest_errors: u64,
    /// gRPC calls answered with a `grpc-status` other than OK, or none (any group).
    pub grpc_errors: u64,
    /// Latency, ms: (upper bound, requests at or below it), ascending (observed groups
    /// only; empty before the histogram's first merge, which follows its first value).
    pub latency: Buckets,
}

impl MemberObserved {
    /// Requests answered (response headers received): the histogram's count, every
    /// answer below its last bound (60 s on the local gateway).
    pub fn answered(&self) -> u64 {
        self.latency.last().map_or(0, |(_, n)| *n)
    }
}

/// The filter's measurements by member.
pub type ObservedReadings = BTreeMap<MemberKey, MemberObserved>;

/// A member's outcome over a window from the filter's own measurements (None when the
/// member is not observed: its group declares no rollout).
pub fn observed_outcome(
    before: &ObservedReadings,
    after: &ObservedReadings,
    key: &MemberKey,
) -> Option<Outcome> {
    let now = after.get(key)?;
    if now.latency.is_empty() && now.rest_errors == 0 {
        // Only a gRPC error counter: any group's, not an observed one.
        return None;
    }
    let then = before.get(key).cloned().unwrap_or_default();
    let window = histogram::since(&now.latency, &then.latency);
    let responses = window.last().map_or(0, |(_, n)| *n);
    let server_errors = now.rest_errors.saturating_sub(then.rest_errors);
    let grpc_errors = now.grpc_errors.saturating_sub(then.grpc_errors);
    let errors = server_errors + grpc_errors;
    Some(Outcome {
        responses,
        server_errors,
        grpc_errors,
        error_percent: (responses > 0)
            .then(|| 100.0 * errors.min(responses) as f64 / responses as f64),
        p50_ms: histogram::quantile(&window, 0.5),
        p99_ms: histogram::quantile(&window, 0.99),
    })
}

/// Parses the output of [`OBSERVED_STATS_QUERY`]; other statistics are ignored.
pub fn parse_observed_stats(json: &str) -> ObservedReadings {
    let mut readings = ObservedReadings::new();
    let Ok(dump) = serde_json::from_str::<Value>(json) else {
        return readings;
    };
    for stat in dump["stats"].as_array().into_iter().flatten() {
        if let (Some(name), Some(value)) = (stat["name"].as_str(), stat["value"].as_u64()) {
            match filter_stat(name) {
                Some(("rest_errors", key)) => readings.entry(key).or_default().rest_errors = value,
                Some(("grpc_errors", key)) => readings.entry(key).or_default().grpc_errors = value,
                _ => {}
            }
        }
        for recorded in stat["histograms"].as_array().into_iter().flatten() {
            let Some(("latency_ms", key)) = recorded["name"].as_str().and_then(filter_stat) else {
                continue;
            };
            let entry = readings.entry(key).or_default();
            entry.latency = histogram::sum(&entry.latency, &admin_buckets(recorded));
        }
    }
    readings
}

/// `wasmcustom.modelsplit.<kind>.<ns>.<group>.<member>` → (kind, (ns, group, member)).
fn filter_stat(name: &str) -> Option<(&str, MemberKey)> {
    let rest = name
        .strip_prefix(ENVOY_STATS_PREFIX)?
        .strip_prefix("modelsplit.")?;
    let (kind, rest) = rest.split_once('.')?;
    let (namespace, rest) = rest.split_once('.')?;
    let (group, member) = rest.rsplit_once('.')?;
    if [namespace, group, member].iter().any(|s| s.is_empty()) {
        return None;
    }
    Some((
        kind,
        (namespace.to_string(), group.to_string(), member.to_string()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::envoy_files::LATENCY_BUCKETS_MS;

    /// What Envoy 1.40's admin API answered [`OBSERVED_STATS_QUERY`] after the e2e test
    /// `tests/tests/local_observe.rs` (which rewrites it with `MODELSPLIT_BLESS=1`; then
    /// update the numbers below): group `risky-model` observed, its `canary-v2` failing
    /// every 4th call; group `calm` not observed.
    const SAMPLE: &str = include_str!("testdata/admin-observed.json");

    fn key(member: &str) -> MemberKey {
        ("apps".into(), "risky-model".into(), member.into())
    }

    #[test]
    fn parses_a_real_admin_reading() {
        let readings = parse_observed_stats(SAMPLE);
        assert_eq!(
            readings.keys().cloned().collect::<Vec<_>>(),
            [key("canary-v2"), key("stable")],
            "no other group, no other statistic"
        );
        let canary = &readings[&key("canary-v2")];
        assert_eq!((canary.rest_errors, canary.grpc_errors), (29, 16));
        assert_eq!(canary.answered(), 183);
        assert_eq!(canary.latency[0], (1.0, 164));
        assert_eq!(canary.latency[9], (50.0, 183));
        let stable = &readings[&key("stable")];
        assert_eq!((stable.rest_errors, stable.grpc_errors), (0, 0));
        assert_eq!(stable.answered(), 177);
        assert_eq!(stable.latency[4], (7.5, 172));
        for member in readings.values() {
            let bounds: Vec<f64> = member.latency.iter().map(|(b, _)| *b).collect();
            assert_eq!(bounds, LATENCY_BUCKETS_MS, "the local gateway's buckets");
            assert!(member.latency.windows(2).all(|w| w[0].1 <= w[1].1));
        }
        assert_eq!(
            histogram::quantile(&canary.latency, 0.5),
            Some(1.0),
            "Buckets as core's histogram functions take them"
        );
    }

    #[test]
    fn names_split_at_the_namespace_and_the_member_and_other_stats_are_ignored() {
        let json = serde_json::json!({"stats": [
            {"name": "wasmcustom.modelsplit.rest_errors.ns.group.v2.m-1", "value": 3},
            {"name": "wasmcustom.modelsplit.grpc_errors.ns.group.v2.m-1", "value": 2},
            {"name": "wasmcustom.modelsplit.requests.ns.group.v2.m-1", "value": 99},
            {"name": "wasmcustom.modelsplit.host_error", "value": 1},
            {"name": "wasmcustom.modelsplit.rest_errors.ns.m", "value": 1},
            {"name": "modelsplit.rest_errors.ns.g.m", "value": 1},
            {"histograms": [
                {"name": "wasmcustom.modelsplit.latency_ms.ns.group.v2.m-1",
                 "buckets": [{"upper_bound": 1, "cumulative": 4}, {"upper_bound": 5, "cumulative": 6}]},
                {"name": "vhost.gateway.route.modelsplit.ns.m-1.rest.upstream_rq_time",
                 "buckets": [{"upper_bound": 1, "cumulative": 7}]},
            ]},
        ]})
        .to_string();
        let readings = parse_observed_stats(&json);
        let member = ("ns".to_string(), "group.v2".to_string(), "m-1".to_string());
        assert_eq!(readings.len(), 1, "{readings:?}");
        assert_eq!(
            readings[&member],
            MemberObserved {
                rest_errors: 3,
                grpc_errors: 2,
                latency: vec![(1.0, 4), (5.0, 6)],
            }
        );
        assert_eq!(readings[&member].answered(), 6);
        assert!(parse_observed_stats("not json").is_empty());
        assert_eq!(MemberObserved::default().answered(), 0);
    }
}

#[cfg(test)]
mod outcome_tests {
    use super::*;

    fn member(rest_errors: u64, grpc_errors: u64, latency: &[(f64, u64)]) -> MemberObserved {
        MemberObserved {
            rest_errors,
            grpc_errors,
            latency: latency.to_vec(),
        }
    }

    #[test]
    fn an_observed_members_outcome_is_over_the_window() {
        let key: MemberKey = ("apps".into(), "g".into(), "canary".into());
        let before = ObservedReadings::from([(key.clone(), member(1, 0, &[(1.0, 8), (5.0, 10)]))]);
        let after =
            ObservedReadings::from([(key.clone(), member(21, 5, &[(1.0, 58), (5.0, 110)]))]);
        let outcome = observed_outcome(&before, &after, &key).expect("observed");
        assert_eq!(outcome.responses, 100);
        assert_eq!((outcome.server_errors, outcome.grpc_errors), (20, 5));
        assert_eq!(outcome.error_percent, Some(25.0));
        assert_eq!((outcome.p50_ms, outcome.p99_ms), (Some(1.0), Some(5.0)));
    }

    #[test]
    fn a_member_with_only_a_grpc_error_counter_is_not_observed() {
        let key: MemberKey = ("apps".into(), "g".into(), "m".into());
        let after = ObservedReadings::from([(key.clone(), member(0, 3, &[]))]);
        assert_eq!(
            observed_outcome(&ObservedReadings::new(), &after, &key),
            None
        );
        assert_eq!(
            observed_outcome(&after, &after, &("x".into(), "y".into(), "z".into())),
            None
        );
    }
}
