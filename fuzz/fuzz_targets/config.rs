//! Arbitrary bytes as the filter's configuration: parse, validate, compile.
//!
//! Invariants of an accepted configuration: every group is reachable by its own
//! (namespace, name) and nothing else's, gRPC lookup only finds gRPC groups, every
//! group has weight, counters line up with members, and the configuration survives
//! a JSON round trip unchanged. A rejected one has a message (no panic either way).
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelsplit_filter::config::FilterConfig;
use modelsplit_filter::plan::Plan;

fuzz_target!(|data: &[u8]| {
    let config = match FilterConfig::from_json(data) {
        Ok(config) => config,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            assert!(
                Plan::from_json(data).is_err(),
                "Plan accepted what the config refused"
            );
            return;
        }
    };
    let plan = Plan::compile(&config).expect("a validated config compiles");
    assert_eq!(plan.groups().len(), config.groups.len());

    let mut members = 0;
    for (id, group) in plan.groups().iter().enumerate() {
        assert!(group.total_weight > 0);
        assert!(!group.members.is_empty());
        assert_eq!(group.cumulative.len(), group.members.len());
        assert_eq!(group.cumulative.last().copied(), Some(group.total_weight));
        assert_eq!(
            plan.rest_group(group.namespace.as_bytes(), group.name.as_bytes()),
            Some(id)
        );
        match plan.grpc_group(group.name.as_bytes()) {
            Some(owner) if group.grpc => assert_eq!(owner, id),
            Some(owner) => assert!(plan.groups()[owner].grpc && owner != id),
            None => assert!(!group.grpc),
        }
        for member in group.members.iter() {
            assert_eq!(member.counter_index, members);
            members += 1;
            // A member name is never also routable as a group of the same namespace
            // unless the config says so explicitly.
            assert!(!member.name.is_empty() && !member.name.contains('/'));
        }
    }
    assert_eq!(plan.member_count(), members);
    assert_eq!(plan.counter_names().count(), members);

    let again = FilterConfig::from_json(config.to_json().as_bytes()).expect("round trip");
    assert_eq!(again, config);
});
