//! The configuration compiled once into immutable lookup tables.
//!
//! Everything a request needs is prepared here: group lookup by REST
//! `(namespace, group)` and by gRPC name over byte slices (no parsing, no
//! allocation per request), cumulative weights for the weighted draw, a
//! per-member hash seed for sticky routing, and the counter names.

use crate::choose::member_seed;
use crate::config::{ConfigError, FilterConfig};

/// Prefix of every counter the filter defines.
pub const COUNTER_PREFIX: &str = "modelsplit";
/// What Envoy (1.40) puts in front of proxy-wasm metric names in `/stats`: its custom
/// stat namespace. `/stats` shows e.g. `wasmcustom.modelsplit.override_ignored`.
pub const ENVOY_STATS_PREFIX: &str = "wasmcustom.";
/// Counter of requests that named a non-member in the override header.
pub const OVERRIDE_IGNORED_COUNTER: &str = "modelsplit.override_ignored";
/// Counter of configurations the filter refused, invalid or missing (the previous one
/// stays in force).
pub const CONFIG_REJECTED_COUNTER: &str = "modelsplit.config_rejected";
/// Counter of requests passed through unchanged because the host answered a call
/// with an unexpected status.
pub const HOST_ERROR_COUNTER: &str = "modelsplit.host_error";

/// The name of the per-member request counter:
/// `modelsplit.requests.<namespace>.<group>.<member>`.
///
/// Kubernetes namespace and InferenceService names cannot contain dots, so the
/// first segment after `requests.` is the namespace, the last one the member and
/// everything between them the group (a label value, which may contain dots).
pub fn requests_counter_name(namespace: &str, group: &str, member: &str) -> String {
    format!("{COUNTER_PREFIX}.requests.{namespace}.{group}.{member}")
}

/// The counter of a member's gRPC calls that ended with a `grpc-status` other than 0 (OK),
/// or with none (defined at a member's first such call: `/stats` shows only members that
/// failed a call).
pub fn grpc_errors_counter_name(namespace: &str, group: &str, member: &str) -> String {
    format!("{COUNTER_PREFIX}.grpc_errors.{namespace}.{group}.{member}")
}

/// The counter of a member's REST requests answered 5xx or reset before their response
/// headers: `modelsplit.rest_errors.<namespace>.<group>.<member>`, for members of observed
/// groups only (defined with the configuration).
pub fn rest_errors_counter_name(namespace: &str, group: &str, member: &str) -> String {
    format!("{COUNTER_PREFIX}.rest_errors.{namespace}.{group}.{member}")
}

/// What every latency histogram's name starts with (a gateway's histogram bucket settings
/// match it, after [`ENVOY_STATS_PREFIX`]).
pub const LATENCY_HISTOGRAM_PREFIX: &str = "modelsplit.latency_ms.";

/// The histogram of a member's latency, request to response headers in milliseconds:
/// `modelsplit.latency_ms.<namespace>.<group>.<member>`, for members of observed groups
/// only (defined with the configuration).
pub fn latency_histogram_name(namespace: &str, group: &str, member: &str) -> String {
    format!("{LATENCY_HISTOGRAM_PREFIX}{namespace}.{group}.{member}")
}

/// Index of a group in [`Plan::groups`].
pub type GroupId = usize;

/// `(namespace, name, group)` entry of the REST index.
type RestKey = (Box<[u8]>, Box<[u8]>, GroupId);

/// The compiled, immutable configuration shared by every request.
#[derive(Debug, Clone)]
pub struct Plan {
    groups: Box<[Group]>,
    /// `(namespace, name) -> group`, sorted for binary search on byte slices.
    rest_index: Box<[RestKey]>,
    /// `name -> group` for groups with `grpc: true`, sorted.
    grpc_index: Box<[(Box<[u8]>, GroupId)]>,
    rest_prefix: Box<[u8]>,
    grpc_header: Box<str>,
    override_header: Option<Box<str>>,
    routed_header: Option<Box<str>>,
    member_count: usize,
}

/// One compiled group.
#[derive(Debug, Clone)]
pub struct Group {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub members: Box<[Member]>,
    /// `cumulative[i]` = sum of the weights of members `0..=i`.
    pub cumulative: Box<[u64]>,
    /// Sum of all weights; always > 0 in a compiled plan.
    pub total_weight: u64,
    pub grpc: bool,
    pub sticky_header: Option<Box<str>>,
    /// Whether each member's answers are measured (latency, REST errors).
    pub observe: bool,
}

/// One compiled member.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: Box<str>,
    pub weight: u32,
    /// Fixed, build-independent hash of (namespace, group, member) for rendezvous hashing.
    pub hash_seed: u64,
    /// Position of this member among all members of the plan: index of its counter.
    pub counter_index: usize,
}

