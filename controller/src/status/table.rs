//! The status as people read it: one block per group, one row per member.

use super::report::{Drift, GroupStatus};
use std::fmt::Write;
use std::time::Duration;

/// Plain text; `colour` marks drift in red and in-line groups in green (for terminals).
pub fn render(statuses: &[GroupStatus], window: Duration, colour: bool) -> String {
    let paint = |text: &str, code: &str| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let over = if window.is_zero() {
        "since the gateway started".to_string()
    } else {
        format!("in the last {:.1} s", window.as_secs_f64())
    };
    let mut out = String::new();
    if statuses.is_empty() {
        out.push_str("no groups in the gateway's filter configuration\n");
    }
    for group in statuses {
        let verdict = match &group.drift {
            Drift::TooFewRequests => group.drift.label().to_string(),
            Drift::InLine {
                chi_square,
                critical,
            } => paint(
                &format!("in line (chi-square {chi_square:.2} ≤ {critical:.2}, p = 0.001)"),
                "32",
            ),
            Drift::Drift {
                chi_square,
                critical,
            } => paint(
                &format!("DRIFT (chi-square {chi_square:.2} > {critical:.2}, p = 0.001)"),
                "1;31",
            ),
        };
        let sticky = group
            .sticky_header
            .as_deref()
            .map(|h| format!(", sticky by {h}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}/{}: {} requests {over}{sticky}: {verdict}",
            group.namespace, group.group, group.requests
        );
        let _ = writeln!(
            out,
            "  {:<32} {:>7} {:>9} {:>9} {:>12}",
            "MEMBER", "WEIGHT", "OBSERVED", "REQ/S", "TOTAL"
        );
        for member in &group.members {
            let observed = member
                .observed_percent
                .map_or("-".to_string(), |p| format!("{p:.1}%"));
            let rate = member
                .per_second
                .map_or("-".to_string(), |r| format!("{r:.1}"));
            let _ = writeln!(
                out,
                "  {:<32} {:>6.1}% {:>9} {:>9} {:>12}",
                member.member, member.weight_percent, observed, rate, member.total
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::report::MemberStatus;

    #[test]
    fn a_group_reads_at_a_glance() {
        let status = GroupStatus {
            namespace: "apps".into(),
            group: "ai-model".into(),
            sticky_header: None,
            requests: 1000,
            members: vec![MemberStatus {
                member: "one".into(),
                weight_percent: 80.0,
                observed_percent: Some(50.0),
                requests: 500,
                per_second: Some(50.0),
                total: 700,
            }],
            drift: Drift::Drift {
                chi_square: 625.0,
                critical: 10.828,
            },
        };
        let text = render(&[status], Duration::from_secs(10), false);
        assert!(
            text.starts_with(
                "apps/ai-model: 1000 requests in the last 10.0 s: DRIFT (chi-square 625.00 > 10.83"
            ),
            "{text}"
        );
        assert!(text.contains("  one "), "{text}");
        assert!(text.contains("80.0%"), "{text}");
        assert!(text.contains("50.0%"), "{text}");
        assert!(!text.contains("\x1b["), "no colour unless asked");
    }
}
