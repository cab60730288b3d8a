//! The first message of a KServe v2 gRPC call, without the host: the 5-byte gRPC
//! frame header and the model id in protobuf field 1 (`model_name` of
//! `ModelInferRequest`, `name` of `ModelMetadataRequest` and `ModelReadyRequest`),
//! found and rewritten with plain functions over bytes that never panic.
//!
//! The id is read the way ModelMesh reads it (`ProtoSplicer.extractId`): the
//! top-level fields in order, skipping the others by their wire type, and the
//! *first* field 1 is the id (ModelMesh also rewrites only that one). A field 1 that
//! is not length-delimited, a group wire type, a varint over 10 bytes or a length
//! past the end of the message is malformed, as it is for ModelMesh.
//!
//! Reading is incremental and copies little: [`IdScanner`] keeps its place between
//! body chunks and reads only field headers (a few bytes each) and, at the end, the
//! id itself; the fields it skips are never read. Rewriting replaces the body's
//! bytes up to the end of the id ([`rewrite_prefix`]); the rest of the message is
//! untouched, so a large request whose id comes first costs a few bytes of copying.

use std::fmt;
use std::ops::Range;

/// gRPC's message prefix: 1 flag byte (bit 0: compressed) and a big-endian u32 length.
pub const FRAME_HEADER_LEN: usize = 5;
/// Ids longer than this are never a group name (Kubernetes names and label values
/// are at most 253 bytes): such a field is left alone and never read.
pub const MAX_ID_LEN: usize = 253;
/// How much the scanner asks the host for at once: a tag and a length varint fit.
const WINDOW: usize = 32;
/// A protobuf varint is at most 10 bytes.
const MAX_VARINT_LEN: usize = 10;

/// The KServe v2 gRPC service.
const SERVICE: &[u8] = b"/inference.GRPCInferenceService/";
/// Its model-scoped calls whose request names the model in field 1.
const MODEL_METHODS: [&[u8]; 3] = [b"ModelInfer", b"ModelMetadata", b"ModelReady"];

/// Is `path` one of `/inference.GRPCInferenceService/ModelInfer|ModelMetadata|ModelReady`?
pub fn is_model_call(path: &[u8]) -> bool {
    path.strip_prefix(SERVICE)
        .is_some_and(|method| MODEL_METHODS.contains(&method))
}

/// Is the body gRPC's length-prefixed protobuf: `application/grpc` or
/// `application/grpc+proto` (any case, optionally followed by `;` parameters)?
/// gRPC-Web and other encodings are not.
pub fn is_grpc_protobuf(content_type: &[u8]) -> bool {
    let essence = match content_type.iter().position(|&b| b == b';') {
        Some(end) => content_type.get(..end).unwrap_or_default(),
        None => content_type,
    };
    let essence = essence.trim_ascii();
    essence.eq_ignore_ascii_case(b"application/grpc")
        || essence.eq_ignore_ascii_case(b"application/grpc+proto")
}

/// Read access to the request body buffered so far.
pub trait Body {
    /// Bytes buffered so far.
    fn buffered(&self) -> usize;
    /// Up to `len` bytes from `start` (fewer at the end of what is buffered, none past it).
    fn read(&self, start: usize, len: usize) -> Vec<u8>;
}

impl Body for [u8] {
    fn buffered(&self) -> usize {
        self.len()
    }
    fn read(&self, start: usize, len: usize) -> Vec<u8> {
        let end = start.saturating_add(len).min(self.len());
        self.get(start..end).map(<[u8]>::to_vec).unwrap_or_default()
    }
}

/// Why a request message cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The body ended inside the frame header or the message.
    Truncated,
    /// The request ended without any message.
    NoMessage,
    /// Frame flag bits other than bit 0 set.
    ReservedFlags,
    /// The frame's length does not fit this platform's address space.
    TooLarge,
    /// A varint of more than 10 bytes or a tag that is not a u32.
    BadVarint,
    /// Field number 0, or wire type 6 or 7.
    BadTag,
    /// Wire types 3 and 4 (groups): ModelMesh refuses them too.
    GroupWireType,
    /// Field 1 with a wire type other than length-delimited.
    IdNotAString,
    /// A field that runs past the end of the message.
    FieldPastEnd,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Problem::Truncated => "the request ended inside its first message",
            Problem::NoMessage => "the request has no message",
            Problem::ReservedFlags => "the gRPC frame sets reserved flag bits",
            Problem::TooLarge => "the gRPC message length is too large",
            Problem::BadVarint => "a protobuf varint is malformed",
            Problem::BadTag => "a protobuf field tag is malformed",
            Problem::GroupWireType => "the message uses protobuf groups",
            Problem::IdNotAString => "field 1 (the model name) is not a string",
            Problem::FieldPastEnd => "a protobuf field runs past the end of the message",
        })
    }
}