impl Plan {
    /// Validates and compiles a configuration.
    pub fn compile(config: &FilterConfig) -> Result<Plan, ConfigError> {
        config.validate()?;
        let mut member_count = 0;
        let groups: Box<[Group]> = config
            .groups
            .iter()
            .map(|group| {
                let mut running = 0u64;
                let cumulative = group
                    .members
                    .iter()
                    .map(|m| {
                        running += u64::from(m.weight);
                        running
                    })
                    .collect();
                let members = group
                    .members
                    .iter()
                    .map(|m| {
                        member_count += 1;
                        Member {
                            name: m.name.as_str().into(),
                            weight: m.weight,
                            hash_seed: member_seed(&group.namespace, &group.name, &m.name),
                            counter_index: member_count - 1,
                        }
                    })
                    .collect();
                Group {
                    namespace: group.namespace.as_str().into(),
                    name: group.name.as_str().into(),
                    members,
                    cumulative,
                    total_weight: running,
                    grpc: group.grpc,
                    sticky_header: group.sticky_header.as_deref().map(Into::into),
                    observe: group.observe,
                }
            })
            .collect();

        let mut rest_index: Vec<_> = groups
            .iter()
            .enumerate()
            .map(|(id, g)| (bytes(&g.namespace), bytes(&g.name), id))
            .collect();
        rest_index.sort();
        let mut grpc_index: Vec<_> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.grpc)
            .map(|(id, g)| (bytes(&g.name), id))
            .collect();
        grpc_index.sort();

        Ok(Plan {
            groups,
            rest_index: rest_index.into(),
            grpc_index: grpc_index.into(),
            rest_prefix: bytes(&config.rest_prefix),
            grpc_header: config.grpc_header.as_str().into(),
            override_header: non_empty(&config.override_header),
            routed_header: non_empty(&config.routed_header),
            member_count,
        })
    }

    /// Parses, validates and compiles configuration bytes as the filter receives them.
    pub fn from_json(bytes: &[u8]) -> Result<Plan, ConfigError> {
        Plan::compile(&FilterConfig::from_json(bytes)?)
    }

    /// The group a REST request names by `(namespace, group)` path segments.
    pub fn rest_group(&self, namespace: &[u8], name: &[u8]) -> Option<GroupId> {
        self.rest_index
            .binary_search_by(|(ns, n, _)| (&**ns, &**n).cmp(&(namespace, name)))
            .ok()
            .and_then(|at| self.rest_index.get(at))
            .map(|(_, _, id)| *id)
    }

    /// The gRPC-enabled group with this name.
    pub fn grpc_group(&self, name: &[u8]) -> Option<GroupId> {
        self.grpc_index
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .ok()
            .and_then(|at| self.grpc_index.get(at))
            .map(|(_, id)| *id)
    }

    /// A group by id; `None` only for an id that did not come from this plan.
    pub fn group(&self, id: GroupId) -> Option<&Group> {
        self.groups.get(id)
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Whether any group answers to the gRPC header (else gRPC headers are never read).
    pub fn has_grpc_groups(&self) -> bool {
        !self.grpc_index.is_empty()
    }

    pub fn rest_prefix(&self) -> &[u8] {
        &self.rest_prefix
    }

    pub fn grpc_header(&self) -> &str {
        &self.grpc_header
    }

    /// `None` when overrides are disabled.
    pub fn override_header(&self) -> Option<&str> {
        self.override_header.as_deref()
    }

    /// `None` when the response header is disabled.
    pub fn routed_header(&self) -> Option<&str> {
        self.routed_header.as_deref()
    }

    /// Number of members over all groups (= number of per-member counters).
    pub fn member_count(&self) -> usize {
        self.member_count
    }

    /// The members of observed groups, with their group: what the latency histograms and
    /// REST error counters are defined for.
    pub fn observed_members(&self) -> impl Iterator<Item = (&Group, &Member)> + '_ {
        self.groups
            .iter()
            .filter(|g| g.observe)
            .flat_map(|g| g.members.iter().map(move |m| (g, m)))
    }

    /// Every per-member counter name, in `counter_index` order.
    pub fn counter_names(&self) -> impl Iterator<Item = String> + '_ {
        self.groups.iter().flat_map(|g| {
            g.members
                .iter()
                .map(move |m| requests_counter_name(&g.namespace, &g.name, &m.name))
        })
    }
}

impl Group {
    /// The member whose name is exactly `name`.
    pub fn member_named(&self, name: &[u8]) -> Option<usize> {
        self.members.iter().position(|m| m.name.as_bytes() == name)
    }
}

fn bytes(s: &str) -> Box<[u8]> {
    s.as_bytes().into()
}

