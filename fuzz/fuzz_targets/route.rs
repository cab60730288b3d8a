//! The whole per-request decision: `route()` over arbitrary (repeated) headers,
//! against the fixed plan or a configuration built from the input.
//!
//! Invariants: the chosen member belongs to the requested group (the one the path's
//! namespace and group segment, or the gRPC header, name); the rewritten path
//! differs from the input only in the group segment; a weight-0 member is only
//! reached by an explicit override; sticky is a pure function of (group, key).
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use modelsplit_filter::choose::{self, How, Rng};
use modelsplit_filter::config::{FilterConfig, GroupConfig, MemberConfig};
use modelsplit_filter::plan::Plan;
use modelsplit_filter::route::{route, RequestHeaders, Rewrite};
use modelsplit_fuzz::FIXED_CONFIG;
use std::sync::OnceLock;

/// Small name alphabets so that fuzzed requests hit fuzzed groups.
const NAMES: [&str; 6] = ["a", "b", "ai-model", "x.y", "a_b", "ns"];
/// Names a request may use: the alphabets, the fixed plan's names and members.
const REQUEST_NAMES: [&str; 20] = [
    "a",
    "b",
    "ai-model",
    "x.y",
    "a_b",
    "ns",
    "a-m",
    "b-m",
    "ai-model-m",
    "x.y-m",
    "a_b-m",
    "ns-m",
    "tenant-a",
    "tenant-b",
    "ai-model-one",
    "ai-model-two",
    "dark",
    "v1.2_x",
    "fraud",
    "b-one",
];
const HEADER_NAMES: [&str; 7] = [
    ":path",
    "content-type",
    "mm-vmodel-id",
    "x-modelsplit-member",
    "x-user-id",
    "x-key",
    "other",
];

#[derive(Arbitrary, Debug)]
struct FuzzGroup {
    namespace: u8,
    name: u8,
    members: Vec<(u8, u16)>,
    grpc: bool,
    sticky: Option<u8>,
}

/// A header value: raw bytes, or a name a group or member may have.
#[derive(Arbitrary, Debug)]
enum Value<'a> {
    Raw(&'a [u8]),
    Name(u8),
}

impl Value<'_> {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Value::Raw(bytes) => bytes.to_vec(),
            Value::Name(i) => REQUEST_NAMES[usize::from(*i) % REQUEST_NAMES.len()]
                .as_bytes()
                .to_vec(),
        }
    }
}

/// The request path: raw bytes, or a model path naming (namespace, group) plus a tail.
#[derive(Arbitrary, Debug)]
enum PathInput<'a> {
    Raw(&'a [u8]),
    Model {
        namespace: u8,
        name: u8,
        tail: &'a [u8],
    },
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    config: Option<Vec<FuzzGroup>>,
    path: Option<PathInput<'a>>,
    /// Adds `content-type: application/grpc` first (more may follow in `headers`).
    grpc: bool,
    /// Header name index and value; a name may repeat.
    headers: Vec<(u8, Value<'a>)>,
    /// How the host presents a repeated header: the first value, or all joined by ','.
    join_repeated: bool,
    seed: u64,
}

struct Headers {
    pairs: Vec<(&'static str, Vec<u8>)>,
    join: bool,
}

impl RequestHeaders for Headers {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        let mut values = self
            .pairs
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v);
        let first = values.next()?.clone();
        if !self.join {
            return Some(first);
        }
        Some(values.fold(first, |mut all, v| {
            all.push(b',');
            all.extend_from_slice(v);
            all
        }))
    }
}

fn fixed_plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| Plan::from_json(FIXED_CONFIG.as_bytes()).expect("fixed config"))
}

fn pick(i: u8) -> &'static str {
    NAMES[usize::from(i) % NAMES.len()]
}

