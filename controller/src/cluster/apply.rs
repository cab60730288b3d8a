//! Writes a plan: server-side apply of every desired object that differs from what the
//! cluster has, then deletion of managed objects that are no longer desired.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;

use super::error::{status_code, ClusterError};
use super::kinds::ManagedKind;
use super::lease::Leadership;
use super::metrics::Metrics;
use super::retry::{with_backoff, Backoff};
use crate::resources::{MANAGED_BY_LABEL, MANAGER};

/// Kind, namespace and name: what identifies a published object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: ManagedKind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.kind(), self.namespace, self.name)
    }
}

/// An object the plan wants, as the body of its server-side apply.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObject {
    pub key: ObjectKey,
    pub body: Value,
}

impl DesiredObject {
    /// Reads kind, namespace and name from a serialised WasmPlugin or VirtualService.
    pub fn from_value(body: Value) -> Option<Self> {
        let kind = ManagedKind::from_kind(body.get("kind")?.as_str()?)?;
        let metadata = body.get("metadata")?;
        let namespace = metadata.get("namespace")?.as_str()?.to_string();
        let name = metadata.get("name")?.as_str()?.to_string();
        Some(DesiredObject {
            key: ObjectKey {
                kind,
                namespace,
                name,
            },
            body,
        })
    }
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
    Pruned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Pruned => "pruned",
        }
    }
}

/// Managed objects as the watchers last saw them, by key.
pub type ObservedObjects = BTreeMap<ObjectKey, DynamicObject>;

/// Whether applying `desired` would change nothing the controller owns in `observed`:
/// labels and annotations it sets are present with its values (others may add more),
/// and `spec` is equal (numbers by value: `80` and `80.0` are the same to Istio).
pub fn is_unchanged(desired: &Value, observed: &DynamicObject) -> bool {
    let meta = desired.get("metadata");
    let subset = |field: &str, have: &Option<BTreeMap<String, String>>| {
        let Some(want) = meta.and_then(|m| m.get(field)).and_then(Value::as_object) else {
            return true;
        };
        want.iter()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)).map(String::as_str) == v.as_str())
    };
    subset("labels", &observed.metadata.labels)
        && subset("annotations", &observed.metadata.annotations)
        && json_equal(
            desired.get("spec").unwrap_or(&Value::Null),
            observed.data.get("spec").unwrap_or(&Value::Null),
        )
}

fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Writes objects for the leader; every write first checks it still leads.
pub struct Writer<'a> {
    pub client: &'a Client,
    pub leadership: &'a Leadership,
    pub metrics: &'a Metrics,
    pub backoff: Backoff,
}

