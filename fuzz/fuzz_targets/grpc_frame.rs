//! The gRPC frame and protobuf id-field reader and rewriter over arbitrary bodies,
//! delivered in arbitrary chunks.
//!
//! Invariants: nothing panics; reading chunk by chunk gives the same answer as
//! reading the whole body at once; a found id is exactly the bytes of its range,
//! which lies inside the message; and after rewriting it to any member name the body
//! reads back as that member, with a frame length that still counts every byte of
//! the message and every byte after the id unchanged.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use modelsplit_filter::grpc_frame::{rewrite_body, IdScanner, Scan, FRAME_HEADER_LEN, MAX_ID_LEN};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// Chunk sizes (each 1..=256) in which the body arrives.
    chunks: Vec<u8>,
    member: &'a [u8],
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let body = input.body;
    let whole = IdScanner::new().scan(body, true);

    let mut scanner = IdScanner::new();
    let mut buffered = 0;
    let mut sizes = input.chunks.iter().map(|&c| usize::from(c) + 1).cycle();
    let chunked = loop {
        buffered = (buffered + sizes.next().unwrap_or(body.len().max(1))).min(body.len());
        let end = buffered == body.len();
        match scanner.scan(&body[..buffered], end) {
            Scan::NeedMore if !end => continue,
            other => break other,
        }
    };
    assert_eq!(chunked, whole, "chunked vs whole");

    let Scan::Id(field) = whole else { return };
    assert!(field.length_at > FRAME_HEADER_LEN);
    assert!(field.length_at < field.value.start);
    assert!(field.value.len() <= MAX_ID_LEN);
    assert_eq!(&body[field.value.clone()], field.id.as_slice());
    let message_end = FRAME_HEADER_LEN + field.message_len as usize;
    assert!(field.value.end <= message_end);

    let member = &input.member[..input.member.len().min(MAX_ID_LEN)];
    let Some(out) = rewrite_body(body, &field, member) else {
        return;
    };
    let Scan::Id(again) = IdScanner::new().scan(out.as_slice(), true) else {
        panic!("the rewritten body has no id");
    };
    assert_eq!(again.id, member);
    let new_len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as i64;
    let delta = out.len() as i64 - body.len() as i64;
    assert_eq!(
        new_len,
        i64::from(field.message_len) + delta,
        "frame length"
    );
    assert_eq!(
        &out[again.value.end..],
        &body[field.value.end..],
        "tail unchanged"
    );
    assert_eq!(&out[..1], &body[..1], "flags unchanged");
});
