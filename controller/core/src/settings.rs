//! The controller's settings: defaults for namespaces that name no gateway, and what
//! goes into each WasmPlugin besides the filter configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Gateway of mesh namespaces that do not name one (the ODH default).
pub const DEFAULT_GATEWAY: &str = "istio-system/odh-gateway";
/// Where the WasmPlugin fetches the filter module: the filter's OCI image. A placeholder that
/// nobody publishes: users set `--url` to the image they built from filter/Dockerfile.
pub const DEFAULT_PLUGIN_URL: &str = "oci://ghcr.io/modelsplit/modelsplit-filter:0.1.0";
/// Labels of the ingress gateway pods the WasmPlugin applies to.
pub const DEFAULT_SELECTOR: (&str, &str) = ("istio", "ingressgateway");

/// Why a setting was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("gateway {0:?} must be written <namespace>/<name>")]
    BadGateway(String),
    #[error("selector {0:?} must be written <label>=<value>")]
    BadSelector(String),
    #[error("fail strategy {0:?} must be FAIL_OPEN or FAIL_CLOSE")]
    BadFailStrategy(String),
    #[error("sha256 {0:?} must be 64 hexadecimal digits")]
    BadSha256(String),
    #[error("{what} {value:?} is not a valid Kubernetes name")]
    BadName { what: &'static str, value: String },
    #[error("delivery {0:?} must be wasmplugin or envoyfilter")]
    BadDelivery(String),
    #[error("an image pull secret works only with --delivery wasmplugin (Istio reads pull secrets from WasmPlugins only); with --delivery envoyfilter use a public image, or an http(s):// URL such as the module `modelsplit run` serves")]
    PullSecretNeedsWasmPlugin,
}

/// An Istio `Gateway` resource: `<namespace>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GatewayRef {
    pub namespace: String,
    pub name: String,
}

impl GatewayRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        GatewayRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for GatewayRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for GatewayRef {
    type Err = SettingsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SettingsError::BadGateway(s.to_string());
        let (namespace, name) = s.trim().split_once('/').ok_or_else(bad)?;
        if !is_dns_name(namespace) || !is_dns_name(name) {
            return Err(bad());
        }
        Ok(GatewayRef::new(namespace, name))
    }
}

/// What Istio does when the filter module cannot be fetched or started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailStrategy {
    /// Skip the filter: group requests fail, unrelated traffic on the gateway goes on.
    #[default]
    FailOpen,
    /// Reject every request through the gateway.
    FailClose,
}

impl FailStrategy {
    /// The value of the WasmPlugin's `failStrategy` field.
    pub fn as_istio(self) -> &'static str {
        match self {
            FailStrategy::FailOpen => "FAIL_OPEN",
            FailStrategy::FailClose => "FAIL_CLOSE",
        }
    }
}

impl FromStr for FailStrategy {
    type Err = SettingsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().replace('-', "_").as_str() {
            "FAIL_OPEN" => Ok(FailStrategy::FailOpen),
            "FAIL_CLOSE" => Ok(FailStrategy::FailClose),
            _ => Err(SettingsError::BadFailStrategy(s.to_string())),
        }
    }
}

/// Which Istio resource carries the filter and its configuration to the gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Delivery {
    /// A `WasmPlugin`: Istio's API for Wasm filters, and the default.
    #[default]
    WasmPlugin,
    /// An `EnvoyFilter` holding the same filter and configuration, plus what a WasmPlugin
    /// cannot set: `allow_on_headers_stop_iteration`, which gRPC calls naming the group in
    /// `model_name` need (the filter holds their headers until it has read the message).
    EnvoyFilter,
}

impl Delivery {
    /// The `--delivery` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::WasmPlugin => "wasmplugin",
            Delivery::EnvoyFilter => "envoyfilter",
        }
    }
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Delivery {
    type Err = SettingsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str()
        {
            "wasmplugin" => Ok(Delivery::WasmPlugin),
            "envoyfilter" => Ok(Delivery::EnvoyFilter),
            _ => Err(SettingsError::BadDelivery(s.to_string())),
        }
    }
}

/// Everything the planner needs besides the observed objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Gateway of mesh namespaces without gateway annotations.
    pub default_gateway: GatewayRef,
    /// Namespace of every WasmPlugin; `None`: the namespace of each gateway.
    pub plugin_namespace: Option<String>,
    /// `spec.selector.matchLabels` of the WasmPlugins.
    pub selector: BTreeMap<String, String>,
    /// `spec.url` of the WasmPlugins.
    pub url: String,
    /// `spec.sha256` of the WasmPlugins, when known: for `oci://` URLs Istio compares it with
    /// the image's digest, for `http(s)://` and `file://` with the module's own SHA-256.
    pub sha256: Option<String>,
    /// `spec.imagePullSecret` of the WasmPlugins: a Secret in each WasmPlugin's namespace that
    /// Istio's agent uses to pull an `oci://` module from a private registry.
    pub image_pull_secret: Option<String>,
    pub fail_strategy: FailStrategy,
    /// Whether an InferenceService needs `enable-route: "true"` on its runtime.
    pub require_enable_route: bool,
    /// The resource that carries the filter to each gateway.
    pub delivery: Delivery,
}

