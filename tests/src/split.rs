//! Is an observed split consistent with the configured weights? Pearson's chi-square
//! goodness of fit, rejected at p < [`PER_TEST_P`] (1e-5).
//!
//! The split is the one thing the suite checks that is random on purpose: the filter
//! picks members with a PRNG seeded from Envoy's clock, so a correct split fails a test
//! with probability about `PER_TEST_P`. [`BUDGET`] lists every such assertion one run of
//! the suite makes; the unit tests below check that the chance of *any* of them failing
//! is below 1e-3 (exact multinomial tails, not the chi-square approximation), that each
//! still catches a 10-point misweighting (e.g. 70/30 for 80/20) almost surely, and that
//! no `check_split` call site is missing from the budget (docs/testing.md, "Chance
//! failures").

use std::collections::BTreeMap;
use std::fmt;

/// The significance of each split assertion: its chance of failing a correct split.
pub const PER_TEST_P: f64 = 1e-5;

/// Chi-square critical values at p = 1e-5 for 1..=10 degrees of freedom (the unit tests
/// recompute them from the distribution's closed form).
const CRITICAL: [f64; 10] = [
    19.511, 23.026, 25.902, 28.473, 30.856, 33.107, 35.259, 37.332, 39.341, 41.296,
];

/// Requests each phase of the live-change tests (`live_changes`, `local_live_edits`)
/// counts at least: sent after the phase's configuration was in force on every worker,
/// answered before the next change was written.
pub const PHASE_REQUESTS: usize = 2000;

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
    /// Whether the split fits (p > 1e-5) and nothing went outside the group.
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
        critical: CRITICAL[(degrees_of_freedom - 1).min(CRITICAL.len() - 1)],
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
            "  chi-square {:.3} with {} degree(s) of freedom (critical {:.3} at p = 1e-5): {}",
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

/// How many requests a split assertion judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Samples {
    /// Exactly this many.
    Exactly(u64),
    /// At least this many (a phase under continuous load, or load while something happens).
    AtLeast(u64),
    /// Not random: sticky keys are a fixed function of the key, so the assertion passes or
    /// fails the same way on every run.
    Deterministic,
}

/// One split assertion of the suite (per run: an assertion in a loop is listed per pass).
#[derive(Debug, Clone, Copy)]
pub struct Assertion {
    /// The test file under `tests/tests/`.
    pub file: &'static str,
    pub what: &'static str,
    /// The weights of the members that may be chosen (weight-0 members left out).
    pub weights: &'static [u32],
    pub samples: Samples,
}

const fn a(
    file: &'static str,
    what: &'static str,
    weights: &'static [u32],
    samples: Samples,
) -> Assertion {
    Assertion {
        file,
        what,
        weights,
        samples,
    }
}

const P: u64 = PHASE_REQUESTS as u64;

