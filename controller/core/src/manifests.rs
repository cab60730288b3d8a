//! Manifests in, observed objects out: what `render` and `local` read from files (or
//! from a string), and the WasmPlugins of an earlier output as last-known-good configs.
//!
//! Reads Namespaces, ServingRuntimes and InferenceServices (multi-document YAML or
//! JSON, `kind: List` too); other kinds are skipped. Errors name the file, the document
//! (1-based) and the field.

use crate::planner::{Observed, PreviousConfigs, DEFAULT_NAMESPACE};
use crate::resources::{
    EnvoyFilter, InferenceService, Namespace, ObjectKind, ServingRuntime, WasmPlugin,
};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why manifests could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: document {document}: {message}")]
    Document {
        path: PathBuf,
        document: Location,
        message: String,
    },
    #[error("{path}: no .yaml, .yml or .json files in this directory")]
    EmptyDirectory { path: PathBuf },
    #[error("{kind} {namespace}/{name} is defined twice: in {first} and in {second}; keep one")]
    Duplicate {
        kind: ObjectKind,
        namespace: String,
        name: String,
        first: String,
        second: String,
    },
}

/// A document in a file: its 1-based index, and the item inside a `kind: List`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub document: usize,
    pub item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.item {
            Some(item) => write!(f, "{} (List item {item})", self.document),
            None => write!(f, "{}", self.document),
        }
    }
}

/// The manifests' objects, remembering where each came from.
#[derive(Debug, Default)]
struct Loaded {
    observed: Observed,
    seen: BTreeMap<(ObjectKind, String, String), String>,
}

/// Reads every manifest under `paths` (files, or directories searched recursively
/// in name order; hidden entries skipped; `-` is standard input).
pub fn load_manifests(paths: &[PathBuf]) -> Result<Observed, ManifestError> {
    let mut loaded = Loaded::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| {
                ManifestError::Io {
                    path: path.clone(),
                    source,
                }
            })?;
            for_each_object(path, &text, &mut |location, value| {
                loaded.add(path, location, value)
            })?;
            continue;
        }
        for file in manifest_files(path)? {
            let text = read(&file)?;
            for_each_object(&file, &text, &mut |location, value| {
                loaded.add(&file, location, value)
            })?;
        }
    }
    Ok(loaded.observed)
}

/// Reads the objects of one manifest text; `source` names it in errors.
pub fn parse_manifests(source: &Path, text: &str) -> Result<Observed, ManifestError> {
    let mut loaded = Loaded::default();
    for_each_object(source, text, &mut |location, value| {
        loaded.add(source, location, value)
    })?;
    Ok(loaded.observed)
}

/// Reads the WasmPlugins (or EnvoyFilters, `--delivery envoyfilter`) of a previous `render`
/// output: the last-known-good configs.
pub fn load_previous(path: &Path) -> Result<PreviousConfigs, ManifestError> {
    let text = read(path)?;
    let mut previous = PreviousConfigs::new();
    for_each_object(path, &text, &mut |location, value| {
        let document_error = |message: String| ManifestError::Document {
            path: path.to_path_buf(),
            document: location,
            message,
        };
        let (meta, config) = match kind_of(&value) {
            Some(("extensions.istio.io", "WasmPlugin")) => {
                let plugin: WasmPlugin = typed(path, location, value)?;
                let config = plugin
                    .filter_config()
                    .map_err(|e| format!("WasmPlugin spec.pluginConfig: {e}"));
                (plugin.metadata, config)
            }
            Some(("networking.istio.io", "EnvoyFilter")) => {
                let filter: EnvoyFilter = typed(path, location, value)?;
                let config = filter
                    .filter_config()
                    .map_err(|e| format!("EnvoyFilter's filter configuration: {e}"));
                (filter.metadata, config)
            }
            _ => return Ok(()),
        };
        if meta.name.as_deref() != Some(crate::resources::wasm_plugin::WASM_PLUGIN_NAME) {
            return Ok(());
        }
        let config = config.map_err(document_error)?;
        let namespace = meta
            .namespace
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        previous.insert(namespace, config);
        Ok(())
    })?;
    Ok(previous)
}

fn read(path: &Path) -> Result<String, ManifestError> {
    std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The manifest files of a path: itself if a file, else its YAML/JSON files.
fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let io = |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !std::fs::metadata(path).map_err(io)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    collect_files(path, &mut files)?;
    if files.is_empty() {
        return Err(ManifestError::EmptyDirectory {
            path: path.to_path_buf(),
        });
    }
    Ok(files)
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let io = |source| ManifestError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort();
    for entry in entries {
        let hidden = entry
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if entry.is_dir() {
            collect_files(&entry, files)?;
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(entry);
        }
    }
    Ok(())
}

