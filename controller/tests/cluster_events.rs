//! Events on InferenceServices: one per member on every change of its group's report
//! (ready, invalid and why, stale, gRPC name lost), nothing in a steady state, and the
//! notices about single objects once each.

mod cluster_mock;

use std::path::PathBuf;

use cluster_mock::*;
use kube::runtime::events::EventType;
use modelsplit_controller::cluster::events::{
    event_object, type_name, Announcement, EventMemory, EventReason, IsvcUids,
};
use modelsplit_core::{planner, Plan, PreviousConfigs, Settings};

fn plan_of(files: &[&str], previous: &PreviousConfigs) -> Plan {
    let paths: Vec<PathBuf> = files
        .iter()
        .map(|f| manifest_dir().join("tests").join(f))
        .collect();
    let observed = modelsplit_core::manifests::load_manifests(&paths).expect("fixtures load");
    planner::plan(&observed, previous, &Settings::default())
}

fn announce(memory: &mut EventMemory, plan: &Plan) -> Vec<Announcement> {
    let announcements = memory.changes(&plan.groups, &plan.notices, &IsvcUids::new());
    for announcement in &announcements {
        memory.remember(announcement);
    }
    announcements
}

/// (reason, member, type) of each Event.
fn events(announcements: &[Announcement]) -> Vec<(String, String, String)> {
    announcements
        .iter()
        .flat_map(|a| &a.events)
        .map(|e| {
            (
                e.reason.to_string(),
                e.regarding.name.clone().unwrap_or_default(),
                type_name(e.type_).to_string(),
            )
        })
        .collect()
}

fn owned(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

#[test]
fn ready_then_stale_with_the_reason_then_ready_again_and_silence_in_between() {
    let mut memory = EventMemory::default();
    let good = plan_of(
        &["fixtures/base", "fixtures/seed-80-20.yaml"],
        &PreviousConfigs::new(),
    );
    memory.seed_once(&good.groups, &[]);

    let first = announce(&mut memory, &good);
    assert_eq!(
        events(&first),
        owned(&[
            ("GroupReady", "ai-model-one", "Normal"),
            ("GroupReady", "ai-model-two", "Normal"),
        ])
    );
    assert!(
        announce(&mut memory, &good).is_empty(),
        "steady state says nothing"
    );

    // One member re-annotated first: weights sum to 120, the last good split stays.
    let during = plan_of(
        &["fixtures/base", "fixtures/reweight-step-120.yaml"],
        &good.published_configs(),
    );
    let stale = announce(&mut memory, &during);
    assert_eq!(
        events(&stale),
        owned(&[
            ("GroupStale", "ai-model-one", "Warning"),
            ("GroupStale", "ai-model-two", "Warning"),
        ])
    );
    let note = &stale[0].events[0].note;
    assert!(note.contains("weights sum to 120"), "{note}");
    assert!(note.contains("keeping the last good split"), "{note}");
    assert!(announce(&mut memory, &during).is_empty());

    let back = announce(&mut memory, &good);
    assert_eq!(events(&back)[0].0, "GroupReady");
}

#[test]
fn a_restart_does_not_repeat_ready_for_groups_already_served() {
    let good = plan_of(
        &["fixtures/base", "fixtures/seed-80-20.yaml"],
        &PreviousConfigs::new(),
    );
    let served: Vec<_> = good.published_configs().into_values().collect();
    let mut memory = EventMemory::default();
    memory.seed_once(&good.groups, &served);
    assert!(announce(&mut memory, &good).is_empty());
}

#[test]
fn an_invalid_group_says_why_and_a_lost_grpc_name_is_said_once() {
    let plan = plan_of(
        &[
            "fixtures/base",
            "fixtures/same-name-two-namespaces.yaml",
            "fixtures/missing-weight.yaml",
        ],
        &PreviousConfigs::new(),
    );
    let mut memory = EventMemory::default();
    memory.seed_once(&plan.groups, &[]);
    let first = announce(&mut memory, &plan);
    let all = events(&first);

    // Group "shared" of modelmesh-apps (team-b's claim is older) and group "uses-dup"
    // (its member "dup" is team-b's gRPC name) answer REST only.
    let lost: Vec<_> = all
        .iter()
        .filter(|e| e.0 == "GrpcNameLost")
        .cloned()
        .collect();
    assert_eq!(
        lost,
        owned(&[
            ("GrpcNameLost", "shared-a", "Warning"),
            ("GrpcNameLost", "dup", "Warning"),
        ]),
        "{all:?}"
    );
    let lost_note = first
        .iter()
        .flat_map(|a| &a.events)
        .find(|e| e.reason == EventReason::GrpcNameLost)
        .map(|e| e.note.clone())
        .unwrap();
    assert!(
        lost_note.contains("belongs to namespace team-b"),
        "{lost_note}"
    );

    let invalid: Vec<_> = first
        .iter()
        .flat_map(|a| &a.events)
        .filter(|e| e.reason == EventReason::GroupInvalid)
        .collect();
    assert!(!invalid.is_empty(), "{all:?}");
    assert!(
        invalid
            .iter()
            .all(|e| e.type_ == EventType::Warning && e.note.contains("invalid")),
        "{invalid:?}"
    );

    // Notices about single objects (the isvc without a gRPC route) are said once too.
    let notices: Vec<_> = all
        .iter()
        .filter(|e| e.0 == "ModelsplitNotice")
        .cloned()
        .collect();
    assert_eq!(notices, owned(&[("ModelsplitNotice", "dup", "Warning")]));
    assert!(announce(&mut memory, &plan).is_empty(), "nothing twice");
}

#[test]
fn a_group_that_goes_away_and_comes_back_is_announced_again() {
    let good = plan_of(
        &["fixtures/base", "fixtures/seed-80-20.yaml"],
        &PreviousConfigs::new(),
    );
    let empty = plan_of(&["fixtures/base"], &PreviousConfigs::new());
    let mut memory = EventMemory::default();
    memory.seed_once(&good.groups, &[]);
    assert_eq!(announce(&mut memory, &good).len(), 1);
    assert!(announce(&mut memory, &empty).is_empty());
    assert_eq!(announce(&mut memory, &good).len(), 1);
}

#[test]
fn event_objects_are_valid_for_the_events_api() {
    let plan = plan_of(
        &["fixtures/base", "fixtures/seed-80-20.yaml"],
        &PreviousConfigs::new(),
    );
    let mut memory = EventMemory::default();
    let announcements = memory.changes(&plan.groups, &plan.notices, &IsvcUids::new());
    let mut spec = announcements[0].events[0].clone();
    spec.note = "é".repeat(2000);
    let wall = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let first = event_object(&spec, "pod-a", wall);
    let second = event_object(&spec, "pod-a", wall);
    // The API server caps notes at 1 kB; names must not collide within one instant.
    assert!(first.note.as_ref().unwrap().len() <= 1024);
    assert_ne!(first.metadata.name, second.metadata.name);
    assert_eq!(first.reporting_controller.as_deref(), Some("modelsplit"));
    assert_eq!(first.action.as_deref(), Some("Reconcile"));
}
