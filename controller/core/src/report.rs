//! What the planner tells people: one entry per group, plus notices about single
//! objects. `render` prints them; the cluster controller turns changes into Events.

use crate::resources::ObjectKind;
use crate::rules::{self, GroupProblem};
use modelsplit_filter::config::GroupConfig;
use std::fmt;

/// A group's state and why, with what the filter now does for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReport {
    pub namespace: String,
    pub name: String,
    /// The InferenceServices labelled with the group, sorted.
    pub members: Vec<String>,
    pub state: GroupState,
    /// What the filter receives for this group; `None` when it is not published.
    pub published: Option<GroupConfig>,
    /// Set when the group does not answer to gRPC because a name is owned elsewhere.
    pub grpc_lost: Option<GrpcLoss>,
    /// Members whose InferenceService reports `Ready=False`, and what was done.
    pub not_ready: Option<NotReady>,
}

/// The states of docs/design.md section 4, as the report and Events name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupState {
    /// Published as configured.
    Valid,
    /// Invalid; the filter keeps the last split that was valid.
    Stale { problems: Vec<GroupProblem> },
    /// Invalid and never published (or its last good split has no member left).
    Invalid { problems: Vec<GroupProblem> },
    /// Not considered: its namespace is not in the mesh or names a bad gateway.
    Ignored { reason: String },
}

impl GroupState {
    /// The state without its details.
    pub fn kind(&self) -> StateKind {
        match self {
            GroupState::Valid => StateKind::Valid,
            GroupState::Stale { .. } => StateKind::Stale,
            GroupState::Invalid { .. } => StateKind::Invalid,
            GroupState::Ignored { .. } => StateKind::Ignored,
        }
    }

    /// A short word for the report, logs and metrics.
    pub fn label(&self) -> &'static str {
        self.kind().as_str()
    }

    /// Whether the group as configured now is invalid (`--strict` fails on these).
    pub fn is_invalid(&self) -> bool {
        matches!(self, GroupState::Stale { .. } | GroupState::Invalid { .. })
    }
}

/// The states of a group without their details: what metrics count groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateKind {
    Valid,
    Stale,
    Invalid,
    Ignored,
}

impl StateKind {
    pub const ALL: [StateKind; 4] = [
        StateKind::Valid,
        StateKind::Stale,
        StateKind::Invalid,
        StateKind::Ignored,
    ];

    /// The word of the report line and the metrics' `state` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            StateKind::Valid => "valid",
            StateKind::Stale => "stale",
            StateKind::Invalid => "invalid",
            StateKind::Ignored => "ignored",
        }
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A gRPC name (the group's or a member's) that another namespace owns on the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcLoss {
    pub name: String,
    pub owner_namespace: String,
}

/// Members held back because they are not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    pub members: Vec<String>,
    /// `true`: their share went to the ready members; `false`: no ready member has
    /// weight, so the split stays as configured.
    pub redistributed: bool,
}

/// A gateway whose filter configuration is too large for one WasmPlugin: the planner
/// does not publish it (`--strict` fails on these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OversizedPlugin {
    /// Where the WasmPlugin lives (the gateway workload namespace).
    pub plugin_namespace: String,
    /// Serialised size of the WasmPlugin that was not published, in bytes.
    pub bytes: usize,
    /// Whether the previously published configuration is kept (else none is published).
    pub kept_previous: bool,
}

/// Why a [`Notice`] was given; in a cluster, the reason of its Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NoticeReason {
    /// Anything the planner found (gateway annotations, gRPC name taken, size limit).
    Planner,
    /// The routes of the object's group could not be written; its split did not change.
    RoutesNotWritten,
}

/// Something about one object that a person should know (an Event in a cluster).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Notice {
    /// What the notice is about: a Namespace or an InferenceService.
    pub kind: ObjectKind,
    pub reason: NoticeReason,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    pub message: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}: {}", self.kind, self.name, self.message)
        } else {
            write!(
                f,
                "{} {}/{}: {}",
                self.kind, self.namespace, self.name, self.message
            )
        }
    }
}

/// `m1=80% m2=20%`: each member's effective share of the group's traffic (its
/// weight over the sum, so a held-back member's share shows on the others).
fn split(group: &GroupConfig) -> String {
    let total = group.total_weight().max(1);
    let parts: Vec<String> = group
        .members
        .iter()
        .map(|m| {
            let share = (u64::from(m.weight) * u64::from(rules::FULL_WEIGHT) + total / 2) / total;
            let share = u32::try_from(share).unwrap_or(rules::FULL_WEIGHT);
            format!("{}={}%", m.name, rules::percent(share))
        })
        .collect();
    parts.join(" ")
}

impl fmt::Display for GroupReport {
    /// One line: `<ns>/<group>: <state>: <details>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}: {}: ",
            self.namespace,
            self.name,
            self.state.label()
        )?;
        match (&self.state, &self.published) {
            (GroupState::Valid, Some(group)) => write!(f, "{}", split(group))?,
            (GroupState::Stale { problems }, Some(group)) => write!(
                f,
                "{}; keeping the last good split {}",
                rules::describe(problems),
                split(group)
            )?,
            (GroupState::Invalid { problems }, _) => write!(
                f,
                "{}; not published (no last good split)",
                rules::describe(problems)
            )?,
            (GroupState::Ignored { reason }, _) => write!(f, "{reason}")?,
            // A published state always carries its group; say so rather than panic.
            (_, None) => write!(f, "not published")?,
        }
        if let Some(not_ready) = &self.not_ready {
            let names = not_ready.members.join(", ");
            if not_ready.redistributed {
                write!(
                    f,
                    "; not ready (Ready=False): {names}, their share goes to the ready members in proportion"
                )?;
            } else {
                write!(
                    f,
                    "; not ready (Ready=False): {names}, but no ready member has weight, so the split stays as configured"
                )?;
            }
        }
        if let Some(loss) = &self.grpc_lost {
            write!(
                f,
                "; gRPC off: the name {:?} belongs to namespace {} on this gateway (older claim); REST still works",
                loss.name, loss.owner_namespace
            )?;
        }
        Ok(())
    }
}
