//! The filter configuration: the one definition of the JSON in docs/design.md section 3.
//!
//! The filter parses it from its plugin configuration; the controller builds and
//! serialises it into the WasmPlugin's `pluginConfig` and the local gateway's ECDS
//! file. Field names are a published contract: change none without docs/design.md.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashSet;

/// Default URL prefix of ModelMesh REST requests through the gateway.
pub const DEFAULT_REST_PREFIX: &str = "/modelmesh";
/// Default header naming the model of a gRPC request (ModelMesh's virtual model id).
pub const DEFAULT_GRPC_HEADER: &str = "mm-vmodel-id";
/// Default request header that forces a member of the matched group.
pub const DEFAULT_OVERRIDE_HEADER: &str = "x-modelsplit-member";
/// Default response header naming the member that served the request.
pub const DEFAULT_ROUTED_HEADER: &str = "x-modelsplit-routed-to";

/// The whole filter configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterConfig {
    pub groups: Vec<GroupConfig>,
    #[serde(default = "default_rest_prefix")]
    pub rest_prefix: String,
    #[serde(default = "default_grpc_header")]
    pub grpc_header: String,
    /// Empty disables overrides.
    #[serde(default = "default_override_header")]
    pub override_header: String,
    /// Empty disables the response header.
    #[serde(default = "default_routed_header")]
    pub routed_header: String,
}

/// One traffic-split group: a name that clients call, and the members it spreads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupConfig {
    pub namespace: String,
    pub name: String,
    pub members: Vec<MemberConfig>,
    /// Whether the group answers to the gRPC header (names are global on a gateway).
    #[serde(default = "default_true")]
    pub grpc: bool,
    /// When the request carries this header, the member is a pure function of its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_header: Option<String>,
    /// Whether the filter measures how each member answers (a latency histogram and, for
    /// REST, a 5xx counter per member): for groups whose outcomes someone reads, such as a
    /// declared rollout's. Costs host calls per request, so off by default; omitted from
    /// the JSON when off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub observe: bool,
}

/// A member of a group and its relative weight (the controller writes basis points).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub name: String,
    #[serde(deserialize_with = "integral_weight")]
    pub weight: u32,
}

/// Why a configuration was rejected; the message names the offending group or member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid filter configuration JSON: {0}")]
    Json(String),
    #[error("`{field}` must not be empty")]
    EmptySetting { field: &'static str },
    #[error("`restPrefix` {0:?} must start with '/' and not end with '/'")]
    BadRestPrefix(String),
    #[error("`{field}` {value:?} is not a valid lower-case HTTP header name")]
    BadHeaderName { field: &'static str, value: String },
    #[error("group #{index} has an empty namespace or name")]
    EmptyGroupName { index: usize },
    #[error("group {namespace}/{name}: {what} {value:?} must not contain '/', '?', '#', '%' or whitespace")]
    BadName {
        namespace: String,
        name: String,
        what: &'static str,
        value: String,
    },
    #[error("group {namespace}/{name} is listed twice")]
    DuplicateGroup { namespace: String, name: String },
    #[error("group {namespace}/{name} has no members")]
    NoMembers { namespace: String, name: String },
    #[error("group {namespace}/{name} lists member {member:?} twice")]
    DuplicateMember {
        namespace: String,
        name: String,
        member: String,
    },
    #[error(
        "group {namespace}/{name}: the member weights sum to {sum}; at least one must be above 0"
    )]
    ZeroTotalWeight {
        namespace: String,
        name: String,
        sum: u64,
    },
    #[error("group name {name:?} has gRPC enabled in namespaces {first} and {second}; gRPC names are global on a gateway, set `grpc: false` on one")]
    DuplicateGrpcName {
        name: String,
        first: String,
        second: String,
    },
}

impl FilterConfig {
    /// A configuration with the given groups and every other setting at its default.
    pub fn with_groups(groups: Vec<GroupConfig>) -> Self {
        FilterConfig {
            groups,
            rest_prefix: default_rest_prefix(),
            grpc_header: default_grpc_header(),
            override_header: default_override_header(),
            routed_header: default_routed_header(),
        }
    }

