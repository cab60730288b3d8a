//! Startup checks: every resource the controller watches is served (its CRD is installed)
//! and RBAC lets the controller do what it will do. A clear error and exit code here beats
//! a watcher that retries a 404 forever.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::{Api, Client};

use super::error::{status_code, ClusterError, ResourceName};
use super::kinds::{api_resource, Verb, CLUSTER_ACCESS, LEASE_ACCESS};

/// Lists one object of each watched resource (404: CRD missing, 403: RBAC), then asks the
/// API server (SelfSubjectAccessReview) whether every write verb is allowed.
pub async fn check(
    client: &Client,
    lease_namespace: &str,
    lease_name: &str,
) -> Result<(), ClusterError> {
    for (resource, verbs) in CLUSTER_ACCESS {
        if verbs.contains(&Verb::List) {
            check_list(client, resource).await?;
        }
    }
    for (resource, verbs) in CLUSTER_ACCESS {
        for verb in verbs.iter().filter(|v| **v != Verb::List) {
            check_access(client, *verb, resource, None, None).await?;
        }
    }
    // Asked for the Lease by name: a Role may grant get/update on that name only
    // (`create` cannot be limited by name).
    let (resource, verbs) = LEASE_ACCESS;
    for verb in verbs {
        let name = (*verb != Verb::Create).then_some(lease_name);
        check_access(client, *verb, resource, Some(lease_namespace), name).await?;
    }
    Ok(())
}

async fn check_list(client: &Client, resource: &'static ResourceName) -> Result<(), ClusterError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(resource, ""));
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(error) => Err(match status_code(&error) {
            Some(404) => ClusterError::CrdMissing { resource },
            Some(403) => ClusterError::Forbidden {
                verb: Verb::List,
                resource,
                namespace: None,
                message: api_message(&error),
            },
            _ => ClusterError::kube(format!("list {resource}"), error),
        }),
    }
}

async fn check_access(
    client: &Client,
    verb: Verb,
    resource: &'static ResourceName,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<(), ClusterError> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(resource.group.to_string()),
                resource: Some(resource.plural.to_string()),
                verb: Some(verb.as_str().to_string()),
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    match api.create(&PostParams::default(), &review).await {
        Ok(answer) => match answer.status {
            Some(status) if !status.allowed => Err(ClusterError::Forbidden {
                verb,
                resource,
                namespace: namespace.map(str::to_string),
                message: status
                    .reason
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| "access review denied".to_string()),
            }),
            _ => Ok(()),
        },
        // A cluster that does not answer access reviews: the first write will tell.
        Err(error) => {
            tracing::warn!(%verb, %resource, %error, "could not review access; continuing");
            Ok(())
        }
    }
}

fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}