fn non_empty(s: &str) -> Option<Box<str>> {
    (!s.is_empty()).then(|| s.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    pub(crate) const EXAMPLE: &str = r#"{"groups":[
        {"namespace":"modelmesh-apps","name":"ai-model","stickyHeader":"x-user-id",
         "members":[{"name":"ai-model-one","weight":80},{"name":"ai-model-two","weight":20}]},
        {"namespace":"other","name":"ai-model","grpc":false,
         "members":[{"name":"m-a","weight":0},{"name":"m-b","weight":5}]},
        {"namespace":"modelmesh-apps","name":"fraud","observe":true,"members":[{"name":"fraud-v1","weight":1}]}],
        "routedHeader":""}"#;

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn looks_groups_up_by_namespace_and_name() {
        let plan = Plan::from_json(EXAMPLE.as_bytes()).unwrap();
        let id = plan.rest_group(b"modelmesh-apps", b"ai-model").unwrap();
        assert_eq!(&*plan.group(id).unwrap().namespace, "modelmesh-apps");
        let other = plan.rest_group(b"other", b"ai-model").unwrap();
        assert_eq!(&*plan.group(other).unwrap().namespace, "other");
        assert_eq!(plan.rest_group(b"modelmesh-apps", b"ai-model-one"), None);
        assert_eq!(plan.rest_group(b"Modelmesh-apps", b"ai-model"), None);
        assert_eq!(plan.rest_group(b"", b""), None);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn grpc_lookup_only_sees_grpc_groups() {
        let plan = Plan::from_json(EXAMPLE.as_bytes()).unwrap();
        let id = plan.grpc_group(b"ai-model").unwrap();
        assert_eq!(&*plan.group(id).unwrap().namespace, "modelmesh-apps");
        assert!(plan.grpc_group(b"fraud").is_some());
        assert_eq!(plan.grpc_group(b"ai-model-two"), None);
        assert!(plan.has_grpc_groups());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn precomputes_weights_headers_and_counters() {
        let plan = Plan::from_json(EXAMPLE.as_bytes()).unwrap();
        let g = plan
            .group(plan.rest_group(b"other", b"ai-model").unwrap())
            .unwrap();
        assert_eq!(&*g.cumulative, &[0, 5]);
        assert_eq!(g.total_weight, 5);
        assert_eq!(plan.routed_header(), None, "empty disables");
        assert_eq!(plan.override_header(), Some("x-modelsplit-member"));
        assert_eq!(plan.grpc_header(), "mm-vmodel-id");
        assert_eq!(plan.rest_prefix(), b"/modelmesh");
        assert_eq!(plan.member_count(), 5);
        let names: Vec<String> = plan.counter_names().collect();
        assert_eq!(
            names,
            [
                "modelsplit.requests.modelmesh-apps.ai-model.ai-model-one",
                "modelsplit.requests.modelmesh-apps.ai-model.ai-model-two",
                "modelsplit.requests.other.ai-model.m-a",
                "modelsplit.requests.other.ai-model.m-b",
                "modelsplit.requests.modelmesh-apps.fraud.fraud-v1",
            ]
        );
        for g in plan.groups() {
            for m in g.members.iter() {
                let expected = requests_counter_name(&g.namespace, &g.name, &m.name);
                assert_eq!(names[m.counter_index], expected);
            }
        }
        let observed: Vec<(String, usize)> = plan
            .observed_members()
            .map(|(g, m)| {
                (
                    latency_histogram_name(&g.namespace, &g.name, &m.name),
                    m.counter_index,
                )
            })
            .collect();
        assert_eq!(
            observed,
            [(
                "modelsplit.latency_ms.modelmesh-apps.fraud.fraud-v1".to_string(),
                4
            )]
        );
        assert_eq!(
            rest_errors_counter_name("ns", "g.v1", "m"),
            "modelsplit.rest_errors.ns.g.v1.m"
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn member_seeds_depend_on_group_and_member_not_on_order() {
        let plan = Plan::from_json(EXAMPLE.as_bytes()).unwrap();
        let swapped = EXAMPLE.replace(
            r#"{"name":"ai-model-one","weight":80},{"name":"ai-model-two","weight":20}"#,
            r#"{"name":"ai-model-two","weight":20},{"name":"ai-model-one","weight":80}"#,
        );
        let plan2 = Plan::from_json(swapped.as_bytes()).unwrap();
        let seed = |p: &Plan, member: &str| {
            let g = p
                .group(p.rest_group(b"modelmesh-apps", b"ai-model").unwrap())
                .unwrap();
            g.members[g.member_named(member.as_bytes()).unwrap()].hash_seed
        };
        assert_eq!(seed(&plan, "ai-model-one"), seed(&plan2, "ai-model-one"));
        assert_ne!(seed(&plan, "ai-model-one"), seed(&plan, "ai-model-two"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn compile_refuses_an_unvalidated_config() {
        let mut config = FilterConfig::from_json(EXAMPLE.as_bytes()).unwrap();
        config.groups[0].members.clear();
        let error = Plan::compile(&config).unwrap_err().to_string();
        assert!(
            error.contains("modelmesh-apps/ai-model has no members"),
            "{error}"
        );
    }
}
