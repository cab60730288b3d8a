//! Automated rollouts, the pure part: a group's canary member is moved through declared
//! steps of traffic from what the gateway measured during each step, promoted at the
//! end, and rolled back at once when it answers worse than the thresholds allow.
//!
//! The user declares, on the canary's InferenceService (annotation [`ROLLOUT_ANNOTATION`]):
//! `steps=5,25,50,100 interval=30s max-error-percent=1 max-p99-ratio=1.5 min-requests=100`.
//! What the controller decides (the step, when it started, the verdict) is its own state
//! ([`Rollout`]), kept where the controller owns it; the declaration is never rewritten.
//! While a rollout runs, the canary gets the step's share and the other members share the
//! rest in proportion to their declared weights; rolled back, the canary gets 0; promoted,
//! 100. Removing the annotation returns the group to its declared weights.

use crate::histogram;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The annotation declaring a rollout, on the canary's InferenceService.
pub const ROLLOUT_ANNOTATION: &str = "modelsplit.io/rollout";

/// A rollout as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct Declaration {
    /// The canary's share at each step, percent, ascending, ending at 100.
    pub steps: Vec<u32>,
    /// How long each step runs before the next (at least).
    pub interval: Duration,
    /// The canary's largest acceptable share of errors (5xx and gRPC non-OK), percent.
    pub max_error_percent: f64,
    /// The canary's largest acceptable p99 latency, as a multiple of the stable members'.
    pub max_p99_ratio: f64,
    /// Requests the canary must answer in a step before it is judged.
    pub min_requests: u64,
}

/// Why a declaration cannot be used; the message names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ROLLOUT_ANNOTATION} {0} (example: \"steps=5,25,50,100 interval=30s max-error-percent=1 max-p99-ratio=1.5 min-requests=100\")")]
pub struct DeclarationError(String);

impl std::str::FromStr for Declaration {
    type Err = DeclarationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |m: String| DeclarationError(m);
        let mut declaration = Declaration {
            steps: Vec::new(),
            interval: Duration::from_secs(60),
            max_error_percent: 1.0,
            max_p99_ratio: 1.5,
            min_requests: 100,
        };
        for part in text.split(|c: char| c.is_whitespace() || c == ';') {
            if part.is_empty() {
                continue;
            }
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("has {part:?}, not key=value")))?;
            let number = |what: &str| -> Result<f64, DeclarationError> {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| bad(format!("{what}={value:?} is not a non-negative number")))
            };
            match key {
                "steps" => {
                    declaration.steps = value
                        .split(',')
                        .map(|s| s.parse::<u32>().ok().filter(|p| (1..=100).contains(p)))
                        .collect::<Option<Vec<u32>>>()
                        .ok_or_else(|| {
                            bad(format!(
                                "steps={value:?}: give whole percents from 1 to 100"
                            ))
                        })?;
                }
                "interval" => {
                    declaration.interval = duration(value).ok_or_else(|| {
                        bad(format!(
                            "interval={value:?}: give seconds or minutes, e.g. 30s or 2m"
                        ))
                    })?
                }
                "max-error-percent" => declaration.max_error_percent = number(key)?,
                "max-p99-ratio" => declaration.max_p99_ratio = number(key)?,
                "min-requests" => {
                    declaration.min_requests = value
                        .parse()
                        .map_err(|_| bad(format!("min-requests={value:?} is not a whole number")))?
                }
                other => return Err(bad(format!("has an unknown key {other:?}"))),
            }
        }
        let steps = &declaration.steps;
        if steps.is_empty() {
            return Err(bad("names no steps".into()));
        }
        if steps.windows(2).any(|w| w[0] >= w[1]) || steps.last() != Some(&100) {
            return Err(bad(format!(
                "steps={steps:?}: they must rise and end at 100"
            )));
        }
        Ok(declaration)
    }
}

fn duration(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = number.parse().ok()?;
    match unit {
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        _ => None,
    }
}

/// What the gateway counted for some members, cumulative since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub responses: u64,
    pub errors: u64,
    /// Latency histogram: (upper bound ms, answers at or below it), ascending.
    pub latency: histogram::Buckets,
}

impl Tally {
    /// What happened since `earlier` (a gateway restart, which resets the counters,
    /// reads as everything since the restart).
    pub fn since(&self, earlier: &Tally) -> Tally {
        if self.responses < earlier.responses {
            return self.clone();
        }
        Tally {
            responses: self.responses - earlier.responses,
            errors: self.errors.saturating_sub(earlier.errors),
            latency: histogram::since(&self.latency, &earlier.latency),
        }
    }

