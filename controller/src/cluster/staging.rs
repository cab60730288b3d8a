//! Staged publishing: the routing invariant of `modelsplit run`, as a pure function.
//!
//! The gateway holds two halves of one decision: the VirtualServices (a route per model)
//! and the WasmPlugin (which member a group request goes to). If the filter may pick a
//! member whose route is not in place, that request gets a 404. So every pass writes in
//! three stages, each decided from what the cluster holds (nothing is remembered between
//! passes, so a restart anywhere converges):
//!
//! 1. **routes** for every model the new plan exposes, *plus* every member of any published
//!    or about-to-be-published group, *plus* every model a route was published for while the
//!    latest filter-config change is younger than the grace period;
//! 2. **filter configs**, where a group moves to its new split only when the routes of its
//!    namespace were confirmed written in stage 1; otherwise it keeps its published split;
//! 3. routes no longer needed disappear on a later pass, once the grace period after the
//!    last filter-config change has passed (the gateway has taken the new config by then).
//!
//! The time of the last config change is kept on the WasmPlugin itself, in the
//! [`CONFIG_CHANGED_ANNOTATION`] annotation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use modelsplit_filter::config::{FilterConfig, GroupConfig};

use modelsplit_core::planner::{ExposedModel, NamespaceRoutes, Plan};

/// WasmPlugin annotation: when its filter configuration last changed (RFC 3339).
pub const CONFIG_CHANGED_ANNOTATION: &str = "modelsplit.io/config-changed-at";

/// A filter configuration as published, with the time it last changed.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedConfig {
    pub config: FilterConfig,
    pub changed_at: Option<Timestamp>,
}

/// The models a published VirtualService routes: name -> has a gRPC route.
pub type PublishedModels = BTreeMap<String, bool>;

/// What this controller instance has published, as the watchers see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Published {
    /// Per WasmPlugin namespace.
    pub configs: BTreeMap<String, PublishedConfig>,
    /// Per mesh namespace.
    pub routes: BTreeMap<String, PublishedModels>,
}

impl Published {
    /// The most recent filter-config change of any gateway, if known.
    fn last_change(&self) -> Option<Timestamp> {
        self.configs.values().filter_map(|c| c.changed_at).max()
    }

    /// Whether the latest filter-config change is younger than `grace` at `now`: routes the
    /// previous config named must stay until then.
    fn in_grace(&self, now: Timestamp, grace: Duration) -> bool {
        self.last_change()
            .is_some_and(|changed| now < changed + grace)
    }

    /// (namespace, member) of every member of every published group.
    fn published_members(&self) -> BTreeSet<(String, String)> {
        self.configs
            .values()
            .flat_map(|c| c.config.groups.iter())
            .flat_map(|g| {
                g.members
                    .iter()
                    .map(|m| (g.namespace.clone(), m.name.clone()))
            })
            .collect()
    }
}

/// Stage 1: the routes to write now, and when a route kept for the grace period may go.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteStage {
    pub routes: Vec<NamespaceRoutes>,
    /// The earliest time a later pass can drop routes kept only for the grace period.
    pub wake_at: Option<Timestamp>,
}

/// Stage 1: the plan's routes, widened so that no member the gateway may pick — now, or
/// until it runs the next config — loses its route.
pub fn route_stage(
    plan: &Plan,
    published: &Published,
    now: Timestamp,
    grace: Duration,
) -> RouteStage {
    let mut routes: BTreeMap<String, NamespaceRoutes> = plan
        .routes
        .iter()
        .map(|r| (r.namespace.clone(), r.clone()))
        .collect();

    // Members of published groups and of the groups about to be published.
    let mut needed = published.published_members();
    for gateway in &plan.gateways {
        for group in &gateway.config.groups {
            for member in &group.members {
                needed.insert((group.namespace.clone(), member.name.clone()));
            }
        }
    }
    let in_grace = published.in_grace(now, grace);
    let mut wake_at = None;
    for (namespace, models) in &published.routes {
        for (model, grpc) in models {
            let referenced = needed.contains(&(namespace.clone(), model.clone()));
            if !referenced && !in_grace {
                continue;
            }
            let Some(entry) = routes.get_mut(namespace) else {
                // The namespace left the plan (left the mesh, lost every model): its
                // VirtualService stays, with the published routes still needed, for now.
                continue;
            };
            match entry.models.iter_mut().find(|m| &m.name == model) {
                Some(existing) => existing.grpc |= *grpc,
                None => {
                    entry.models.push(ExposedModel {
                        name: model.clone(),
                        grpc: *grpc,
                    });
                    if !referenced {
                        wake_at = published.last_change().map(|c| c + grace);
                    }
                }
            }
        }
    }
    for entry in routes.values_mut() {
        entry.models.sort_by(|a, b| a.name.cmp(&b.name));
    }
    RouteStage {
        routes: routes.into_values().collect(),
        wake_at,
    }
}

