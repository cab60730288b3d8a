//! `modelsplit status`, the pure part: the gateway's filter configurations and two readings of
//! its per-member counters in, one row per member out, with whether the observed shares are
//! in line with the weights.

use super::observed::{observed_outcome, ObservedReadings};
use super::outcomes::{outcome, Outcome, RouteReadings};
use modelsplit_filter::config::FilterConfig;
use modelsplit_filter::plan::{grpc_errors_counter_name, requests_counter_name};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The prefix Envoy gives proxy-wasm metrics in `/stats`.
pub const ENVOY_STATS_PREFIX: &str = "wasmcustom.";

/// One group as the gateway runs it and as its traffic went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupStatus {
    pub namespace: String,
    pub group: String,
    pub sticky_header: Option<String>,
    /// Requests the group received in the window (all members).
    pub requests: u64,
    pub members: Vec<MemberStatus>,
    pub drift: Drift,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberStatus {
    pub member: String,
    /// Configured share, percent.
    pub weight_percent: f64,
    /// Share of the group's requests in the window, percent (None without requests).
    pub observed_percent: Option<f64>,
    /// Requests routed to the member in the window.
    pub requests: u64,
    /// Requests per second over the window (None when the window is "since start").
    pub per_second: Option<f64>,
    /// Requests routed to the member since the gateway started.
    pub total: u64,
    /// How its answers went in the window, where the gateway keeps statistics for the
    /// member's routes (the local gateway does; see [`super::outcomes`]).
    pub outcome: Option<Outcome>,
}

/// Whether the observed shares are statistically out of line with the weights.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Drift {
    /// Too few requests to tell (fewer than 5 expected for some member).
    TooFewRequests,
    /// Pearson's chi-square below the critical value at p = 0.001.
    InLine { chi_square: f64, critical: f64 },
    /// Above it: the split is not what the weights say — or overrides and sticky keys
    /// bent it (they are counted with the member they chose).
    Drift { chi_square: f64, critical: f64 },
}

impl Drift {
    pub fn label(&self) -> &'static str {
        match self {
            Drift::TooFewRequests => "too few requests",
            Drift::InLine { .. } => "in line",
            Drift::Drift { .. } => "DRIFT",
        }
    }
}

/// Counter readings: full stat name (as `/stats` prints it) -> value.
pub type Readings = BTreeMap<String, u64>;

/// The groups of `configs` with their counters' movement from `before` to `after`, read
/// `window` apart. With an empty `before` (a zero window) the counts are since start.
pub fn group_statuses(
    configs: &[FilterConfig],
    before: &Readings,
    after: &Readings,
    routes: (&RouteReadings, &RouteReadings),
    observed: (&ObservedReadings, &ObservedReadings),
    window: Duration,
) -> Vec<GroupStatus> {
    let seconds = window.as_secs_f64();
    let mut statuses = Vec::new();
    for config in configs {
        for group in &config.groups {
            let weight_sum: u64 = group.members.iter().map(|m| u64::from(m.weight)).sum();
            let counts: Vec<(u64, u64)> = group
                .members
                .iter()
                .map(|m| {
                    let name = requests_counter_name(&group.namespace, &group.name, &m.name);
                    (moved(before, after, &name), counter(after, &name))
                })
                .collect();
            let requests: u64 = counts.iter().map(|(n, _)| n).sum();
            let members = group
                .members
                .iter()
                .zip(&counts)
                .map(|(m, &(n, total))| MemberStatus {
                    member: m.name.clone(),
                    weight_percent: percent(u64::from(m.weight), weight_sum),
                    observed_percent: (requests > 0).then(|| percent(n, requests)),
                    requests: n,
                    per_second: (seconds > 0.0).then(|| n as f64 / seconds),
                    total,
                    // The member routes' statistics (local gateway), else the filter's
                    // own measurements (groups with a rollout, on any gateway).
                    outcome: outcome(
                        routes.0,
                        routes.1,
                        &group.namespace,
                        &m.name,
                        moved(
                            before,
                            after,
                            &grpc_errors_counter_name(&group.namespace, &group.name, &m.name),
                        ),
                    )
                    .or_else(|| {
                        let key = (group.namespace.clone(), group.name.clone(), m.name.clone());
                        observed_outcome(observed.0, observed.1, &key)
                    }),
                })
                .collect();
            let weights: Vec<u64> = group.members.iter().map(|m| u64::from(m.weight)).collect();
            let observed: Vec<u64> = counts.iter().map(|(n, _)| *n).collect();
            statuses.push(GroupStatus {
                namespace: group.namespace.clone(),
                group: group.name.clone(),
                sticky_header: group.sticky_header.clone(),
                requests,
                members,
                drift: drift(&weights, &observed),
            });
        }
    }
    statuses.sort_by(|a, b| (&a.namespace, &a.group).cmp(&(&b.namespace, &b.group)));
    statuses
}

/// The filter's counter `name` (as the filter defines it, without Envoy's prefix) in a
/// reading; 0 when absent.
pub fn counter(readings: &Readings, name: &str) -> u64 {
    readings
        .get(&format!("{ENVOY_STATS_PREFIX}{name}"))
        .copied()
        .unwrap_or(0)
}

