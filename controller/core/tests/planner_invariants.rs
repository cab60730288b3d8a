//! Properties every plan must have, over many generated clusters (a fixed-seed
//! generator: reproducible, no extra dependency). The rule tests in planner.rs say
//! what happens in each case; these say what never happens in any.

use modelsplit_core::planner::{self, Observed, Plan, PreviousConfigs};
use modelsplit_core::resources::{InferenceService, Namespace, ServingRuntime};
use modelsplit_core::settings::Settings;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// xorshift64*: enough to spread choices; fixed seeds make failures reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const NAMESPACES: &[&str] = &["alpha", "beta", "gamma", "delta"];
const GATEWAYS: &[&str] = &[
    "istio-system/odh-gateway",
    "istio-system/other",
    "edge/public",
];
const MODEL_NAMES: &[&str] = &["m1", "m2", "m3", "m4", "g1", "g2", "shared"];
const GROUPS: &[&str] = &["g1", "g2", "shared"];
const WEIGHTS: &[&str] = &[
    "0", "20", "30", "50", "80", "100", "33.33", "0.5", "99.5", "120", "x", "-1",
];

fn cluster(rng: &mut Rng) -> Observed {
    let mut observed = Observed::default();
    for ns in NAMESPACES {
        let mut annotations = BTreeMap::new();
        if rng.chance(60) {
            annotations.insert("opendatahub.io/service-mesh-gw", rng.pick(GATEWAYS));
        }
        if rng.chance(85) {
            annotations.insert("opendatahub.io/service-mesh", "true");
        }
        observed.namespaces.push(
            serde_json::from_value::<Namespace>(json!({
                "metadata": {"name": ns, "annotations": annotations}
            }))
            .unwrap(),
        );
        for (runtime, route) in [("open", "true"), ("closed", "false")] {
            observed.serving_runtimes.push(
                serde_json::from_value::<ServingRuntime>(json!({
                    "apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
                    "metadata": {"name": runtime, "namespace": ns, "annotations": {"enable-route": route}},
                    "spec": {"multiModel": true}
                }))
                .unwrap(),
            );
        }
        for model in MODEL_NAMES {
            if !rng.chance(55) {
                continue;
            }
            let mut labels = BTreeMap::new();
            if rng.chance(70) {
                labels.insert("serving.kserve.io/model-tag", rng.pick(GROUPS));
            }
            let mut annotations = BTreeMap::new();
            if rng.chance(92) {
                annotations.insert("serving.kserve.io/deploymentMode", "ModelMesh");
            }
            if rng.chance(90) {
                annotations.insert("serving.kserve.io/canaryTrafficPercent", rng.pick(WEIGHTS));
            }
            let created = if rng.chance(80) {
                json!(format!("2024-01-{:02}T00:00:00Z", 1 + rng.below(5)))
            } else {
                json!(null)
            };
            let ready = rng.pick(&["True", "True", "False", "Unknown"]);
            let runtime = if rng.chance(85) { "open" } else { "closed" };
            observed.inference_services.push(
                serde_json::from_value::<InferenceService>(json!({
                    "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                    "metadata": {"name": model, "namespace": ns, "labels": labels,
                                 "annotations": annotations, "creationTimestamp": created},
                    "spec": {"predictor": {"model": {"runtime": runtime}}},
                    "status": {"conditions": [{"type": "Ready", "status": ready}]}
                }))
                .unwrap(),
            );
        }
    }
    balance(&mut observed, rng);
    observed
}

/// Most groups get weights that sum to 100, so valid and stale groups are common.
fn balance(observed: &mut Observed, rng: &mut Rng) {
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (index, isvc) in observed.inference_services.iter().enumerate() {
        if let (Some(ns), Some(group)) = (&isvc.metadata.namespace, isvc.group()) {
            groups
                .entry((ns.clone(), group.to_string()))
                .or_default()
                .push(index);
        }
    }
    for members in groups.values() {
        if !rng.chance(75) {
            continue;
        }
        let mut left = 10_000u32;
        for (position, &index) in members.iter().enumerate() {
            let weight = if position + 1 == members.len() {
                left
            } else {
                let w = (rng.below(left as usize + 1) as u32) / 50 * 50;
                left -= w;
                w
            };
            set_weight(
                &mut observed.inference_services[index],
                &format!("{}.{:02}", weight / 100, weight % 100),
            );
        }
    }
}

