//! One request, start to finish, without the host: classify, choose, rewrite.
//!
//! The wasm glue implements [`RequestHeaders`] with host calls; tests and
//! benchmarks implement it with a map. Headers are read lazily and only when
//! needed: `:path` first, `content-type` and the model header only for gRPC, the
//! override and sticky headers only for a group request.

use crate::choose::{self, How, Rng};
use crate::classify::{classify_rest, is_grpc};
use crate::plan::{GroupId, Member, Plan};

/// Read access to the request headers (lower-case names, raw bytes: values need not be UTF-8).
pub trait RequestHeaders {
    fn header(&self, name: &str) -> Option<Vec<u8>>;
}

/// What to change in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Replace `:path` with this value (only the group segment differs).
    Path(Vec<u8>),
    /// Set the plan's gRPC model header to the member's name.
    ModelHeader,
    /// Set the id field of the gRPC request message (`model_name` / `name`) and the
    /// plan's gRPC model header to the member's name (see [`crate::grpc_body`]).
    MessageId,
}

/// The outcome for a group request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub group: GroupId,
    /// Index of the chosen member within the group.
    pub member: usize,
    pub how: How,
    /// The override header named something that is not a member of this group.
    pub override_ignored: bool,
    pub rewrite: Rewrite,
}

impl Decision {
    /// The chosen member (name, counter index) in the plan that made the decision.
    pub fn member_in<'p>(&self, plan: &'p Plan) -> Option<&'p Member> {
        plan.group(self.group)?.members.get(self.member)
    }
}

/// Decides a request: `None` for anything that is not a group request (left untouched).
pub fn route(plan: &Plan, rng: &mut Rng, headers: &impl RequestHeaders) -> Option<Decision> {
    let (group_id, rest_path) = match headers.header(":path") {
        Some(path) => match classify_rest(plan, &path) {
            Some(found) => (found.group, Some((found, path))),
            None => (grpc_group(plan, headers)?, None),
        },
        None => (grpc_group(plan, headers)?, None),
    };
    let group = plan.group(group_id)?;
    let (member, how, override_ignored) = choose_member(plan, group_id, rng, headers)?;

    let rewrite = match rest_path {
        Some((found, path)) => {
            let name = group.members.get(member)?.name.as_bytes();
            Rewrite::Path(found.rewrite(&path, name))
        }
        None => Rewrite::ModelHeader,
    };
    Some(Decision {
        group: group_id,
        member,
        how,
        override_ignored,
        rewrite,
    })
}

/// Decides a gRPC request whose message names the group `group_id` in its id field:
/// the member is chosen exactly as for any group request (override, sticky,
/// weighted), with [`Rewrite::MessageId`].
pub fn route_message_id(
    plan: &Plan,
    rng: &mut Rng,
    headers: &impl RequestHeaders,
    group_id: GroupId,
) -> Option<Decision> {
    let (member, how, override_ignored) = choose_member(plan, group_id, rng, headers)?;
    Some(Decision {
        group: group_id,
        member,
        how,
        override_ignored,
        rewrite: Rewrite::MessageId,
    })
}

/// Override, else sticky, else weighted: (member, how, whether an override was ignored).
fn choose_member(
    plan: &Plan,
    group_id: GroupId,
    rng: &mut Rng,
    headers: &impl RequestHeaders,
) -> Option<(usize, How, bool)> {
    let group = plan.group(group_id)?;
    let mut override_ignored = false;
    let mut chosen = None;
    if let Some(name) = plan.override_header() {
        if let Some(value) = headers.header(name) {
            chosen = choose::override_member(group, &value).map(|m| (m, How::Override));
            override_ignored = chosen.is_none();
        }
    }
    if chosen.is_none() {
        if let Some(name) = group.sticky_header.as_deref() {
            // An empty key would pin every such client to one member: treat it as absent.
            if let Some(key) = headers.header(name).filter(|k| !k.is_empty()) {
                chosen = choose::sticky(group, &key).map(|m| (m, How::Sticky));
            }
        }
    }
    let (member, how) = match chosen {
        Some(found) => found,
        None => (choose::weighted(group, rng)?, How::Weighted),
    };
    Some((member, how, override_ignored))
}

