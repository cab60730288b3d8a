//! Which module `modelsplit run` publishes in the WasmPlugins' `url` and `sha256`: by default
//! the one it serves itself, at its Service; `--url` (and `--sha256`) override that for a
//! module published elsewhere (`oci://`, `https://`, `file://`).

use std::path::Path;

use super::filter_module::{FilterModule, FilterModuleError, DEFAULT_FILTER_FILE};

/// The controller's Service as the gateway pods resolve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAddress {
    pub name: String,
    pub namespace: String,
    pub port: u16,
    /// The cluster's DNS domain (`cluster.local` unless the cluster was set up otherwise).
    pub domain: String,
}

impl ServiceAddress {
    /// Checks that the URL made of it names a Service: DNS labels, a domain of them.
    pub fn validate(&self) -> Result<(), FilterSourceError> {
        let bad = |what: &'static str, value: &str| FilterSourceError::BadService {
            what,
            value: value.to_string(),
        };
        if !is_dns_label(&self.name) {
            return Err(bad("--filter-service", &self.name));
        }
        if !is_dns_label(&self.namespace) {
            return Err(bad("--filter-service-namespace", &self.namespace));
        }
        if !self.domain.split('.').all(is_dns_label) {
            return Err(bad("--cluster-domain", &self.domain));
        }
        Ok(())
    }

    /// `http://<name>.<namespace>.svc.<domain>:<port>/filter/<sha256>.wasm`.
    pub fn url_of(&self, module: &FilterModule) -> String {
        format!(
            "http://{}.{}.svc.{}:{}{}",
            self.name,
            self.namespace,
            self.domain,
            self.port,
            module.served_path()
        )
    }
}

/// Why no module can be published.
#[derive(Debug, thiserror::Error)]
pub enum FilterSourceError {
    #[error(transparent)]
    Module(#[from] FilterModuleError),
    #[error("{what} {value:?} is not a DNS name (lowercase letters, digits and '-'), so the module's URL would not resolve")]
    BadService { what: &'static str, value: String },
    #[error(
        "--sha256 is given without --url: it pins a module published elsewhere, while the \
         module this controller serves is pinned by its own digest. Drop --sha256, or add the \
         --url it belongs to"
    )]
    Sha256WithoutUrl,
}

/// What goes into the WasmPlugins, and the module this replica serves (if any).
#[derive(Debug, Clone)]
pub struct FilterSource {
    pub url: String,
    pub sha256: Option<String>,
    pub served: Option<FilterModule>,
}

/// Without `url`: the module at `filter_file` (default [`DEFAULT_FILTER_FILE`]) is served and
/// published at `service`, pinned by its digest; a missing module is an error (the gateway
/// would get a URL that serves nothing). With `url`: `url` and `sha256` are published as given,
/// and a module is served only if `filter_file` is given explicitly.
pub fn choose(
    url: Option<String>,
    sha256: Option<String>,
    filter_file: Option<&Path>,
    service: &ServiceAddress,
) -> Result<FilterSource, FilterSourceError> {
    match url {
        Some(url) => Ok(FilterSource {
            url,
            sha256,
            served: filter_file.map(FilterModule::load).transpose()?,
        }),
        None if sha256.is_some() => Err(FilterSourceError::Sha256WithoutUrl),
        None => {
            service.validate()?;
            let module = FilterModule::load(filter_file.unwrap_or(Path::new(DEFAULT_FILTER_FILE)))?;
            Ok(FilterSource {
                url: service.url_of(&module),
                sha256: Some(module.sha256().to_string()),
                served: Some(module),
            })
        }
    }
}

