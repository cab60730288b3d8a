//! Is an observed split consistent with the configured weights? Pearson's
//! chi-square goodness of fit, rejected at p < 0.001.

use std::collections::BTreeMap;
use std::fmt;

/// Chi-square critical values at p = 0.001 for 1..=10 degrees of freedom.
const CRITICAL_P001: [f64; 10] = [
    10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877, 29.588,
];

/// The outcome of comparing counts per member with weights.
#[derive(Debug, Clone)]
pub struct SplitCheck {
    /// (member, weight, observed count, expected count).
    pub rows: Vec<(String, u32, u64, f64)>,
    /// Requests that reached something that is not a member (must be zero).
    pub strays: BTreeMap<String, u64>,
    pub chi_square: f64,
    pub degrees_of_freedom: usize,
    pub critical: f64,
}

impl SplitCheck {
    /// Whether the split fits (p > 0.001) and nothing went outside the group.
    pub fn passes(&self) -> bool {
        self.strays.is_empty() && self.chi_square <= self.critical
    }
}

/// Compares `observed` (member -> count) with `weights`; members with weight 0 must get nothing.
pub fn check_split(observed: &BTreeMap<String, u64>, weights: &[(&str, u32)]) -> SplitCheck {
    let total: u64 = observed.values().sum();
    let weight_sum: u64 = weights.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut rows = Vec::new();
    let mut chi_square = 0.0;
    let mut zero_weight_hits = BTreeMap::new();
    for (member, weight) in weights {
        let count = observed.get(*member).copied().unwrap_or(0);
        let expected = total as f64 * f64::from(*weight) / weight_sum.max(1) as f64;
        if *weight == 0 {
            if count > 0 {
                zero_weight_hits.insert(format!("{member} (weight 0)"), count);
            }
        } else {
            chi_square += (count as f64 - expected).powi(2) / expected;
        }
        rows.push((member.to_string(), *weight, count, expected));
    }
    let mut strays: BTreeMap<String, u64> = observed
        .iter()
        .filter(|(name, _)| !weights.iter().any(|(m, _)| m == name))
        .map(|(name, count)| (name.clone(), *count))
        .collect();
    strays.extend(zero_weight_hits);
    let degrees_of_freedom = weights
        .iter()
        .filter(|(_, w)| *w > 0)
        .count()
        .saturating_sub(1)
        .max(1);
    SplitCheck {
        rows,
        strays,
        chi_square,
        degrees_of_freedom,
        critical: CRITICAL_P001[(degrees_of_freedom - 1).min(CRITICAL_P001.len() - 1)],
    }
}

impl fmt::Display for SplitCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (member, weight, count, expected) in &self.rows {
            writeln!(
                f,
                "  {member:<24} weight {weight:>6}  observed {count:>6}  expected {expected:>9.1}"
            )?;
        }
        for (name, count) in &self.strays {
            writeln!(f, "  NOT A MEMBER: {name} got {count}")?;
        }
        write!(
            f,
            "  chi-square {:.3} with {} degree(s) of freedom (critical {:.3} at p = 0.001): {}",
            self.chi_square,
            self.degrees_of_freedom,
            self.critical,
            if self.passes() {
                "consistent"
            } else {
                "REJECTED"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(m, c)| (m.to_string(), *c)).collect()
    }

    #[test]
    fn an_exact_split_passes() {
        let check = check_split(
            &counts(&[("a", 8000), ("b", 2000)]),
            &[("a", 80), ("b", 20)],
        );
        assert_eq!(check.chi_square, 0.0);
        assert!(check.passes());
    }

    #[test]
    fn a_slightly_off_split_passes_and_a_wrong_one_fails() {
        // (8050-8000)^2/8000 + (1950-2000)^2/2000 = 0.3125 + 1.25
        let close = check_split(
            &counts(&[("a", 8050), ("b", 1950)]),
            &[("a", 80), ("b", 20)],
        );
        assert!((close.chi_square - 1.5625).abs() < 1e-9);
        assert!(close.passes());
        let wrong = check_split(
            &counts(&[("a", 7500), ("b", 2500)]),
            &[("a", 80), ("b", 20)],
        );
        assert!(!wrong.passes(), "{wrong}");
    }

    #[test]
    fn three_way_uses_two_degrees_of_freedom() {
        let check = check_split(
            &counts(&[("a", 5000), ("b", 3000), ("c", 2000)]),
            &[("a", 50), ("b", 30), ("c", 20)],
        );
        assert_eq!(check.degrees_of_freedom, 2);
        assert_eq!(check.critical, 13.816);
    }

    #[test]
    fn requests_outside_the_group_or_to_weight_zero_fail() {
        let stray = check_split(
            &counts(&[("a", 8000), ("b", 2000), ("x", 1)]),
            &[("a", 80), ("b", 20)],
        );
        assert!(!stray.passes());
        let zero = check_split(&counts(&[("a", 9999), ("b", 1)]), &[("a", 100), ("b", 0)]);
        assert!(!zero.passes());
    }
}