fn grpc_group(plan: &Plan, headers: &impl RequestHeaders) -> Option<GroupId> {
    if !plan.has_grpc_groups() || !is_grpc(&headers.header("content-type")?) {
        return None;
    }
    plan.grpc_group(&headers.header(plan.grpc_header())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    /// Headers from a map, remembering which names were read.
    #[derive(Default)]
    struct Headers {
        values: HashMap<&'static str, Vec<u8>>,
        read: RefCell<Vec<String>>,
    }

    impl Headers {
        fn of(pairs: &[(&'static str, &[u8])]) -> Headers {
            Headers {
                values: pairs.iter().map(|(k, v)| (*k, v.to_vec())).collect(),
                read: RefCell::default(),
            }
        }
    }

    impl RequestHeaders for Headers {
        fn header(&self, name: &str) -> Option<Vec<u8>> {
            self.read.borrow_mut().push(name.to_string());
            self.values.get(name).cloned()
        }
    }

    fn plan() -> Plan {
        Plan::from_json(
            br#"{"groups":[
              {"namespace":"apps","name":"ai-model","stickyHeader":"x-user-id",
               "members":[{"name":"one","weight":80},{"name":"two","weight":20},{"name":"dark","weight":0}]},
              {"namespace":"apps","name":"rest-only","grpc":false,"members":[{"name":"r","weight":1}]}]}"#,
        )
        .unwrap()
    }

    fn name<'p>(plan: &'p Plan, d: &Decision) -> &'p str {
        &d.member_in(plan).unwrap().name
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn rest_request_gets_its_group_segment_rewritten() {
        let plan = plan();
        let mut rng = Rng::new(1);
        let h = Headers::of(&[(":path", b"/modelmesh/apps/v2/models/ai-model/infer?x=1")]);
        let d = route(&plan, &mut rng, &h).unwrap();
        assert_eq!(d.how, How::Weighted);
        let expected = format!("/modelmesh/apps/v2/models/{}/infer?x=1", name(&plan, &d));
        assert_eq!(d.rewrite, Rewrite::Path(expected.into_bytes()));
        assert!(!d.override_ignored);
        assert_eq!(
            *h.read.borrow(),
            [":path", "x-modelsplit-member", "x-user-id"],
            "only the headers a group request needs"
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn other_traffic_is_untouched_after_reading_little() {
        let plan = plan();
        let mut rng = Rng::new(1);
        let h = Headers::of(&[
            (":path", b"/api/v1/things"),
            ("content-type", b"application/json"),
        ]);
        assert_eq!(route(&plan, &mut rng, &h), None);
        assert_eq!(*h.read.borrow(), [":path", "content-type"]);
        let no_path = Headers::default();
        assert_eq!(route(&plan, &mut rng, &no_path), None);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn grpc_request_gets_its_model_header_rewritten() {
        let plan = plan();
        let mut rng = Rng::new(5);
        let h = Headers::of(&[
            (":path", b"/inference.GRPCInferenceService/ModelInfer"),
            ("content-type", b"application/grpc"),
            ("mm-vmodel-id", b"ai-model"),
        ]);
        let d = route(&plan, &mut rng, &h).unwrap();
        assert_eq!(d.rewrite, Rewrite::ModelHeader);
        assert_ne!(name(&plan, &d), "dark");

        let rest_only = Headers::of(&[
            (":path", b"/inference.GRPCInferenceService/ModelInfer"),
            ("content-type", b"application/grpc"),
            ("mm-vmodel-id", b"rest-only"),
        ]);
        assert_eq!(route(&plan, &mut rng, &rest_only), None);
        let not_grpc = Headers::of(&[
            (":path", b"/x"),
            ("content-type", b"application/json"),
            ("mm-vmodel-id", b"ai-model"),
        ]);
        assert_eq!(route(&plan, &mut rng, &not_grpc), None);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn override_wins_and_a_non_member_is_ignored_and_reported() {
        let plan = plan();
        let mut rng = Rng::new(1);
        let forced = Headers::of(&[
            (":path", b"/modelmesh/apps/v2/models/ai-model/infer"),
            ("x-modelsplit-member", b"dark"),
            ("x-user-id", b"alice"),
        ]);
        let d = route(&plan, &mut rng, &forced).unwrap();
        assert_eq!(
            (name(&plan, &d), d.how, d.override_ignored),
            ("dark", How::Override, false)
        );
        assert_eq!(
            d.rewrite,
            Rewrite::Path(b"/modelmesh/apps/v2/models/dark/infer".to_vec())
        );

        let outsider = Headers::of(&[
            (":path", b"/modelmesh/apps/v2/models/ai-model/infer"),
            ("x-modelsplit-member", b"r"),
        ]);
        let d = route(&plan, &mut rng, &outsider).unwrap();
        assert!(d.override_ignored);
        assert_eq!(d.how, How::Weighted);
        assert!(["one", "two"].contains(&name(&plan, &d)));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn sticky_key_pins_the_member_and_an_empty_key_does_not() {
        let plan = plan();
        let mut rng = Rng::new(77);
        let pinned = |key: &'static [u8], rng: &mut Rng| {
            let h = Headers::of(&[
                (":path", b"/modelmesh/apps/v2/models/ai-model"),
                ("x-user-id", key),
            ]);
            route(&plan, rng, &h).unwrap()
        };
        let first = pinned(b"bob", &mut rng);
        assert_eq!(first.how, How::Sticky);
        for _ in 0..200 {
            assert_eq!(pinned(b"bob", &mut rng).member, first.member);
        }
        assert_eq!(pinned(b"", &mut rng).how, How::Weighted);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn weighted_routing_splits_by_weight() {
        let plan = plan();
        let mut rng = Rng::from_host(123_456_789, 2);
        let h = Headers::of(&[(":path", b"/modelmesh/apps/v2/models/ai-model/infer")]);
        let n = 50_000;
        let ones = (0..n)
            .filter(|_| route(&plan, &mut rng, &h).unwrap().member == 0)
            .count();
        let share = ones as f64 / n as f64;
        assert!((share - 0.8).abs() < 0.01, "{share}");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn non_utf8_header_values_are_just_bytes() {
        let plan = plan();
        let mut rng = Rng::new(1);
        let h = Headers::of(&[
            (":path", b"/modelmesh/apps/v2/models/ai-model/\xff\xfe?\x80"),
            ("x-modelsplit-member", b"\xc3\x28"),
            ("x-user-id", b"\xff"),
        ]);
        let d = route(&plan, &mut rng, &h).unwrap();
        assert!(d.override_ignored);
        assert_eq!(d.how, How::Sticky);
        let Rewrite::Path(path) = d.rewrite else {
            panic!("REST rewrite expected")
        };
        assert!(path.ends_with(b"/\xff\xfe?\x80"));
    }
}
