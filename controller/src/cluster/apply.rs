//! Writes for the leader: server-side apply of desired objects that differ from what the
//! cluster has, and deletion of managed objects no longer wanted. What is written in which
//! order is decided by the reconciler (see [`super::staging`]).

use std::collections::BTreeMap;
use std::time::Instant;

use futures::stream::{self, StreamExt};

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::de::IgnoredAny;
use serde_json::Value;

use super::error::{status_code, ClusterError};
use super::kinds::{ManagedKind, Verb};
use super::lease::Leadership;
use super::metrics::Metrics;
use super::retry::{leader_call, Backoff};
use modelsplit_core::resources::{MANAGED_BY_LABEL, MANAGER};

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

/// An object a pass created or changed, and its `resourceVersion` as that pass saw it
/// (None: it did not exist). Until the watch shows another version, the stores still hold
/// the object as it was before the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenObject {
    pub key: ObjectKey,
    pub seen_version: Option<String>,
}

impl WrittenObject {
    /// Whether `current_version` (the watch's, None: absent) shows the write: any version
    /// other than the one seen before it (a later change or a deletion counts too).
    pub fn shown_by(&self, current_version: Option<&str>) -> bool {
        current_version != self.seen_version.as_deref()
    }
}

/// What happened to one object (the `action` label of `modelsplit_writes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
pub type ObservedObjects = BTreeMap<ObjectKey, std::sync::Arc<DynamicObject>>;

/// Whether applying `desired` would change nothing the controller owns in `observed`:
/// labels and annotations it sets are present with its values (others may add more),
/// and `spec` is equal (numbers by value: `80` and `80.0` are the same to Istio). A watched
/// object trimmed to its summary ([`super::trim::SUMMARY_KEY`]) is compared by its spec's
/// digest ([`spec_digest`]).
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
        && match super::trim::summarised_digest(observed) {
            Some(digest) => digest == spec_digest(desired.get("spec").unwrap_or(&Value::Null)),
            None => json_equal(
                desired.get("spec").unwrap_or(&Value::Null),
                observed.data.get("spec").unwrap_or(&Value::Null),
            ),
        }
}

/// SHA-256 of `spec` written canonically: object keys sorted, numbers by value (an integral
/// `80.0` as `80`), so that two specs [`json_equal`] calls equal have the same digest.
pub fn spec_digest(spec: &Value) -> String {
    let mut text = Vec::new();
    canonical(spec, &mut text);
    super::filter_module::sha256_hex(&text)
}