/// Field 1 of the first message, found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdField {
    /// The frame's flag byte (0: uncompressed).
    pub flags: u8,
    /// The message length from the frame header.
    pub message_len: u32,
    /// Body offset of the field's length varint (its tag is just before).
    pub length_at: usize,
    /// Body range of the id's bytes.
    pub value: Range<usize>,
    /// The id (at most [`MAX_ID_LEN`] bytes).
    pub id: Vec<u8>,
}

/// What the body says so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// More of the body is needed (call again with more buffered).
    NeedMore,
    /// The first field 1.
    Id(IdField),
    /// The message has no field 1: ModelMesh reads the header instead.
    Absent,
    /// Field 1 is longer than [`MAX_ID_LEN`]: not a group name, left unread.
    TooLong,
    /// The message is compressed: its fields cannot be read.
    Compressed,
    /// The body is not a well-formed message.
    Invalid(Problem),
}

/// Finds the first message's field 1 as the body arrives; keeps its place between calls.
#[derive(Debug, Clone, Default)]
pub struct IdScanner {
    /// Frame flags and the body offset where the message ends, once the header is read.
    frame: Option<(u8, u32, usize)>,
    /// Body offset of the next field's tag.
    next: usize,
    /// The result, once known (further calls return it again).
    done: Option<Scan>,
}

impl IdScanner {
    pub fn new() -> IdScanner {
        IdScanner::default()
    }

    /// Reads on from where the last call stopped. `end_of_stream`: nothing more will come.
    pub fn scan(&mut self, body: &(impl Body + ?Sized), end_of_stream: bool) -> Scan {
        if let Some(done) = &self.done {
            return done.clone();
        }
        let scan = self.step(body);
        let scan = match scan {
            Scan::NeedMore if end_of_stream => Scan::Invalid(if body.buffered() == 0 {
                Problem::NoMessage
            } else {
                Problem::Truncated
            }),
            other => other,
        };
        if scan != Scan::NeedMore {
            self.done = Some(scan.clone());
        }
        scan
    }

    fn step(&mut self, body: &(impl Body + ?Sized)) -> Scan {
        let (flags, message_len, end) = match self.frame {
            Some(frame) => frame,
            None => {
                let header = body.read(0, FRAME_HEADER_LEN);
                let Ok(header) = <[u8; FRAME_HEADER_LEN]>::try_from(header.as_slice()) else {
                    return Scan::NeedMore;
                };
                let [flags, a, b, c, d] = header;
                if flags & !1 != 0 {
                    return Scan::Invalid(Problem::ReservedFlags);
                }
                if flags & 1 != 0 {
                    return Scan::Compressed;
                }
                let message_len = u32::from_be_bytes([a, b, c, d]);
                let Some(end) = usize::try_from(message_len)
                    .ok()
                    .and_then(|len| len.checked_add(FRAME_HEADER_LEN))
                else {
                    return Scan::Invalid(Problem::TooLarge);
                };
                self.frame = Some((flags, message_len, end));
                self.next = FRAME_HEADER_LEN;
                (flags, message_len, end)
            }
        };
        loop {
            if self.next >= end {
                return Scan::Absent;
            }
            let want = WINDOW.min(end - self.next);
            let window = body.read(self.next, want);
            // The window holds every byte up to `want`: a varint cut short is malformed.
            let complete = window.len() == want;
            let mut at = 0;
            let Some(tag) = read_varint(&window, &mut at) else {
                return short(complete, window.len());
            };
            let Ok(tag) = u32::try_from(tag) else {
                return Scan::Invalid(Problem::BadVarint);
            };
            let (field, wire) = (tag >> 3, tag & 7);
            if field == 0 {
                return Scan::Invalid(Problem::BadTag);
            }
            if field == 1 && wire != 2 {
                return Scan::Invalid(Problem::IdNotAString);
            }
            let skip = match wire {
                0 => match read_varint(&window, &mut at) {
                    Some(_) => 0,
                    None => return short(complete, window.len()),
                },
                1 => 8,
                5 => 4,
                2 => {
                    let length_at = self.next + at;
                    let Some(len) = read_varint(&window, &mut at) else {
                        return short(complete, window.len());
                    };
                    let start = self.next + at;
                    let Some(value_end) = usize::try_from(len)
                        .ok()
                        .and_then(|len| start.checked_add(len))
                        .filter(|&value_end| value_end <= end)
                    else {
                        return Scan::Invalid(Problem::FieldPastEnd);
                    };
                    if field == 1 {
                        return found(body, flags, message_len, length_at, start..value_end);
                    }
                    value_end - start
                }
                3 | 4 => return Scan::Invalid(Problem::GroupWireType),
                _ => return Scan::Invalid(Problem::BadTag),
            };
            let Some(next) = (self.next + at)
                .checked_add(skip)
                .filter(|&next| next <= end)
            else {
                return Scan::Invalid(Problem::FieldPastEnd);
            };
            self.next = next;
        }
    }
}