/// Every split assertion in one run of the suite (`scripts/test.sh`, cluster tests included).
/// Keep it in step with the tests: a unit test counts the `check_split(` call sites.
pub const BUDGET: &[Assertion] = {
    use Samples::{AtLeast, Deterministic, Exactly};
    &[
        a("split.rs", "REST 80/20", &[80, 20], Exactly(10_000)),
        a("split.rs", "REST 50/30/20", &[50, 30, 20], Exactly(10_000)),
        a("split.rs", "gRPC 80/20", &[80, 20], Exactly(10_000)),
        a(
            "split.rs",
            "gRPC 60/25/15/0",
            &[60, 25, 15],
            Exactly(10_000),
        ),
        a(
            "sticky_override.rs",
            "keys per member",
            &[60, 30, 10],
            Deterministic,
        ),
        a(
            "sticky_override.rs",
            "ignored overrides",
            &[60, 30, 10],
            Exactly(2000),
        ),
        a(
            "config_updates.rs",
            "member added",
            &[20, 30, 50],
            Exactly(4000),
        ),
        a(
            "config_updates.rs",
            "during invalid pushes",
            &[30, 70],
            AtLeast(2000),
        ),
        a(
            "config_updates.rs",
            "after invalid pushes",
            &[30, 70],
            Exactly(4000),
        ),
        a("namespaces.rs", "team-a REST", &[70, 30], Exactly(3000)),
        a("namespaces.rs", "team-a gRPC", &[70, 30], Exactly(2000)),
        a("namespaces.rs", "team-b REST", &[10, 90], Exactly(3000)),
        a("live_changes.rs", "initial 50/50", &[50, 50], AtLeast(P)),
        a("live_changes.rs", "90/10", &[90, 10], AtLeast(P)),
        a(
            "live_changes.rs",
            "member added 40/30/30",
            &[40, 30, 30],
            AtLeast(P),
        ),
        a(
            "live_changes.rs",
            "member removed 50/50",
            &[50, 50],
            AtLeast(P),
        ),
        a("local_gateway.rs", "REST 80/20", &[80, 20], Exactly(4000)),
        a("local_gateway.rs", "gRPC 80/20", &[80, 20], Exactly(4000)),
        a(
            "local_live_edits.rs",
            "initial 80/20",
            &[80, 20],
            AtLeast(P),
        ),
        a("local_live_edits.rs", "30/70", &[30, 70], AtLeast(P)),
        a(
            "local_live_edits.rs",
            "member added 40/30/30",
            &[40, 30, 30],
            AtLeast(P),
        ),
        a(
            "local_live_edits.rs",
            "member removed 50/50",
            &[50, 50],
            AtLeast(P),
        ),
        a(
            "local_live_edits.rs",
            "invalid edit, 50/50 holds",
            &[50, 50],
            AtLeast(P),
        ),
        a(
            "grpc_model_name.rs",
            "model_name 80/20/0",
            &[80, 20],
            Exactly(10_000),
        ),
        a(
            "grpc_model_name.rs",
            "model_name + header 80/20/0",
            &[80, 20],
            Exactly(2000),
        ),
        a("cluster_gateway.rs", "REST 80/20", &[80, 20], Exactly(2000)),
        a("cluster_gateway.rs", "gRPC 80/20", &[80, 20], Exactly(2000)),
        a("cluster_gateway.rs", "REST 50/50", &[50, 50], Exactly(2000)),
        a(
            "cluster_gateway.rs",
            "REST 50/50 after a stale edit",
            &[50, 50],
            Exactly(2000),
        ),
        a(
            "cluster_grpc_model_name.rs",
            "gRPC model_name 80/20 (EnvoyFilter)",
            &[80, 20],
            Exactly(2000),
        ),
        a(
            "cluster_grpc_model_name.rs",
            "gRPC mm-vmodel-id 80/20 (EnvoyFilter)",
            &[80, 20],
            Exactly(2000),
        ),
        a(
            "cluster_grpc_model_name.rs",
            "REST 80/20 (EnvoyFilter)",
            &[80, 20],
            Exactly(2000),
        ),
        a(
            "cluster_grpc_model_name.rs",
            "gRPC model_name 80/20 after the switch",
            &[80, 20],
            Exactly(2000),
        ),
        a("docker_compose.rs", "REST 80/20", &[80, 20], Exactly(2000)),
        a("docker_compose.rs", "gRPC 80/20", &[80, 20], Exactly(2000)),
        a(
            "docker_compose.rs",
            "REST 50/50 after the edit",
            &[50, 50],
            Exactly(2000),
        ),
        a(
            "cluster_install.rs",
            "guide: REST 80/20",
            &[80, 20],
            Exactly(2000),
        ),
        a(
            "cluster_install.rs",
            "guide: REST 50/50",
            &[50, 50],
            Exactly(2000),
        ),
    ]
};

/// `check_split(` call sites per test file (a call site in a loop or a helper serves
/// several assertions of [`BUDGET`]).
pub const CALL_SITES: &[(&str, usize)] = &[
    ("split.rs", 1),
    ("sticky_override.rs", 2),
    ("config_updates.rs", 3),
    ("namespaces.rs", 1),
    ("live_changes.rs", 1),
    ("local_gateway.rs", 2),
    ("local_live_edits.rs", 1),
    ("grpc_model_name.rs", 1),
    ("cluster_gateway.rs", 1),
    ("cluster_grpc_model_name.rs", 1),
    ("cluster_install.rs", 1),
    ("docker_compose.rs", 1),
];

/// Exact tail probabilities of Pearson's statistic for two or three cells, for the
/// budget's unit tests (the chi-square distribution is only its limit).
pub mod exact {
    /// ln(k!) for k in 0..=n.
    pub struct LnFactorials(Vec<f64>);

