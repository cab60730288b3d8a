//! Automated rollouts, the part `modelsplit local` and `modelsplit run` share: declarations
//! read from the InferenceServices (`modelsplit.io/rollout` on the canary), each group's
//! state machine ([`modelsplit_core::rollout`]) judged from the gateway's numbers, and the
//! weights of the current step written into the plan. Where the numbers come from
//! ([`GatewayNumbers`]) and where the state is kept are the callers' business: a file in
//! `--out` for `local`, a ConfigMap the controller owns for `run`.

use std::collections::BTreeMap;

use modelsplit_core::histogram;
use modelsplit_core::planner::{Observed, Plan};
use modelsplit_core::resources::inference_service::GROUP_LABEL;
use modelsplit_core::rollout::{self, Declaration, Rollout, Tally, Verdict, ROLLOUT_ANNOTATION};

/// What a gateway counted for one member, cumulative since it started.
pub trait GatewayNumbers {
    fn tally(&self, namespace: &str, group: &str, member: &str) -> Tally;
}

/// Rollout states by `<namespace>/<group>`: what the controller keeps between runs.
pub type States = BTreeMap<String, Rollout>;

/// The kind of a line said about a rollout (an Event's reason in a cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Started,
    Advanced,
    Promoted,
    RolledBack,
    /// Holding in a step (too early, too little traffic): log lines, not Events.
    Holding,
    /// Waiting for the gateway's numbers, which cannot be read (the text says why).
    Waiting,
    /// A declaration that cannot be followed (the text says why and what to fix).
    Ignored,
    /// The declaration went; the declared weights apply again.
    Removed,
}

/// One line about one group's rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutLine {
    pub namespace: String,
    pub group: String,
    /// The InferenceService that declares the rollout (None when it is gone).
    pub canary: Option<String>,
    pub kind: LineKind,
    pub text: String,
}

/// The rollouts of one controller.
#[derive(Debug, Default)]
pub struct Rollouts {
    states: States,
    /// The last line said per group, so that a waiting rollout is not repeated every pass.
    said: BTreeMap<String, String>,
    /// A declared rollout is moving or waiting for the gateway's numbers to start.
    active: bool,
}

/// One group's declared rollout, as found on its members.
struct Declared {
    canary: String,
    text: String,
}

impl Rollouts {
    /// Resumes from kept states.
    pub fn new(states: States) -> Rollouts {
        Rollouts {
            states,
            ..Rollouts::default()
        }
    }

    pub fn states(&self) -> &States {
        &self.states
    }

    /// Whether a rollout is moving or waiting to start (the caller then comes back about
    /// once a second).
    pub fn progressing(&self) -> bool {
        self.active
    }