    /// Parses and validates configuration bytes as the filter receives them.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: FilterConfig =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Serialises to the JSON the filter parses (stable field order).
    pub fn to_json(&self) -> String {
        // Serialising plain strings, integers and bools cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Checks every rule of docs/design.md section 3; the first violation is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rest_prefix.len() < 2
            || !self.rest_prefix.starts_with('/')
            || self.rest_prefix.ends_with('/')
        {
            return Err(ConfigError::BadRestPrefix(self.rest_prefix.clone()));
        }
        check_header("grpcHeader", &self.grpc_header, false)?;
        check_header("overrideHeader", &self.override_header, true)?;
        check_header("routedHeader", &self.routed_header, true)?;

        let mut seen_groups = HashSet::new();
        let mut grpc_owner: std::collections::HashMap<&str, &str> = Default::default();
        for (index, group) in self.groups.iter().enumerate() {
            if group.namespace.is_empty() || group.name.is_empty() {
                return Err(ConfigError::EmptyGroupName { index });
            }
            let bad_name = |what, value: &str| ConfigError::BadName {
                namespace: group.namespace.clone(),
                name: group.name.clone(),
                what,
                value: value.to_string(),
            };
            if !is_path_segment(&group.namespace) {
                return Err(bad_name("namespace", &group.namespace));
            }
            if !is_path_segment(&group.name) {
                return Err(bad_name("name", &group.name));
            }
            if !seen_groups.insert((group.namespace.as_str(), group.name.as_str())) {
                return Err(ConfigError::DuplicateGroup {
                    namespace: group.namespace.clone(),
                    name: group.name.clone(),
                });
            }
            if group.grpc {
                if let Some(first) = grpc_owner.insert(&group.name, &group.namespace) {
                    return Err(ConfigError::DuplicateGrpcName {
                        name: group.name.clone(),
                        first: first.to_string(),
                        second: group.namespace.clone(),
                    });
                }
            }
            if let Some(sticky) = &group.sticky_header {
                check_header("stickyHeader", sticky, false)?;
            }
            if group.members.is_empty() {
                return Err(ConfigError::NoMembers {
                    namespace: group.namespace.clone(),
                    name: group.name.clone(),
                });
            }
            let mut seen_members = HashSet::new();
            for member in &group.members {
                if member.name.is_empty() || !is_path_segment(&member.name) {
                    return Err(bad_name("member", &member.name));
                }
                if !seen_members.insert(member.name.as_str()) {
                    return Err(ConfigError::DuplicateMember {
                        namespace: group.namespace.clone(),
                        name: group.name.clone(),
                        member: member.name.clone(),
                    });
                }
            }
            let sum = group.total_weight();
            if sum == 0 {
                return Err(ConfigError::ZeroTotalWeight {
                    namespace: group.namespace.clone(),
                    name: group.name.clone(),
                    sum,
                });
            }
        }
        Ok(())
    }
}

impl GroupConfig {
    /// A group answering to gRPC, without a sticky header, with `members` as
    /// (name, weight): the common case, written out once for code and tests that build one.
    pub fn weighted(namespace: &str, name: &str, members: &[(&str, u32)]) -> Self {
        GroupConfig {
            namespace: namespace.to_string(),
            name: name.to_string(),
            members: members
                .iter()
                .map(|(name, weight)| MemberConfig {
                    name: name.to_string(),
                    weight: *weight,
                })
                .collect(),
            grpc: true,
            sticky_header: None,
            observe: false,
        }
    }

    /// Sum of the member weights (u64: cannot overflow for any u32 weights of a real group).
    pub fn total_weight(&self) -> u64 {
        self.members.iter().map(|m| u64::from(m.weight)).sum()
    }
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig::with_groups(Vec::new())
    }
}

