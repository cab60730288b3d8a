//! Is this a group request? REST by path, gRPC by content type and model header.
//!
//! Matching is exact and byte-wise: a path that only looks like a group path
//! (another case, a longer name, doubled or encoded slashes, dot segments) is
//! not a group request and passes through untouched.

use crate::plan::{GroupId, Plan};
use std::ops::Range;

/// The model-scoped KServe v2 REST path below `<restPrefix>/<namespace>`.
const MODELS: &[u8] = b"/v2/models/";

/// A REST group request: the group and the byte range of its name in the path,
/// the only part of the path that routing replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestMatch {
    pub group: GroupId,
    pub segment: Range<usize>,
}

impl RestMatch {
    /// The path with the group segment replaced by `member` (one allocation).
    pub fn rewrite(&self, path: &[u8], member: &[u8]) -> Vec<u8> {
        let (Some(head), Some(tail)) =
            (path.get(..self.segment.start), path.get(self.segment.end..))
        else {
            return path.to_vec();
        };
        let mut out = Vec::with_capacity(head.len() + member.len() + tail.len());
        out.extend_from_slice(head);
        out.extend_from_slice(member);
        out.extend_from_slice(tail);
        out
    }
}

/// Matches `<restPrefix>/<ns>/v2/models/<group>[/...][?query]` against the plan.
pub fn classify_rest(plan: &Plan, path: &[u8]) -> Option<RestMatch> {
    let after_prefix = path.strip_prefix(plan.rest_prefix())?;
    let after_slash = after_prefix.strip_prefix(b"/")?;
    let ns_len = after_slash.iter().position(|&b| b == b'/')?;
    let (namespace, after_namespace) = after_slash.split_at_checked(ns_len)?;
    let after_models = after_namespace.strip_prefix(MODELS)?;
    let name_len = after_models
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(after_models.len());
    let (name, rest) = after_models.split_at(name_len);
    let group = plan.rest_group(namespace, name)?;
    if !is_plain_remainder(rest) {
        return None;
    }
    let start = path.len() - after_models.len();
    Some(RestMatch {
        group,
        segment: start..start + name_len,
    })
}

/// Is the part after the group name something a member route can safely take:
/// empty, a query, or `/segment/...` without empty, dot or encoded-separator segments?
fn is_plain_remainder(rest: &[u8]) -> bool {
    let path_part = match rest.iter().position(|&b| b == b'?') {
        Some(q) => rest.get(..q).unwrap_or(rest),
        None => rest,
    };
    if path_part.is_empty() {
        return true;
    }
    let Some(segments) = path_part.strip_prefix(b"/") else {
        return false;
    };
    // `/v2/models/<g>/` (trailing slash) leaves one empty last segment: allowed.
    let segments = segments.strip_suffix(b"/").unwrap_or(segments);
    if path_part.len() > 1 && segments.is_empty() {
        return false; // `<g>//`
    }
    segments.split(|&b| b == b'/').all(is_plain_segment) || segments.is_empty()
}

fn is_plain_segment(segment: &[u8]) -> bool {
    !segment.is_empty()
        && segment != b"."
        && segment != b".."
        && !segment
            .iter()
            .any(|&b| b == b'\\' || b == b'#' || b <= b' ' || b == 0x7f)
        && !has_encoded_separator(segment)
}

/// `%2F`, `%5C` and `%2E` (any case) could turn into `/`, `\` or `.` further on.
fn has_encoded_separator(segment: &[u8]) -> bool {
    segment.windows(3).any(|w| match *w {
        [b'%', high, low] => matches!(
            (high, low.to_ascii_uppercase()),
            (b'2', b'F') | (b'5', b'C') | (b'2', b'E')
        ),
        _ => false,
    })
}

/// Does this content type announce gRPC (`application/grpc`, `application/grpc+proto`, ...)?
pub fn is_grpc(content_type: &[u8]) -> bool {
    content_type.starts_with(b"application/grpc")
}

