//! The body phase of a KServe v2 gRPC call, over a [`MessageHost`] (no proxy-wasm
//! types): the group named in the request message's id field, as ModelMesh reads it.
//!
//! ModelMesh takes a call's model from field 1 of the request message
//! (`model_name` / `name`) and reads the `mm-vmodel-id` header only when that field
//! is absent. So for `/inference.GRPCInferenceService/ModelInfer`, `ModelMetadata`
//! and `ModelReady` with a gRPC protobuf body, the headers wait
//! ([`waits_for_message`]) until the first message's id field is read, and then:
//!
//! | the message's id field | what happens |
//! |---|---|
//! | names a gRPC group | a member is chosen as for the header (override, sticky, weighted); the field and the `mm-vmodel-id` header are both set to it |
//! | absent, names anything else, longer than [`MAX_ID_LEN`] | exactly what the header alone does ([`route`]) |
//! | unreadable: the message is compressed | the header alone decides when it names a model; without one, `INVALID_ARGUMENT` saying what to send |
//! | malformed frame or protobuf, or the request ends early | `INVALID_ARGUMENT` naming the problem |
//!
//! Only the bytes up to the end of the id field are replaced: the rest of the
//! message is never copied (see [`crate::grpc_frame`]). Body bytes are read ahead
//! ([`READ_AHEAD`]): a message with its id first, as every encoder writes it, costs one
//! body read per callback.
//!
//! A host call that fails ends the body phase with the [`HostError`]: the caller lets
//! the request go on and counts it (nothing is written after a failed read, and nothing
//! more after a failed write).

use crate::choose::Rng;
use crate::grpc_frame::{
    is_grpc_protobuf, is_model_call, rewrite_prefix, Body, IdScanner, Scan, FRAME_HEADER_LEN,
    MAX_ID_LEN,
};
use crate::host_api::HostError;
use crate::plan::Plan;
use crate::route::{route, route_message_id, Decision, RequestHeaders, Rewrite};
use std::cell::{Cell, RefCell};

/// How many body bytes the first read of a body callback asks for: the frame header,
/// field 1's tag and length and the longest id a group can have, so a message whose id
/// comes first is read in one host call. Reads outside them (fields after a large one)
/// ask the host for what the scanner needs.
pub const READ_AHEAD: usize = FRAME_HEADER_LEN + 1 + 2 + MAX_ID_LEN;

/// What the body phase needs from the host, beyond reading request headers (which
/// [`RequestHeaders`] serves, from headers read before).
pub trait MessageHost: RequestHeaders {
    /// Sets (replaces) a request header.
    fn set_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Removes a request header.
    fn remove_request_header(&self, name: &str) -> Result<(), HostError>;
    /// Bytes of the request body buffered so far.
    fn buffered(&self) -> usize;
    /// Up to `len` buffered body bytes from `start`.
    fn read_body(&self, start: usize, len: usize) -> Result<Vec<u8>, HostError>;
    /// Replaces the first `len` bytes of the buffered body with `with`.
    fn replace_body_prefix(&self, len: usize, with: &[u8]) -> Result<(), HostError>;
}

/// What to do with the request after a body callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Keep waiting (buffering) for more of the body.
    Wait,
    /// Let the request go on, rewritten for the decision when there is one (already
    /// applied: headers and body are set).
    Continue(Option<Decision>),
    /// Answer the call with gRPC `INVALID_ARGUMENT` and this message.
    Reject(String),
}

/// Must this request wait for its first message before it is routed? Only KServe v2
/// model calls with a gRPC protobuf body, when some group answers gRPC.
pub fn waits_for_message(plan: &Plan, headers: &impl RequestHeaders, end_of_stream: bool) -> bool {
    !end_of_stream
        && plan.has_grpc_groups()
        && headers.header(":path").is_some_and(|p| is_model_call(&p))
        && headers
            .header("content-type")
            .is_some_and(|ct| is_grpc_protobuf(&ct))
}