    impl LnFactorials {
        pub fn up_to(n: u64) -> LnFactorials {
            let mut table = Vec::with_capacity(n as usize + 1);
            let mut sum = 0.0;
            table.push(0.0);
            for k in 1..=n {
                sum += (k as f64).ln();
                table.push(sum);
            }
            LnFactorials(table)
        }

        fn get(&self, k: u64) -> f64 {
            self.0[k as usize]
        }

        /// P(X = k) for X ~ Binomial(n, p).
        pub fn binomial(&self, n: u64, p: f64, k: u64) -> f64 {
            if p <= 0.0 {
                return if k == 0 { 1.0 } else { 0.0 };
            }
            if p >= 1.0 {
                return if k == n { 1.0 } else { 0.0 };
            }
            (self.get(n) - self.get(k) - self.get(n - k)
                + k as f64 * p.ln()
                + (n - k) as f64 * (-p).ln_1p())
            .exp()
        }

        /// P(X < lo or X > hi) for X ~ Binomial(n, p).
        pub fn binomial_outside(&self, n: u64, p: f64, lo: f64, hi: f64) -> f64 {
            let mean = n as f64 * p;
            let mut total = 0.0;
            let mut k = lo.ceil() - 1.0;
            while k >= 0.0 {
                let term = self.binomial(n, p, k as u64);
                total += term;
                if term < 1e-40 && k < mean {
                    break;
                }
                k -= 1.0;
            }
            let mut k = hi.floor() + 1.0;
            while k <= n as f64 {
                let term = self.binomial(n, p, k.max(0.0) as u64);
                total += term;
                if term < 1e-40 && k > mean {
                    break;
                }
                k += 1.0;
            }
            total
        }
    }

    /// P(Pearson's statistic against shares `p0` exceeds `critical`) when `n` requests
    /// fall on the cells with shares `truth` (two or three cells).
    pub fn rejection(f: &LnFactorials, n: u64, p0: &[f64], truth: &[f64], critical: f64) -> f64 {
        let nf = n as f64;
        match (p0, truth) {
            ([a, b], [t, _]) => {
                let half = (critical * nf * a * b).sqrt();
                f.binomial_outside(n, *t, nf * a - half, nf * a + half)
            }
            ([a, b, c], [t1, t2, t3]) => {
                let (e1, e2, e3) = (nf * a, nf * b, nf * c);
                let sd = (nf * t1 * (1.0 - t1)).sqrt();
                let from = (nf * t1 - 15.0 * sd - 2.0).max(0.0) as u64;
                let to = ((nf * t1 + 15.0 * sd + 2.0) as u64).min(n);
                let q = t2 / (t2 + t3);
                let mut total = 0.0;
                for x1 in from..=to {
                    let weight = f.binomial(n, *t1, x1);
                    if weight < 1e-30 {
                        continue;
                    }
                    let rest = critical - (x1 as f64 - e1).powi(2) / e1;
                    let r = (n - x1) as f64;
                    // (x2 - e2)^2/e2 + (r - x2 - e3)^2/e3 <= rest, a quadratic in x2.
                    let qa = 1.0 / e2 + 1.0 / e3;
                    let qb = -2.0 - 2.0 * (r - e3) / e3;
                    let qc = e2 + (r - e3).powi(2) / e3 - rest;
                    let discriminant = qb * qb - 4.0 * qa * qc;
                    if rest < 0.0 || discriminant < 0.0 {
                        total += weight;
                        continue;
                    }
                    let lo = (-qb - discriminant.sqrt()) / (2.0 * qa);
                    let hi = (-qb + discriminant.sqrt()) / (2.0 * qa);
                    total += weight * f.binomial_outside(n - x1, q, lo, hi);
                }
                total
            }
            _ => panic!("two or three cells, with shares for each"),
        }
    }

