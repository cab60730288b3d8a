//! A small keep-alive HTTP/1.1 client for REST requests and the Envoy admin API.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad request {what}: {reason}")]
    Build { what: String, reason: String },
    #[error("{method} {url}: {reason}")]
    Send {
        method: Method,
        url: String,
        reason: String,
    },
}

/// One HTTP answer, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// A response header as text, if present and valid.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A pooled client: clones share connections, so many tasks can use one.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    /// A request not answered within this long fails (none: it waits).
    timeout: Option<std::time::Duration>,
}

impl Default for HttpClient {
    fn default() -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build_http();
        HttpClient {
            client,
            timeout: None,
        }
    }
}

impl HttpClient {
    /// A client whose requests fail after `timeout`: for polling a port that may belong
    /// to a process that accepts connections and never answers.
    pub fn with_timeout(timeout: std::time::Duration) -> HttpClient {
        HttpClient {
            timeout: Some(timeout),
            ..HttpClient::default()
        }
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, HttpError> {
        let build = |what: &str, reason: String| HttpError::Build {
            what: what.to_string(),
            reason,
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(url)
            .body(Full::new(body))
            .map_err(|e| build(url, e.to_string()))?;
        for (name, value) in headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| build(name, e.to_string()))?;
            let value = HeaderValue::from_str(value).map_err(|e| build(value, e.to_string()))?;
            request.headers_mut().append(name, value);
        }
        let failed = |reason: String| HttpError::Send {
            method: method.clone(),
            url: url.to_string(),
            reason,
        };
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| failed(format!("{e:?}")))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| failed(e.to_string()))?
                .to_bytes();
            Ok::<_, HttpError>((parts, body))
        };
        let (parts, body) = match self.timeout {
            Some(timeout) => tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| failed(format!("no answer within {timeout:?}")))??,
            None => exchange.await?,
        };
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// `GET url`.
    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Reply, HttpError> {
        self.send(Method::GET, url, headers, Bytes::new()).await
    }

    /// `POST url` with a JSON body.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> Result<Reply, HttpError> {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(Method::POST, url, &all, Bytes::from(body.to_string()))
            .await
    }
}