/// The body as the host buffers it, for one body callback: the first read fetches up to
/// [`READ_AHEAD`] bytes from where it starts, and later reads inside them are served
/// from memory. The first host error is kept (reads then return nothing).
struct HostBody<'a, H: MessageHost> {
    host: &'a H,
    /// Bytes read ahead, and the body offset they start at.
    ahead: RefCell<Option<(usize, Vec<u8>)>>,
    error: Cell<Option<HostError>>,
}

impl<'a, H: MessageHost> HostBody<'a, H> {
    fn new(host: &'a H) -> Self {
        HostBody {
            host,
            ahead: RefCell::new(None),
            error: Cell::new(None),
        }
    }

    fn fetch(&self, start: usize, len: usize) -> Vec<u8> {
        if self.error.get().is_some() {
            return Vec::new();
        }
        match self.host.read_body(start, len) {
            Ok(bytes) => bytes,
            Err(error) => {
                self.error.set(Some(error));
                Vec::new()
            }
        }
    }

    /// Whether a read failed; then the scan's answer means nothing.
    fn failed(&self) -> Result<(), HostError> {
        match self.error.get() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl<H: MessageHost> Body for HostBody<'_, H> {
    fn buffered(&self) -> usize {
        self.host.buffered()
    }
    fn read(&self, start: usize, len: usize) -> Vec<u8> {
        let buffered = self.host.buffered();
        if start >= buffered || len == 0 {
            return Vec::new();
        }
        let len = len.min(buffered - start);
        let mut ahead = self.ahead.borrow_mut();
        if ahead.is_none() {
            let ahead_len = READ_AHEAD.max(len).min(buffered - start);
            *ahead = Some((start, self.fetch(start, ahead_len)));
        }
        let inside = ahead.as_ref().and_then(|(at, bytes)| {
            let from = start.checked_sub(*at)?;
            bytes.get(from..from.checked_add(len)?)
        });
        if let Some(bytes) = inside {
            return bytes.to_vec();
        }
        let mut bytes = self.fetch(start, len);
        bytes.truncate(len);
        bytes
    }
}

/// One body callback of a request that waits for its message ([`waits_for_message`]).
/// `end_of_stream`: the body is complete (also when request trailers arrive).
pub fn on_body(
    plan: &Plan,
    rng: &mut Rng,
    scanner: &mut IdScanner,
    host: &impl MessageHost,
    end_of_stream: bool,
) -> Result<Outcome, HostError> {
    let body = HostBody::new(host);
    let scan = scanner.scan(&body, end_of_stream);
    body.failed()?;
    match scan {
        Scan::NeedMore => Ok(Outcome::Wait),
        Scan::Id(field) => {
            let Some(group) = plan.grpc_group(&field.id) else {
                return by_header(plan, rng, host);
            };
            let Some(decision) = route_message_id(plan, rng, host, group) else {
                return Ok(Outcome::Continue(None));
            };
            let Some(member) = decision.member_in(plan) else {
                return Ok(Outcome::Continue(None));
            };
            let between_len = field.length_at.saturating_sub(FRAME_HEADER_LEN);
            let between = body.read(FRAME_HEADER_LEN, between_len);
            body.failed()?;
            let Some(prefix) = rewrite_prefix(&field, &between, member.name.as_bytes()) else {
                return Ok(Outcome::Reject(
                    "modelsplit: the request message is too large to rewrite".to_string(),
                ));
            };
            host.replace_body_prefix(field.value.end, &prefix)?;
            if host.header("content-length").is_some() {
                host.remove_request_header("content-length")?;
            }
            host.set_request_header(plan.grpc_header(), member.name.as_bytes())?;
            Ok(Outcome::Continue(Some(decision)))
        }
        Scan::Absent | Scan::TooLong => by_header(plan, rng, host),
        Scan::Compressed => {
            if host.header(plan.grpc_header()).is_some() {
                return by_header(plan, rng, host);
            }
            let encoding = host
                .header("grpc-encoding")
                .map(|e| String::from_utf8_lossy(&e).into_owned())
                .unwrap_or_else(|| "unknown".to_string());
            Ok(Outcome::Reject(format!(
                "modelsplit: the request message is compressed (grpc-encoding {encoding}), so the \
                 gateway cannot read its model name to choose a member of a model group: send it \
                 uncompressed (grpc-encoding identity), or name the model in the {} header",
                plan.grpc_header()
            )))
        }
        Scan::Invalid(problem) => Ok(Outcome::Reject(format!(
            "modelsplit: malformed gRPC request: {problem} (expected one length-prefixed, \
             uncompressed protobuf message with the model name in field 1 of at most \
             {MAX_ID_LEN} bytes)"
        ))),
    }
}

/// The header route, exactly as for a request that did not wait ([`route`]).
fn by_header(plan: &Plan, rng: &mut Rng, host: &impl MessageHost) -> Result<Outcome, HostError> {
    let Some(decision) = route(plan, rng, host) else {
        return Ok(Outcome::Continue(None));
    };
    let Some(member) = decision.member_in(plan) else {
        return Ok(Outcome::Continue(None));
    };
    match &decision.rewrite {
        Rewrite::Path(path) => host.set_request_header(":path", path)?,
        Rewrite::ModelHeader | Rewrite::MessageId => {
            host.set_request_header(plan.grpc_header(), member.name.as_bytes())?
        }
    }
    Ok(Outcome::Continue(Some(decision)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::choose::How;
    use crate::grpc_frame::{IdScanner, Scan};
    use std::cell::RefCell;
    use std::collections::HashMap;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    /// A request: headers, a body that arrives in chunks, and what the filter did.
    struct Mock {
        headers: RefCell<HashMap<String, Vec<u8>>>,
        body: RefCell<Vec<u8>>,
        buffered: usize,
        copied_out: RefCell<usize>,
        reads: RefCell<usize>,
        refuse_reads: bool,
        refuse_writes: bool,
    }

    impl Mock {
        fn new(headers: &[(&str, &str)], body: Vec<u8>) -> Mock {
            Mock {
                headers: RefCell::new(
                    headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                        .collect(),
                ),
                buffered: body.len(),
                body: RefCell::new(body),
                copied_out: RefCell::new(0),
                reads: RefCell::new(0),
                refuse_reads: false,
                refuse_writes: false,
            }
        }
        fn header_str(&self, name: &str) -> Option<String> {
            self.headers
                .borrow()
                .get(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        }
    }

    impl RequestHeaders for Mock {
        fn header(&self, name: &str) -> Option<Vec<u8>> {
            self.headers.borrow().get(name).cloned()
        }
    }

    impl MessageHost for Mock {
        fn set_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
            self.headers
                .borrow_mut()
                .insert(name.to_string(), value.to_vec());
            Ok(())
        }
        fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
            self.headers.borrow_mut().remove(name);
            Ok(())
        }
        fn buffered(&self) -> usize {
            self.buffered
        }
        fn read_body(&self, start: usize, len: usize) -> Result<Vec<u8>, HostError> {
            if self.refuse_reads {
                return Err(HostError(10));
            }
            let body = self.body.borrow();
            let end = (start + len).min(self.buffered);
            *self.copied_out.borrow_mut() += end - start;
            *self.reads.borrow_mut() += 1;
            Ok(body[start..end].to_vec())
        }
        fn replace_body_prefix(&self, len: usize, with: &[u8]) -> Result<(), HostError> {
            if self.refuse_writes {
                return Err(HostError(10));
            }
            self.body.borrow_mut().splice(..len, with.iter().copied());
            Ok(())
        }
    }

    fn plan() -> Plan {
        Plan::from_json(
            br#"{"groups":[
              {"namespace":"apps","name":"ai-model","stickyHeader":"x-user-id",
               "members":[{"name":"ai-model-one","weight":80},{"name":"ai-model-two","weight":20},{"name":"dark","weight":0}]},
              {"namespace":"apps","name":"other","members":[{"name":"o-1","weight":1}]},
              {"namespace":"apps","name":"rest-only","grpc":false,"members":[{"name":"r","weight":1}]}]}"#,
        )
        .unwrap()
    }

