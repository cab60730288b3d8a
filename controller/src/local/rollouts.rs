//! `modelsplit local`'s automated rollouts ([`modelsplit_core::rollout`]): declarations read
//! from the manifests' InferenceServices, the controller's own state in
//! `<out>/rollouts.json` (so a restart resumes where it was), the gateway's numbers from
//! its admin API (the member routes' statistics and the filter's gRPC error counters).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use modelsplit_core::histogram;
use modelsplit_core::planner::{Observed, Plan};
use modelsplit_core::resources::inference_service::GROUP_LABEL;
use modelsplit_core::rollout::{self, Declaration, Rollout, Tally, Verdict, ROLLOUT_ANNOTATION};
use modelsplit_filter::plan::grpc_errors_counter_name;

use super::admin::Admin;
use crate::status::outcomes::RouteReadings;
use crate::status::report::{counter, Readings};

/// The file in `--out` that keeps the rollouts' state.
pub const ROLLOUTS_FILE: &str = "rollouts.json";

/// The rollouts of one local gateway.
#[derive(Debug, Default)]
pub struct Rollouts {
    path: PathBuf,
    /// By `<namespace>/<group>`.
    states: BTreeMap<String, Rollout>,
    /// The last line said per group, so that a waiting rollout is not repeated every tick.
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
    /// The rollouts kept in `out` (none when the file is missing or unreadable).
    pub fn load(out: &Path) -> Rollouts {
        let path = out.join(ROLLOUTS_FILE);
        let states = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        Rollouts {
            path,
            states,
            said: BTreeMap::new(),
            active: false,
        }
    }

    /// Whether a rollout is moving or waiting to start (the caller then comes back about
    /// once a second).
    pub fn progressing(&self) -> bool {
        self.active
    }

    /// Judges every declared rollout from the gateway's numbers and gives its group the
    /// weights of its step in `plan`. Returns the lines to print (each change once).
    pub fn apply(
        &mut self,
        observed: &Observed,
        plan: &mut Plan,
        admin: Option<&Admin>,
        now: u64,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        self.active = false;
        let declared = declarations(observed, &mut lines);
        let numbers = admin.map(read_numbers);
        let before = self.states.clone();
        self.states.retain(|key, _| declared.contains_key(key));
        for key in before.keys().filter(|k| !self.states.contains_key(*k)) {
            lines.push(format!(
                "rollout {key}: declaration removed; the group's declared weights apply"
            ));
            self.said.remove(key);
        }

        for gateway in &mut plan.gateways {
            for group in &mut gateway.config.groups {
                let key = format!("{}/{}", group.namespace, group.name);
                let Some(found) = declared.get(&key) else {
                    continue;
                };
                let declaration: Declaration = match found.text.parse() {
                    Ok(d) => d,
                    Err(error) => {
                        self.say(&mut lines, &key, format!("rollout {key} ignored: {error}"));
                        self.states.remove(&key);
                        continue;
                    }
                };
                if !group.members.iter().any(|m| m.name == found.canary) {
                    continue;
                }
                let tallies = match &numbers {
                    Some(Ok((routes, counters))) => Some(tallies(
                        routes,
                        counters,
                        &group.namespace,
                        &group.name,
                        &group
                            .members
                            .iter()
                            .map(|m| m.name.clone())
                            .collect::<Vec<_>>(),
                        &found.canary,
                    )),
                    Some(Err(why)) => {
                        self.say(&mut lines, &key, format!("rollout {key} waiting: {why}"));
                        None
                    }
                    None => {
                        self.say(
                            &mut lines,
                            &key,
                            format!("rollout {key} waiting: run with --admin, rollouts judge the gateway's numbers"),
                        );
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
                        lines.push(format!(
                            "rollout {key}: {} started at {}% (steps {:?}, {} s each)",
                            found.canary,
                            started.canary_percent(&declaration),
                            declaration.steps,
                            declaration.interval.as_secs()
                        ));
                        started
                    }
                };
                if let Some((canary, stable)) = &tallies {
                    let verdict = state.evaluate(&declaration, now, canary, stable);
                    let percent = state.canary_percent(&declaration);
                    let line = format!("rollout {key}: {} at {percent}%: {verdict}", found.canary);
                    match verdict {
                        Verdict::Waiting(_) => self.say(&mut lines, &key, line),
                        Verdict::Settled => {}
                        _ => {
                            self.said.insert(key.clone(), line.clone());
                            lines.push(line);
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
                    None => self.say(
                        &mut lines,
                        &key,
                        format!("rollout {key} ignored: the members other than the canary {} have no declared weight to share the rest by", found.canary),
                    ),
                }
            }
        }
        if self.states != before {
            self.save(&mut lines);
        }
        lines
    }

    /// Adds `line` unless it is what was said last for `key`.
    fn say(&mut self, lines: &mut Vec<String>, key: &str, line: String) {
        if self.said.get(key) != Some(&line) {
            self.said.insert(key.to_string(), line.clone());
            lines.push(line);
        }
    }

    fn save(&self, lines: &mut Vec<String>) {
        let text = serde_json::to_string_pretty(&self.states).unwrap_or_default();
        if let Err(error) = std::fs::write(&self.path, text + "\n") {
            lines.push(format!(
                "rollouts: cannot save {}: {error}; a restart would start them over",
                self.path.display()
            ));
        }
    }
}

/// `<namespace>/<group>` → the member that declares a rollout (one per group).
fn declarations(observed: &Observed, lines: &mut Vec<String>) -> BTreeMap<String, Declared> {
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
                lines.push(format!(
                    "rollout {key} ignored: {} all declare {ROLLOUT_ANNOTATION}; keep it on the canary only",
                    names.join(", ")
                ));
                return None;
            }
            all.pop().map(|d| (key, d))
        })
        .collect()
}

fn read_numbers(admin: &Admin) -> Result<(RouteReadings, Readings), String> {
    let routes = crate::status::route_readings(admin).map_err(|e| e.to_string())?;
    let counters = crate::status::readings(admin).map_err(|e| e.to_string())?;
    Ok((routes, counters))
}

/// The canary's tally and the other members' together.
fn tallies(
    routes: &RouteReadings,
    counters: &Readings,
    namespace: &str,
    group: &str,
    members: &[String],
    canary: &str,
) -> (Tally, Tally) {
    let one = |member: &str| {
        let route = routes
            .get(&(namespace.to_string(), member.to_string()))
            .cloned()
            .unwrap_or_default();
        let grpc_errors = counter(
            counters,
            &grpc_errors_counter_name(namespace, group, member),
        );
        Tally {
            responses: route.completed,
            errors: route.server_errors + grpc_errors,
            latency: route.latency,
        }
    };
    let mut stable = Tally::default();
    for member in members.iter().filter(|m| *m != canary) {
        let tally = one(member);
        stable.responses += tally.responses;
        stable.errors += tally.errors;
        stable.latency = histogram::sum(&stable.latency, &tally.latency);
    }
    (one(canary), stable)
}