/// A gRPC group request: gRPC content type and the model header naming a gRPC group.
pub fn classify_grpc(plan: &Plan, content_type: &[u8], model_header: &[u8]) -> Option<GroupId> {
    if !is_grpc(content_type) {
        return None;
    }
    plan.grpc_group(model_header)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    fn plan() -> Plan {
        Plan::from_json(
            br#"{"groups":[
            {"namespace":"ns","name":"group","members":[{"name":"member-b","weight":1}]},
            {"namespace":"ns","name":"v1.2_x","grpc":false,"members":[{"name":"m","weight":1}]}]}"#,
        )
        .unwrap()
    }

    fn rewritten(path: &str) -> Option<String> {
        let plan = plan();
        let m = classify_rest(&plan, path.as_bytes())?;
        String::from_utf8(m.rewrite(path.as_bytes(), b"member-b")).ok()
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn rewrites_only_the_group_segment_of_model_paths() {
        let cases = [
            (
                "/modelmesh/ns/v2/models/group",
                "/modelmesh/ns/v2/models/member-b",
            ),
            (
                "/modelmesh/ns/v2/models/group/",
                "/modelmesh/ns/v2/models/member-b/",
            ),
            (
                "/modelmesh/ns/v2/models/group/infer",
                "/modelmesh/ns/v2/models/member-b/infer",
            ),
            (
                "/modelmesh/ns/v2/models/group/ready",
                "/modelmesh/ns/v2/models/member-b/ready",
            ),
            (
                "/modelmesh/ns/v2/models/group/versions/3/infer",
                "/modelmesh/ns/v2/models/member-b/versions/3/infer",
            ),
            (
                "/modelmesh/ns/v2/models/group/infer?a=/group/&b=%2F..",
                "/modelmesh/ns/v2/models/member-b/infer?a=/group/&b=%2F..",
            ),
            (
                "/modelmesh/ns/v2/models/group?x",
                "/modelmesh/ns/v2/models/member-b?x",
            ),
            (
                "/modelmesh/ns/v2/models/group?",
                "/modelmesh/ns/v2/models/member-b?",
            ),
        ];
        for (path, expected) in cases {
            assert_eq!(rewritten(path).as_deref(), Some(expected), "{path}");
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn group_names_with_dots_and_underscores_match() {
        let plan = plan();
        let m = classify_rest(&plan, b"/modelmesh/ns/v2/models/v1.2_x/infer").unwrap();
        assert_eq!(m.segment, 24..30);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn leaves_look_alike_paths_alone() {
        let paths = [
            "/modelmesh/ns/v2/models/groupX/infer",
            "/modelmesh/ns/v2/models/grou",
            "/modelmesh/ns/v2/models/Group/infer",
            "/ModelMesh/ns/v2/models/group/infer",
            "/modelmesh/NS/v2/models/group/infer",
            "/modelmesh/ns/V2/models/group/infer",
            "/modelmesh/ns/v2/model/group/infer",
            "/modelmesh//ns/v2/models/group/infer",
            "//modelmesh/ns/v2/models/group/infer",
            "/modelmesh/ns//v2/models/group/infer",
            "/modelmesh/ns/v2//models/group/infer",
            "/modelmesh/ns/v2/models//group/infer",
            "/modelmesh/ns/v2/models/group//infer",
            "/modelmesh/ns/v2/models/group//",
            "/modelmesh/ns/v2/models/group/infer//",
            "/modelmesh/ns/v2/models/group%2Finfer",
            "/modelmesh/ns/v2/models/group/%2e%2e/other",
            "/modelmesh/ns/v2/models/group/x%2fy",
            "/modelmesh/ns/v2/models/group/x%5Cy",
            "/modelmesh/ns%2Fv2/models/group/infer",
            "/modelmesh/ns/v2/models/group/../other/infer",
            "/modelmesh/ns/v2/models/group/./infer",
            "/modelmesh/ns/v2/models/group/..",
            "/modelmesh/ns/v2/models/group\\infer",
            "/modelmesh/ns/v2/models/group/a\\b",
            "/modelmesh/ns/v2/models/group;x",
            "/modelmesh/ns/v2/models/group#x",
            "/modelmesh/ns/v2/models/group/in fer",
            "/modelmesh/ns/v2/models/group.",
            "/modelmeshx/ns/v2/models/group",
            "/modelmesh",
            "/modelmesh/",
            "/modelmesh/ns",
            "/modelmesh/ns/v2/models/",
            "/modelmesh/other/v2/models/group",
            "/v2/models/group/infer",
            "/inference.GRPCInferenceService/ModelInfer",
            "",
        ];
        let plan = plan();
        for path in paths {
            assert_eq!(classify_rest(&plan, path.as_bytes()), None, "{path}");
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn odd_bytes_never_panic() {
        let plan = plan();
        let mut rng = crate::choose::Rng::new(3);
        let alphabet = b"/modelns2v%.?\\#group\xff\x00 ";
        for _ in 0..20_000 {
            let len = rng.below(40) as usize;
            let mut path = b"/modelmesh/ns/v2/models/".to_vec();
            path.truncate(rng.below(path.len() as u64 + 1) as usize);
            for _ in 0..len {
                path.push(alphabet[rng.below(alphabet.len() as u64) as usize]);
            }
            if let Some(m) = classify_rest(&plan, &path) {
                assert_eq!(&path[m.segment.clone()], b"group");
                let out = m.rewrite(&path, b"member-b");
                assert_eq!(out.len(), path.len() + 3);
            }
        }
        let huge = [
            b"/modelmesh/ns/v2/models/group/".to_vec(),
            vec![b'a'; 1 << 20],
        ]
        .concat();
        assert!(classify_rest(&plan, &huge).is_some());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn grpc_needs_the_content_type_and_an_exact_grpc_group() {
        let plan = plan();
        assert!(classify_grpc(&plan, b"application/grpc", b"group").is_some());
        assert!(classify_grpc(&plan, b"application/grpc+proto", b"group").is_some());
        assert_eq!(classify_grpc(&plan, b"application/json", b"group"), None);
        assert_eq!(classify_grpc(&plan, b"", b"group"), None);
        assert_eq!(classify_grpc(&plan, b"application/grpc", b"Group"), None);
        assert_eq!(classify_grpc(&plan, b"application/grpc", b"group "), None);
        assert_eq!(classify_grpc(&plan, b"application/grpc", b"member-b"), None);
        assert_eq!(
            classify_grpc(&plan, b"application/grpc", b"v1.2_x"),
            None,
            "grpc: false"
        );
        assert_eq!(classify_grpc(&plan, b"application/grpc", b"\xff"), None);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_custom_prefix_is_honoured() {
        let plan = Plan::from_json(
            br#"{"restPrefix":"/mm/api","groups":[{"namespace":"ns","name":"group","members":[{"name":"b","weight":1}]}]}"#,
        )
        .unwrap();
        assert!(classify_rest(&plan, b"/mm/api/ns/v2/models/group/infer").is_some());
        assert_eq!(
            classify_rest(&plan, b"/modelmesh/ns/v2/models/group/infer"),
            None
        );
        assert_eq!(
            classify_rest(&plan, b"/mm/apins/v2/models/group/infer"),
            None
        );
    }
}