fn set_weight(isvc: &mut InferenceService, weight: &str) {
    isvc.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            "serving.kserve.io/canaryTrafficPercent".into(),
            weight.into(),
        );
}

/// The next moment of a cluster: some weights edited, some members deleted.
fn mutate(mut observed: Observed, rng: &mut Rng) -> Observed {
    observed.inference_services.retain(|_| !rng.chance(10));
    for isvc in &mut observed.inference_services {
        if rng.chance(25) {
            let weight = rng.pick(WEIGHTS);
            set_weight(isvc, weight);
        }
    }
    observed
}

fn check(plan: &Plan, observed: &Observed, seed: u64) {
    // Routes by (namespace, model): gRPC or not.
    let mut routed = BTreeMap::new();
    let mut grpc_names: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for routes in &plan.routes {
        for model in &routes.models {
            routed.insert((routes.namespace.as_str(), model.name.as_str()), model.grpc);
            if model.grpc {
                let previous = grpc_names.insert(
                    (routes.plugin_namespace.as_str(), model.name.as_str()),
                    routes.namespace.as_str(),
                );
                assert!(
                    previous.is_none(),
                    "seed {seed}: gRPC route {} twice on {}",
                    model.name,
                    routes.plugin_namespace
                );
            }
        }
    }
    let members_now: BTreeSet<(String, String, String)> = observed
        .inference_services
        .iter()
        .filter_map(|i| {
            Some((
                i.metadata.namespace.clone()?,
                i.group()?.to_string(),
                i.metadata.name.clone()?,
            ))
        })
        .collect();
    for gateway in &plan.gateways {
        gateway.config.validate().unwrap_or_else(|e| {
            panic!(
                "seed {seed}: filter rejects {}: {e}",
                gateway.plugin_namespace
            )
        });
        for group in &gateway.config.groups {
            assert!(group.total_weight() > 0, "seed {seed}");
            for member in &group.members {
                // Never a member outside the group, never a member without a route.
                assert!(
                    members_now.contains(&(
                        group.namespace.clone(),
                        group.name.clone(),
                        member.name.clone()
                    )),
                    "seed {seed}: {}/{} publishes {} which is not a member",
                    group.namespace,
                    group.name,
                    member.name
                );
                let grpc_route = routed.get(&(group.namespace.as_str(), member.name.as_str()));
                assert!(
                    grpc_route.is_some(),
                    "seed {seed}: member {} has no route",
                    member.name
                );
                if group.grpc {
                    assert_eq!(
                        grpc_route,
                        Some(&true),
                        "seed {seed}: gRPC group {} rewrites to {} without its gRPC route",
                        group.name,
                        member.name
                    );
                }
            }
            if group.grpc {
                // No other namespace's model answers to the group's name on this gateway.
                if let Some(owner) =
                    grpc_names.get(&(gateway.plugin_namespace.as_str(), group.name.as_str()))
                {
                    assert_eq!(
                        *owner, group.namespace,
                        "seed {seed}: group {} shadows a model of {owner}",
                        group.name
                    );
                }
            }
        }
    }
    for report in &plan.groups {
        assert_eq!(
            report.published.is_some(),
            matches!(report.state.label(), "valid" | "stale"),
            "seed {seed}: {report}"
        );
        assert!(!report.to_string().is_empty());
    }
}

#[test]
fn generated_clusters_always_give_consistent_plans() {
    for seed in 1..=400u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let settings = Settings {
            require_enable_route: rng.chance(80),
            plugin_namespace: rng.chance(20).then(|| "mesh-root".to_string()),
            ..Settings::default()
        };
        // The plan of an earlier moment of the same cluster: last-known-good input.
        let earlier = cluster(&mut rng);
        let previous =
            planner::plan(&earlier, &PreviousConfigs::new(), &settings).published_configs();
        let observed = mutate(earlier, &mut rng);
        let plan = planner::plan(&observed, &previous, &settings);
        check(&plan, &observed, seed);

        let mut reversed = observed.clone();
        reversed.namespaces.reverse();
        reversed.serving_runtimes.reverse();
        reversed.inference_services.reverse();
        assert_eq!(
            planner::plan(&reversed, &previous, &settings),
            plan,
            "seed {seed}: order matters"
        );
    }
}
