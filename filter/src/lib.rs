//! modelsplit's Envoy filter: weighted routing of KServe ModelMesh group requests.

pub mod config;