/// Names end up as one URL path segment and one header value: keep them plain.
fn is_path_segment(value: &str) -> bool {
    !value.is_empty()
        && value != "."
        && value != ".."
        && !value
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '%') || c.is_whitespace() || c.is_control())
}

/// Envoy keeps header names lower case; a mixed-case name here would never match.
fn check_header(field: &'static str, value: &str, may_be_empty: bool) -> Result<(), ConfigError> {
    if value.is_empty() {
        return if may_be_empty {
            Ok(())
        } else {
            Err(ConfigError::EmptySetting { field })
        };
    }
    let valid = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(ConfigError::BadHeaderName {
            field,
            value: value.to_string(),
        })
    }
}

fn default_rest_prefix() -> String {
    DEFAULT_REST_PREFIX.to_string()
}
fn default_grpc_header() -> String {
    DEFAULT_GRPC_HEADER.to_string()
}
fn default_override_header() -> String {
    DEFAULT_OVERRIDE_HEADER.to_string()
}
fn default_routed_header() -> String {
    DEFAULT_ROUTED_HEADER.to_string()
}
fn default_true() -> bool {
    true
}
fn is_false(value: &bool) -> bool {
    !*value
}

/// Istio hands numbers through protobuf `Struct`, so `80` may arrive as `80.0`.
fn integral_weight<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    use serde::de::Error;
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(n) = number.as_u64() {
        return u32::try_from(n)
            .map_err(|_| D::Error::custom(format!("weight {n} is larger than {}", u32::MAX)));
    }
    match number.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= f64::from(u32::MAX) => Ok(f as u32),
        _ => Err(D::Error::custom(format!(
            "weight {number} must be a non-negative integer"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    fn seed() -> &'static str {
        r#"{"groups":[{"namespace":"modelmesh-apps","name":"ai-model",
            "members":[{"name":"ai-model-one","weight":80},{"name":"ai-model-two","weight":20}],
            "grpc":true,"stickyHeader":"x-user-id"}],
            "restPrefix":"/modelmesh","grpcHeader":"mm-vmodel-id",
            "overrideHeader":"x-modelsplit-member","routedHeader":"x-modelsplit-routed-to"}"#
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn parses_the_design_example() {
        let config = FilterConfig::from_json(seed().as_bytes()).unwrap();
        assert_eq!(config.groups[0].members[0].weight, 80);
        assert_eq!(config.groups[0].sticky_header.as_deref(), Some("x-user-id"));
        assert_eq!(config.routed_header, "x-modelsplit-routed-to");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn defaults_apply_to_everything_but_groups() {
        let config = FilterConfig::from_json(
            br#"{"groups":[{"namespace":"ns","name":"g","members":[{"name":"a","weight":1}]}]}"#,
        )
        .unwrap();
        assert_eq!(config.rest_prefix, "/modelmesh");
        assert_eq!(config.grpc_header, "mm-vmodel-id");
        assert_eq!(config.override_header, "x-modelsplit-member");
        assert!(config.groups[0].grpc);
        assert!(
            FilterConfig::from_json(b"{}").is_err(),
            "groups is required"
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn round_trips_through_json() {
        let config = FilterConfig::from_json(seed().as_bytes()).unwrap();
        assert_eq!(
            FilterConfig::from_json(config.to_json().as_bytes()).unwrap(),
            config
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn accepts_integral_floats_from_istio() {
        let json = seed().replace("\"weight\":80", "\"weight\":80.0");
        let config = FilterConfig::from_json(json.as_bytes()).unwrap();
        assert_eq!(config.groups[0].members[0].weight, 80);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn rejects_bad_weights() {
        for bad in ["80.5", "-1", "\"80\"", "1e20", "null"] {
            let json = seed().replace("\"weight\":80", &format!("\"weight\":{bad}"));
            assert!(
                FilterConfig::from_json(json.as_bytes()).is_err(),
                "weight {bad} accepted"
            );
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn rejects_invalid_configs_with_a_message_naming_the_problem() {
        let cases = [
            ("{not json", "invalid filter configuration JSON"),
            (r#"{"groups":[],"colour":"blue"}"#, "unknown field `colour`"),
            (
                r#"{"groups":[{"namespace":"ns","name":"g","members":[{"name":"a","weight":0}]}]}"#,
                "group ns/g: the member weights sum to 0",
            ),
            (
                r#"{"groups":[{"namespace":"ns","name":"g","members":[{"name":"a","weight":1},{"name":"a","weight":1}]}]}"#,
                "lists member \"a\" twice",
            ),
            (
                r#"{"groups":[{"namespace":"ns","name":"g","members":[{"name":"a","weight":1}]},{"namespace":"ns","name":"g","members":[{"name":"b","weight":1}]}]}"#,
                "group ns/g is listed twice",
            ),
            (
                r#"{"groups":[{"namespace":"","name":"g","members":[{"name":"a","weight":1}]}]}"#,
                "empty namespace or name",
            ),
            (
                r#"{"groups":[{"namespace":"ns","name":"g","members":[{"name":"","weight":1}]}]}"#,
                "member \"\"",
            ),
            (
                r#"{"groups":[{"namespace":"ns","name":"g","members":[]}]}"#,
                "has no members",
            ),
            (
                r#"{"groups":[{"namespace":"ns","name":"g/x","members":[{"name":"a","weight":1}]}]}"#,
                "must not contain '/'",
            ),
            (r#"{"groups":[],"restPrefix":"modelmesh"}"#, "`restPrefix`"),
            (
                r#"{"groups":[],"grpcHeader":"MM-VModel-Id"}"#,
                "not a valid lower-case HTTP header name",
            ),
            (
                r#"{"groups":[{"namespace":"a","name":"g","members":[{"name":"x","weight":1}]},{"namespace":"b","name":"g","members":[{"name":"y","weight":1}]}]}"#,
                "gRPC names are global",
            ),
        ];
        for (json, expected) in cases {
            let error = FilterConfig::from_json(json.as_bytes())
                .expect_err(json)
                .to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn the_same_name_in_two_namespaces_is_fine_when_only_one_has_grpc() {
        let json = r#"{"groups":[{"namespace":"a","name":"g","members":[{"name":"x","weight":1}]},
            {"namespace":"b","name":"g","grpc":false,"members":[{"name":"y","weight":1}]}]}"#;
        assert!(FilterConfig::from_json(json.as_bytes()).is_ok());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn serialises_without_absent_sticky_header() {
        let config = FilterConfig::with_groups(vec![GroupConfig {
            grpc: false,
            ..GroupConfig::weighted("ns", "g", &[("a", 10000)])
        }]);
        assert_eq!(
            config.to_json(),
            r#"{"groups":[{"namespace":"ns","name":"g","members":[{"name":"a","weight":10000}],"grpc":false}],"restPrefix":"/modelmesh","grpcHeader":"mm-vmodel-id","overrideHeader":"x-modelsplit-member","routedHeader":"x-modelsplit-routed-to"}"#
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn observe_defaults_to_off_and_is_written_only_when_on() {
        let config = FilterConfig::from_json(seed().as_bytes()).unwrap();
        assert!(!config.groups[0].observe);
        assert!(
            !config.to_json().contains("observe"),
            "{}",
            config.to_json()
        );
        let observed = seed().replace(r#""grpc":true"#, r#""grpc":true,"observe":true"#);
        let config = FilterConfig::from_json(observed.as_bytes()).unwrap();
        assert!(config.groups[0].observe);
        assert!(config.to_json().contains(r#""observe":true"#));
        assert_eq!(
            FilterConfig::from_json(config.to_json().as_bytes()).unwrap(),
            config
        );
        let wrong = seed().replace(r#""grpc":true"#, r#""grpc":true,"observe":"yes""#);
        assert!(FilterConfig::from_json(wrong.as_bytes()).is_err());
    }
}