    fn ld(field: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![field << 3 | 2];
        let mut len = value.len();
        while len >= 0x80 {
            out.push(len as u8 | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(value);
        out
    }

    fn infer(model_name: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut message = ld(1, model_name);
        message.extend_from_slice(tail);
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend(message);
        body
    }

    const GRPC: [(&str, &str); 2] = [
        (":path", "/inference.GRPCInferenceService/ModelInfer"),
        ("content-type", "application/grpc"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut all = GRPC.to_vec();
        all.extend_from_slice(extra);
        all
    }

    fn run(mock: &Mock, seed: u64) -> Outcome {
        let mut scanner = IdScanner::new();
        on_body(&plan(), &mut Rng::new(seed), &mut scanner, mock, true).unwrap()
    }

    /// The id the body now carries.
    fn body_id(mock: &Mock) -> Vec<u8> {
        match IdScanner::new().scan(mock.body.borrow().as_slice(), true) {
            Scan::Id(field) => field.id,
            other => panic!("{other:?}"),
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn only_kserve_model_calls_with_grpc_protobuf_bodies_wait() {
        let plan = plan();
        let grpc = Mock::new(&GRPC, vec![]);
        assert!(waits_for_message(&plan, &grpc, false));
        assert!(!waits_for_message(&plan, &grpc, true), "no body, no wait");
        for (path, ct) in [
            (
                "/inference.GRPCInferenceService/ServerLive",
                "application/grpc",
            ),
            (
                "/modelmesh/apps/v2/models/ai-model/infer",
                "application/json",
            ),
            (
                "/inference.GRPCInferenceService/ModelInfer",
                "application/grpc-web-text",
            ),
            (
                "/inference.GRPCInferenceService/ModelInfer",
                "application/json",
            ),
        ] {
            let m = Mock::new(&[(":path", path), ("content-type", ct)], vec![]);
            assert!(!waits_for_message(&plan, &m, false), "{path} {ct}");
        }
        let no_grpc_groups = Plan::from_json(
            br#"{"groups":[{"namespace":"a","name":"g","grpc":false,"members":[{"name":"m","weight":1}]}]}"#,
        )
        .unwrap();
        assert!(!waits_for_message(&no_grpc_groups, &grpc, false));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_group_in_model_name_is_split_and_both_places_name_the_member() {
        let mut seen = HashMap::new();
        for seed in 0..400 {
            let mock = Mock::new(&GRPC, infer(b"ai-model", &ld(3, b"req-1")));
            let Outcome::Continue(Some(decision)) = run(&mock, seed) else {
                panic!()
            };
            assert_eq!(decision.rewrite, Rewrite::MessageId);
            let member = mock.header_str("mm-vmodel-id").unwrap();
            assert_eq!(body_id(&mock), member.as_bytes());
            assert!(mock.body.borrow().ends_with(&ld(3, b"req-1")));
            *seen.entry(member).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen["ai-model-one"] > seen["ai-model-two"], "{seen:?}");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn override_and_sticky_work_as_for_the_header() {
        let forced = Mock::new(
            &with(&[("x-modelsplit-member", "dark")]),
            infer(b"ai-model", &[]),
        );
        let Outcome::Continue(Some(d)) = run(&forced, 1) else {
            panic!()
        };
        assert_eq!(d.how, How::Override);
        assert_eq!(body_id(&forced), b"dark");
        let mut members = std::collections::BTreeSet::new();
        for seed in 0..50 {
            let sticky = Mock::new(&with(&[("x-user-id", "alice")]), infer(b"ai-model", &[]));
            let Outcome::Continue(Some(d)) = run(&sticky, seed) else {
                panic!()
            };
            assert_eq!(d.how, How::Sticky);
            members.insert(body_id(&sticky));
        }
        assert_eq!(members.len(), 1);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn the_message_wins_over_the_header_as_in_modelmesh() {
        // Both name the group: one choice, both rewritten to it.
        let both = Mock::new(
            &with(&[("mm-vmodel-id", "ai-model")]),
            infer(b"ai-model", &[]),
        );
        assert!(matches!(run(&both, 3), Outcome::Continue(Some(_))));
        assert_eq!(
            body_id(&both),
            both.header_str("mm-vmodel-id").unwrap().as_bytes()
        );
        // The header names another group: ModelMesh reads the message, so does the filter.
        let other = Mock::new(&with(&[("mm-vmodel-id", "other")]), infer(b"ai-model", &[]));
        let Outcome::Continue(Some(d)) = run(&other, 3) else {
            panic!()
        };
        assert_eq!(&*plan().group(d.group).unwrap().name, "ai-model");
        assert_eq!(
            body_id(&other),
            other.header_str("mm-vmodel-id").unwrap().as_bytes()
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_non_group_in_the_message_is_left_alone_and_the_header_decides() {
        for name in [
            &b"plain"[..],
            b"ai-model-one",
            b"rest-only",
            b"AI-MODEL",
            b"",
        ] {
            let body = infer(name, &[]);
            let alone = Mock::new(&GRPC, body.clone());
            assert_eq!(run(&alone, 1), Outcome::Continue(None));
            assert_eq!(*alone.body.borrow(), body);
            assert_eq!(alone.header_str("mm-vmodel-id"), None);
            // With the group in the header: the header is rewritten as before, the body not.
            let header = Mock::new(&with(&[("mm-vmodel-id", "ai-model")]), body.clone());
            let Outcome::Continue(Some(d)) = run(&header, 1) else {
                panic!()
            };
            assert_eq!(d.rewrite, Rewrite::ModelHeader);
            assert_eq!(*header.body.borrow(), body);
            assert_ne!(header.header_str("mm-vmodel-id").unwrap(), "ai-model");
        }
        // No field 1 at all: the header decides.
        let mut empty = vec![0, 0, 0, 0, 0];
        let absent = Mock::new(&with(&[("mm-vmodel-id", "ai-model")]), empty.clone());
        assert!(matches!(run(&absent, 1), Outcome::Continue(Some(_))));
        empty[4] = 3;
        empty.extend(ld(2, b"x"));
        let absent = Mock::new(&GRPC, empty);
        assert_eq!(run(&absent, 1), Outcome::Continue(None));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn compressed_messages_are_never_guessed_at() {
        let mut body = infer(b"ai-model", &[]);
        body[0] = 1;
        let bare = Mock::new(&with(&[("grpc-encoding", "gzip")]), body.clone());
        let Outcome::Reject(message) = run(&bare, 1) else {
            panic!()
        };
        assert!(
            message.contains("compressed (grpc-encoding gzip)"),
            "{message}"
        );
        assert!(message.contains("uncompressed"), "{message}");
        // A header naming a model: routed by the header alone, as before.
        let header = Mock::new(&with(&[("mm-vmodel-id", "ai-model")]), body.clone());
        assert!(matches!(run(&header, 1), Outcome::Continue(Some(_))));
        assert_eq!(*header.body.borrow(), body);
        let plain = Mock::new(&with(&[("mm-vmodel-id", "plain")]), body.clone());
        assert_eq!(run(&plain, 1), Outcome::Continue(None));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn malformed_and_truncated_messages_are_rejected_clearly() {
        let mut bad = infer(b"ai-model", &[]);
        bad[5] = 0x08; // field 1 as a varint
        let Outcome::Reject(message) = run(&Mock::new(&GRPC, bad), 1) else {
            panic!()
        };
        assert!(
            message.contains("field 1 (the model name) is not a string"),
            "{message}"
        );
        let body = infer(b"ai-model", &[]);
        let mut cut = Mock::new(&GRPC, body.clone());
        cut.buffered = 9;
        let mut scanner = IdScanner::new();
        let mut rng = Rng::new(1);
        assert_eq!(
            on_body(&plan(), &mut rng, &mut scanner, &cut, false),
            Ok(Outcome::Wait)
        );
        let Ok(Outcome::Reject(message)) = on_body(&plan(), &mut rng, &mut scanner, &cut, true)
        else {
            panic!()
        };
        assert!(message.contains("ended inside"), "{message}");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_failing_host_call_ends_the_body_phase_with_its_error() {
        let body = infer(b"ai-model", &[]);
        let mut refused = Mock::new(&GRPC, body.clone());
        refused.refuse_writes = true;
        let mut scanner = IdScanner::new();
        assert_eq!(
            on_body(&plan(), &mut Rng::new(1), &mut scanner, &refused, true),
            Err(HostError(10))
        );
        assert_eq!(
            refused.header_str("mm-vmodel-id"),
            None,
            "nothing written after a failed write"
        );
        let mut unreadable = Mock::new(&with(&[("mm-vmodel-id", "ai-model")]), body.clone());
        unreadable.refuse_reads = true;
        let mut scanner = IdScanner::new();
        assert_eq!(
            on_body(&plan(), &mut Rng::new(1), &mut scanner, &unreadable, true),
            Err(HostError(10)),
            "a failed read is no truncated message"
        );
        assert_eq!(*unreadable.body.borrow(), body);
        assert_eq!(
            unreadable.header_str("mm-vmodel-id").unwrap(),
            "ai-model",
            "nothing written after a failed read"
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn an_id_first_message_is_read_in_one_host_call() {
        let mock = Mock::new(&GRPC, infer(&[b'g'; MAX_ID_LEN], &ld(3, b"req-1")));
        assert_eq!(run(&mock, 1), Outcome::Continue(None), "not a group");
        assert_eq!(*mock.reads.borrow(), 1);
        let mock = Mock::new(&GRPC, infer(b"ai-model", &ld(3, b"req-1")));
        assert!(matches!(run(&mock, 1), Outcome::Continue(Some(_))));
        assert_eq!(*mock.reads.borrow(), 1);
        // The id after another field: read ahead, then each field header and the id.
        let mut message = ld(3, &[7; 600]);
        message.extend(ld(1, b"ai-model"));
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend(message);
        let late = Mock::new(&GRPC, body);
        assert!(matches!(run(&late, 1), Outcome::Continue(Some(_))));
        assert_eq!(
            body_id(&late),
            late.header_str("mm-vmodel-id").unwrap().as_bytes()
        );
        assert!(*late.reads.borrow() <= 4, "{}", late.reads.borrow());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_large_message_with_the_id_first_copies_a_few_bytes() {
        let mut tail = vec![0x3a, 0x80, 0x80, 0x40]; // field 7, 1 MiB
        tail.extend(vec![0x5a; 1 << 20]);
        let mut body = infer(b"ai-model", &[]);
        body.extend_from_slice(&tail);
        let len = (body.len() - 5) as u32;
        body[1..5].copy_from_slice(&len.to_be_bytes());
        let mut mock = Mock::new(&with(&[("content-length", "1")]), body);
        mock.buffered = 16_384; // the first chunk
        assert!(matches!(run(&mock, 1), Outcome::Continue(Some(_))));
        assert!(
            *mock.copied_out.borrow() <= READ_AHEAD,
            "{}",
            mock.copied_out.borrow()
        );
        assert_eq!(*mock.reads.borrow(), 1);
        assert_eq!(mock.header_str("content-length"), None);
        assert!(mock.body.borrow().ends_with(&tail));
    }
}
