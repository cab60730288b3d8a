//! Raw gRPC calls over h2c: any bytes as the request body (compressed flags,
//! malformed frames, fields in any order), the status read from headers or trailers.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;

/// A gRPC answer as seen on the wire.
#[derive(Debug, Clone)]
pub struct RawReply {
    /// HTTP status (200 for every gRPC answer, errors included).
    pub http_status: u16,
    /// `grpc-status` from the trailers, or from the headers of a trailers-only answer.
    pub grpc_status: Option<u32>,
    /// `grpc-message`, percent-decoded.
    pub grpc_message: String,
    /// Response headers and trailers, as (name, value) text pairs.
    pub metadata: Vec<(String, String)>,
    /// The response message (frame header removed), if any.
    pub message: Bytes,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The response decoded as `T`; panics when it is not one.
    pub fn decode<T: Message + Default>(&self) -> T {
        T::decode(self.message.clone()).expect("a protobuf response message")
    }
}

/// One length-prefixed gRPC frame.
pub fn frame(compressed: bool, message: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// A length-delimited protobuf field (`tag`, varint length, bytes).
pub fn string_field(field: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(value.len() as u64, &mut out);
    out.extend_from_slice(value);
    out
}

/// Sends `body` to `base_url` + `/inference.GRPCInferenceService/<method>` over h2c.
pub async fn call(
    base_url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> RawReply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut request = Request::builder()
        .method("POST")
        .uri(format!(
            "{base_url}/inference.GRPCInferenceService/{method}"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body))).expect("request");
    let response = client.request(request).await.expect("an HTTP/2 answer");
    let http_status = response.status().as_u16();
    let mut metadata: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let collected = response
        .into_body()
        .collect()
        .await
        .expect("the answer's body");
    if let Some(trailers) = collected.trailers() {
        metadata.extend(trailers.iter().map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        }));
    }
    let body = collected.to_bytes();
    let message = if body.len() >= 5 {
        body.slice(5..)
    } else {
        Bytes::new()
    };
    let find = |name: &str| {
        metadata
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    RawReply {
        http_status,
        grpc_status: find("grpc-status").and_then(|s| s.parse().ok()),
        grpc_message: percent_decode(&find("grpc-message").unwrap_or_default()),
        metadata,
        message,
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_of_grpc_messages() {
        assert_eq!(percent_decode("a%20b%25%C3%A9%zz"), "a b%é%zz");
    }

    #[test]
    fn frames_and_fields() {
        assert_eq!(frame(true, b"ab"), [1, 0, 0, 0, 2, b'a', b'b']);
        assert_eq!(string_field(1, b"m"), [0x0a, 1, b'm']);
        assert_eq!(string_field(7, &[0; 200])[..3], [0x3a, 0xc8, 0x01]);
    }
}