/// The id at `value`, once it is buffered.
fn found(
    body: &(impl Body + ?Sized),
    flags: u8,
    message_len: u32,
    length_at: usize,
    value: Range<usize>,
) -> Scan {
    if value.len() > MAX_ID_LEN {
        return Scan::TooLong;
    }
    if body.buffered() < value.end {
        return Scan::NeedMore;
    }
    let id = body.read(value.start, value.len());
    if id.len() != value.len() {
        return Scan::NeedMore;
    }
    Scan::Id(IdField {
        flags,
        message_len,
        length_at,
        value,
        id,
    })
}

/// A field header ran out of bytes: malformed if they were all there, else wait.
fn short(complete: bool, got: usize) -> Scan {
    if complete || got > MAX_VARINT_LEN * 2 {
        Scan::Invalid(Problem::BadVarint)
    } else {
        Scan::NeedMore
    }
}

/// Reads a varint at `*at`, moving `*at` past it; `None` if cut short or over 10 bytes.
fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.get(*at..)?.iter().take(MAX_VARINT_LEN).enumerate() {
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            *at += i + 1;
            return Some(value);
        }
    }
    None
}

/// Appends `value` as a varint.
fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// The bytes that replace `body[..field.value.end]` so that the id reads `member`:
/// the frame header with the new message length, `between` (the body's bytes from the
/// end of the frame header to the field's length varint: any earlier fields and the
/// field's tag), the new length and the member's name. `None` when `between` is not
/// that long or the new message would not fit a gRPC frame.
pub fn rewrite_prefix(field: &IdField, between: &[u8], member: &[u8]) -> Option<Vec<u8>> {
    if FRAME_HEADER_LEN.checked_add(between.len()) != Some(field.length_at) {
        return None;
    }
    let old_len = field.value.end.checked_sub(field.length_at)?;
    let new_len = varint_len(member.len() as u64).checked_add(member.len())?;
    let message_len = usize::try_from(field.message_len)
        .ok()?
        .checked_sub(old_len)?
        .checked_add(new_len)?;
    let message_len = u32::try_from(message_len).ok()?;
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + between.len() + new_len);
    out.push(field.flags);
    out.extend_from_slice(&message_len.to_be_bytes());
    out.extend_from_slice(between);
    write_varint(&mut out, member.len() as u64);
    out.extend_from_slice(member);
    Some(out)
}

/// The whole body with the id rewritten to `member` (tests, fuzzing, benchmarks;
/// the filter replaces only the prefix in place).
pub fn rewrite_body(body: &[u8], field: &IdField, member: &[u8]) -> Option<Vec<u8>> {
    let between = body.get(FRAME_HEADER_LEN..field.length_at)?;
    let mut out = rewrite_prefix(field, between, member)?;
    out.extend_from_slice(body.get(field.value.end..)?);
    Some(out)
}

