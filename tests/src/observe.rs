//! What a client saw of one request through the gateway, and tallies of many.

use crate::http::Reply;
use crate::kserve::ModelInferResponse;
use crate::standin::NAMESPACE_HEADER;
use std::collections::BTreeMap;

/// Response header the filter adds (docs/design.md section 3 default `routedHeader`).
pub const ROUTED_HEADER: &str = "x-modelsplit-routed-to";

/// One answer as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// HTTP status (REST) or gRPC code (0 = OK).
    pub status: u16,
    /// The filter's routed header, if any.
    pub routed_to: Option<String>,
    /// The model that answered (stand-in's answer body).
    pub model: Option<String>,
    /// The namespace of the stand-in that answered.
    pub namespace: Option<String>,
    /// REST: the path and query the stand-in received.
    pub upstream_path: Option<String>,
}

impl Observed {
    /// From a REST reply of a stand-in (through the gateway).
    pub fn from_rest(reply: &Reply) -> Observed {
        let body = reply.json();
        let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
        Observed {
            status: reply.status,
            routed_to: reply.header(ROUTED_HEADER).map(str::to_string),
            model: text(&body["model_name"]).or_else(|| text(&body["name"])),
            namespace: reply.header(NAMESPACE_HEADER).map(str::to_string),
            upstream_path: text(&body["path"]),
        }
    }

    /// From a gRPC ModelInfer outcome.
    pub fn from_grpc(
        result: &Result<tonic::Response<ModelInferResponse>, tonic::Status>,
    ) -> Observed {
        let header = |m: &tonic::metadata::MetadataMap, name: &str| {
            m.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        match result {
            Ok(response) => Observed {
                status: 0,
                routed_to: header(response.metadata(), ROUTED_HEADER),
                model: Some(response.get_ref().model_name.clone()),
                namespace: header(response.metadata(), NAMESPACE_HEADER),
                upstream_path: None,
            },
            Err(status) => Observed {
                status: status.code() as u16,
                routed_to: header(status.metadata(), ROUTED_HEADER),
                model: None,
                namespace: header(status.metadata(), NAMESPACE_HEADER),
                upstream_path: None,
            },
        }
    }

    /// Whether this is a good answer by a member, consistent in every respect:
    /// success, from `namespace`, and the routed header naming the model that answered.
    pub fn problem(&self, namespace: &str) -> Option<String> {
        let ok = matches!(self.status, 0 | 200)
            && self.namespace.as_deref() == Some(namespace)
            && self.model.is_some()
            && self.routed_to == self.model;
        (!ok).then(|| format!("{self:?}"))
    }
}

/// Requests per member over many observations, checking each on the way.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub by_member: BTreeMap<String, u64>,
    /// Answers that were not consistent (see [`Observed::problem`]), first few only.
    pub problems: Vec<String>,
    pub problem_count: usize,
}

impl Tally {
    /// Tallies answers that must all come from `namespace`.
    pub fn of(observed: &[Observed], namespace: &str) -> Tally {
        let mut tally = Tally::default();
        for o in observed {
            if let Some(problem) = o.problem(namespace) {
                tally.problem_count += 1;
                if tally.problems.len() < 5 {
                    tally.problems.push(problem);
                }
                continue;
            }
            if let Some(model) = &o.model {
                *tally.by_member.entry(model.clone()).or_default() += 1;
            }
        }
        tally
    }
}
