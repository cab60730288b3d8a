//! `modelsplit status`: what a gateway does with each group, from its own numbers — the
//! filter configurations it runs (`/config_dump`, ECDS), the per-member counters the
//! filter keeps (`/stats`), and how each member answered: the member routes' statistics
//! where routes keep them ([`outcomes`]), else the filter's own measurements of groups
//! with a rollout ([`observed`]) — read through Envoy's admin API. The local gateway's admin is
//! `http://127.0.0.1:9901`; an Istio gateway's is port 15000 of its pod
//! (`kubectl -n istio-system port-forward deploy/<gateway> 15000`).

pub mod observed;
pub mod outcomes;
pub mod report;
pub mod table;

use std::time::Duration;

use crate::local::admin::{parse_stats, Admin};
use modelsplit_filter::config::FilterConfig;
use observed::{parse_observed_stats, ObservedReadings, OBSERVED_STATS_QUERY};
use outcomes::{parse_route_stats, RouteReadings, ROUTE_STATS_QUERY};
use report::{group_statuses, GroupStatus, Readings};

/// Why the gateway's numbers could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot read Envoy's admin API at {url}{path}: {source}. Is the gateway running and --admin its admin address? (An Istio gateway's is port 15000 of its pod: `kubectl -n istio-system port-forward deploy/<gateway> 15000`, then --admin http://127.0.0.1:15000)")]
    Admin {
        url: String,
        path: &'static str,
        source: std::io::Error,
    },
    #[error("the gateway at {0} runs no modelsplit filter configuration (no ECDS filter whose configuration is one); has the controller published one, and does its selector match this gateway?")]
    NoFilter(String),
}

const CONFIG_DUMP: &str = "/config_dump?resource=ecds_filters";
/// The filter's per-member counters: requests and gRPC errors.
const COUNTERS: &str = "/stats?filter=%5Ewasmcustom%5C.modelsplit%5C.(requests%7Cgrpc_errors)%5C.";

/// The modelsplit filter configurations a gateway runs.
pub fn filter_configs(admin: &Admin) -> Result<Vec<FilterConfig>, StatusError> {
    let dump = read(admin, CONFIG_DUMP)?;
    let configs = configs_in_dump(&dump);
    if configs.is_empty() {
        return Err(StatusError::NoFilter(admin.url()));
    }
    Ok(configs)
}

/// Every ECDS filter configuration in a `config_dump` that parses as a modelsplit one.
pub fn configs_in_dump(dump: &str) -> Vec<FilterConfig> {
    let Ok(dump) = serde_json::from_str::<serde_json::Value>(dump) else {
        return Vec::new();
    };
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            c.pointer("/ecds_filter/typed_config/config/configuration/value")?
                .as_str()
        })
        .filter_map(|json| FilterConfig::from_json(json.as_bytes()).ok())
        .collect()
}

/// The per-member request counters now.
pub fn readings(admin: &Admin) -> Result<Readings, StatusError> {
    Ok(parse_stats(&read(admin, COUNTERS)?))
}

/// The statistics of the member routes now (empty where routes keep none).
pub fn route_readings(admin: &Admin) -> Result<RouteReadings, StatusError> {
    Ok(parse_route_stats(&read(admin, ROUTE_STATS_QUERY)?))
}

/// The filter's own measurements of observed groups now (empty where none declares a
/// rollout).
pub fn observed_readings(admin: &Admin) -> Result<ObservedReadings, StatusError> {
    Ok(parse_observed_stats(&read(admin, OBSERVED_STATS_QUERY)?))
}

/// One status: the counters read `window` apart (a zero window: totals since start).
pub fn status(admin: &Admin, window: Duration) -> Result<Vec<GroupStatus>, StatusError> {
    let (before, routes_before, observed_before) = if window.is_zero() {
        (
            Readings::new(),
            RouteReadings::new(),
            ObservedReadings::new(),
        )
    } else {
        let before = (
            readings(admin)?,
            route_readings(admin)?,
            observed_readings(admin)?,
        );
        std::thread::sleep(window);
        before
    };
    // The configuration as it is at the end of the window.
    let configs = filter_configs(admin)?;
    let after = readings(admin)?;
    let routes_after = route_readings(admin)?;
    let observed_after = observed_readings(admin)?;
    Ok(group_statuses(
        &configs,
        &before,
        &after,
        (&routes_before, &routes_after),
        (&observed_before, &observed_after),
        window,
    ))
}

fn read(admin: &Admin, path: &'static str) -> Result<String, StatusError> {
    admin.get(path).map_err(|source| StatusError::Admin {
        url: admin.url(),
        path,
        source,
    })
}