    pub fn error_percent(&self) -> f64 {
        if self.responses == 0 {
            0.0
        } else {
            100.0 * self.errors as f64 / self.responses as f64
        }
    }

    /// The bucket bound under which the 99th percentile falls (None without answers).
    pub fn p99_ms(&self) -> Option<f64> {
        histogram::quantile(&self.latency, 0.99)
    }

    /// The bound of the bucket below the p99's: the p99 is certainly above it.
    fn p99_floor_ms(&self) -> Option<f64> {
        let p99 = self.p99_ms()?;
        Some(
            self.latency
                .iter()
                .map(|(bound, _)| *bound)
                .take_while(|bound| *bound < p99)
                .last()
                .unwrap_or(0.0),
        )
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    Progressing,
    Promoted,
    RolledBack { reason: String },
}

/// The controller's state of one group's rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub canary: String,
    /// The annotation text this state is for: an edited declaration starts over.
    pub declared: String,
    /// Index into the declared steps.
    pub step: usize,
    /// When the step started, seconds since the Unix epoch.
    pub step_started: u64,
    /// The gateway's tallies when the step started: the canary's and the others'.
    pub canary_at_start: Tally,
    pub stable_at_start: Tally,
    /// The stable members' p99 (bucket bound, ms) in the last step where they answered
    /// `min-requests`: the reference when they answer too few to measure (at 100 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_p99_ms: Option<f64>,
    #[serde(flatten)]
    pub phase: Phase,
}

/// What one evaluation decided, for the log and Events.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Started,
    /// Still in the step; why (too early, too little traffic).
    Waiting(String),
    Advanced {
        to_percent: u32,
        reason: String,
    },
    Promoted(String),
    RolledBack(String),
    /// Promoted or rolled back before: nothing moves.
    Settled,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Started => write!(f, "rollout started"),
            Verdict::Waiting(why) => write!(f, "holding: {why}"),
            Verdict::Advanced { to_percent, reason } => {
                write!(f, "advanced to {to_percent}%: {reason}")
            }
            Verdict::Promoted(reason) => write!(f, "promoted: {reason}"),
            Verdict::RolledBack(reason) => write!(f, "ROLLED BACK: {reason}"),
            Verdict::Settled => write!(f, "settled"),
        }
    }
}

impl Rollout {
    /// A rollout at its first step, from now.
    pub fn start(
        canary: &str,
        declared: &str,
        now: u64,
        canary_tally: &Tally,
        stable_tally: &Tally,
    ) -> Rollout {
        Rollout {
            canary: canary.to_string(),
            declared: declared.to_string(),
            step: 0,
            step_started: now,
            canary_at_start: canary_tally.clone(),
            stable_at_start: stable_tally.clone(),
            stable_p99_ms: None,
            phase: Phase::Progressing,
        }
    }

    /// The canary's share now, percent.
    pub fn canary_percent(&self, declaration: &Declaration) -> u32 {
        match self.phase {
            Phase::Promoted => 100,
            Phase::RolledBack { .. } => 0,
            Phase::Progressing => declaration.steps.get(self.step).copied().unwrap_or(100),
        }
    }