/// An RFC 1123 label, as Service and namespace names are.
fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::filter_module::sha256_hex;

    fn service() -> ServiceAddress {
        ServiceAddress {
            name: "modelsplit-controller-metrics".into(),
            namespace: "modelsplit-system".into(),
            port: 8080,
            domain: "cluster.local".into(),
        }
    }

    fn module_file(dir: &Path) -> (std::path::PathBuf, String) {
        let path = dir.join("plugin.wasm");
        let bytes = b"\0asm\x01\0\0\0 the filter".to_vec();
        std::fs::write(&path, &bytes).unwrap();
        (path, sha256_hex(&bytes))
    }

    #[test]
    fn by_default_the_served_module_is_published_at_the_service() {
        let dir = tempfile::tempdir().unwrap();
        let (path, sha) = module_file(dir.path());
        let source = choose(None, None, Some(&path), &service()).unwrap();
        assert_eq!(
            source.url,
            format!("http://modelsplit-controller-metrics.modelsplit-system.svc.cluster.local:8080/filter/{sha}.wasm")
        );
        assert_eq!(source.sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(source.served.map(|m| m.sha256().to_string()), Some(sha));
    }

    #[test]
    fn the_service_flags_shape_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let (path, sha) = module_file(dir.path());
        let service = ServiceAddress {
            name: "ms".into(),
            namespace: "odh".into(),
            port: 9090,
            domain: "corp.example".into(),
        };
        let source = choose(None, None, Some(&path), &service).unwrap();
        assert_eq!(
            source.url,
            format!("http://ms.odh.svc.corp.example:9090/filter/{sha}.wasm")
        );
    }

    #[test]
    fn url_and_sha256_override_and_nothing_is_served_unless_asked() {
        let url = "oci://quay.io/you/modelsplit-filter@sha256:abc".to_string();
        let sha = "a".repeat(64);
        // No module anywhere: --url needs none.
        let source = choose(Some(url.clone()), Some(sha.clone()), None, &service()).unwrap();
        assert_eq!(source.url, url);
        assert_eq!(source.sha256, Some(sha));
        assert!(source.served.is_none());
        let https = "https://example.com/f.wasm".to_string();
        let source = choose(Some(https.clone()), None, None, &service()).unwrap();
        assert_eq!((source.url, source.sha256), (https, None));

        // --filter-file given as well: served, not published.
        let dir = tempfile::tempdir().unwrap();
        let (path, served_sha) = module_file(dir.path());
        let source = choose(Some(url.clone()), None, Some(&path), &service()).unwrap();
        assert_eq!(source.url, url);
        assert_eq!(source.sha256, None);
        assert_eq!(
            source.served.map(|m| m.sha256().to_string()),
            Some(served_sha)
        );
    }

    #[test]
    fn no_module_and_no_url_is_an_error_naming_the_file_and_the_fix() {
        let missing = Path::new("/nonexistent/modelsplit/plugin.wasm");
        let error = choose(None, None, Some(missing), &service()).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("/nonexistent/modelsplit/plugin.wasm")
                && text.contains("--url")
                && text.contains("scripts/build-wasm.sh"),
            "{text}"
        );
        // An explicit --filter-file that is missing fails with --url too.
        assert!(choose(
            Some("https://x/f.wasm".into()),
            None,
            Some(missing),
            &service()
        )
        .is_err());
    }

    #[test]
    fn a_service_that_is_not_a_dns_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = module_file(dir.path());
        for (service, flag) in [
            (
                ServiceAddress {
                    name: "Metrics".into(),
                    ..service()
                },
                "--filter-service",
            ),
            (
                ServiceAddress {
                    namespace: "a/b".into(),
                    ..service()
                },
                "--filter-service-namespace",
            ),
            (
                ServiceAddress {
                    domain: "cluster..local".into(),
                    ..service()
                },
                "--cluster-domain",
            ),
        ] {
            let error = choose(None, None, Some(&path), &service).unwrap_err();
            assert!(error.to_string().starts_with(flag), "{error}");
        }
    }

    #[test]
    fn sha256_without_url_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = module_file(dir.path());
        let error = choose(None, Some("b".repeat(64)), Some(&path), &service()).unwrap_err();
        assert!(matches!(error, FilterSourceError::Sha256WithoutUrl));
        assert!(error.to_string().contains("--url"));
    }
}