impl Default for Settings {
    fn default() -> Self {
        let (key, value) = DEFAULT_SELECTOR;
        Settings {
            default_gateway: DEFAULT_GATEWAY.parse().unwrap_or_else(|_| {
                GatewayRef::new("istio-system", "odh-gateway") // unreachable: the constant parses
            }),
            plugin_namespace: None,
            selector: BTreeMap::from([(key.to_string(), value.to_string())]),
            url: DEFAULT_PLUGIN_URL.to_string(),
            sha256: None,
            image_pull_secret: None,
            fail_strategy: FailStrategy::FailOpen,
            require_enable_route: true,
            delivery: Delivery::WasmPlugin,
        }
    }
}

impl Settings {
    /// Namespace of the WasmPlugin serving `gateway`.
    pub fn plugin_namespace_for(&self, gateway: &GatewayRef) -> String {
        self.plugin_namespace
            .clone()
            .unwrap_or_else(|| gateway.namespace.clone())
    }

    /// Checks the values a user typed; the planner trusts them afterwards.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(namespace) = &self.plugin_namespace {
            if !is_dns_name(namespace) {
                return Err(SettingsError::BadName {
                    what: "plugin namespace",
                    value: namespace.clone(),
                });
            }
        }
        if let Some(secret) = &self.image_pull_secret {
            if self.delivery == Delivery::EnvoyFilter {
                return Err(SettingsError::PullSecretNeedsWasmPlugin);
            }
            if !is_dns_name(secret) {
                return Err(SettingsError::BadName {
                    what: "image pull secret",
                    value: secret.clone(),
                });
            }
        }
        if let Some(sha) = &self.sha256 {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(SettingsError::BadSha256(sha.clone()));
            }
        }
        Ok(())
    }
}

/// Parses one `--selector key=value`.
pub fn parse_selector(s: &str) -> Result<(String, String), SettingsError> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(SettingsError::BadSelector(s.to_string())),
    }
}

/// An RFC 1123 label, as Kubernetes namespace and most object names are.
pub(crate) fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_refs_parse_and_print() {
        let gateway: GatewayRef = "istio-system/odh-gateway".parse().unwrap();
        assert_eq!(gateway, GatewayRef::new("istio-system", "odh-gateway"));
        assert_eq!(gateway.to_string(), "istio-system/odh-gateway");
        for bad in ["odh-gateway", "/x", "a/", "a/b/c", "A/b", ""] {
            assert!(bad.parse::<GatewayRef>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn fail_strategy_accepts_istio_spelling() {
        assert_eq!("FAIL_OPEN".parse(), Ok(FailStrategy::FailOpen));
        assert_eq!("fail-close".parse(), Ok(FailStrategy::FailClose));
        assert!("OPEN".parse::<FailStrategy>().is_err());
    }

    #[test]
    fn defaults_are_the_odh_ones() {
        let settings = Settings::default();
        assert_eq!(settings.default_gateway.to_string(), DEFAULT_GATEWAY);
        assert_eq!(
            settings.selector.get("istio").map(String::as_str),
            Some("ingressgateway")
        );
        assert_eq!(settings.fail_strategy.as_istio(), "FAIL_OPEN");
        assert!(settings.require_enable_route);
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn selectors_and_checksums_are_checked() {
        assert_eq!(
            parse_selector("app=gw").unwrap(),
            ("app".into(), "gw".into())
        );
        assert!(parse_selector("app").is_err());
        assert!(parse_selector("=x").is_err());
        let mut settings = Settings {
            sha256: Some("abc".into()),
            ..Settings::default()
        };
        assert!(settings.validate().is_err());
        settings.sha256 = Some("a".repeat(64));
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn deliveries_parse_as_users_may_write_them() {
        assert_eq!("wasmplugin".parse(), Ok(Delivery::WasmPlugin));
        assert_eq!("EnvoyFilter".parse(), Ok(Delivery::EnvoyFilter));
        assert_eq!("envoy-filter".parse(), Ok(Delivery::EnvoyFilter));
        assert!("lua".parse::<Delivery>().is_err());
        assert_eq!(Delivery::default(), Delivery::WasmPlugin);
        for delivery in [Delivery::WasmPlugin, Delivery::EnvoyFilter] {
            assert_eq!(delivery.to_string().parse(), Ok(delivery));
        }
    }

    #[test]
    fn pull_secrets_need_a_wasm_plugin() {
        let settings = Settings {
            image_pull_secret: Some("quay-pull".into()),
            delivery: Delivery::EnvoyFilter,
            ..Settings::default()
        };
        assert_eq!(
            settings.validate(),
            Err(SettingsError::PullSecretNeedsWasmPlugin)
        );
    }

    #[test]
    fn image_pull_secrets_are_kubernetes_names() {
        let mut settings = Settings {
            image_pull_secret: Some("quay-pull".into()),
            ..Settings::default()
        };
        assert!(settings.validate().is_ok());
        for bad in ["", "Quay", "a/b", "-x", "x_y"] {
            settings.image_pull_secret = Some(bad.into());
            assert_eq!(
                settings.validate(),
                Err(SettingsError::BadName {
                    what: "image pull secret",
                    value: bad.into()
                }),
                "{bad:?} accepted"
            );
        }
    }
}
