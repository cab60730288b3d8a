//! Kubernetes Events (`events.k8s.io/v1`) on the InferenceServices of a group whenever the
//! group's report changes: ready, invalid and why, stale, gRPC name lost. The controller
//! remembers what it last said per group, so a steady state says nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use modelsplit_filter::config::FilterConfig;

use modelsplit_core::report::{GroupReport, GroupState, Notice};

/// `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "modelsplit";
/// `action` of every Event: what the controller was doing.
pub const ACTION: &str = "Reconcile";

/// One Event to create.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSpec {
    pub regarding: ObjectReference,
    /// Normal or Warning.
    pub type_: &'static str,
    pub reason: &'static str,
    pub note: String,
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
    let (type_, reason) = match &report.state {
        GroupState::Valid => ("Normal", "GroupReady"),
        GroupState::Stale { .. } => ("Warning", "GroupStale"),
        GroupState::Invalid { .. } => ("Warning", "GroupInvalid"),
        GroupState::Ignored { .. } => ("Normal", "GroupIgnored"),
    };
    let mut events = Vec::new();
    for member in &report.members {
        let regarding = isvc_reference(&report.namespace, member, uids);
        events.push(EventSpec {
            regarding: regarding.clone(),
            type_,
            reason,
            note: line.to_string(),
        });
        if let Some(loss) = report.grpc_lost.as_ref().filter(|_| !had_grpc_loss) {
            events.push(EventSpec {
                regarding,
                type_: "Warning",
                reason: "GrpcNameLost",
                note: format!(
                    "group {}/{}: gRPC name {:?} belongs to namespace {} on this gateway (older claim); REST still works",
                    report.namespace, report.name, loss.name, loss.owner_namespace
                ),
            });
        }
    }
    events
}

fn notice_event(notice: &Notice, uids: &IsvcUids) -> EventSpec {
    let regarding = if notice.kind == "InferenceService" {
        isvc_reference(&notice.namespace, &notice.name, uids)
    } else {
        ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some(notice.kind.to_string()),
            name: Some(notice.name.clone()),
            namespace: Some(notice.namespace.clone()).filter(|ns| !ns.is_empty()),
            ..Default::default()
        }
    };
    EventSpec {
        regarding,
        type_: "Warning",
        reason: notice.reason.event_reason(),
        note: notice.message.clone(),
    }
}

fn isvc_reference(namespace: &str, name: &str, uids: &IsvcUids) -> ObjectReference {
    ObjectReference {
        api_version: Some("serving.kserve.io/v1beta1".to_string()),
        kind: Some("InferenceService".to_string()),
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        uid: uids
            .get(&(namespace.to_string(), name.to_string()))
            .cloned(),
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
        reason: Some(spec.reason.to_string()),
        note: Some(note),
        type_: Some(spec.type_.to_string()),
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
