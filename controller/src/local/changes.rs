//! What `modelsplit local` prints after each render: only what changed, one line per
//! group or notice, in the words of `render`'s report.

use modelsplit_core::planner::Plan;
use std::collections::{BTreeMap, BTreeSet};

/// The lines printed last, to print only differences.
#[derive(Debug, Default)]
pub struct Changes {
    groups: BTreeMap<String, String>,
    notices: BTreeSet<String>,
}

impl Changes {
    /// The lines that differ from the previous call: a group's new state, a group
    /// gone, a new notice (`extra` are notices from outside the plan).
    pub fn update(&mut self, plan: &Plan, extra: &[String]) -> Vec<String> {
        let mut lines = Vec::new();
        let groups: BTreeMap<String, String> = plan
            .groups
            .iter()
            .map(|g| (format!("{}/{}", g.namespace, g.name), g.to_string()))
            .collect();
        for (key, line) in &groups {
            if self.groups.get(key) != Some(line) {
                lines.push(line.clone());
            }
        }
        for key in self.groups.keys().filter(|k| !groups.contains_key(*k)) {
            lines.push(format!(
                "{key}: removed: no InferenceService carries the group's label any more"
            ));
        }
        let notices: BTreeSet<String> = plan
            .notices
            .iter()
            .map(ToString::to_string)
            .chain(extra.iter().cloned())
            .collect();
        lines.extend(notices.difference(&self.notices).cloned());
        self.groups = groups;
        self.notices = notices;
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelsplit_core::report::{GroupReport, GroupState};
    use modelsplit_filter::config::GroupConfig;

    fn plan_with(weights: &[(&str, u32)]) -> Plan {
        Plan {
            groups: vec![GroupReport {
                namespace: "apps".into(),
                name: "g".into(),
                members: weights.iter().map(|(n, _)| n.to_string()).collect(),
                state: GroupState::Valid,
                published: Some(GroupConfig::weighted("apps", "g", weights)),
                grpc_lost: None,
                not_ready: None,
            }],
            ..Plan::default()
        }
    }

    #[test]
    fn only_changes_are_printed() {
        let mut changes = Changes::default();
        assert_eq!(
            changes.update(&plan_with(&[("a", 8000), ("b", 2000)]), &[]),
            ["apps/g: valid: a=80% b=20%"]
        );
        assert!(changes
            .update(&plan_with(&[("a", 8000), ("b", 2000)]), &[])
            .is_empty());
        assert_eq!(
            changes.update(&plan_with(&[("a", 5000), ("b", 5000)]), &["note".into()]),
            ["apps/g: valid: a=50% b=50%", "note"]
        );
        assert_eq!(
            changes.update(&Plan::default(), &["note".into()]),
            ["apps/g: removed: no InferenceService carries the group's label any more"]
        );
    }
}
