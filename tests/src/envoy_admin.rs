//! What a running Envoy says it applied, read from its admin API: the filter
//! configuration in force (ECDS), independent of the files that were written.

use crate::http::HttpClient;
use modelsplit_filter::config::{FilterConfig, GroupConfig};

/// The modelsplit filter configuration Envoy's main thread has applied, if any.
pub async fn applied_filter_config(http: &HttpClient, admin_url: &str) -> Option<FilterConfig> {
    let url = format!("{admin_url}/config_dump?resource=ecds_filters");
    let dump = http.get(&url, &[]).await.ok()?.json();
    dump["configs"].as_array()?.iter().find_map(|entry| {
        let config = &entry["ecds_filter"]["typed_config"]["config"];
        let value = config["configuration"]["value"].as_str()?;
        FilterConfig::from_json(value.as_bytes()).ok()
    })
}

/// The group `namespace/name` of a configuration.
pub fn find_group<'a>(
    config: &'a FilterConfig,
    namespace: &str,
    name: &str,
) -> Option<&'a GroupConfig> {
    config
        .groups
        .iter()
        .find(|g| g.namespace == namespace && g.name == name)
}

/// Each member's share in percent (weight over the sum), by member name.
pub fn shares(group: &GroupConfig) -> Vec<(String, f64)> {
    let total = group.total_weight().max(1) as f64;
    group
        .members
        .iter()
        .map(|m| (m.name.clone(), f64::from(m.weight) * 100.0 / total))
        .collect()
}

/// The bound address of the listener `name` from Envoy's admin `/listeners?format=json`,
/// once it is active (port 0 means not bound yet).
pub async fn listener_address(
    http: &HttpClient,
    admin_url: &str,
    name: &str,
) -> Option<std::net::SocketAddr> {
    let url = format!("{admin_url}/listeners?format=json");
    let reply = http.get(&url, &[]).await.ok()?;
    let statuses = reply.json()["listener_statuses"].as_array()?.clone();
    let status = statuses.iter().find(|s| s["name"] == name)?;
    let address = &status["local_address"]["socket_address"];
    let port = address["port_value"].as_u64().filter(|p| *p != 0)?;
    format!("{}:{port}", address["address"].as_str()?)
        .parse()
        .ok()
}