impl Writer<'_> {
    /// Makes the cluster match `desired`: VirtualServices first (so a member's route
    /// exists before the filter sends it traffic), then WasmPlugins, then pruning.
    /// One failed object does not stop the others; the first error is returned.
    pub async fn sync(
        &self,
        desired: &[DesiredObject],
        observed: &ObservedObjects,
    ) -> Result<Vec<(ObjectKey, Outcome)>, ClusterError> {
        let mut ordered: Vec<&DesiredObject> = desired.iter().collect();
        ordered.sort_by_key(|d| (d.key.kind != ManagedKind::VirtualService, d.key.clone()));
        let mut outcomes = Vec::new();
        let mut first_error = None;

        for object in ordered {
            let result = match observed.get(&object.key) {
                Some(current) if is_unchanged(&object.body, current) => Ok(Outcome::Unchanged),
                current => self.apply(object).await.map(|()| {
                    if current.is_some() {
                        Outcome::Updated
                    } else {
                        Outcome::Created
                    }
                }),
            };
            self.record(&object.key, result, &mut outcomes, &mut first_error)?;
        }

        let wanted: BTreeSet<&ObjectKey> = desired.iter().map(|d| &d.key).collect();
        for (key, current) in observed {
            if wanted.contains(key) || !is_managed(current) {
                continue;
            }
            let result = self.delete(key).await.map(|()| Outcome::Pruned);
            self.record(key, result, &mut outcomes, &mut first_error)?;
        }

        match first_error {
            Some(error) => Err(error),
            None => Ok(outcomes),
        }
    }

    /// Logs and counts one result; errors that make going on pointless return at once.
    fn record(
        &self,
        key: &ObjectKey,
        result: Result<Outcome, ClusterError>,
        outcomes: &mut Vec<(ObjectKey, Outcome)>,
        first_error: &mut Option<ClusterError>,
    ) -> Result<(), ClusterError> {
        match result {
            Ok(outcome) => {
                if outcome != Outcome::Unchanged {
                    tracing::info!(object = %key, outcome = outcome.as_str(), "synced");
                }
                self.metrics.wrote(key.kind.kind(), outcome.as_str());
                outcomes.push((key.clone(), outcome));
                Ok(())
            }
            Err(error) => {
                tracing::warn!(object = %key, %error, "write failed");
                self.metrics.error(error.kind());
                match error {
                    ClusterError::NotLeader | ClusterError::Forbidden { .. } => Err(error),
                    _ => {
                        first_error.get_or_insert(error);
                        Ok(())
                    }
                }
            }
        }
    }

    fn api(&self, key: &ObjectKey) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &key.namespace,
            &key.kind.api_resource(),
        )
    }

    async fn apply(&self, object: &DesiredObject) -> Result<(), ClusterError> {
        self.ensure_leading()?;
        let api = self.api(&object.key);
        // Forced: the controller owns these objects outright; a person's kubectl edit of an
        // owned field is overwritten on the next reconcile, as with any controller.
        let params = PatchParams::apply(MANAGER).force();
        let patch = Patch::Apply(&object.body);
        let started = Instant::now();
        let result = with_backoff(&format!("apply {}", object.key), self.backoff, || {
            api.patch(&object.key.name, &params, &patch)
        })
        .await;
        self.metrics.observe_apply(started.elapsed());
        result
            .map(drop)
            .map_err(|e| self.write_error("patch", &object.key, e))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), ClusterError> {
        self.ensure_leading()?;
        let api = self.api(key);
        let params = DeleteParams::default();
        let started = Instant::now();
        let result = with_backoff(&format!("delete {key}"), self.backoff, || {
            api.delete(&key.name, &params)
        })
        .await;
        self.metrics.observe_apply(started.elapsed());
        match result {
            Ok(_) => Ok(()),
            // Already gone: what pruning wanted.
            Err(error) if status_code(&error) == Some(404) => Ok(()),
            Err(error) => Err(self.write_error("delete", key, error)),
        }
    }

    fn ensure_leading(&self) -> Result<(), ClusterError> {
        if self.leadership.is_leading() {
            Ok(())
        } else {
            Err(ClusterError::NotLeader)
        }
    }

    fn write_error(&self, verb: &'static str, key: &ObjectKey, error: kube::Error) -> ClusterError {
        if status_code(&error) == Some(403) {
            let message = match &error {
                kube::Error::Api(status) => status.message.clone(),
                other => other.to_string(),
            };
            return ClusterError::Forbidden {
                verb,
                resource: key.kind.resource(),
                namespace: Some(key.namespace.clone()),
                message,
            };
        }
        ClusterError::kube(format!("{verb} {key}"), error)
    }
}

/// Only objects carrying the managed-by label are ever deleted, whatever a watcher returns.
pub fn is_managed(object: &DynamicObject) -> bool {
    object
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(MANAGED_BY_LABEL))
        .is_some_and(|value| value == MANAGER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn observed(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn desired() -> Value {
        json!({
            "apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
            "metadata": {"name": "modelsplit", "namespace": "istio-system",
                         "labels": {"app.kubernetes.io/managed-by": "modelsplit"}},
            "spec": {"url": "oci://x", "pluginConfig": {"groups": [{"members": [{"name": "a", "weight": 8000}]}]}}
        })
    }

    #[test]
    fn server_additions_do_not_count_as_changes() {
        let mut current = desired();
        current["metadata"]["resourceVersion"] = json!("42");
        current["metadata"]["labels"]["team"] = json!("ml");
        current["status"] = json!({"conditions": []});
        current["spec"]["pluginConfig"]["groups"][0]["members"][0]["weight"] = json!(8000.0);
        assert!(is_unchanged(&desired(), &observed(current)));
    }

    #[test]
    fn spec_and_label_changes_count() {
        let mut current = desired();
        current["spec"]["pluginConfig"]["groups"][0]["members"][0]["weight"] = json!(7000);
        assert!(!is_unchanged(&desired(), &observed(current)));

        let mut current = desired();
        current["spec"]["sha256"] = json!("abc");
        assert!(
            !is_unchanged(&desired(), &observed(current)),
            "a field to remove is a change"
        );

        let mut current = desired();
        current["metadata"]["labels"] = json!({});
        assert!(!is_unchanged(&desired(), &observed(current)));
    }

    #[test]
    fn reads_the_key_of_a_desired_object() {
        let object = DesiredObject::from_value(desired()).unwrap();
        assert_eq!(object.key.to_string(), "WasmPlugin istio-system/modelsplit");
        assert!(DesiredObject::from_value(json!({"kind": "Service"})).is_none());
    }
}