/// Calls `visit` with every object of a multi-document file, unpacking `kind: List`.
fn for_each_object(
    path: &Path,
    text: &str,
    visit: &mut dyn FnMut(Location, serde_yaml::Value) -> Result<(), ManifestError>,
) -> Result<(), ManifestError> {
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let location = Location {
            document: index + 1,
            item: None,
        };
        let error = |message: String| ManifestError::Document {
            path: path.to_path_buf(),
            document: location,
            message,
        };
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(document)
            .map_err(|e| error(format!("not valid YAML: {e}")))?;
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        if !value.is_mapping() {
            return Err(error(
                "not a Kubernetes object: expected a mapping with apiVersion and kind".to_string(),
            ));
        }
        if value.get("kind").and_then(|k| k.as_str()) == Some("List") {
            let items = value
                .get("items")
                .and_then(|i| i.as_sequence())
                .cloned()
                .unwrap_or_default();
            for (item, object) in items.into_iter().enumerate() {
                visit(
                    Location {
                        document: index + 1,
                        item: Some(item + 1),
                    },
                    object,
                )?;
            }
        } else {
            visit(location, value)?;
        }
    }
    Ok(())
}

/// `(api group, kind)` of an object (`""` is the core group).
fn kind_of(value: &serde_yaml::Value) -> Option<(&str, &str)> {
    let api_version = value.get("apiVersion")?.as_str()?;
    let kind = value.get("kind")?.as_str()?;
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    Some((group, kind))
}

/// Deserialises an object, naming the field that does not fit.
fn typed<T: DeserializeOwned>(
    path: &Path,
    location: Location,
    value: serde_yaml::Value,
) -> Result<T, ManifestError> {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("object")
        .to_string();
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("(unnamed)")
        .to_string();
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        // serde_path_to_error writes the document root as ".".
        let message = if field == "." {
            format!("{kind} {name}: {}", e.inner())
        } else {
            format!("{kind} {name}: field {field}: {}", e.inner())
        };
        ManifestError::Document {
            path: path.to_path_buf(),
            document: location,
            message,
        }
    })
}

impl Loaded {
    fn add(
        &mut self,
        path: &Path,
        location: Location,
        value: serde_yaml::Value,
    ) -> Result<(), ManifestError> {
        let error = |message: String| ManifestError::Document {
            path: path.to_path_buf(),
            document: location,
            message,
        };
        let Some((group, kind)) = kind_of(&value) else {
            return Err(error("missing apiVersion or kind".to_string()));
        };
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let Some(kind) = ObjectKind::from_group_kind(group, kind) else {
            return Ok(()); // not an input of modelsplit
        };
        let expected = kind.api_version();
        if api_version != expected {
            return Err(error(format!(
                "{kind} has apiVersion {api_version:?}; modelsplit reads {expected}"
            )));
        }
        let here = format!("{} document {location}", path.display());
        match kind {
            ObjectKind::Namespace => {
                let namespace: Namespace = typed(path, location, value)?;
                let name = required_name(&namespace.metadata, kind).map_err(error)?;
                self.remember(kind, String::new(), name, here)?;
                self.observed.namespaces.push(namespace);
            }
            ObjectKind::InferenceService => {
                let mut isvc: InferenceService = typed(path, location, value)?;
                let name = required_name(&isvc.metadata, kind).map_err(error)?;
                let namespace = isvc
                    .metadata
                    .namespace
                    .get_or_insert_with(|| DEFAULT_NAMESPACE.to_string())
                    .clone();
                self.remember(kind, namespace, name, here)?;
                self.observed.inference_services.push(isvc);
            }
            ObjectKind::ServingRuntime => {
                let mut runtime: ServingRuntime = typed(path, location, value)?;
                let name = required_name(&runtime.metadata, kind).map_err(error)?;
                let namespace = runtime
                    .metadata
                    .namespace
                    .get_or_insert_with(|| DEFAULT_NAMESPACE.to_string())
                    .clone();
                self.remember(kind, namespace, name, here)?;
                self.observed.serving_runtimes.push(runtime);
            }
        }
        Ok(())
    }

    /// Two definitions of one object would make the output depend on file order.
    fn remember(
        &mut self,
        kind: ObjectKind,
        namespace: String,
        name: String,
        here: String,
    ) -> Result<(), ManifestError> {
        let key = (kind, namespace.clone(), name.clone());
        if let Some(first) = self.seen.get(&key) {
            return Err(ManifestError::Duplicate {
                kind,
                namespace,
                name,
                first: first.clone(),
                second: here,
            });
        }
        self.seen.insert(key, here);
        Ok(())
    }
}

fn required_name(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: ObjectKind,
) -> Result<String, String> {
    match meta.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(format!("{kind} has no metadata.name")),
    }
}
