//! The guides' local shell blocks (`<!-- test: local -->` in README.md and
//! controller/deploy/README.md) run as written, against the built `modelsplit`; the cluster
//! blocks run in cluster_install.rs. See tests/src/guide.rs for the markers.

use modelsplit_e2e::guide::{blocks, blocks_of, Kind, Runner, GUIDES};

#[test]
fn every_local_block_of_the_guides_runs() {
    let local = blocks_of(Kind::Local);
    assert!(
        local.len() >= 2,
        "README.md's render and `modelsplit local` blocks are marked: {local:#?}"
    );
    let runner = Runner::new();
    for block in &local {
        let ran = runner.run(block);
        if block.text.contains(" render ") {
            assert!(
                ran.stdout.contains("kind: WasmPlugin")
                    && ran.stdout.contains("kind: VirtualService"),
                "{}: render printed no resources:\n{}",
                block.at(),
                ran.stdout
            );
        }
    }
}

#[test]
fn a_wrong_flag_in_a_guide_fails_its_test() {
    let mut block = blocks("README.md")
        .into_iter()
        .find(|b| b.kind == Kind::Local && b.text.contains(" render "))
        .expect("README.md's render block");
    let runner = Runner::new();
    assert!(runner.try_run(&block).is_ok());
    block.text = block.text.replace(" -f ", " --file-name ");
    let failed = runner.try_run(&block).expect_err("a renamed flag fails");
    assert!(failed.contains("--file-name"), "{failed}");
    block.text = "cargo run -q -p modelsplit-controller -- render -f no/such/dir/\n".into();
    assert!(runner.try_run(&block).is_err(), "a wrong path fails");
}

#[test]
fn the_guides_have_cluster_blocks_too() {
    // The cluster blocks run in cluster_install.rs; that they exist is checked here, where
    // no control plane is needed.
    for guide in GUIDES {
        blocks(guide); // parses every marker of every guide
    }
    let cluster = blocks_of(Kind::Cluster);
    assert!(
        cluster.iter().any(|b| b.text.contains("kubectl apply -k")),
        "the install guide's apply block is marked: {cluster:#?}"
    );
}
