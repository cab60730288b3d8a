//! Moving a running Envoy from one gateway state to the next without a failed
//! request. Writing the filter configuration and the routes at once is not safe: when
//! a member is removed, the filter may still pick it after its route vanished (the
//! end-to-end test saw 24 of 18,000 requests fail with 404 that way). So a change is
//! written in steps, each applied by Envoy before the next is written:
//!
//! 1. routes and clusters for the old *and* the new state,
//! 2. the filter configuration,
//! 3. routes and clusters for only the new state.

use super::envoy_files::{
    rds_file, render_cds, route_entries, DynamicFiles, GatewayState, WatchedFile,
};
use std::path::Path;

/// One batch of files to write together; the next batch must wait until Envoy has
/// applied this one.
pub type Step = Vec<(WatchedFile, String)>;

/// The writes that move Envoy from `old` to `new` without a request failing in
/// between: first routes and clusters for both states, then the filter, then only
/// the new routes and clusters. So a member the filter may pick always has its route
/// and cluster, whether it is being added or removed. Files already in place are
/// not rewritten; steps that would change nothing are dropped.
pub fn transition_steps(old: Option<&GatewayState>, new: &GatewayState, wasm: &Path) -> Vec<Step> {
    let target = new.render(wasm);
    let Some(old) = old else {
        return vec![vec![
            (WatchedFile::Cds, target.cds),
            (WatchedFile::Rds, target.rds),
            (WatchedFile::Ecds, target.ecds),
        ]];
    };
    let current = old.render(wasm);

    // Routes: the new ones first (they win where both match), then old ones still needed.
    let mut routes = route_entries(&new.isvcs, &new.config.rest_prefix);
    for route in route_entries(&old.isvcs, &old.config.rest_prefix) {
        if !routes.contains(&route) {
            routes.push(route);
        }
    }
    // Clusters: a namespace's new address wins; namespaces only in `old` stay for now.
    let mut upstreams = new.upstreams.clone();
    upstreams.extend(
        old.upstreams
            .iter()
            .filter(|o| !new.upstreams.iter().any(|n| n.namespace == o.namespace))
            .cloned(),
    );
    let both = DynamicFiles {
        ecds: current.ecds.clone(),
        rds: rds_file(routes),
        cds: render_cds(&upstreams),
    };

    let mut steps = Vec::new();
    let mut on_disk = current;
    for (next, files) in [
        (&both, [WatchedFile::Cds, WatchedFile::Rds].as_slice()),
        (&target, [WatchedFile::Ecds].as_slice()),
        (&target, [WatchedFile::Rds, WatchedFile::Cds].as_slice()),
    ] {
        let step: Step = files
            .iter()
            .filter(|file| on_disk.get(**file) != next.get(**file))
            .map(|file| (*file, next.get(*file).to_string()))
            .collect();
        for (file, contents) in &step {
            on_disk.set(*file, contents.clone());
        }
        if !step.is_empty() {
            steps.push(step);
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::envoy_files::{routes_of, ExposedIsvc, Upstream};
    use modelsplit_filter::config::{FilterConfig, GroupConfig};
    use serde_json::Value;

    fn state(members: &[(&str, u32)], namespaces: &[&str]) -> GatewayState {
        let names: Vec<&str> = members.iter().map(|(m, _)| *m).collect();
        GatewayState {
            config: FilterConfig::with_groups(vec![GroupConfig::weighted("a", "g", members)]),
            isvcs: names.iter().map(|n| ExposedIsvc::new("a", n)).collect(),
            upstreams: namespaces
                .iter()
                .map(|ns| {
                    Upstream::at(
                        ns,
                        "127.0.0.1:1".parse().unwrap(),
                        "127.0.0.1:2".parse().unwrap(),
                    )
                })
                .collect(),
        }
    }

    fn rest_paths(rds: &str) -> Vec<String> {
        routes_of(rds)
            .iter()
            .filter_map(|r| r["match"]["path"].as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn the_first_state_is_written_in_one_step() {
        let wasm = Path::new("/f.wasm");
        let steps = transition_steps(None, &state(&[("x", 1)], &["a"]), wasm);
        assert_eq!(steps.len(), 1);
        let files: Vec<_> = steps[0].iter().map(|(f, _)| *f).collect();
        assert_eq!(
            files,
            [WatchedFile::Cds, WatchedFile::Rds, WatchedFile::Ecds]
        );
    }

    #[test]
    fn a_removed_member_keeps_its_route_until_the_filter_stopped_choosing_it() {
        let wasm = Path::new("/f.wasm");
        let old = state(&[("x", 50), ("y", 50)], &["a", "b"]);
        let new = state(&[("x", 100)], &["a"]);
        let steps = transition_steps(Some(&old), &new, wasm);
        assert_eq!(steps.len(), 2, "{steps:#?}");
        // Step 1 would add nothing (the union equals the old files), so the filter goes first.
        assert_eq!(
            steps[0].iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            [WatchedFile::Ecds]
        );
        let last: Vec<_> = steps[1].iter().map(|(f, _)| *f).collect();
        assert_eq!(last, [WatchedFile::Rds, WatchedFile::Cds]);
        assert_eq!(rest_paths(&steps[1][0].1), ["/modelmesh/a/v2/models/x"]);
        let cds: Value = serde_json::from_str(&steps[1][1].1).unwrap();
        assert_eq!(
            cds["resources"].as_array().unwrap().len(),
            2,
            "namespace b's clusters go last"
        );
    }

    #[test]
    fn an_added_member_gets_its_route_before_the_filter_may_choose_it() {
        let wasm = Path::new("/f.wasm");
        let old = state(&[("x", 100)], &["a"]);
        let new = state(&[("x", 50), ("y", 50)], &["a"]);
        let steps = transition_steps(Some(&old), &new, wasm);
        assert_eq!(steps.len(), 2, "{steps:#?}");
        assert_eq!(
            steps[0].iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            [WatchedFile::Rds]
        );
        assert_eq!(
            rest_paths(&steps[0][0].1),
            ["/modelmesh/a/v2/models/x", "/modelmesh/a/v2/models/y"]
        );
        assert_eq!(
            steps[1].iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            [WatchedFile::Ecds]
        );
    }

    #[test]
    fn a_weight_change_touches_only_the_filter() {
        let wasm = Path::new("/f.wasm");
        let steps = transition_steps(
            Some(&state(&[("x", 80), ("y", 20)], &["a"])),
            &state(&[("x", 20), ("y", 80)], &["a"]),
            wasm,
        );
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0][0].0, WatchedFile::Ecds);
        let unchanged = state(&[("x", 1)], &["a"]);
        assert!(transition_steps(Some(&unchanged), &unchanged, wasm).is_empty());
    }
}