    /// Judges the current step from the gateway's tallies now.
    pub fn evaluate(
        &mut self,
        declaration: &Declaration,
        now: u64,
        canary: &Tally,
        stable: &Tally,
    ) -> Verdict {
        if self.phase != Phase::Progressing {
            return Verdict::Settled;
        }
        let in_step = canary.since(&self.canary_at_start);
        let stable_in_step = stable.since(&self.stable_at_start);
        let percent = self.canary_percent(declaration);
        if in_step.responses < declaration.min_requests {
            return Verdict::Waiting(format!(
                "the canary answered {} of the {} requests a step needs at {percent}%",
                in_step.responses, declaration.min_requests
            ));
        }
        let errors = in_step.error_percent();
        if errors > declaration.max_error_percent {
            return self.roll_back(format!(
                "{} of {} answers failed at {percent}% ({errors:.1}% > max-error-percent {})",
                in_step.errors, in_step.responses, declaration.max_error_percent
            ));
        }
        // Histograms give buckets, not values: the canary breaks the ratio only when its
        // p99 is certainly above the ratio times the stable members' (its bucket starts
        // above their bucket's bound times the ratio), so sub-millisecond jitter between
        // neighbouring buckets never rolls a healthy canary back.
        // The stable members' p99 is measured only on `min-requests` of their own answers
        // in the step; with fewer (the canary at 100 %, or nearly) their last measured one
        // stands in.
        let stable_measured = (histogram::count(&stable_in_step.latency)
            >= declaration.min_requests)
            .then(|| stable_in_step.p99_ms())
            .flatten();
        if let (Some(floor), Some(p99), Some(stable_p99)) = (
            in_step.p99_floor_ms(),
            in_step.p99_ms(),
            stable_measured.or(self.stable_p99_ms),
        ) {
            if floor > declaration.max_p99_ratio * stable_p99 {
                let when = if stable_measured.is_some() {
                    "in the step"
                } else {
                    "in an earlier step"
                };
                return self.roll_back(format!(
                    "p99 between {floor} and {p99} ms against the stable members' ≤{stable_p99} ms {when} at {percent}% (more than max-p99-ratio {})",
                    declaration.max_p99_ratio
                ));
            }
        }
        let elapsed = now.saturating_sub(self.step_started);
        if elapsed < declaration.interval.as_secs() {
            return Verdict::Waiting(format!(
                "{elapsed} of {} s at {percent}%",
                declaration.interval.as_secs()
            ));
        }
        let reason = format!(
            "{} answers at {percent}%, {errors:.1}% errors, p99 {}",
            in_step.responses,
            in_step
                .p99_ms()
                .map_or("unknown".to_string(), |p| format!("≤{p} ms"))
        );
        if self.step + 1 >= declaration.steps.len() {
            self.phase = Phase::Promoted;
            return Verdict::Promoted(reason);
        }
        self.step += 1;
        self.step_started = now;
        self.canary_at_start = canary.clone();
        self.stable_at_start = stable.clone();
        self.stable_p99_ms = stable_measured.or(self.stable_p99_ms);
        Verdict::Advanced {
            to_percent: self.canary_percent(declaration),
            reason,
        }
    }

    fn roll_back(&mut self, reason: String) -> Verdict {
        self.phase = Phase::RolledBack {
            reason: reason.clone(),
        };
        Verdict::RolledBack(reason)
    }
}

