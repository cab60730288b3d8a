//! What can stop `modelsplit run`, each with the exit code and the fix a person needs.

use std::fmt;

/// Process exit codes of `modelsplit run` (documented in controller/deploy/README.md).
pub mod exit_code {
    /// Any other failure (cannot reach the API server, bad flags, ...).
    pub const FAILURE: i32 = 1;
    /// A CustomResourceDefinition the controller needs is not installed.
    pub const CRD_MISSING: i32 = 3;
    /// RBAC denies the controller something it needs.
    pub const FORBIDDEN: i32 = 4;
}

/// A Kubernetes resource the controller reads or writes, for messages and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceName {
    /// API group ("" for the core group).
    pub group: &'static str,
    pub version: &'static str,
    /// Plural, as in URLs and RBAC rules.
    pub plural: &'static str,
    /// Who installs it, for the "CRD missing" hint.
    pub provided_by: &'static str,
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{} (v1)", self.plural)
        } else {
            write!(f, "{}.{} ({})", self.plural, self.group, self.version)
        }
    }
}

/// Errors of the in-cluster controller.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "the API server does not serve {resource}: its CustomResourceDefinition is not installed; install {} first",
        resource.provided_by
    )]
    CrdMissing { resource: &'static ResourceName },

    #[error(
        "RBAC forbids {verb} on {resource}{}: {message}; apply controller/deploy/ (ClusterRole modelsplit-controller) or grant it to the controller's ServiceAccount",
        namespace.as_deref().map(|ns| format!(" in namespace {ns}")).unwrap_or_default()
    )]
    Forbidden {
        verb: &'static str,
        resource: &'static ResourceName,
        namespace: Option<String>,
        message: String,
    },

    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    #[error("the pass wrote only part of what it wanted ({message}); what could not be written keeps its published state and is retried")]
    Incomplete { message: String },

    #[error("this replica lost the leader lease; it stopped writing")]
    NotLeader,

    #[error(
        "{action}: no answer within {after:?}; abandoned (the API server is slow or unreachable)"
    )]
    Timeout {
        action: String,
        after: std::time::Duration,
    },

    #[error("metrics server on {addr}: {source}")]
    MetricsServer {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl ClusterError {
    /// The exit code of `modelsplit run` for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClusterError::CrdMissing { .. } => exit_code::CRD_MISSING,
            ClusterError::Forbidden { .. } => exit_code::FORBIDDEN,
            _ => exit_code::FAILURE,
        }
    }

    pub(crate) fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        ClusterError::Kube {
            action: action.into(),
            source,
        }
    }

    /// A short label for the `modelsplit_errors_total{kind=...}` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            ClusterError::CrdMissing { .. } => "crd_missing",
            ClusterError::Forbidden { .. } => "forbidden",
            ClusterError::Kube { source, .. } => match status_code(source) {
                Some(409) => "conflict",
                Some(code) if code >= 500 => "server",
                Some(_) => "api",
                None => "transport",
            },
            ClusterError::NotLeader => "not_leader",
            ClusterError::Timeout { .. } => "timeout",
            ClusterError::Incomplete { .. } => "incomplete",
            ClusterError::MetricsServer { .. } => "metrics_server",
        }
    }
}

/// The HTTP status of an API error, if the API server answered at all.
pub(crate) fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