/// Namespaces whose published VirtualService must stay although the plan has no routes
/// there: a published filter config still names their members, or the grace period runs.
pub fn retained_namespaces(
    plan: &Plan,
    published: &Published,
    now: Timestamp,
    grace: Duration,
) -> BTreeSet<String> {
    let planned: BTreeSet<&str> = plan.routes.iter().map(|r| r.namespace.as_str()).collect();
    let in_grace = published.in_grace(now, grace);
    let referenced: BTreeSet<String> = published
        .published_members()
        .into_iter()
        .map(|(namespace, _)| namespace)
        .collect();
    published
        .routes
        .keys()
        .filter(|ns| !planned.contains(ns.as_str()))
        .filter(|ns| in_grace || referenced.contains(*ns))
        .cloned()
        .collect()
}

/// Stage 2: the filter config of each gateway. A group of a namespace whose routes were
/// not confirmed keeps its published version (or stays out if it has none); every other
/// group takes the plan's. Returns plugin namespace -> config, for every gateway of the
/// plan and every gateway with a published config.
pub fn config_stage(
    plan: &Plan,
    published: &Published,
    confirmed: &BTreeSet<String>,
) -> BTreeMap<String, FilterConfig> {
    let mut staged = BTreeMap::new();
    let mut plugin_namespaces: BTreeSet<&str> = plan
        .gateways
        .iter()
        .map(|g| g.plugin_namespace.as_str())
        .collect();
    plugin_namespaces.extend(published.configs.keys().map(String::as_str));

    for plugin_namespace in plugin_namespaces {
        let planned = plan
            .gateways
            .iter()
            .find(|g| g.plugin_namespace == plugin_namespace)
            .map(|g| &g.config);
        let previous = published.configs.get(plugin_namespace).map(|p| &p.config);
        let mut groups: Vec<GroupConfig> = Vec::new();
        if let Some(planned) = planned {
            groups.extend(
                planned
                    .groups
                    .iter()
                    .filter(|g| confirmed.contains(&g.namespace))
                    .cloned(),
            );
        }
        if let Some(previous) = previous {
            groups.extend(
                previous
                    .groups
                    .iter()
                    .filter(|g| !confirmed.contains(&g.namespace))
                    .cloned(),
            );
        }
        groups.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut config = planned.or(previous).cloned().unwrap_or_default();
        config.groups = groups;
        staged.insert(plugin_namespace.to_string(), config);
    }
    staged
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelsplit_core::planner::GatewayPlan;
    use modelsplit_core::settings::GatewayRef;

    fn group(ns: &str, name: &str, members: &[(&str, u32)]) -> GroupConfig {
        let mut g = GroupConfig::weighted(ns, name, members);
        g.grpc = true;
        g
    }

    fn config(groups: Vec<GroupConfig>) -> FilterConfig {
        FilterConfig::with_groups(groups)
    }

    fn routes(ns: &str, models: &[&str]) -> NamespaceRoutes {
        NamespaceRoutes {
            namespace: ns.into(),
            gateway: GatewayRef::new("istio-system", "odh-gateway"),
            plugin_namespace: "istio-system".into(),
            rest_prefix: "/modelmesh".into(),
            models: models
                .iter()
                .map(|m| ExposedModel {
                    name: m.to_string(),
                    grpc: true,
                })
                .collect(),
        }
    }

    fn plan(route_list: Vec<NamespaceRoutes>, groups: Vec<GroupConfig>) -> Plan {
        Plan {
            routes: route_list,
            gateways: vec![GatewayPlan {
                plugin_namespace: "istio-system".into(),
                gateways: vec![GatewayRef::new("istio-system", "odh-gateway")],
                config: config(groups),
            }],
            ..Plan::default()
        }
    }

    fn published(groups: Vec<GroupConfig>, changed: &str, vs: &[(&str, &[&str])]) -> Published {
        Published {
            configs: [(
                "istio-system".to_string(),
                PublishedConfig {
                    config: config(groups),
                    changed_at: Some(changed.parse().unwrap()),
                },
            )]
            .into(),
            routes: vs
                .iter()
                .map(|(ns, models)| {
                    (
                        ns.to_string(),
                        models.iter().map(|m| (m.to_string(), true)).collect(),
                    )
                })
                .collect(),
        }
    }

    fn names(stage: &RouteStage, ns: &str) -> Vec<String> {
        stage
            .routes
            .iter()
            .find(|r| r.namespace == ns)
            .map(|r| r.models.iter().map(|m| m.name.clone()).collect())
            .unwrap_or_default()
    }

    const GRACE: Duration = Duration::from_secs(10);

    #[test]
    fn a_removed_member_keeps_its_route_while_the_published_config_names_it() {
        let new = plan(
            vec![routes("a", &["x"])],
            vec![group("a", "g", &[("x", 100)])],
        );
        let old = published(
            vec![group("a", "g", &[("x", 50), ("y", 50)])],
            "2026-01-01T00:00:00Z",
            &[("a", &["x", "y"])],
        );
        let now: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let stage = route_stage(&new, &old, now, GRACE);
        assert_eq!(names(&stage, "a"), ["x", "y"]);
        assert_eq!(
            stage.wake_at, None,
            "kept because referenced, not for the grace period"
        );
    }

    #[test]
    fn after_the_config_changed_the_route_stays_for_the_grace_period_then_goes() {
        let new = plan(
            vec![routes("a", &["x"])],
            vec![group("a", "g", &[("x", 100)])],
        );
        // The filter config no longer names y; it changed at 12:00:00.
        let old = published(
            vec![group("a", "g", &[("x", 100)])],
            "2026-01-01T12:00:00Z",
            &[("a", &["x", "y"])],
        );
        let during: Timestamp = "2026-01-01T12:00:05Z".parse().unwrap();
        let stage = route_stage(&new, &old, during, GRACE);
        assert_eq!(names(&stage, "a"), ["x", "y"]);
        assert_eq!(stage.wake_at, Some("2026-01-01T12:00:10Z".parse().unwrap()));
        let after: Timestamp = "2026-01-01T12:00:10Z".parse().unwrap();
        let stage = route_stage(&new, &old, after, GRACE);
        assert_eq!(names(&stage, "a"), ["x"]);
        assert_eq!(stage.wake_at, None);
    }

    #[test]
    fn an_added_member_gets_its_route_in_the_same_pass_as_before_its_config() {
        let new = plan(
            vec![routes("a", &["x", "y"])],
            vec![group("a", "g", &[("x", 50), ("y", 50)])],
        );
        let old = published(
            vec![group("a", "g", &[("x", 100)])],
            "2026-01-01T00:00:00Z",
            &[("a", &["x"])],
        );
        let stage = route_stage(&new, &old, "2026-01-02T00:00:00Z".parse().unwrap(), GRACE);
        assert_eq!(names(&stage, "a"), ["x", "y"]);
        let confirmed: BTreeSet<String> = ["a".to_string()].into();
        let configs = config_stage(&new, &old, &confirmed);
        assert_eq!(
            configs["istio-system"].groups,
            vec![group("a", "g", &[("x", 50), ("y", 50)])]
        );
    }

    #[test]
    fn a_namespace_whose_routes_failed_keeps_its_published_groups_and_others_move_on() {
        let new = plan(
            vec![routes("a", &["x", "y"]), routes("b", &["p", "q"])],
            vec![
                group("a", "g", &[("x", 50), ("y", 50)]),
                group("b", "h", &[("p", 10), ("q", 90)]),
            ],
        );
        let old = published(
            vec![
                group("a", "g", &[("x", 100)]),
                group("b", "h", &[("p", 90), ("q", 10)]),
            ],
            "2026-01-01T00:00:00Z",
            &[("a", &["x"]), ("b", &["p", "q"])],
        );
        let confirmed: BTreeSet<String> = ["b".to_string()].into();
        let configs = config_stage(&new, &old, &confirmed);
        assert_eq!(
            configs["istio-system"].groups,
            vec![
                group("a", "g", &[("x", 100)]),
                group("b", "h", &[("p", 10), ("q", 90)])
            ]
        );
    }

    #[test]
    fn a_new_group_of_an_unconfirmed_namespace_stays_out() {
        let new = plan(
            vec![routes("a", &["x", "y"])],
            vec![group("a", "g", &[("x", 50), ("y", 50)])],
        );
        let configs = config_stage(&new, &Published::default(), &BTreeSet::new());
        assert!(configs["istio-system"].groups.is_empty());
    }

    #[test]
    fn a_namespace_that_left_the_plan_keeps_its_routes_while_referenced() {
        let new = plan(vec![], vec![]);
        let old = published(
            vec![group("a", "g", &[("x", 100)])],
            "2026-01-01T00:00:00Z",
            &[("a", &["x"])],
        );
        let now: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let kept = retained_namespaces(&new, &old, now, GRACE);
        assert!(kept.contains("a"));
        // Once the config without it is published and the grace period is over, it goes.
        let old = published(vec![], "2026-01-01T00:00:00Z", &[("a", &["x"])]);
        assert!(retained_namespaces(&new, &old, now, GRACE).is_empty());
    }
}
