//! How each member answered: the statistics Envoy keeps natively for every member route
//! whose `stat_prefix` is `modelsplit.<ns>.<model>.<kind>` (the local gateway's routes; see
//! `modelsplit_core::encode::envoy_routes::route_stat_prefix`) — responses, 5xx answers and
//! the upstream latency histogram. Read from `/stats?format=json`, two readings a window
//! apart; a member's routes (REST, REST paths, gRPC) are added up.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

use modelsplit_core::encode::envoy_routes::ROUTE_STATS;
use modelsplit_core::histogram::{self, quantile, Buckets};

/// The admin query: only member routes' statistics, histograms with cumulative buckets.
pub const ROUTE_STATS_QUERY: &str =
    "/stats?format=json&filter=%5Evhost%5C..*%5C.route%5C.modelsplit%5C.&histogram_buckets=cumulative";

/// One member's route statistics at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberRouteStats {
    /// Requests answered (`upstream_rq_completed`).
    pub completed: u64,
    /// Of which 5xx (`upstream_rq_5xx`).
    pub server_errors: u64,
    /// `upstream_rq_time`: (upper bound in ms, requests at or below it), ascending.
    pub latency: Buckets,
}

/// Route statistics by (namespace, model).
pub type RouteReadings = BTreeMap<(String, String), MemberRouteStats>;

/// What a member's answers were over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub responses: u64,
    pub server_errors: u64,
    /// gRPC calls answered with a `grpc-status` other than OK (over HTTP 200, so not in
    /// `server_errors`): the filter's `grpc_errors` counters.
    pub grpc_errors: u64,
    /// (5xx + gRPC errors) ÷ responses, percent (None without responses).
    pub error_percent: Option<f64>,
    /// The histogram bucket bound the median / 99th percentile falls under, ms (Envoy merges
    /// histograms for its admin API on its stats flush, so they trail the counters by up
    /// to that interval).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Parses `/stats?format=json` output; statistics other than member routes' are ignored.
pub fn parse_route_stats(json: &str) -> RouteReadings {
    let mut readings = RouteReadings::new();
    let Ok(dump) = serde_json::from_str::<Value>(json) else {
        return readings;
    };
    for stat in dump["stats"].as_array().into_iter().flatten() {
        if let (Some(name), Some(value)) = (stat["name"].as_str(), stat["value"].as_u64()) {
            let Some((key, field)) = member_stat(name) else {
                continue;
            };
            let entry = readings.entry(key).or_default();
            match field {
                "upstream_rq_completed" => entry.completed += value,
                "upstream_rq_5xx" => entry.server_errors += value,
                _ => {}
            }
        }
        for recorded in stat["histograms"].as_array().into_iter().flatten() {
            let Some((key, "upstream_rq_time")) = recorded["name"].as_str().and_then(member_stat)
            else {
                continue;
            };
            let entry = readings.entry(key).or_default();
            entry.latency = histogram::sum(&entry.latency, &admin_buckets(recorded));
        }
    }
    readings
}

