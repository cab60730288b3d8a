//! `modelsplit local`'s automated rollouts ([`crate::rollouts`]): the controller's state in
//! `<out>/rollouts.json` (so a restart resumes where it was), the gateway's numbers from
//! its admin API (the member routes' statistics and the filter's gRPC error counters).

use std::path::{Path, PathBuf};

use modelsplit_core::planner::{Observed, Plan};
use modelsplit_core::rollout::Tally;
use modelsplit_filter::plan::grpc_errors_counter_name;

use super::admin::Admin;
use crate::rollouts::{GatewayNumbers, Rollouts};
use crate::status::outcomes::RouteReadings;
use crate::status::report::{counter, Readings};

/// The file in `--out` that keeps the rollouts' state.
pub const ROLLOUTS_FILE: &str = "rollouts.json";

/// The rollouts of one local gateway, kept in a file.
#[derive(Debug)]
pub struct LocalRollouts {
    path: PathBuf,
    rollouts: Rollouts,
}

impl LocalRollouts {
    /// The rollouts kept in `out` (none when the file is missing or unreadable).
    pub fn load(out: &Path) -> LocalRollouts {
        let path = out.join(ROLLOUTS_FILE);
        let states = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        LocalRollouts {
            path,
            rollouts: Rollouts::new(states),
        }
    }

    /// Whether a rollout is moving or waiting to start.
    pub fn progressing(&self) -> bool {
        self.rollouts.progressing()
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
        let numbers = match admin {
            _ if !self.rollouts.wanted(observed) => Err(String::new()),
            Some(admin) => read_numbers(admin),
            None => Err("run with --admin, rollouts judge the gateway's numbers".to_string()),
        };
        let numbers = numbers.as_ref().map(|n| n as &dyn GatewayNumbers);
        let (lines, changed) =
            self.rollouts
                .apply(observed, plan, numbers.map_err(Clone::clone), now);
        let mut lines: Vec<String> = lines.into_iter().map(|l| l.text).collect();
        if changed {
            let text = serde_json::to_string_pretty(self.rollouts.states()).unwrap_or_default();
            if let Err(error) = std::fs::write(&self.path, text + "\n") {
                lines.push(format!(
                    "rollouts: cannot save {}: {error}; a restart would start them over",
                    self.path.display()
                ));
            }
        }
        lines
    }
}

/// The local gateway's numbers: its member routes' statistics and the filter's counters.
struct LocalNumbers {
    routes: RouteReadings,
    counters: Readings,
}

fn read_numbers(admin: &Admin) -> Result<LocalNumbers, String> {
    let routes = crate::status::route_readings(admin).map_err(|e| e.to_string())?;
    let counters = crate::status::readings(admin).map_err(|e| e.to_string())?;
    Ok(LocalNumbers { routes, counters })
}

impl GatewayNumbers for LocalNumbers {
    fn tally(&self, namespace: &str, group: &str, member: &str) -> Tally {
        let route = self
            .routes
            .get(&(namespace.to_string(), member.to_string()))
            .cloned()
            .unwrap_or_default();
        let grpc_errors = counter(
            &self.counters,
            &grpc_errors_counter_name(namespace, group, member),
        );
        Tally {
            responses: route.completed,
            errors: route.server_errors + grpc_errors,
            latency: route.latency,
        }
    }
}