/// The members' weights (basis points, summing to 10,000) when the canary has
/// `canary_percent` and the others share the rest as their `declared` weights do. None
/// when the others have no declared weight to share it by.
pub fn weights(declared: &[(String, u32)], canary: &str, canary_percent: u32) -> Option<Vec<u32>> {
    let canary_bp = canary_percent.min(100) * 100;
    let others: u64 = declared
        .iter()
        .filter(|(name, _)| name != canary)
        .map(|(_, w)| u64::from(*w))
        .sum();
    if others == 0 {
        return None;
    }
    let rest = u64::from(10_000 - canary_bp);
    let mut weights: Vec<u32> = declared
        .iter()
        .map(|(name, w)| {
            if name == canary {
                canary_bp
            } else {
                (rest * u64::from(*w) / others) as u32
            }
        })
        .collect();
    // Rounding leftovers go to the largest of the others, so the sum is exact.
    let sum: u32 = weights.iter().sum();
    if let Some((index, _)) = declared
        .iter()
        .enumerate()
        .filter(|(_, (name, _))| name != canary)
        .max_by_key(|(_, (_, w))| *w)
    {
        if let Some(w) = weights.get_mut(index) {
            *w += 10_000 - sum;
        }
    }
    Some(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declaration() -> Declaration {
        "steps=10,50,100 interval=30s max-error-percent=2 max-p99-ratio=2 min-requests=100"
            .parse()
            .unwrap()
    }

    fn tally(responses: u64, errors: u64, p99_bucket: usize) -> Tally {
        // Buckets 10, 20, 50, 100 ms; 99% of the answers in `p99_bucket`, 1% in the first.
        let bounds = [10.0, 20.0, 50.0, 100.0];
        let first = responses / 100;
        let latency = bounds
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let n = if i < p99_bucket { first } else { responses };
                (b, n)
            })
            .collect();
        Tally {
            responses,
            errors,
            latency,
        }
    }

    #[test]
    fn declarations_parse_with_defaults_and_bad_ones_say_what_to_fix() {
        let d: Declaration = "steps=5,25,100".parse().unwrap();
        assert_eq!(d.steps, [5, 25, 100]);
        assert_eq!(d.interval, Duration::from_secs(60));
        assert_eq!(d.min_requests, 100);
        let full = declaration();
        assert_eq!(full.interval, Duration::from_secs(30));
        assert_eq!(full.max_error_percent, 2.0);
        for (bad, says) in [
            ("", "names no steps"),
            ("steps=5,25", "end at 100"),
            ("steps=50,25,100", "rise"),
            ("steps=0,100", "from 1 to 100"),
            ("steps=5,100 interval=soon", "interval"),
            ("steps=5,100 speed=2", "unknown key"),
            ("steps=5,100 max-error-percent=-1", "non-negative"),
            ("steps", "key=value"),
        ] {
            let error = bad.parse::<Declaration>().unwrap_err().to_string();
            assert!(error.contains(says), "{bad:?}: {error}");
            assert!(error.contains("example"), "{error}");
        }
    }

    #[test]
    fn a_healthy_canary_advances_step_by_step_and_is_promoted() {
        let d = declaration();
        let mut r = Rollout::start("v2", "decl", 1000, &Tally::default(), &Tally::default());
        assert_eq!(r.canary_percent(&d), 10);
        // Too early: enough traffic, 10 s into a 30 s step.
        let v = r.evaluate(&d, 1010, &tally(150, 1, 1), &tally(1000, 0, 1));
        assert!(
            matches!(v, Verdict::Waiting(ref w) if w.contains("10 of 30 s")),
            "{v}"
        );
        let v = r.evaluate(&d, 1030, &tally(200, 1, 1), &tally(1800, 0, 1));
        assert!(matches!(v, Verdict::Advanced { to_percent: 50, .. }), "{v}");
        assert_eq!((r.step, r.step_started), (1, 1030));
        // The next step is judged on its own traffic only.
        let v = r.evaluate(&d, 1061, &tally(250, 1, 1), &tally(2000, 0, 1));
        assert!(
            matches!(v, Verdict::Waiting(ref w) if w.contains("50 of the 100")),
            "{v}"
        );
        let v = r.evaluate(&d, 1062, &tally(400, 2, 1), &tally(2200, 0, 1));
        assert!(
            matches!(
                v,
                Verdict::Advanced {
                    to_percent: 100,
                    ..
                }
            ),
            "{v}"
        );
        let v = r.evaluate(&d, 1100, &tally(600, 3, 1), &tally(2200, 0, 1));
        assert!(matches!(v, Verdict::Promoted(_)), "{v}");
        assert_eq!(r.canary_percent(&d), 100);
        assert_eq!(
            r.evaluate(&d, 2000, &tally(9000, 9000, 3), &Tally::default()),
            Verdict::Settled
        );
    }

    #[test]
    fn each_threshold_rolls_back_at_once() {
        let d = declaration();
        // Errors: 3 of 100 = 3% > 2%, before the step's interval is over.
        let mut r = Rollout::start("v2", "decl", 0, &Tally::default(), &Tally::default());
        let v = r.evaluate(&d, 5, &tally(100, 3, 1), &tally(900, 0, 1));
        assert!(
            matches!(v, Verdict::RolledBack(ref why) if why.contains("3 of 100") && why.contains("3.0% > max-error-percent 2")),
            "{v}"
        );
        assert_eq!(r.canary_percent(&d), 0);
        assert!(matches!(r.phase, Phase::RolledBack { .. }));
        // Latency: the canary's p99 in (50, 100] ms against the stable's under 10 ms (> 2x).
        let mut r = Rollout::start("v2", "decl", 0, &Tally::default(), &Tally::default());
        let v = r.evaluate(&d, 5, &tally(100, 0, 3), &tally(900, 0, 0));
        assert!(
            matches!(v, Verdict::RolledBack(ref why) if why.contains("p99 between 50 and 100 ms")),
            "{v}"
        );
        // In (20, 50] against under 10: possibly 2x only at the bucket edges, so not broken;
        // nor the next bucket up.
        for canary_bucket in [1, 2] {
            let mut r = Rollout::start("v2", "decl", 0, &Tally::default(), &Tally::default());
            let v = r.evaluate(&d, 5, &tally(100, 2, canary_bucket), &tally(900, 0, 0));
            assert!(matches!(v, Verdict::Waiting(_)), "{v}");
        }
    }

    #[test]
    fn at_100_percent_the_canary_is_compared_with_the_stable_members_last_measured_p99() {
        let d: Declaration =
            "steps=50,100 interval=30s max-error-percent=2 max-p99-ratio=2 min-requests=100"
                .parse()
                .unwrap();
        let mut r = Rollout::start("v2", "decl", 0, &Tally::default(), &Tally::default());
        // 50%: both under 20 ms; the stable's p99 (≤20 ms) is kept as the step advances.
        let v = r.evaluate(&d, 30, &tally(500, 0, 1), &tally(500, 0, 1));
        assert!(
            matches!(
                v,
                Verdict::Advanced {
                    to_percent: 100,
                    ..
                }
            ),
            "{v}"
        );
        assert_eq!(r.stable_p99_ms, Some(20.0));
        // 100%: the stable answers 5 (in flight at the switch) in under 10 ms; the canary in
        // (20, 50] is within 2x of the kept 20 ms, not of those 5 answers' 10.
        let (canary, stable) = (tally(500, 0, 1), tally(500, 0, 1));
        let mut in_step_canary = canary.clone();
        for bucket in &mut in_step_canary.latency {
            bucket.1 += if bucket.0 < 50.0 { 4 } else { 400 };
        }
        in_step_canary.responses += 400;
        let mut in_step_stable = stable.clone();
        for bucket in &mut in_step_stable.latency {
            bucket.1 += 5;
        }
        in_step_stable.responses += 5;
        let v = r.evaluate(&d, 35, &in_step_canary, &in_step_stable);
        assert!(matches!(v, Verdict::Waiting(_)), "{v}");
        // In (50, 100]: certainly above 2 x 20 ms, rolled back, saying against what.
        let mut slow = in_step_canary.clone();
        for bucket in &mut slow.latency {
            if bucket.0 == 50.0 {
                bucket.1 = canary.latency[2].1 + 4;
            }
        }
        let v = r.evaluate(&d, 36, &slow, &in_step_stable);
        assert!(
            matches!(v, Verdict::RolledBack(ref why) if why.contains("≤20 ms in an earlier step")),
            "{v}"
        );
    }

    #[test]
    fn too_little_traffic_holds_the_step_and_judges_nothing() {
        let d = declaration();
        let mut r = Rollout::start("v2", "decl", 0, &Tally::default(), &Tally::default());
        // All 50 failed, but 50 answers are too few to judge: held, not rolled back.
        let v = r.evaluate(&d, 3600, &tally(50, 50, 1), &tally(500, 0, 1));
        assert!(
            matches!(v, Verdict::Waiting(ref w) if w.contains("50 of the 100")),
            "{v}"
        );
        assert_eq!(r.phase, Phase::Progressing);
    }

    #[test]
    fn a_restart_resumes_where_it_was_and_a_gateway_restart_rebaselines() {
        let d = declaration();
        let mut r = Rollout::start("v2", "decl", 0, &Tally::default(), &Tally::default());
        r.evaluate(&d, 30, &tally(200, 0, 1), &tally(2000, 0, 1));
        // The state as the controller stores it, read back after its restart.
        let saved = serde_json::to_string(&r).unwrap();
        let mut resumed: Rollout = serde_json::from_str(&saved).unwrap();
        assert_eq!(resumed, r);
        assert_eq!(resumed.canary_percent(&d), 50);
        // The gateway restarted too: its counters start again from 0, below the baseline.
        let v = resumed.evaluate(&d, 100, &tally(120, 0, 1), &tally(900, 0, 1));
        assert!(
            matches!(
                v,
                Verdict::Advanced {
                    to_percent: 100,
                    ..
                }
            ),
            "{v}"
        );
    }

    #[test]
    fn weights_give_the_canary_its_step_and_the_rest_by_declared_weight() {
        let declared = vec![
            ("v1".to_string(), 6000),
            ("v2".to_string(), 1000),
            ("v3".to_string(), 3000),
        ];
        // v2 the canary at 25%: v1 and v3 share 75% as 6:3.
        assert_eq!(weights(&declared, "v2", 25), Some(vec![5000, 2500, 2500]));
        assert_eq!(weights(&declared, "v2", 0), Some(vec![6667, 0, 3333]));
        assert_eq!(weights(&declared, "v2", 100), Some(vec![0, 10000, 0]));
        let w = weights(&declared, "v2", 7).unwrap();
        assert_eq!(w.iter().sum::<u32>(), 10_000);
        // Nobody else to hand the rest to.
        assert_eq!(
            weights(&[("v2".into(), 10000), ("v1".into(), 0)], "v2", 50),
            None
        );
    }
}
