//! Namespaces stay apart: a group's requests reach only its own namespace's
//! ModelMesh, even where another namespace has isvcs or a group of the same names.

use modelsplit_controller::local::envoy_files::ExposedIsvc;
use modelsplit_e2e::fixture::{group, Fixture};
use modelsplit_e2e::observe::Tally;
use modelsplit_e2e::split::check_split;
use modelsplit_e2e::standin::{Protocol, StandInConfig};
use modelsplit_filter::config::FilterConfig;

const A: &str = "team-a";
const B: &str = "team-b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_never_reaches_another_namespace() {
    // Both namespaces have isvcs `one` and `two` and a group `ai-model`; gRPC names
    // are global, so (as the controller decides) only team-a's claim them.
    let mut b_group = group(B, "ai-model", &[("one", 10), ("two", 90)]);
    b_group.grpc = false;
    let config = FilterConfig::with_groups(vec![
        group(A, "ai-model", &[("one", 70), ("two", 30)]),
        b_group,
    ]);
    let mut isvcs = Vec::new();
    for name in ["one", "two"] {
        isvcs.push(ExposedIsvc::new(A, name));
        isvcs.push(ExposedIsvc {
            grpc: false,
            ..ExposedIsvc::new(B, name)
        });
    }
    let fx = Fixture::start(
        &config,
        &isvcs,
        vec![
            StandInConfig::only(A, &["one", "two"]),
            StandInConfig::only(B, &["one", "two"]),
        ],
    )
    .await;

    let a_rest = fx
        .rest_many(
            3000,
            "POST",
            &format!("/modelmesh/{A}/v2/models/ai-model/infer"),
            |_| vec![],
        )
        .await;
    let a_grpc = fx.grpc_many(2000, "ai-model", |_| vec![]).await;
    let b_rest = fx
        .rest_many(
            3000,
            "POST",
            &format!("/modelmesh/{B}/v2/models/ai-model/infer"),
            |_| vec![],
        )
        .await;

    for (label, observed, namespace, weights) in [
        ("team-a REST", &a_rest, A, [("one", 70), ("two", 30)]),
        ("team-a gRPC", &a_grpc, A, [("one", 70), ("two", 30)]),
        ("team-b REST", &b_rest, B, [("one", 10), ("two", 90)]),
    ] {
        // Tally::of requires every answer to come from `namespace`.
        let tally = Tally::of(observed, namespace);
        assert_eq!(tally.problem_count, 0, "{label}: {:?}", tally.problems);
        let split = check_split(&tally.by_member, &weights);
        eprintln!("{label}: {} requests\n{split}", observed.len());
        assert!(split.passes(), "{label}\n{split}");
    }

    let a_seen = fx.standin(A).received();
    let b_seen = fx.standin(B).received();
    assert_eq!(
        a_seen.len(),
        5000,
        "team-a's ModelMesh got exactly team-a's requests"
    );
    assert_eq!(
        b_seen.len(),
        3000,
        "team-b's ModelMesh got exactly team-b's requests"
    );
    assert!(
        b_seen.iter().all(|r| r.protocol == Protocol::Rest),
        "no gRPC call crossed to team-b"
    );
}