/// How far the filter's counter `name` moved between two readings.
fn moved(before: &Readings, after: &Readings, name: &str) -> u64 {
    counter(after, name).saturating_sub(counter(before, name))
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Pearson's goodness of fit of `observed` to `weights`. A member of weight 0 that got
/// requests is drift whatever the numbers (no request should reach it but by override).
pub fn drift(weights: &[u64], observed: &[u64]) -> Drift {
    let total: u64 = observed.iter().sum();
    let weight_sum: u64 = weights.iter().sum();
    if total == 0 || weight_sum == 0 {
        return Drift::TooFewRequests;
    }
    let mut chi_square = 0.0;
    let mut cells = 0usize;
    let mut zero_weight_hit = false;
    for (&w, &n) in weights.iter().zip(observed) {
        if w == 0 {
            zero_weight_hit |= n > 0;
            continue;
        }
        let expected = total as f64 * w as f64 / weight_sum as f64;
        if expected < 5.0 {
            return Drift::TooFewRequests;
        }
        chi_square += (n as f64 - expected).powi(2) / expected;
        cells += 1;
    }
    let critical = critical_value(cells.saturating_sub(1));
    if zero_weight_hit || chi_square > critical {
        Drift::Drift {
            chi_square,
            critical,
        }
    } else {
        Drift::InLine {
            chi_square,
            critical,
        }
    }
}

/// The chi-square critical value at p = 0.001 for `df` degrees of freedom: the table up to
/// 10, the Wilson–Hilferty approximation beyond (within 0.5% there).
fn critical_value(df: usize) -> f64 {
    const TABLE: [f64; 11] = [
        0.0, 10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877, 29.588,
    ];
    if let Some(value) = TABLE.get(df) {
        return *value;
    }
    let k = df as f64;
    let z = 3.090_232; // the standard normal's 0.999 quantile
    let h = 2.0 / (9.0 * k);
    k * (1.0 - h + z * h.sqrt()).powi(3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelsplit_filter::config::{GroupConfig, MemberConfig};

    fn config() -> FilterConfig {
        let member = |name: &str, weight| MemberConfig {
            name: name.into(),
            weight,
        };
        FilterConfig::with_groups(vec![GroupConfig {
            namespace: "apps".into(),
            name: "ai-model".into(),
            members: vec![member("one", 8000), member("two", 2000)],
            grpc: true,
            sticky_header: None,
            observe: false,
        }])
    }

    fn reading(one: u64, two: u64) -> Readings {
        Readings::from([
            (
                "wasmcustom.modelsplit.requests.apps.ai-model.one".into(),
                one,
            ),
            (
                "wasmcustom.modelsplit.requests.apps.ai-model.two".into(),
                two,
            ),
            ("wasmcustom.modelsplit.requests.apps.other.x".into(), 99),
        ])
    }

    #[test]
    fn counts_shares_and_rates_are_over_the_window() {
        let statuses = group_statuses(
            &[config()],
            &reading(100, 20),
            &reading(900, 220),
            (&RouteReadings::new(), &RouteReadings::new()),
            (&ObservedReadings::new(), &ObservedReadings::new()),
            Duration::from_secs(10),
        );
        assert_eq!(statuses.len(), 1);
        let group = &statuses[0];
        assert_eq!(group.requests, 1000);
        assert_eq!(group.members[0].requests, 800);
        assert_eq!(group.members[0].total, 900);
        assert_eq!(group.members[0].weight_percent, 80.0);
        assert_eq!(group.members[0].observed_percent, Some(80.0));
        assert_eq!(group.members[1].per_second, Some(20.0));
        assert!(
            matches!(group.drift, Drift::InLine { .. }),
            "{:?}",
            group.drift
        );
    }

    #[test]
    fn since_start_has_no_rate_and_an_idle_window_no_share() {
        let statuses = group_statuses(
            &[config()],
            &Readings::new(),
            &reading(80, 20),
            (&RouteReadings::new(), &RouteReadings::new()),
            (&ObservedReadings::new(), &ObservedReadings::new()),
            Duration::ZERO,
        );
        assert_eq!(statuses[0].members[0].per_second, None);
        assert_eq!(statuses[0].members[0].observed_percent, Some(80.0));
        let idle = group_statuses(
            &[config()],
            &reading(80, 20),
            &reading(80, 20),
            (&RouteReadings::new(), &RouteReadings::new()),
            (&ObservedReadings::new(), &ObservedReadings::new()),
            Duration::from_secs(5),
        );
        assert_eq!(idle[0].members[0].observed_percent, None);
        assert_eq!(idle[0].drift, Drift::TooFewRequests);
    }

    #[test]
    fn drift_is_flagged_when_shares_are_out_of_line() {
        assert!(matches!(drift(&[80, 20], &[500, 500]), Drift::Drift { .. }));
        assert!(matches!(
            drift(&[80, 20], &[795, 205]),
            Drift::InLine { .. }
        ));
        assert!(matches!(drift(&[50, 50], &[3, 2]), Drift::TooFewRequests));
        // A weight-0 member that was reached (overrides do that) is always flagged.
        assert!(matches!(drift(&[100, 0], &[1000, 1]), Drift::Drift { .. }));
        assert!(matches!(drift(&[100, 0], &[1000, 0]), Drift::InLine { .. }));
    }

    #[test]
    fn critical_values_beyond_the_table_are_close_to_the_exact_ones() {
        // Exact 0.999 quantiles: df 15 -> 37.697, df 30 -> 59.703.
        assert!((critical_value(15) - 37.697).abs() < 0.2);
        assert!((critical_value(30) - 59.703).abs() < 0.3);
        assert_eq!(critical_value(1), 10.828);
    }
}
