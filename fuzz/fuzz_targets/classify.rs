//! Request classification over arbitrary paths and gRPC headers, against a fixed plan
//! with look-alike groups in two namespaces.
//!
//! Invariants: a REST match names exactly `<prefix>/<ns>/v2/models/<group>` of the
//! matched group; the rewrite changes only the group segment; and after the
//! normalisation a proxy or server may apply later (percent-decoding, dot segments,
//! merged slashes, backslashes) the rewritten path still names the same namespace and
//! the member — a request can never be steered into another namespace or model.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use modelsplit_filter::classify::{classify_grpc, classify_rest};
use modelsplit_filter::plan::Plan;
use modelsplit_fuzz::{normalise, FIXED_CONFIG};
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    path: &'a [u8],
    content_type: &'a [u8],
    model: &'a [u8],
    member: u8,
}

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| Plan::from_json(FIXED_CONFIG.as_bytes()).expect("fixed config"))
}

fuzz_target!(|input: Input| {
    let plan = plan();
    if let Some(found) = classify_rest(plan, input.path) {
        let group = plan.group(found.group).expect("group of this plan");
        assert_eq!(&input.path[found.segment.clone()], group.name.as_bytes());
        let expected_head = [
            plan.rest_prefix(),
            b"/",
            group.namespace.as_bytes(),
            b"/v2/models/",
        ]
        .concat();
        assert_eq!(&input.path[..found.segment.start], &expected_head[..]);

        let member = &group.members[usize::from(input.member) % group.members.len()];
        let out = found.rewrite(input.path, member.name.as_bytes());
        assert_eq!(
            &out[..found.segment.start],
            &input.path[..found.segment.start]
        );
        assert_eq!(
            &out[found.segment.start + member.name.len()..],
            &input.path[found.segment.end..]
        );
        let normalised = normalise(&out);
        let target = [&expected_head[..], member.name.as_bytes()].concat();
        assert!(
            normalised.starts_with(&target)
                && matches!(normalised.get(target.len()), None | Some(b'/' | b'?')),
            "{:?} normalises to {:?}, away from {:?}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&normalised),
            String::from_utf8_lossy(&target),
        );
    }
    if let Some(id) = classify_grpc(plan, input.content_type, input.model) {
        let group = plan.group(id).expect("group of this plan");
        assert!(group.grpc);
        assert_eq!(group.name.as_bytes(), input.model);
        assert!(input.content_type.starts_with(b"application/grpc"));
    }
});
