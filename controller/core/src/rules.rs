//! The rules of docs/design.md section 4 that need no view of the whole cluster:
//! weight parsing, the reasons a group or InferenceService is held back, and who
//! owns a gRPC name on a gateway.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;
use std::fmt;

/// A whole group: 100 % in basis points, the unit the filter receives.
pub const FULL_WEIGHT: u32 = 10_000;

/// Parses a `canaryTrafficPercent` value — a number in [0, 100] with at most two
/// decimals — into basis points (`"0.5"` -> 50, `"80"` -> 8000).
///
/// Integer arithmetic on the digits: no float rounding can turn 33.33 into 3332.
pub fn parse_weight(raw: &str) -> Result<u32, BadWeight> {
    let bad = || BadWeight(raw.to_string());
    let text = raw.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 3
        || !digits(whole)
        || fraction.len() > 2
        || !digits(fraction)
        || (text.contains('.') && fraction.is_empty())
    {
        return Err(bad());
    }
    let whole: u32 = whole.parse().map_err(|_| bad())?;
    let fraction: u32 = format!("{fraction:0<2}").parse().map_err(|_| bad())?;
    let basis_points = whole * 100 + fraction;
    if basis_points > FULL_WEIGHT {
        return Err(bad());
    }
    Ok(basis_points)
}

/// A weight annotation that is not a number in [0, 100] with at most two decimals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a number from 0 to 100 with at most two decimals")]
pub struct BadWeight(pub String);

/// Basis points as a percentage for people: 8000 -> "80", 50 -> "0.5", 3333 -> "33.33".
pub fn percent(basis_points: u32) -> String {
    let (whole, fraction) = (basis_points / 100, basis_points % 100);
    match fraction {
        0 => whole.to_string(),
        f if f % 10 == 0 => format!("{whole}.{}", f / 10),
        f => format!("{whole}.{f:02}"),
    }
}

/// Why an InferenceService gets no gateway route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotExposed {
    /// Not a ModelMesh InferenceService (another KServe deployment mode).
    NotModelMesh,
    /// Its namespace is not part of the service mesh.
    NamespaceNotInMesh,
    /// The runtime it names does not exist in its namespace.
    RuntimeNotFound { runtime: String },
    /// Its runtime lacks `enable-route: "true"`.
    RouteNotEnabled { runtime: String },
    /// It names no runtime and none is auto-selected for its model format.
    NoRuntime { format: Option<String> },
    /// It names no runtime and several auto-selectable runtimes disagree on `enable-route`.
    AmbiguousRuntime { candidates: Vec<String> },
}

impl fmt::Display for NotExposed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotExposed::NotModelMesh => write!(
                f,
                "it does not run on ModelMesh (annotation serving.kserve.io/deploymentMode: ModelMesh)"
            ),
            NotExposed::NamespaceNotInMesh => write!(
                f,
                "its namespace is not in the service mesh (label opendatahub.io/service-mesh=true)"
            ),
            NotExposed::RuntimeNotFound { runtime } => {
                write!(f, "its ServingRuntime {runtime:?} does not exist in the namespace")
            }
            NotExposed::RouteNotEnabled { runtime } => write!(
                f,
                "its ServingRuntime {runtime:?} lacks annotation enable-route: \"true\""
            ),
            NotExposed::NoRuntime { format: Some(format) } => write!(
                f,
                "no ServingRuntime auto-selects model format {format:?}; set spec.predictor.model.runtime"
            ),
            NotExposed::NoRuntime { format: None } => write!(
                f,
                "it names no runtime and no model format; set spec.predictor.model.runtime"
            ),
            NotExposed::AmbiguousRuntime { candidates } => write!(
                f,
                "ServingRuntimes {} could all be auto-selected and disagree on enable-route; set spec.predictor.model.runtime",
                candidates.join(", ")
            ),
        }
    }
}

/// One reason a group is invalid, phrased so a person knows what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupProblem {
    MissingWeight {
        member: String,
    },
    BadWeight {
        member: String,
        error: BadWeight,
    },
    /// Every weight parsed, but they do not add up to 100 %.
    WrongSum {
        members: Vec<(String, u32)>,
    },
    /// Requests for the group name would be ambiguous with the InferenceService.
    NameIsInferenceService {
        name: String,
    },
    MemberNotExposed {
        member: String,
        why: NotExposed,
    },
    StickyHeaderConflict {
        values: Vec<String>,
    },
    /// Whatever else the filter itself would reject (its message names the field).
    FilterRejects {
        message: String,
    },
}