    /// P(chi-square with `k` degrees of freedom > x), from the closed forms for integer k.
    pub fn chi_square_tail(x: f64, k: usize) -> f64 {
        let h = x / 2.0;
        let mut sum = 0.0;
        if k.is_multiple_of(2) {
            let mut term = 1.0;
            for i in 0..k / 2 {
                if i > 0 {
                    term *= h / i as f64;
                }
                sum += term;
            }
            (-h).exp() * sum
        } else {
            // erfc(sqrt(h)) + e^-h * sum_{i=1..(k-1)/2} h^(i-1/2) / Gamma(i + 1/2)
            let mut term = h.sqrt() / (std::f64::consts::PI.sqrt() / 2.0);
            for i in 1..=(k - 1) / 2 {
                if i > 1 {
                    term *= h / (i as f64 - 0.5);
                }
                sum += term;
            }
            erfc(h.sqrt()) + (-h).exp() * sum
        }
    }

    /// The complementary error function for x >= 0: Taylor series of erf below 0.5, else
    /// Laplace's continued fraction (modified Lentz), both to rounding error.
    fn erfc(x: f64) -> f64 {
        if x < 0.5 {
            // erf by its Taylor series, then 1 - erf.
            let mut sum = x;
            let mut term = x;
            for n in 1..60 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            return 1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum;
        }
        // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + 2/(x + ...)))))
        let tiny = 1e-300;
        let mut f = x;
        let mut c = x;
        let mut d = 0.0;
        for n in 1..500 {
            let an = n as f64 / 2.0;
            d = x + an * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = x + an / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (-x * x).exp() / std::f64::consts::PI.sqrt() / f
    }
}

#[cfg(test)]
mod tests {
    use super::exact::{chi_square_tail, rejection, LnFactorials};
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
        assert_eq!(check.critical, 23.026);
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

    #[test]
    fn the_critical_values_are_the_chi_square_quantiles_at_one_in_a_hundred_thousand() {
        // Published values at p = 0.001 and 1e-5 check the tail function itself.
        for (x, k, p) in [
            (10.828, 1, 1e-3),
            (13.816, 2, 1e-3),
            (16.266, 3, 1e-3),
            (29.588, 10, 1e-3),
            (19.511, 1, 1e-5),
            (23.026, 2, 1e-5),
        ] {
            let tail = chi_square_tail(x, k);
            assert!((tail / p - 1.0).abs() < 1e-3, "k={k} x={x}: {tail}");
        }
        for (i, &critical) in CRITICAL.iter().enumerate() {
            let k = i + 1;
            // Rounded to 3 decimals: the tail at the table value is within 0.1% of 1e-5.
            let tail = chi_square_tail(critical, k);
            assert!(
                (tail / PER_TEST_P - 1.0).abs() < 1e-3,
                "critical value for {k} degree(s) of freedom: tail {tail}"
            );
        }
    }

    /// The sample sizes an assertion may judge: its minimum, the next few (the exact
    /// tail wobbles with n), and larger ones up to five times the minimum.
    fn sizes(samples: Samples) -> Vec<u64> {
        match samples {
            Samples::Exactly(n) => vec![n],
            Samples::AtLeast(n) => (n..n + 40)
                .chain([n + 97, n + 250, n + 500, 2 * n, 3 * n, 5 * n])
                .collect(),
            Samples::Deterministic => vec![],
        }
    }

    fn shares(weights: &[u32]) -> Vec<f64> {
        let sum: u32 = weights.iter().sum();
        weights
            .iter()
            .map(|w| f64::from(*w) / f64::from(sum))
            .collect()
    }

    /// Every misweighting that moves 10 points of share from one member to another.
    fn ten_point_errors(p: &[f64]) -> Vec<Vec<f64>> {
        let mut errors = Vec::new();
        for from in 0..p.len() {
            for to in 0..p.len() {
                if from != to && p[from] >= 0.1 - 1e-12 {
                    let mut q = p.to_vec();
                    q[from] -= 0.1;
                    q[to] += 0.1;
                    errors.push(q);
                }
            }
        }
        errors
    }