fn fuzzed_plan(groups: &[FuzzGroup]) -> Option<Plan> {
    let groups = groups
        .iter()
        .take(8)
        .map(|g| GroupConfig {
            namespace: pick(g.namespace).to_string(),
            name: pick(g.name).to_string(),
            members: g
                .members
                .iter()
                .take(8)
                .map(|&(name, weight)| MemberConfig {
                    name: format!("{}-m", pick(name)),
                    weight: u32::from(weight) * u32::from(weight % 3 != 0),
                })
                .collect(),
            grpc: g.grpc,
            sticky_header: g
                .sticky
                .map(|s| ["x-user-id", "x-key"][usize::from(s) % 2].into()),
            observe: false,
        })
        .collect();
    Plan::compile(&FilterConfig::with_groups(groups)).ok()
}

fuzz_target!(|input: Input| {
    let owned;
    let plan = match &input.config {
        None => fixed_plan(),
        Some(groups) => match fuzzed_plan(groups) {
            Some(plan) => {
                owned = plan;
                &owned
            }
            None => return,
        },
    };
    let mut pairs = Vec::new();
    match &input.path {
        Some(PathInput::Raw(bytes)) => pairs.push((":path", bytes.to_vec())),
        Some(PathInput::Model {
            namespace,
            name,
            tail,
        }) => {
            let name_at = |i: &u8| REQUEST_NAMES[usize::from(*i) % REQUEST_NAMES.len()];
            let path = format!(
                "/modelmesh/{}/v2/models/{}",
                name_at(namespace),
                name_at(name)
            );
            pairs.push((":path", [path.as_bytes(), tail].concat()));
        }
        None => {}
    }
    if input.grpc {
        pairs.push(("content-type", b"application/grpc".to_vec()));
    }
    pairs.extend(input.headers.iter().take(16).map(|(n, v)| {
        (
            HEADER_NAMES[usize::from(*n) % HEADER_NAMES.len()],
            v.bytes(),
        )
    }));
    let headers = Headers {
        pairs,
        join: input.join_repeated,
    };
    let mut rng = Rng::new(input.seed);
    let Some(decision) = route(plan, &mut rng, &headers) else {
        return;
    };
    let group = plan.group(decision.group).expect("group of this plan");
    let member = decision
        .member_in(plan)
        .expect("member of the decided group");
    assert!(std::ptr::eq(member, &group.members[decision.member]));

    match &decision.rewrite {
        Rewrite::Path(new_path) => {
            let old_path = headers.header(":path").expect("a REST decision read :path");
            let head = [
                plan.rest_prefix(),
                b"/",
                group.namespace.as_bytes(),
                b"/v2/models/",
            ]
            .concat();
            assert!(old_path.starts_with(&head), "requested group is this group");
            let tail = &old_path[head.len()..];
            assert!(tail.starts_with(group.name.as_bytes()));
            let rest = &tail[group.name.len()..];
            assert!(matches!(rest.first(), None | Some(b'/' | b'?')));
            assert_eq!(
                *new_path,
                [&head[..], member.name.as_bytes(), rest].concat()
            );
        }
        Rewrite::ModelHeader => {
            assert!(group.grpc);
            let model = headers
                .header(plan.grpc_header())
                .expect("gRPC header read");
            assert_eq!(
                model,
                group.name.as_bytes(),
                "requested group is this group"
            );
            let content_type = headers.header("content-type").expect("content type read");
            assert!(content_type.starts_with(b"application/grpc"));
        }
        // Only `route_message_id` decides by the message (grpc_frame / grpc_body).
        Rewrite::MessageId => panic!("route() decided by a message it never read"),
    }

    let override_value = plan.override_header().and_then(|h| headers.header(h));
    match decision.how {
        How::Override => {
            assert_eq!(override_value.as_deref(), Some(member.name.as_bytes()));
        }
        How::Sticky => {
            assert!(member.weight > 0);
            let key = headers
                .header(group.sticky_header.as_deref().expect("sticky group"))
                .expect("sticky key");
            assert_eq!(choose::sticky(group, &key), Some(decision.member));
            // Pure: a fresh rng and a second call change nothing.
            let mut other = Rng::new(input.seed ^ u64::MAX);
            assert_eq!(
                route(plan, &mut other, &headers).map(|d| d.member),
                Some(decision.member)
            );
        }
        How::Weighted => assert!(member.weight > 0, "weight 0 is reached by override only"),
    }
    assert_eq!(
        decision.override_ignored,
        override_value.is_some() && decision.how != How::Override
    );
});