fn canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Number(n) => {
            let text = match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => i.to_string(),
                (_, Some(u), _) => u.to_string(),
                (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => (f as i64).to_string(),
                _ => n.to_string(),
            };
            out.extend_from_slice(text.as_bytes());
        }
        Value::Array(items) => {
            out.push(b'[');
            for item in items {
                canonical(item, out);
                out.push(b',');
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for key in keys {
                out.extend_from_slice(Value::String(key.clone()).to_string().as_bytes());
                out.push(b':');
                canonical(&map[key], out);
                out.push(b',');
            }
            out.push(b'}');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
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

/// Objects written at once. A first pass writes one VirtualService per mesh namespace:
/// one at a time, 200 namespaces took 7.4 s before the first filter config could go out.
pub const PARALLEL_WRITES: usize = 8;

/// The result of one write.
pub type WriteResult = (ObjectKey, Result<Outcome, ClusterError>);

/// Writes objects for the leader. Every attempt starts only while this replica leads and
/// is abandoned when its leadership runs out ([`leader_call`]).
pub struct Writer<'a> {
    pub client: &'a Client,
    pub leadership: &'a Leadership,
    pub metrics: &'a Metrics,
    pub backoff: Backoff,
}

impl Writer<'_> {
    /// Server-side applies every object of `desired` that differs from what the cluster
    /// has, up to [`PARALLEL_WRITES`] at a time; results in the order of `desired`. One
    /// failed object does not stop the others; a lost lease stops every call that has not
    /// started (each attempt checks leadership first, [`leader_call`]).
    pub async fn apply_all(
        &self,
        desired: &[DesiredObject],
        observed: &ObservedObjects,
    ) -> Vec<WriteResult> {
        // Futures collected first: a closure inside the stream would make the pass's
        // future fail `Send` for spawned passes (rustc's higher-ranked lifetime limits).
        let calls: Vec<_> = desired
            .iter()
            .map(|object| async move { Some(self.apply_one(object, observed).await) })
            .collect();
        self.write_buffered(calls).await
    }

    /// Like [`Self::apply_all`] for objects made only when their write starts, by `build`
    /// (None: nothing to write): at most [`PARALLEL_WRITES`] bodies exist at once, where a
    /// first pass at 10,000 isvcs would otherwise hold 200 VirtualServices of 60 KB as JSON.
    pub async fn apply_each<T: Sync>(
        &self,
        items: &[T],
        build: &(dyn Fn(&T) -> Option<DesiredObject> + Sync),
        observed: &ObservedObjects,
    ) -> Vec<WriteResult> {
        let calls: Vec<_> = items
            .iter()
            .map(|item| async move {
                let object = build(item)?;
                Some(self.apply_one(&object, observed).await)
            })
            .collect();
        self.write_buffered(calls).await
    }

    /// Runs `calls` up to [`PARALLEL_WRITES`] at a time and records each result, in the
    /// order of `calls` (a call that wrote nothing gives None).
    async fn write_buffered<F>(&self, calls: Vec<F>) -> Vec<WriteResult>
    where
        F: std::future::Future<Output = Option<WriteResult>>,
    {
        let results: Vec<WriteResult> = stream::iter(calls)
            .buffered(PARALLEL_WRITES)
            .filter_map(|result| async move { result })
            .collect()
            .await;
        for (key, result) in &results {
            self.record(key, result);
        }
        results
    }

    /// Applies `object` unless the cluster has it already.
    async fn apply_one(&self, object: &DesiredObject, observed: &ObservedObjects) -> WriteResult {
        let result = match observed.get(&object.key) {
            Some(current) if is_unchanged(&object.body, current) => Ok(Outcome::Unchanged),
            current => {
                let existed = current.is_some();
                self.apply(object).await.map(|()| {
                    if existed {
                        Outcome::Updated
                    } else {
                        Outcome::Created
                    }
                })
            }
        };
        (object.key.clone(), result)
    }

    /// Deletes `keys` (only objects carrying the managed-by label).
    pub async fn prune_all(
        &self,
        keys: &[ObjectKey],
        observed: &ObservedObjects,
    ) -> Vec<WriteResult> {
        let mut results = Vec::new();
        for key in keys {
            if !observed.get(key).is_some_and(|object| is_managed(object)) {
                continue;
            }
            let result = self.delete(key).await.map(|()| Outcome::Pruned);
            let stop = matches!(result, Err(ClusterError::NotLeader));
            self.record(key, &result);
            results.push((key.clone(), result));
            if stop {
                break;
            }
        }
        results
    }

    /// Logs and counts one result.
    fn record(&self, key: &ObjectKey, result: &Result<Outcome, ClusterError>) {
        match result {
            Ok(outcome) => {
                if *outcome != Outcome::Unchanged {
                    tracing::info!(object = %key, outcome = outcome.as_str(), "synced");
                }
                self.metrics.wrote(key.kind, *outcome);
            }
            Err(error) => {
                tracing::warn!(object = %key, %error, "write failed");
                self.metrics.error(error.kind());
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
        // Forced: the controller owns these fields outright; a person's edit of an owned
        // field is overwritten on the next reconcile, fields others add are left alone.
        let params = PatchParams::apply(MANAGER).force();
        let patch = Patch::Apply(&object.body);
        let resource = object.key.kind.api_resource();
        let path = DynamicObject::url_path(&resource, Some(&object.key.namespace));
        let started = Instant::now();
        let what = format!("apply {}", object.key);
        // The answer is the whole object (a 1 MB WasmPlugin at 10,000 isvcs): it is read
        // and skipped, not decoded, since the watch brings the object back anyway.
        let result = leader_call(&what, self.leadership, self.backoff, || {
            let request = kube::core::Request::new(&path)
                .patch(&object.key.name, &params, &patch)
                .map_err(kube::Error::BuildRequest);
            async move { self.client.request::<IgnoredAny>(request?).await }
        })
        .await;
        self.metrics.observe_apply(started.elapsed());
        result
            .map(drop)
            .map_err(|e| forbidden_or(e, Verb::Patch, &object.key))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), ClusterError> {
        let api = self.api(key);
        let params = DeleteParams::default();
        let started = Instant::now();
        let result = leader_call(
            &format!("delete {key}"),
            self.leadership,
            self.backoff,
            || api.delete(&key.name, &params),
        )
        .await;
        self.metrics.observe_apply(started.elapsed());
        match result {
            Ok(_) => Ok(()),
            // Already gone: what pruning wanted.
            Err(ClusterError::Kube { source, .. }) if status_code(&source) == Some(404) => Ok(()),
            Err(error) => Err(forbidden_or(error, Verb::Delete, key)),
        }
    }
}

/// A 403 as the typed RBAC error naming the resource; anything else unchanged.
fn forbidden_or(error: ClusterError, verb: Verb, key: &ObjectKey) -> ClusterError {
    match error {
        ClusterError::Kube { source, .. } if status_code(&source) == Some(403) => {
            let message = match &source {
                kube::Error::Api(status) => status.message.clone(),
                other => other.to_string(),
            };
            ClusterError::Forbidden {
                verb,
                resource: key.kind.resource(),
                namespace: Some(key.namespace.clone()),
                message,
            }
        }
        other => other,
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

    #[test]
    fn a_write_is_shown_once_the_watch_has_another_version_or_none() {
        let key = ObjectKey {
            kind: ManagedKind::WasmPlugin,
            namespace: "istio-system".into(),
            name: "modelsplit".into(),
        };
        let updated = WrittenObject {
            key: key.clone(),
            seen_version: Some("41".into()),
        };
        assert!(
            !updated.shown_by(Some("41")),
            "the store still has the old object"
        );
        assert!(updated.shown_by(Some("42")));
        assert!(
            updated.shown_by(None),
            "deleted since: nothing left to wait for"
        );
        let created = WrittenObject {
            key,
            seen_version: None,
        };
        assert!(
            !created.shown_by(None),
            "the store has not seen it created yet"
        );
        assert!(created.shown_by(Some("7")));
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