/// gRPC status `INVALID_ARGUMENT`.
pub const INVALID_ARGUMENT: u32 = 3;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    /// A length-delimited field.
    fn ld(field: u32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_varint(&mut out, u64::from(field << 3 | 2));
        write_varint(&mut out, value.len() as u64);
        out.extend_from_slice(value);
        out
    }

    fn frame(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    fn scan_all(body: &[u8]) -> Scan {
        IdScanner::new().scan(body, true)
    }

    fn id_of(body: &[u8]) -> Vec<u8> {
        match scan_all(body) {
            Scan::Id(field) => field.id,
            other => panic!("no id: {other:?}"),
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn only_the_three_model_calls_and_grpc_protobuf_bodies() {
        for method in ["ModelInfer", "ModelMetadata", "ModelReady"] {
            assert!(is_model_call(
                format!("/inference.GRPCInferenceService/{method}").as_bytes()
            ));
        }
        for path in [
            "/inference.GRPCInferenceService/ServerLive",
            "/inference.GRPCInferenceService/ModelInferX",
            "/inference.GRPCInferenceService/modelinfer",
            "/other.GRPCInferenceService/ModelInfer",
            "/inference.GRPCInferenceService/ModelInfer?x",
            "",
        ] {
            assert!(!is_model_call(path.as_bytes()), "{path}");
        }
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC; charset=x",
        ] {
            assert!(is_grpc_protobuf(ct.as_bytes()), "{ct}");
        }
        for ct in [
            "application/grpc-web",
            "application/grpc-web-text",
            "application/grpc+json",
            "application/json",
            "",
        ] {
            assert!(!is_grpc_protobuf(ct.as_bytes()), "{ct}");
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn field_one_first_as_clients_write_it() {
        let mut message = ld(1, b"ai-model");
        message.extend(ld(2, b"1"));
        message.extend(ld(3, b"request-7"));
        let body = frame(&message);
        let Scan::Id(field) = scan_all(&body) else {
            panic!()
        };
        assert_eq!(field.id, b"ai-model");
        assert_eq!((field.length_at, field.value.clone()), (6, 7..15));
        assert_eq!(field.message_len as usize, message.len());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn field_one_after_other_fields_of_every_wire_type() {
        let mut message = Vec::new();
        message.extend([0x10, 0xff, 0xff, 0x03]); // field 2 varint
        message.push(3 << 3 | 1); // field 3 fixed64
        message.extend([0xff; 8]);
        message.push(4 << 3 | 5); // field 4 fixed32
        message.extend([1, 2, 3, 4]);
        message.extend(ld(7, &[0x0a; 300])); // a tensor-like field full of 0x0a bytes
        message.extend(ld(1, b"ai-model"));
        message.extend(ld(1, b"later-one")); // ModelMesh reads the first
        assert_eq!(id_of(&frame(&message)), b"ai-model");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn absent_empty_and_too_long_ids() {
        assert_eq!(scan_all(&frame(&[])), Scan::Absent);
        assert_eq!(scan_all(&frame(&ld(2, b"x"))), Scan::Absent);
        assert_eq!(id_of(&frame(&ld(1, b""))), b"");
        let long = vec![b'a'; MAX_ID_LEN + 1];
        assert_eq!(scan_all(&frame(&ld(1, &long))), Scan::TooLong);
        let longest = vec![b'a'; MAX_ID_LEN];
        assert_eq!(id_of(&frame(&ld(1, &longest))), longest);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn compressed_and_malformed_messages() {
        let mut compressed = frame(&ld(1, b"ai-model"));
        compressed[0] = 1;
        assert_eq!(scan_all(&compressed), Scan::Compressed);
        let mut reserved = frame(&ld(1, b"ai-model"));
        reserved[0] = 2;
        assert_eq!(scan_all(&reserved), Scan::Invalid(Problem::ReservedFlags));
        let cases: [(&[u8], Problem); 8] = [
            (&[0x08, 0x01], Problem::IdNotAString),
            (&[0x0d, 0, 0, 0, 0], Problem::IdNotAString),
            (&[0x02, 0x00], Problem::BadTag),
            (&[0x13], Problem::GroupWireType),
            (&[0x16], Problem::BadTag),
            (&[0x0a, 0x05, b'a'], Problem::FieldPastEnd),
            (&[0x12, 0x7f], Problem::FieldPastEnd),
            (
                &[
                    0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                Problem::BadVarint,
            ),
        ];
        for (message, problem) in cases {
            assert_eq!(
                scan_all(&frame(message)),
                Scan::Invalid(problem),
                "{message:?}"
            );
        }
        // A varint cut by the end of the message.
        assert_eq!(
            scan_all(&frame(&[0x10, 0x80])),
            Scan::Invalid(Problem::BadVarint)
        );
        assert_eq!(scan_all(&frame(&[0x80])), Scan::Invalid(Problem::BadVarint));
        // A tag above u32.
        assert_eq!(
            scan_all(&frame(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01])),
            Scan::Invalid(Problem::BadVarint)
        );
        assert_eq!(scan_all(&[]), Scan::Invalid(Problem::NoMessage));
        assert_eq!(scan_all(&[0, 0, 0]), Scan::Invalid(Problem::Truncated));
        let body = frame(&ld(1, b"ai-model"));
        assert_eq!(
            scan_all(&body[..body.len() - 1]),
            Scan::Invalid(Problem::Truncated)
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_message_longer_than_the_address_space_is_refused_not_wrapped() {
        let body = [0, 0xff, 0xff, 0xff, 0xff, 0x0a, 0x01, b'a'];
        let scan = scan_all(&body);
        if usize::BITS <= 32 {
            assert_eq!(scan, Scan::Invalid(Problem::TooLarge));
        } else {
            assert_eq!(id_of(&body), b"a", "{scan:?}");
        }
    }

    /// A body that grows one chunk at a time and counts the bytes it hands out.
    struct Growing<'a> {
        all: &'a [u8],
        buffered: usize,
        copied: std::cell::Cell<usize>,
    }

    impl Body for Growing<'_> {
        fn buffered(&self) -> usize {
            self.buffered
        }
        fn read(&self, start: usize, len: usize) -> Vec<u8> {
            let out = self.all[..self.buffered].read(start, len);
            self.copied.set(self.copied.get() + out.len());
            out
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn chunk_by_chunk_reads_only_field_headers_and_the_id() {
        let mut message = ld(7, &vec![0x0a; 100_000]);
        message.extend(ld(8, &vec![0x0a; 50_000]));
        message.extend(ld(1, b"ai-model"));
        message.extend(ld(9, &vec![0x0a; 100_000]));
        let body = frame(&message);
        for chunk in [1, 7, 1000, 16_384] {
            let mut growing = Growing {
                all: &body,
                buffered: 0,
                copied: Default::default(),
            };
            let mut scanner = IdScanner::new();
            let field = loop {
                growing.buffered = (growing.buffered + chunk).min(body.len());
                match scanner.scan(&growing, growing.buffered == body.len()) {
                    Scan::NeedMore => continue,
                    Scan::Id(field) => break field,
                    other => panic!("{other:?}"),
                }
            };
            assert_eq!(field.id, b"ai-model");
            assert!(
                growing.buffered >= field.value.end && growing.buffered < field.value.end + chunk,
                "stopped as soon as the id was there"
            );
            assert!(
                growing.copied.get() < 2_000,
                "chunk {chunk}: copied {}",
                growing.copied.get()
            );
            // Asked again, the answer stays.
            assert_eq!(scanner.scan(&growing, false), Scan::Id(field));
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn rewriting_fixes_the_field_and_frame_lengths() {
        let mut message = ld(2, b"1");
        message.extend(ld(1, b"ai-model"));
        message.extend(ld(3, &vec![7; 1000]));
        let body = frame(&message);
        let Scan::Id(field) = scan_all(&body) else {
            panic!()
        };
        for member in [&b"m"[..], b"ai-model-one", &[b'x'; 200]] {
            let out = rewrite_body(&body, &field, member).unwrap();
            assert_eq!(id_of(&out), member);
            let len = u32::from_be_bytes(out[1..5].try_into().unwrap()) as usize;
            assert_eq!(len, out.len() - FRAME_HEADER_LEN);
            assert!(out.ends_with(&ld(3, &vec![7; 1000])));
            assert!(out[5..].starts_with(&ld(2, b"1")));
            // Only the prefix differs.
            let prefix = rewrite_prefix(&field, &body[5..field.length_at], member).unwrap();
            assert!(out.starts_with(&prefix));
            assert_eq!(out.len() - prefix.len(), body.len() - field.value.end);
        }
        assert_eq!(rewrite_prefix(&field, b"short", b"m"), None);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn varints_round_trip_at_their_boundaries() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value));
            let mut at = 0;
            assert_eq!(read_varint(&out, &mut at), Some(value));
            assert_eq!(at, out.len());
        }
    }
}