    #[test]
    fn the_whole_suite_fails_a_correct_split_with_probability_below_one_in_a_thousand() {
        let largest = BUDGET
            .iter()
            .flat_map(|a| sizes(a.samples))
            .max()
            .unwrap_or(0);
        let f = LnFactorials::up_to(largest);
        let mut total = 0.0;
        for assertion in BUDGET {
            let p = shares(assertion.weights);
            let critical = CRITICAL[p.len() - 2];
            // Exact: the chi-square tail is only the limit; small shares make it wobble.
            let chance = sizes(assertion.samples)
                .into_iter()
                .map(|n| rejection(&f, n, &p, &p, critical))
                .fold(0.0, f64::max);
            eprintln!(
                "{:<22} {:<30} {:?}: chance of failing a correct split {chance:.2e}",
                assertion.file, assertion.what, assertion.samples
            );
            assert!(chance < 1.5e-5, "{assertion:?}: {chance}");
            total += chance;
        }
        eprintln!(
            "{} assertions, {} random: union bound {total:.2e}",
            BUDGET.len(),
            BUDGET
                .iter()
                .filter(|a| a.samples != Samples::Deterministic)
                .count()
        );
        assert!(total < 1e-3, "whole suite: {total}");
    }

    #[test]
    fn each_assertion_catches_a_ten_point_misweighting_almost_surely() {
        let f = LnFactorials::up_to(10_000);
        let mut weakest: f64 = 1.0;
        for assertion in BUDGET {
            let n = match assertion.samples {
                Samples::Exactly(n) | Samples::AtLeast(n) => n,
                Samples::Deterministic => continue,
            };
            let p = shares(assertion.weights);
            let critical = CRITICAL[p.len() - 2];
            for wrong in ten_point_errors(&p) {
                let power = rejection(&f, n, &p, &wrong, critical);
                weakest = weakest.min(power);
                assert!(power > 0.9999, "{assertion:?} vs {wrong:?}: power {power}");
            }
        }
        // 70/30 served for 80/20, with the fewest requests any 80/20 assertion judges.
        let power = rejection(&f, 2000, &[0.8, 0.2], &[0.7, 0.3], CRITICAL[0]);
        eprintln!("power: weakest {weakest:.7}; 70/30 for 80/20 at 2000 requests {power:.10}");
        assert!(power > 1.0 - 1e-8);
    }

    #[test]
    fn exact_tails_agree_with_the_chi_square_limit_and_with_a_direct_sum() {
        let f = LnFactorials::up_to(60);
        // Direct enumeration of a small three-cell case.
        let (n, p) = (60u64, [0.5, 0.3, 0.2]);
        let critical = 5.991; // chi-square 2 dof at p = 0.05
        let mut direct = 0.0;
        for x1 in 0..=n {
            for x2 in 0..=n - x1 {
                let x3 = n - x1 - x2;
                let e = [n as f64 * p[0], n as f64 * p[1], n as f64 * p[2]];
                let stat: f64 = [x1, x2, x3]
                    .iter()
                    .zip(e)
                    .map(|(x, e)| (*x as f64 - e).powi(2) / e)
                    .sum();
                if stat > critical {
                    let ln = |k: u64| (1..=k).map(|i| (i as f64).ln()).sum::<f64>();
                    direct += (ln(n) - ln(x1) - ln(x2) - ln(x3)
                        + x1 as f64 * p[0].ln()
                        + x2 as f64 * p[1].ln()
                        + x3 as f64 * p[2].ln())
                    .exp();
                }
            }
        }
        let ours = rejection(&f, n, &p, &p, critical);
        assert!((ours - direct).abs() < 1e-12, "{ours} vs {direct}");
        let f = LnFactorials::up_to(10_000);
        let big = rejection(&f, 10_000, &[0.5, 0.3, 0.2], &[0.5, 0.3, 0.2], CRITICAL[1]);
        assert!((big / PER_TEST_P - 1.0).abs() < 0.05, "{big}");
    }

    #[test]
    fn every_check_split_call_site_is_in_the_budget() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).expect("tests/tests") {
            let path = entry.expect("a directory entry").path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let sites = text.matches("check_split(").count();
            if sites > 0 {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                found.insert(name, sites);
            }
        }
        let listed: BTreeMap<String, usize> = CALL_SITES
            .iter()
            .map(|(f, n)| (f.to_string(), *n))
            .collect();
        assert_eq!(
            found, listed,
            "a split assertion was added or removed: update BUDGET, CALL_SITES and docs/testing.md"
        );
        for (file, sites) in CALL_SITES {
            let assertions = BUDGET.iter().filter(|a| a.file == *file).count();
            assert!(
                assertions >= *sites,
                "{file}: {sites} call sites, {assertions} budgeted"
            );
        }
    }
}
