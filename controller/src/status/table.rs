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
        // Outcome columns where the gateway keeps route statistics (the local gateway).
        let outcomes = group.members.iter().any(|m| m.outcome.is_some());
        let mut header = format!(
            "  {:<32} {:>7} {:>9} {:>9} {:>12}",
            "MEMBER", "WEIGHT", "OBSERVED", "REQ/S", "TOTAL"
        );
        if outcomes {
            let _ = write!(header, " {:>7} {:>9} {:>9}", "ERRORS", "P50", "P99");
        }
        let _ = writeln!(out, "{}", header.trim_end());
        for member in &group.members {
            let observed = member
                .observed_percent
                .map_or("-".to_string(), |p| format!("{p:.1}%"));
            let rate = member
                .per_second
                .map_or("-".to_string(), |r| format!("{r:.1}"));
            let mut row = format!(
                "  {:<32} {:>6.1}% {:>9} {:>9} {:>12}",
                member.member, member.weight_percent, observed, rate, member.total
            );
            if outcomes {
                let outcome = member.outcome.as_ref();
                let errors = outcome
                    .and_then(|o| o.error_percent)
                    .map_or("-".to_string(), |p| format!("{p:.1}%"));
                let errors = if outcome.is_some_and(|o| o.server_errors + o.grpc_errors > 0) {
                    paint(&errors, "1;31")
                } else {
                    errors
                };
                let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("≤{v}ms"));
                let _ = write!(
                    row,
                    " {:>7} {:>9} {:>9}",
                    errors,
                    ms(outcome.and_then(|o| o.p50_ms)),
                    ms(outcome.and_then(|o| o.p99_ms))
                );
            }
            let _ = writeln!(out, "{row}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::outcomes::Outcome;
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
                outcome: Some(Outcome {
                    responses: 500,
                    server_errors: 10,
                    grpc_errors: 0,
                    error_percent: Some(2.0),
                    p50_ms: Some(5.0),
                    p99_ms: Some(250.0),
                }),
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
        // The member's answers: 2% errors, p50 under 5 ms, p99 under 250 ms.
        assert!(text.contains("ERRORS"), "{text}");
        let row = text.lines().find(|l| l.starts_with("  one ")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[5..], ["2.0%", "≤5ms", "≤250ms"], "{row:?}");
    }
}
