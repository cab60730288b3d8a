//! Kubernetes Events (`events.k8s.io/v1`) on the InferenceServices of a group whenever the
//! group's report changes: ready, invalid and why, stale, gRPC name lost. The controller
//! remembers what it last said per group, so a steady state says nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Client};
use modelsplit_filter::config::FilterConfig;

use modelsplit_core::report::{GroupReport, GroupState, Notice, NoticeReason, StateKind};
use modelsplit_core::resources::ObjectKind;

/// `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "modelsplit";
/// `action` of every Event: what the controller was doing.
pub const ACTION: &str = "Reconcile";

/// The `reason` of every Event the controller creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventReason {
    /// The group is published as configured.
    GroupReady,
    /// The group is invalid; the filter keeps its last valid split.
    GroupStale,
    /// The group is invalid and not published.
    GroupInvalid,
    /// The group is not considered (namespace not in the mesh, bad gateway).
    GroupIgnored,
    /// The group does not answer to gRPC: a name is owned by another namespace.
    GrpcNameLost,
    /// A notice of the planner ([`NoticeReason::Planner`]).
    ModelsplitNotice,
    /// A group's routes could not be written ([`NoticeReason::RoutesNotWritten`]).
    RoutesNotWritten,
    /// Automated rollouts (`modelsplit.io/rollout`), on the canary: its first step,
    RolloutStarted,
    /// the next step,
    RolloutAdvanced,
    /// the last step passed,
    RolloutPromoted,
    /// a threshold broken (the numbers in the note),
    RolloutRolledBack,
    /// the gateway's numbers cannot be read,
    RolloutWaiting,
    /// a declaration that cannot be followed,
    RolloutIgnored,
    /// the declaration removed.
    RolloutRemoved,
}

impl EventReason {
    /// The Event's `reason` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventReason::GroupReady => "GroupReady",
            EventReason::GroupStale => "GroupStale",
            EventReason::GroupInvalid => "GroupInvalid",
            EventReason::GroupIgnored => "GroupIgnored",
            EventReason::GrpcNameLost => "GrpcNameLost",
            EventReason::ModelsplitNotice => "ModelsplitNotice",
            EventReason::RoutesNotWritten => "RoutesNotWritten",
            EventReason::RolloutStarted => "RolloutStarted",
            EventReason::RolloutAdvanced => "RolloutAdvanced",
            EventReason::RolloutPromoted => "RolloutPromoted",
            EventReason::RolloutRolledBack => "RolloutRolledBack",
            EventReason::RolloutWaiting => "RolloutWaiting",
            EventReason::RolloutIgnored => "RolloutIgnored",
            EventReason::RolloutRemoved => "RolloutRemoved",
        }
    }

    /// Normal for news that need nothing done, Warning for the rest.
    pub const fn event_type(self) -> EventType {
        match self {
            EventReason::GroupReady
            | EventReason::GroupIgnored
            | EventReason::RolloutStarted
            | EventReason::RolloutAdvanced
            | EventReason::RolloutPromoted
            | EventReason::RolloutRemoved => EventType::Normal,
            EventReason::GroupStale
            | EventReason::GroupInvalid
            | EventReason::GrpcNameLost
            | EventReason::ModelsplitNotice
            | EventReason::RoutesNotWritten
            | EventReason::RolloutRolledBack
            | EventReason::RolloutWaiting
            | EventReason::RolloutIgnored => EventType::Warning,
        }
    }
}

impl From<StateKind> for EventReason {
    fn from(state: StateKind) -> Self {
        match state {
            StateKind::Valid => EventReason::GroupReady,
            StateKind::Stale => EventReason::GroupStale,
            StateKind::Invalid => EventReason::GroupInvalid,
            StateKind::Ignored => EventReason::GroupIgnored,
        }
    }
}

impl From<NoticeReason> for EventReason {
    fn from(reason: NoticeReason) -> Self {
        match reason {
            NoticeReason::Planner => EventReason::ModelsplitNotice,
            NoticeReason::RoutesNotWritten => EventReason::RoutesNotWritten,
        }
    }
}

impl fmt::Display for EventReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Event's `type` field.
pub const fn type_name(type_: EventType) -> &'static str {
    match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// One Event to create.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSpec {
    pub regarding: ObjectReference,
    /// Normal or Warning, as its reason says.
    pub type_: EventType,
    pub reason: EventReason,
    pub note: String,
}

impl EventSpec {
    pub fn new(regarding: ObjectReference, reason: EventReason, note: String) -> Self {
        EventSpec {
            regarding,
            type_: reason.event_type(),
            reason,
            note,
        }
    }
}

/// What is remembered per subject: the report line last announced.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    Group { namespace: String, name: String },
    Notice(Notice),
}

/// The Events for one subject, announced (and remembered) together.
#[derive(Debug, Clone, PartialEq)]
pub struct Announcement {
    pub subject: Subject,
    pub said: Said,
    pub events: Vec<EventSpec>,
}

