//! `modelsplit render`: manifests from files in (read by [`modelsplit_core::manifests`]),
//! the planned resources as YAML out, and the report.

use modelsplit_core::manifests::{self, ManifestError};
use modelsplit_core::planner::{self, Plan, PreviousConfigs};
use modelsplit_core::resources::GatewayFilter;
use modelsplit_core::settings::Delivery;
use modelsplit_core::Settings;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Why `render` could not read its input or write its output.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Manifests(#[from] ManifestError),
    #[error("could not write YAML for {kind} {namespace}/{name}: {message}")]
    Serialize {
        kind: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
}

/// The plan as multi-document YAML: WasmPlugins (or EnvoyFilters, as `delivery` says),
/// then VirtualServices, each sorted by namespace. Same plan, same bytes.
pub fn to_yaml(plan: &Plan, delivery: Delivery) -> Result<String, RenderError> {
    let mut documents = Vec::new();
    for plugin in &plan.wasm_plugins {
        let filter = GatewayFilter::deliver(plugin.clone(), delivery);
        documents.push(object_yaml(filter.kind(), filter.metadata(), &filter)?);
    }
    for service in &plan.virtual_services {
        documents.push(object_yaml("VirtualService", &service.metadata, service)?);
    }
    Ok(documents
        .iter()
        .map(|d| format!("---\n{d}"))
        .collect::<String>())
}

/// The report: one line per group, then one per notice; says so when there is nothing.
pub fn report_lines(plan: &Plan) -> Vec<String> {
    let mut lines: Vec<String> = plan
        .groups
        .iter()
        .map(ToString::to_string)
        .chain(plan.notices.iter().map(ToString::to_string))
        .collect();
    if plan.groups.is_empty() && plan.routes.is_empty() {
        lines.push(
            "nothing to render: no namespace in the mesh has an exposed ModelMesh InferenceService"
                .to_string(),
        );
    }
    lines
}

/// Loads the manifests (and the previous output), plans, and renders YAML.
pub fn render(
    paths: &[PathBuf],
    previous: Option<&Path>,
    settings: &Settings,
) -> Result<(Plan, String), RenderError> {
    let observed = manifests::load_manifests(paths)?;
    let previous = match previous {
        Some(path) => manifests::load_previous(path)?,
        None => PreviousConfigs::new(),
    };
    let plan = planner::plan(&observed, &previous, settings);
    let yaml = to_yaml(&plan, settings.delivery)?;
    Ok((plan, yaml))
}

fn object_yaml<T: Serialize>(
    kind: &'static str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    object: &T,
) -> Result<String, RenderError> {
    serde_yaml::to_string(object).map_err(|e| RenderError::Serialize {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        message: e.to_string(),
    })
}
