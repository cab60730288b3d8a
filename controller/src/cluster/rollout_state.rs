//! Where `modelsplit run` keeps its rollouts' state: the ConfigMap `<instance>-rollouts`
//! in the controller's namespace, an object it owns (the `modelsplit.io/rollout`
//! annotations stay the users'), so that a restarted or newly elected controller resumes
//! each rollout at the step it was in.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};

use crate::rollouts::States;
use modelsplit_core::resources::{MANAGED_BY_LABEL, MANAGER};

/// The ConfigMap's key holding the states as JSON.
pub const STATE_KEY: &str = "rollouts.json";

/// The ConfigMap of one controller instance.
#[derive(Clone)]
pub struct StateStore {
    api: Api<ConfigMap>,
    name: String,
}

impl StateStore {
    pub fn new(client: Client, namespace: &str, instance: &str) -> StateStore {
        StateStore {
            api: Api::namespaced(client, namespace),
            name: format!("{instance}-rollouts"),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kept states; none when the ConfigMap does not exist yet. A ConfigMap that cannot
    /// be read is an error (the pass is retried: starting every rollout over would undo
    /// their progress); one whose content is not a state is said and started over.
    pub async fn load(&self) -> Result<States, kube::Error> {
        let Some(map) = self.api.get_opt(&self.name).await? else {
            return Ok(States::new());
        };
        let Some(text) = map.data.as_ref().and_then(|d| d.get(STATE_KEY)) else {
            return Ok(States::new());
        };
        Ok(serde_json::from_str(text).unwrap_or_else(|error| {
            tracing::warn!(configmap = %self.name, key = STATE_KEY, %error, "not a rollout state; the rollouts start over");
            States::new()
        }))
    }

    /// Writes `states` (server-side apply, this controller's field manager).
    pub async fn save(&self, states: &States) -> Result<(), kube::Error> {
        let text = serde_json::to_string_pretty(states).unwrap_or_default();
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY_LABEL.to_string(),
                    MANAGER.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(STATE_KEY.to_string(), text)])),
            ..ConfigMap::default()
        };
        let params = PatchParams::apply(MANAGER).force();
        self.api
            .patch(&self.name, &params, &Patch::Apply(&map))
            .await
            .map(|_| ())
    }
}
