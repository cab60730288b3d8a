//! What can stop `modelsplit run`, each with the exit code and the fix a person needs.

use std::fmt;

use super::kinds::Verb;

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
        verb: Verb,
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

    /// What kind of error this is, for the `modelsplit_errors_total{kind=...}` metric.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClusterError::CrdMissing { .. } => ErrorKind::CrdMissing,
            ClusterError::Forbidden { .. } => ErrorKind::Forbidden,
            ClusterError::Kube { source, .. } => match status_code(source) {
                Some(409) => ErrorKind::Conflict,
                Some(code) if code >= 500 => ErrorKind::Server,
                Some(_) => ErrorKind::Api,
                None => ErrorKind::Transport,
            },
            ClusterError::NotLeader => ErrorKind::NotLeader,
            ClusterError::Timeout { .. } => ErrorKind::Timeout,
            ClusterError::Incomplete { .. } => ErrorKind::Incomplete,
            ClusterError::MetricsServer { .. } => ErrorKind::MetricsServer,
        }
    }
}

/// The errors the controller counts: those of a [`ClusterError`], and failures that are
/// only logged and retried (watches, the lease, Events, objects that do not decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    CrdMissing,
    Forbidden,
    /// The API server answered 409.
    Conflict,
    /// The API server answered 5xx.
    Server,
    /// The API server answered with another error status.
    Api,
    /// No answer from the API server (connection, TLS, body).
    Transport,
    NotLeader,
    Timeout,
    Incomplete,
    MetricsServer,
    /// A watch failed (it retries with backoff).
    Watch,
    /// Renewing or acquiring the leader lease failed.
    Lease,
    /// An Event could not be created.
    Event,
    /// A watched object could not be read as its type.
    Decode,
}

impl ErrorKind {
    /// The value of the metric's `kind` label.
    pub const fn metric_label(self) -> &'static str {
        match self {
            ErrorKind::CrdMissing => "crd_missing",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Server => "server",
            ErrorKind::Api => "api",
            ErrorKind::Transport => "transport",
            ErrorKind::NotLeader => "not_leader",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Incomplete => "incomplete",
            ErrorKind::MetricsServer => "metrics_server",
            ErrorKind::Watch => "watch",
            ErrorKind::Lease => "lease",
            ErrorKind::Event => "event",
            ErrorKind::Decode => "decode",
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
