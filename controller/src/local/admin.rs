//! Envoy's admin API, read to confirm that Envoy applied each written step: the
//! update counters of the CDS, RDS and ECDS subscriptions in `/stats`.

use super::envoy_files::{WatchedFile, FILTER_NAME, LISTENER_NAME, ROUTE_CONFIG_NAME};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long one admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// An admin URL that is not `http://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--admin {0:?} must be http://HOST:PORT, e.g. http://127.0.0.1:9901")]
pub struct AdminUrlError(pub String);

/// Envoy's admin interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// `host:port`.
    authority: String,
}

/// Per watched file: (applied, rejected) update counts.
pub type Counters = BTreeMap<WatchedFile, (u64, u64)>;

impl Admin {
    /// Parses `http://HOST:PORT` (a trailing `/` is fine).
    pub fn parse(url: &str) -> Result<Admin, AdminUrlError> {
        let bad = || AdminUrlError(url.to_string());
        let authority = url
            .strip_prefix("http://")
            .ok_or_else(bad)?
            .trim_end_matches('/');
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || authority.contains('/') || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        Ok(Admin {
            authority: authority.to_string(),
        })
    }

    /// The address for the bootstrap's admin listener, when the URL names an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.authority.parse().ok()
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.authority)
    }

    /// The update counters of the three watched files.
    pub fn counters(&self) -> std::io::Result<Counters> {
        let stats = parse_stats(
            &self.get("/stats?filter=update_success|update_rejected|config_reload|config_fail")?,
        );
        let get = |name: &str| stats.get(name).copied().unwrap_or(0);
        let rds = format!("http.{LISTENER_NAME}.rds.{ROUTE_CONFIG_NAME}");
        let ecds = format!("extension_config_discovery.http_filter.{FILTER_NAME}");
        Ok(BTreeMap::from([
            (
                WatchedFile::Cds,
                (
                    get("cluster_manager.cds.update_success"),
                    get("cluster_manager.cds.update_rejected"),
                ),
            ),
            (
                WatchedFile::Rds,
                (
                    get(&format!("{rds}.update_success")),
                    get(&format!("{rds}.update_rejected")),
                ),
            ),
            (
                WatchedFile::Ecds,
                (
                    get(&format!("{ecds}.config_reload")),
                    get(&format!("{ecds}.config_fail")),
                ),
            ),
        ]))
    }

    /// `GET path` over a fresh connection; the body as text.
    pub fn get(&self, path: &str) -> std::io::Result<String> {
        let address =
            self.authority.to_socket_addrs()?.next().ok_or_else(|| {
                std::io::Error::other(format!("{} does not resolve", self.authority))
            })?;
        let mut stream = TcpStream::connect_timeout(&address, REQUEST_TIMEOUT)?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.authority
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("malformed HTTP response from Envoy admin"))?;
        if !head.starts_with("HTTP/1.1 200") {
            let status = head.lines().next().unwrap_or_default();
            return Err(std::io::Error::other(format!(
                "Envoy admin answered {status}"
            )));
        }
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return dechunk(body)
                .ok_or_else(|| std::io::Error::other("malformed chunked body from Envoy admin"));
        }
        Ok(body.to_string())
    }
}

/// Decodes an HTTP/1.1 chunked body (read to the end of the connection).
fn dechunk(mut body: &str) -> Option<String> {
    let mut decoded = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(decoded);
        }
        decoded.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// Envoy's plain-text stats (`name: value`); non-numeric lines are skipped.
pub fn parse_stats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(": ")?;
            Some((name.trim().to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls() {
        let admin = Admin::parse("http://127.0.0.1:9901/").unwrap();
        assert_eq!(
            admin.socket_addr(),
            Some(SocketAddr::from(([127, 0, 0, 1], 9901)))
        );
        assert_eq!(admin.url(), "http://127.0.0.1:9901");
        let named = Admin::parse("http://envoy:9901").unwrap();
        assert_eq!(named.socket_addr(), None);
        for bad in [
            "127.0.0.1:9901",
            "https://x:1",
            "http://x",
            "http://x:port",
            "http://:1",
            "http://x:1/stats",
        ] {
            assert!(Admin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk("3\r\na: \r\n2;x=y\r\n1\n\r\n0\r\n\r\n").as_deref(),
            Some("a: 1\n")
        );
        assert_eq!(dechunk("5\r\nab"), None);
    }

    #[test]
    fn stats_lines() {
        let stats = parse_stats("a.b: 3\nhist: P0(nan,1)\nc: 0\n");
        assert_eq!(stats, BTreeMap::from([("a.b".into(), 3), ("c".into(), 0)]));
    }
}