impl fmt::Display for GroupProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupProblem::MissingWeight { member } => write!(
                f,
                "member {member} has no annotation serving.kserve.io/canaryTrafficPercent"
            ),
            GroupProblem::BadWeight { member, error } => write!(
                f,
                "member {member}: serving.kserve.io/canaryTrafficPercent {error}"
            ),
            GroupProblem::WrongSum { members } => {
                let sum: u32 = members.iter().map(|(_, w)| w).sum();
                let parts: Vec<String> = members
                    .iter()
                    .map(|(name, weight)| format!("{name}={}", percent(*weight)))
                    .collect();
                write!(
                    f,
                    "weights sum to {} ({}), not 100",
                    percent(sum),
                    parts.join(", ")
                )
            }
            GroupProblem::NameIsInferenceService { name } => write!(
                f,
                "the group name is also the name of InferenceService {name} in the namespace; rename the group (label serving.kserve.io/model-tag) or the InferenceService"
            ),
            GroupProblem::MemberNotExposed { member, why } => {
                write!(f, "member {member} is not exposed: {why}")
            }
            GroupProblem::StickyHeaderConflict { values } => write!(
                f,
                "members disagree on annotation modelsplit.io/sticky-header ({}); set the same value on all or remove it",
                values.join(", ")
            ),
            GroupProblem::FilterRejects { message } => write!(f, "{message}"),
        }
    }
}

/// Joins problems into one line.
pub fn describe(problems: &[GroupProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A namespace's use of a name for gRPC (`mm-vmodel-id`): a group or an
/// InferenceService, with the creation time that decides who keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameClaim<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub created: Option<&'a Time>,
}

/// For each claimed name, the namespace that keeps it: the oldest claim, then the
/// first namespace in alphabetical order. A claim with no creation time (a manifest
/// never applied) counts as the newest.
pub fn resolve_name_claims<'a>(
    claims: impl IntoIterator<Item = NameClaim<'a>>,
) -> BTreeMap<&'a str, &'a str> {
    let mut best: BTreeMap<&'a str, NameClaim<'a>> = BTreeMap::new();
    for claim in claims {
        let key = |c: &NameClaim<'a>| (c.created.is_none(), c.created, c.namespace);
        best.entry(claim.name)
            .and_modify(|current| {
                if key(&claim) < key(current) {
                    *current = claim;
                }
            })
            .or_insert(claim);
    }
    best.into_iter()
        .map(|(name, claim)| (name, claim.namespace))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_become_basis_points() {
        for (raw, expected) in [
            ("80", 8000),
            ("20", 2000),
            ("0", 0),
            ("100", 10000),
            ("100.00", 10000),
            ("0.5", 50),
            ("0.05", 5),
            ("33.33", 3333),
            ("33.3", 3330),
            (" 7 ", 700),
            ("007", 700),
        ] {
            assert_eq!(parse_weight(raw), Ok(expected), "{raw}");
        }
    }

    #[test]
    fn weights_outside_the_rule_are_rejected() {
        for raw in [
            "", "abc", "-1", "-0.5", "100.01", "101", "1000", "0.125", "1e2", ".5", "5.", "+5",
            "50%", "NaN", "inf", "1,5", "١٢",
        ] {
            let error = parse_weight(raw).expect_err(raw);
            assert!(error.to_string().contains("0 to 100"), "{error}");
        }
    }

    #[test]
    fn percentages_print_without_noise() {
        assert_eq!(percent(8000), "80");
        assert_eq!(percent(50), "0.5");
        assert_eq!(percent(5), "0.05");
        assert_eq!(percent(3333), "33.33");
        assert_eq!(percent(12000), "120");
    }

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn the_oldest_claim_keeps_a_name_then_the_first_namespace() {
        let (old, new) = (time("2024-01-01T00:00:00Z"), time("2025-01-01T00:00:00Z"));
        let claims = [
            NameClaim {
                name: "m",
                namespace: "a",
                created: Some(&new),
            },
            NameClaim {
                name: "m",
                namespace: "b",
                created: Some(&old),
            },
            NameClaim {
                name: "n",
                namespace: "b",
                created: None,
            },
            NameClaim {
                name: "n",
                namespace: "a",
                created: None,
            },
            NameClaim {
                name: "o",
                namespace: "a",
                created: None,
            },
            NameClaim {
                name: "o",
                namespace: "z",
                created: Some(&new),
            },
        ];
        let owners = resolve_name_claims(claims);
        assert_eq!(owners["m"], "b", "older creation time wins");
        assert_eq!(owners["n"], "a", "tie goes to the first namespace");
        assert_eq!(
            owners["o"], "z",
            "a known creation time beats an unknown one"
        );
    }
}