/// The cumulative buckets of one histogram of Envoy's `/stats?format=json&histogram_buckets=cumulative`.
pub(super) fn admin_buckets(recorded: &Value) -> Buckets {
    recorded["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| Some((b["upper_bound"].as_f64()?, b["cumulative"].as_u64()?)))
        .collect()
}

/// `vhost.<vhost>.route.modelsplit.<ns>.<model>.<kind>.<field>` → ((ns, model), field).
fn member_stat(name: &str) -> Option<((String, String), &str)> {
    let rest = name.strip_prefix("vhost.")?;
    let (_, rest) = rest.split_once(&format!(".route.{ROUTE_STATS}."))?;
    let mut parts = rest.splitn(4, '.');
    let (namespace, model, _kind, field) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some(((namespace.to_string(), model.to_string()), field))
}

/// The outcome of `member` of `namespace` between two readings (an empty `before`: since
/// start). None when the gateway keeps no statistics for its routes.
pub fn outcome(
    before: &RouteReadings,
    after: &RouteReadings,
    namespace: &str,
    member: &str,
    grpc_errors: u64,
) -> Option<Outcome> {
    let key = (namespace.to_string(), member.to_string());
    let now = after.get(&key)?;
    let then = before.get(&key).cloned().unwrap_or_default();
    let responses = now.completed.saturating_sub(then.completed);
    let server_errors = now.server_errors.saturating_sub(then.server_errors);
    let window = histogram::since(&now.latency, &then.latency);
    let errors = server_errors + grpc_errors;
    Some(Outcome {
        responses,
        server_errors,
        grpc_errors,
        error_percent: (responses > 0)
            .then(|| 100.0 * errors.min(responses) as f64 / responses as f64),
        p50_ms: quantile(&window, 0.5),
        p99_ms: quantile(&window, 0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(completed: u64, errors: u64, buckets: [u64; 3]) -> String {
        serde_json::json!({"stats": [
            {"name": "vhost.gateway.route.modelsplit.apps.one.rest-paths.upstream_rq_completed", "value": completed},
            {"name": "vhost.gateway.route.modelsplit.apps.one.rest-paths.upstream_rq_5xx", "value": errors},
            {"name": "vhost.gateway.route.modelsplit.apps.one.grpc.upstream_rq_completed", "value": 1},
            {"name": "vhost.gateway.route.other.upstream_rq_completed", "value": 99},
            {"histograms": [
                {"name": "vhost.gateway.route.modelsplit.apps.one.rest-paths.upstream_rq_time",
                 "buckets": [
                    {"upper_bound": 1.0, "interval": 0, "cumulative": buckets[0]},
                    {"upper_bound": 5.0, "interval": 0, "cumulative": buckets[1]},
                    {"upper_bound": 10.0, "interval": 0, "cumulative": buckets[2]},
                 ]},
                {"name": "vhost.gateway.route.modelsplit.apps.one.grpc.upstream_rq_time",
                 "buckets": [
                    {"upper_bound": 1.0, "cumulative": 0},
                    {"upper_bound": 5.0, "cumulative": 0},
                    {"upper_bound": 10.0, "cumulative": 1},
                 ]},
            ]},
        ]})
        .to_string()
    }

    #[test]
    fn a_members_routes_add_up_and_the_window_is_the_difference() {
        let before = parse_route_stats(&dump(10, 1, [5, 9, 10]));
        let after = parse_route_stats(&dump(110, 6, [55, 108, 110]));
        let key = ("apps".to_string(), "one".to_string());
        assert_eq!(after[&key].completed, 111, "REST paths and gRPC together");
        assert_eq!(
            after[&key].latency,
            vec![(1.0, 55), (5.0, 108), (10.0, 111)]
        );
        assert_eq!(after.len(), 1, "only member routes: {after:?}");

        let window = outcome(&before, &after, "apps", "one", 5).unwrap();
        assert_eq!(window.responses, 100);
        assert_eq!(window.server_errors, 5);
        assert_eq!(window.grpc_errors, 5);
        assert_eq!(window.error_percent, Some(10.0), "5xx and gRPC errors");
        // 100 in the window: 50 at <= 1 ms, 99 at <= 5 ms, 100 at <= 10 ms.
        assert_eq!(window.p50_ms, Some(1.0));
        assert_eq!(window.p99_ms, Some(5.0));
        assert_eq!(outcome(&before, &after, "apps", "two", 0), None);
    }

    #[test]
    fn an_idle_window_has_no_rates_or_latencies() {
        let reading = parse_route_stats(&dump(10, 1, [5, 9, 10]));
        let idle = outcome(&reading, &reading, "apps", "one", 0).unwrap();
        assert_eq!(idle.responses, 0);
        assert_eq!(idle.error_percent, None);
        assert_eq!(idle.p99_ms, None);
        assert!(parse_route_stats("not json").is_empty());
    }
}