/// The last thing said about a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Said {
    /// The report line (state, reasons, split).
    pub line: String,
    /// Whether a lost gRPC name was part of it (announced once, not on every change).
    pub grpc_lost: bool,
}

/// What the controller last said; starts empty in every new leader.
#[derive(Debug, Default)]
pub struct EventMemory {
    said: BTreeMap<Subject, Said>,
    seeded: bool,
}

/// How to point an Event at an InferenceService (uid when the watcher knows it).
pub type IsvcUids = BTreeMap<(String, String), String>;

impl EventMemory {
    /// The announcements that this report calls for.
    pub fn changes(
        &mut self,
        reports: &[GroupReport],
        notices: &[Notice],
        uids: &IsvcUids,
    ) -> Vec<Announcement> {
        let mut current = BTreeSet::new();
        let mut out = Vec::new();
        for report in reports {
            let subject = Subject::Group {
                namespace: report.namespace.clone(),
                name: report.name.clone(),
            };
            let said = Said {
                line: report.to_string(),
                grpc_lost: report.grpc_lost.is_some(),
            };
            current.insert(subject.clone());
            if self.said.get(&subject) == Some(&said) {
                continue;
            }
            let had_grpc_loss = self.said.get(&subject).is_some_and(|s| s.grpc_lost);
            let events = group_events(report, &said.line, had_grpc_loss, uids);
            out.push(Announcement {
                subject,
                said,
                events,
            });
        }
        for notice in notices {
            let subject = Subject::Notice(notice.clone());
            current.insert(subject.clone());
            if self.said.contains_key(&subject) {
                continue;
            }
            out.push(Announcement {
                subject,
                said: Said {
                    line: notice.message.clone(),
                    grpc_lost: false,
                },
                events: vec![notice_event(notice, uids)],
            });
        }
        // Forget what no longer exists, so it is announced again if it comes back.
        self.said.retain(|subject, _| current.contains(subject));
        out
    }

    /// Marks an announcement as made (after its Events were created).
    pub fn remember(&mut self, announcement: &Announcement) {
        self.said
            .insert(announcement.subject.clone(), announcement.said.clone());
    }

    /// Once, before the first pass writes anything: valid groups that the cluster already
    /// serves exactly as planned count as said, so a restart or a new leader does not
    /// repeat "ready" for every group.
    pub fn seed_once(&mut self, reports: &[GroupReport], published: &[FilterConfig]) {
        if self.seeded {
            return;
        }
        self.seeded = true;
        for report in reports {
            let already_served = report.state == GroupState::Valid
                && report.grpc_lost.is_none()
                && report.not_ready.is_none()
                && report.published.as_ref().is_some_and(|planned| {
                    published
                        .iter()
                        .flat_map(|config| &config.groups)
                        .any(|served| served == planned)
                });
            if already_served {
                self.said.insert(
                    Subject::Group {
                        namespace: report.namespace.clone(),
                        name: report.name.clone(),
                    },
                    Said {
                        line: report.to_string(),
                        grpc_lost: false,
                    },
                );
            }
        }
    }
}

fn group_events(
    report: &GroupReport,
    line: &str,
    had_grpc_loss: bool,
    uids: &IsvcUids,
) -> Vec<EventSpec> {
    let reason = EventReason::from(report.state.kind());
    let mut events = Vec::new();
    for member in &report.members {
        let regarding = reference(
            ObjectKind::InferenceService,
            &report.namespace,
            member,
            uids,
        );
        events.push(EventSpec::new(regarding.clone(), reason, line.to_string()));
        if let Some(loss) = report.grpc_lost.as_ref().filter(|_| !had_grpc_loss) {
            events.push(EventSpec::new(
                regarding,
                EventReason::GrpcNameLost,
                format!(
                    "group {}/{}: gRPC name {:?} belongs to namespace {} on this gateway (older claim); REST still works",
                    report.namespace, report.name, loss.name, loss.owner_namespace
                ),
            ));
        }
    }
    events
}

fn notice_event(notice: &Notice, uids: &IsvcUids) -> EventSpec {
    EventSpec::new(
        reference(notice.kind, &notice.namespace, &notice.name, uids),
        notice.reason.into(),
        notice.message.clone(),
    )
}

/// The object an Event is about: `namespace` is empty for cluster-scoped objects; the
/// uid is known for InferenceServices the watchers saw.
pub fn reference(
    kind: ObjectKind,
    namespace: &str,
    name: &str,
    uids: &IsvcUids,
) -> ObjectReference {
    let uid = match kind {
        ObjectKind::InferenceService => uids
            .get(&(namespace.to_string(), name.to_string()))
            .cloned(),
        ObjectKind::Namespace | ObjectKind::ServingRuntime => None,
    };
    ObjectReference {
        api_version: Some(kind.api_version().to_string()),
        kind: Some(kind.as_str().to_string()),
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()).filter(|ns| !ns.is_empty()),
        uid,
        ..Default::default()
    }
}