    /// Whether any InferenceService declares a rollout (the caller then reads the
    /// gateway's numbers before [`Rollouts::apply`]) or a kept state is to be dropped.
    pub fn wanted(&self, observed: &Observed) -> bool {
        !self.states.is_empty()
            || observed.inference_services.iter().any(|isvc| {
                isvc.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(ROLLOUT_ANNOTATION))
            })
    }

    /// Judges every declared rollout from the gateway's `numbers` (Err: why they cannot be
    /// read) and gives its group the weights of its step in `plan`. Returns the lines to
    /// say (each change once) and whether the states changed (to be kept).
    pub fn apply(
        &mut self,
        observed: &Observed,
        plan: &mut Plan,
        numbers: Result<&dyn GatewayNumbers, String>,
        now: u64,
    ) -> (Vec<RolloutLine>, bool) {
        let mut lines = Vec::new();
        self.active = false;
        let declared = declarations(observed, &mut lines);
        let before = self.states.clone();
        self.states.retain(|key, _| declared.contains_key(key));
        for (key, state) in before.iter().filter(|(k, _)| !self.states.contains_key(*k)) {
            let (namespace, group) = split_key(key);
            lines.push(RolloutLine {
                namespace,
                group,
                canary: Some(state.canary.clone()),
                kind: LineKind::Removed,
                text: format!(
                    "rollout {key}: declaration removed; the group's declared weights apply"
                ),
            });
            self.said.remove(key);
        }

        for gateway in &mut plan.gateways {
            for group in &mut gateway.config.groups {
                let key = format!("{}/{}", group.namespace, group.name);
                let Some(found) = declared.get(&key) else {
                    continue;
                };
                let line = |kind, text: String| RolloutLine {
                    namespace: group.namespace.clone(),
                    group: group.name.clone(),
                    canary: Some(found.canary.clone()),
                    kind,
                    text,
                };
                let declaration: Declaration = match found.text.parse() {
                    Ok(d) => d,
                    Err(error) => {
                        let text = format!("rollout {key} ignored: {error}");
                        self.say(&mut lines, &key, line(LineKind::Ignored, text));
                        self.states.remove(&key);
                        continue;
                    }
                };
                if !group.members.iter().any(|m| m.name == found.canary) {
                    continue;
                }
                let tallies = match &numbers {
                    Ok(numbers) => {
                        let members: Vec<&str> =
                            group.members.iter().map(|m| m.name.as_str()).collect();
                        Some(tallies(
                            *numbers,
                            &group.namespace,
                            &group.name,
                            &members,
                            &found.canary,
                        ))
                    }
                    Err(why) => {
                        let text = format!("rollout {key} waiting: {why}");
                        self.say(&mut lines, &key, line(LineKind::Waiting, text));
                        None
                    }
                };
                let mut state = match self.states.remove(&key) {
                    Some(state) if state.canary == found.canary && state.declared == found.text => {
                        state
                    }
                    _ => {
                        let Some((canary, stable)) = &tallies else {
                            self.active = true;
                            continue;
                        };
                        let started =
                            Rollout::start(&found.canary, &found.text, now, canary, stable);
                        self.said.remove(&key);
                        lines.push(line(
                            LineKind::Started,
                            format!(
                                "rollout {key}: {} started at {}% (steps {:?}, {} s each)",
                                found.canary,
                                started.canary_percent(&declaration),
                                declaration.steps,
                                declaration.interval.as_secs()
                            ),
                        ));
                        started
                    }
                };
                if let Some((canary, stable)) = &tallies {
                    let verdict = state.evaluate(&declaration, now, canary, stable);
                    let percent = state.canary_percent(&declaration);
                    let text = format!("rollout {key}: {} at {percent}%: {verdict}", found.canary);
                    let kind = match verdict {
                        Verdict::Settled => None,
                        Verdict::Waiting(_) => Some(LineKind::Holding),
                        Verdict::Started => Some(LineKind::Started),
                        Verdict::Advanced { .. } => Some(LineKind::Advanced),
                        Verdict::Promoted(_) => Some(LineKind::Promoted),
                        Verdict::RolledBack(_) => Some(LineKind::RolledBack),
                    };
                    match kind {
                        None => {}
                        Some(LineKind::Holding) => {
                            self.say(&mut lines, &key, line(LineKind::Holding, text))
                        }
                        Some(kind) => {
                            self.said.insert(key.clone(), text.clone());
                            lines.push(line(kind, text));
                        }
                    }
                }
                let percent = state.canary_percent(&declaration);
                self.active |= state.phase == rollout::Phase::Progressing;
                self.states.insert(key.clone(), state);
                let declared_weights: Vec<(String, u32)> = group
                    .members
                    .iter()
                    .map(|m| (m.name.clone(), m.weight))
                    .collect();
                match rollout::weights(&declared_weights, &found.canary, percent) {
                    Some(weights) => {
                        for (member, weight) in group.members.iter_mut().zip(weights) {
                            member.weight = weight;
                        }
                    }
                    None => {
                        let text = format!("rollout {key} ignored: the members other than the canary {} have no declared weight to share the rest by", found.canary);
                        self.say(&mut lines, &key, line(LineKind::Ignored, text));
                    }
                }
            }
        }
        let changed = self.states != before;
        (lines, changed)
    }

    /// Adds `line` unless it is what was said last for `key`.
    fn say(&mut self, lines: &mut Vec<RolloutLine>, key: &str, line: RolloutLine) {
        if self.said.get(key) != Some(&line.text) {
            self.said.insert(key.to_string(), line.text.clone());
            lines.push(line);
        }
    }
}

fn split_key(key: &str) -> (String, String) {
    let (namespace, group) = key.split_once('/').unwrap_or(("", key));
    (namespace.to_string(), group.to_string())
}

/// `<namespace>/<group>` → the member that declares a rollout (one per group).
fn declarations(observed: &Observed, lines: &mut Vec<RolloutLine>) -> BTreeMap<String, Declared> {
    let mut found: BTreeMap<String, Vec<Declared>> = BTreeMap::new();
    for isvc in &observed.inference_services {
        let meta = &isvc.metadata;
        let (Some(text), Some(group)) = (
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(ROLLOUT_ANNOTATION)),
            meta.labels.as_ref().and_then(|l| l.get(GROUP_LABEL)),
        ) else {
            continue;
        };
        let key = format!("{}/{group}", meta.namespace.as_deref().unwrap_or_default());
        found.entry(key).or_default().push(Declared {
            canary: meta.name.clone().unwrap_or_default(),
            text: text.clone(),
        });
    }
    found
        .into_iter()
        .filter_map(|(key, mut all)| {
            if all.len() > 1 {
                let names: Vec<&str> = all.iter().map(|d| d.canary.as_str()).collect();
                let (namespace, group) = split_key(&key);
                lines.push(RolloutLine {
                    namespace,
                    group,
                    canary: None,
                    kind: LineKind::Ignored,
                    text: format!(
                        "rollout {key} ignored: {} all declare {ROLLOUT_ANNOTATION}; keep it on the canary only",
                        names.join(", ")
                    ),
                });
                return None;
            }
            all.pop().map(|d| (key, d))
        })
        .collect()
}

/// The canary's tally and the other members' together.
fn tallies(
    numbers: &dyn GatewayNumbers,
    namespace: &str,
    group: &str,
    members: &[&str],
    canary: &str,
) -> (Tally, Tally) {
    let mut stable = Tally::default();
    for member in members.iter().filter(|m| **m != canary) {
        let tally = numbers.tally(namespace, group, member);
        stable.responses += tally.responses;
        stable.errors += tally.errors;
        stable.latency = histogram::sum(&stable.latency, &tally.latency);
    }
    (numbers.tally(namespace, group, canary), stable)
}