/// Makes Event names unique within this process (several Events in one nanosecond).
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The `events.k8s.io/v1` object for `spec`.
pub fn event_object(spec: &EventSpec, instance: &str, wall: Timestamp) -> Event {
    // Events about cluster-scoped objects live in `default`, as kubectl expects.
    let namespace = spec
        .regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let subject = spec.regarding.name.clone().unwrap_or_default();
    let nanos = u64::try_from(wall.as_nanosecond()).unwrap_or(0);
    let unique = nanos.wrapping_add(SEQUENCE.fetch_add(1, Ordering::Relaxed));
    let mut note = spec.note.clone();
    // The API server rejects notes over 1 kB.
    if note.len() > 1024 {
        let mut cut = 1021;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{subject}.{unique:x}")),
            namespace: Some(namespace),
            ..Default::default()
        },
        event_time: Some(MicroTime(wall)),
        action: Some(ACTION.to_string()),
        reason: Some(spec.reason.as_str().to_string()),
        note: Some(note),
        type_: Some(type_name(spec.type_).to_string()),
        regarding: Some(spec.regarding.clone()),
        reporting_controller: Some(REPORTING_CONTROLLER.to_string()),
        reporting_instance: Some(instance.to_string()),
        ..Default::default()
    }
}

/// Creates one Event.
pub async fn publish(
    client: &Client,
    spec: &EventSpec,
    instance: &str,
    wall: Timestamp,
) -> Result<(), kube::Error> {
    let event = event_object(spec, instance, wall);
    let namespace = event.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    api.create(&PostParams::default(), &event).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The Event as the API server receives it, without its unique name and time.
    fn written(spec: &EventSpec) -> Value {
        let wall = Timestamp::from_second(1_800_000_000).unwrap();
        let mut value = serde_json::to_value(event_object(spec, "pod-a", wall)).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("eventTime");
        object["metadata"].as_object_mut().unwrap().remove("name");
        value
    }

    fn notice(kind: ObjectKind, reason: NoticeReason, namespace: &str) -> Notice {
        Notice {
            kind,
            reason,
            namespace: namespace.to_string(),
            name: "x".to_string(),
            message: "something".to_string(),
        }
    }

    #[test]
    fn a_notice_on_an_inference_service_points_at_it_with_its_uid() {
        let uids = IsvcUids::from([(("apps".into(), "x".into()), "uid-1".into())]);
        let spec = notice_event(
            &notice(
                ObjectKind::InferenceService,
                NoticeReason::RoutesNotWritten,
                "apps",
            ),
            &uids,
        );
        assert_eq!(
            written(&spec),
            json!({
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"namespace": "apps"},
                "action": "Reconcile",
                "reason": "RoutesNotWritten",
                "note": "something",
                "type": "Warning",
                "regarding": {
                    "apiVersion": "serving.kserve.io/v1beta1",
                    "kind": "InferenceService",
                    "namespace": "apps",
                    "name": "x",
                    "uid": "uid-1",
                },
                "reportingController": "modelsplit",
                "reportingInstance": "pod-a",
            })
        );
    }

    #[test]
    fn a_notice_on_a_namespace_lives_in_default() {
        let spec = notice_event(
            &notice(ObjectKind::Namespace, NoticeReason::Planner, ""),
            &IsvcUids::new(),
        );
        assert_eq!(
            written(&spec),
            json!({
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"namespace": "default"},
                "action": "Reconcile",
                "reason": "ModelsplitNotice",
                "note": "something",
                "type": "Warning",
                "regarding": {"apiVersion": "v1", "kind": "Namespace", "name": "x"},
                "reportingController": "modelsplit",
                "reportingInstance": "pod-a",
            })
        );
    }

    #[test]
    fn reasons_and_types_are_named_as_the_events_api_shows_them() {
        let cases = [
            (EventReason::from(StateKind::Valid), "GroupReady", "Normal"),
            (EventReason::from(StateKind::Stale), "GroupStale", "Warning"),
            (
                EventReason::from(StateKind::Invalid),
                "GroupInvalid",
                "Warning",
            ),
            (
                EventReason::from(StateKind::Ignored),
                "GroupIgnored",
                "Normal",
            ),
            (EventReason::GrpcNameLost, "GrpcNameLost", "Warning"),
            (
                EventReason::from(NoticeReason::Planner),
                "ModelsplitNotice",
                "Warning",
            ),
            (
                EventReason::from(NoticeReason::RoutesNotWritten),
                "RoutesNotWritten",
                "Warning",
            ),
        ];
        for (reason, name, type_) in cases {
            assert_eq!(reason.as_str(), name);
            assert_eq!(reason.to_string(), name);
            assert_eq!(type_name(reason.event_type()), type_, "{name}");
        }
    }
}
