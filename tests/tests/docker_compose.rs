//! envoy/docker-compose.yaml brought up for real: the images built from the repository's
//! Dockerfiles, the unmodified compose file up, REST and gRPC split through
//! `localhost:8080`, an example manifest edited and the new split in force, then down.
//!
//! No image registry can be reached here, so the images are built from local material
//! through the Dockerfiles' build arguments: `BASE` a Debian 12 image made by debootstrap
//! (tests/docker/base-image.sh), `ARTIFACTS` an image holding the binaries this test run
//! built (the Dockerfiles' compile stage is then skipped), and Envoy's image, under the
//! official name and tag, from the Envoy binary the suite uses. The filter's OCI image is
//! built the same way and its layout checked: one layer, `plugin.wasm`, the module's digest.
//!
//! Needs a Docker engine (`.ci/run` starts `dockerd` when none runs) and a BuildKit build
//! (`docker buildx`, or Debian's docker.io client with DOCKER_BUILDKIT=1). Without them this
//! test fails and says why; it never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use modelsplit_controller::cluster::filter_module::sha256_hex;
use modelsplit_e2e::gateway::{envoy_binary, require_filter_wasm};
use modelsplit_e2e::http::HttpClient;
use modelsplit_e2e::infer::{grpc_tally, rest_tally, vmodel_request};
use modelsplit_e2e::local_gateway::modelsplit_binary;
use modelsplit_e2e::observe::Tally;
use modelsplit_e2e::split::check_split;

const BASE: &str = "modelsplit-test-base:bookworm";
const ARTIFACTS: &str = "modelsplit-test-artifacts:latest";
/// The images envoy/docker-compose.yaml names.
const CONTROLLER: &str = "modelsplit-controller:local";
const STANDIN: &str = "modelsplit-standin:local";
const ENVOY: &str = "docker.io/envoyproxy/envoy:v1.40.0";
const FILTER: &str = "modelsplit-filter:test";
const PROJECT: &str = "modelsplit-e2e";
const NS: &str = "modelmesh-apps";
const REQUESTS: usize = 2000;
const CONCURRENCY: usize = 16;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository")
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({command:?}):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `docker info` answers, or the test fails with what to do.
fn require_docker() {
    let output = Command::new("docker").arg("info").output();
    match output {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "no Docker engine answers (`docker info`: {}). Start one: `dockerd --iptables=false &` (.ci/run does)",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("no docker client ({e}); scripts/setup.sh installs Debian's docker.io"),
    }
}

/// A `docker build` that uses BuildKit (needed for the Dockerfiles' cache mounts, and to
/// skip their compile stage): `docker buildx build --load` where buildx exists, else
/// Debian's docker.io client, whose built-in BuildKit DOCKER_BUILDKIT=1 turns on.
fn buildkit_build() -> Command {
    let buildx = Command::new("docker").args(["buildx", "version"]).output();
    if matches!(buildx, Ok(out) if out.status.success()) {
        let mut command = Command::new("docker");
        command.args(["buildx", "build", "--load"]);
        return command;
    }
    let debian = Path::new("/usr/bin/docker");
    assert!(
        debian.exists(),
        "no BuildKit builder: install docker-buildx, or Debian's docker.io (its client builds with DOCKER_BUILDKIT=1)"
    );
    let mut command = Command::new(debian);
    command.env("DOCKER_BUILDKIT", "1").arg("build");
    command
}

fn build(dockerfile: &Path, context: &Path, tag: &str, args: &[(&str, &str)]) {
    let mut command = buildkit_build();
    command
        .arg("-q")
        .arg("-f")
        .arg(dockerfile)
        .arg("-t")
        .arg(tag);
    for (name, value) in args {
        command.arg("--build-arg").arg(format!("{name}={value}"));
    }
    command.arg(context);
    run(&mut command, &format!("building {tag}"));
}

/// Every image of the compose file and the filter's, from local material.
fn build_images(work: &Path) {
    let started = Instant::now();
    // Rebuilt each run; removing the previous tags leaves no untagged images behind.
    let _ = Command::new("docker")
        .args(["rmi", "-f", ARTIFACTS, CONTROLLER, STANDIN, FILTER, ENVOY])
        .output();
    run(
        Command::new(repo().join("tests/docker/base-image.sh")).arg(BASE),
        "the debootstrapped base image",
    );

    // The binaries of this test run, as the Dockerfiles' compile stage would leave them.
    let artifacts = work.join("artifacts");
    let out = artifacts.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(modelsplit_binary(), out.join("modelsplit")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_modelmesh-standin"),
        out.join("modelmesh-standin"),
    )
    .unwrap();
    std::fs::copy(require_filter_wasm(), out.join("plugin.wasm")).unwrap();
    std::fs::write(
        artifacts.join("Dockerfile"),
        "FROM scratch\nCOPY out /out\n",
    )
    .unwrap();
    build(&artifacts.join("Dockerfile"), &artifacts, ARTIFACTS, &[]);

    let from_local = [("BASE", BASE), ("ARTIFACTS", ARTIFACTS)];
    build(
        &repo().join("controller/Dockerfile"),
        &repo(),
        CONTROLLER,
        &from_local,
    );
    build(
        &repo().join("tests/Dockerfile"),
        &repo(),
        STANDIN,
        &from_local,
    );
    build(
        &repo().join("filter/Dockerfile"),
        &repo(),
        FILTER,
        &[("ARTIFACTS", ARTIFACTS)],
    );

    // Envoy under the official image's name: the suite's Envoy binary on the base.
    let envoy = work.join("envoy-image");
    std::fs::create_dir_all(&envoy).unwrap();
    std::fs::copy(envoy_binary().expect("Envoy"), envoy.join("envoy")).unwrap();
    std::fs::write(
        envoy.join("Dockerfile"),
        format!(
            "FROM {BASE}\nCOPY envoy /usr/local/bin/envoy\nENTRYPOINT [\"/usr/local/bin/envoy\"]\n"
        ),
    )
    .unwrap();
    build(&envoy.join("Dockerfile"), &envoy, ENVOY, &[]);
    eprintln!("FIGURE images built in {:?}", started.elapsed());
}

/// The filter image as Istio's agent unpacks it: exactly one layer, holding exactly
/// `plugin.wasm`, which is the module built by this run.
fn check_filter_image(work: &Path) {
    let saved = work.join("filter-image");
    std::fs::create_dir_all(&saved).unwrap();
    let tar = saved.join("image.tar");
    run(
        Command::new("docker")
            .args(["save", "-o"])
            .arg(&tar)
            .arg(FILTER),
        "docker save",
    );
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&saved),
        "unpacking the saved image",
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved.join("manifest.json")).unwrap()).unwrap();
    let layers = manifest[0]["Layers"].as_array().expect("Layers");
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    let layer = saved.join(layers[0].as_str().unwrap());
    let listing = run(
        Command::new("tar").arg("-tf").arg(&layer),
        "listing the layer",
    );
    let files: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(files, ["plugin.wasm"], "the layer holds the module only");
    let module = run(
        Command::new("tar")
            .arg("-xOf")
            .arg(&layer)
            .arg("plugin.wasm"),
        "reading plugin.wasm",
    );
    let built = std::fs::read(require_filter_wasm()).unwrap();
    assert_eq!(sha256_hex(&module.stdout), sha256_hex(&built));
}

/// `docker-compose` on the unmodified compose file (a copy of envoy/ beside the module at
/// the path the file mounts it from, so that editing an example leaves the repository alone).
struct Compose {
    file: PathBuf,
}

impl Compose {
    fn command(&self) -> Command {
        let mut command = Command::new("docker-compose");
        command.arg("-p").arg(PROJECT).arg("-f").arg(&self.file);
        command
    }

    fn up(work: &Path) -> Compose {
        let envoy = work.join("envoy");
        run(
            Command::new("cp")
                .arg("-r")
                .arg(repo().join("envoy"))
                .arg(&envoy),
            "copying envoy/",
        );
        let module = work.join("target/wasm32-unknown-unknown/release/modelsplit_filter.wasm");
        std::fs::create_dir_all(module.parent().unwrap()).unwrap();
        std::fs::copy(require_filter_wasm(), &module).unwrap();
        let file = envoy.join("docker-compose.yaml");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            std::fs::read(repo().join("envoy/docker-compose.yaml")).unwrap()
        );
        let compose = Compose { file };
        // A run killed half-way may have left its containers.
        let _ = compose.command().args(["down", "-v"]).output();
        run(compose.command().args(["up", "-d"]), "docker-compose up");
        compose
    }

    fn logs(&self) -> String {
        self.command()
            .args(["logs", "--no-color", "--tail", "30"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("docker-compose logs:\n{}", self.logs());
        }
        let _ = self.command().args(["down", "-v"]).output();
    }
}

async fn wait_answering(http: &HttpClient, url: &str, compose: &Compose) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(reply) = http
            .post_json(url, &[], &serde_json::json!({"inputs": []}))
            .await
        {
            if reply.status == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the compose gateway did not answer {url} within 120 s:\n{}",
            compose.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The weights of modelmesh-apps/ai-model in the compose Envoy, through its admin port.
async fn weights(http: &HttpClient) -> Vec<u64> {
    let Ok(reply) = http
        .get(
            "http://127.0.0.1:9901/config_dump?resource=ecds_filters",
            &[],
        )
        .await
    else {
        return Vec::new();
    };
    modelsplit_controller::status::configs_in_dump(&reply.text())
        .iter()
        .flat_map(|c| &c.groups)
        .filter(|g| g.namespace == NS && g.name == "ai-model")
        .flat_map(|g| g.members.iter().map(|m| u64::from(m.weight)))
        .collect()
}

fn assert_split(label: &str, tally: &Tally, one: u32, two: u32) {
    assert_eq!(tally.problem_count, 0, "{label}: {:?}", tally.problems);
    let check = check_split(
        &tally.by_member,
        &[("ai-model-one", one), ("ai-model-two", two)],
    );
    eprintln!("{label} through the compose gateway:\n{check}");
    assert!(check.passes(), "{label}: {check}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_gateway_splits_rest_and_grpc_and_follows_an_edited_manifest() {
    require_docker();
    let work = tempfile::tempdir().expect("a working directory");
    build_images(work.path());
    check_filter_image(work.path());

    let started = Instant::now();
    let compose = Compose::up(work.path());
    let http = HttpClient::default();
    let url = format!("http://127.0.0.1:8080/modelmesh/{NS}/v2/models/ai-model/infer");
    wait_answering(&http, &url, &compose).await;
    eprintln!(
        "FIGURE docker-compose up -> group answering: {:?}",
        started.elapsed()
    );

    let tally = rest_tally(&url, NS, REQUESTS, CONCURRENCY).await;
    assert_split("REST 80/20", &tally, 80, 20);
    let request = vmodel_request("ai-model");
    let tally = grpc_tally("http://127.0.0.1:8080", request, NS, REQUESTS, CONCURRENCY).await;
    assert_split("gRPC 80/20", &tally, 80, 20);

    // Edit the example as a user would; `modelsplit-local` re-renders and Envoy follows.
    let example = compose
        .file
        .parent()
        .unwrap()
        .join("examples/ai-model.yaml");
    let text = std::fs::read_to_string(&example).unwrap();
    let edited = text
        .replace(
            "canaryTrafficPercent: \"80\"",
            "canaryTrafficPercent: \"50\"",
        )
        .replace(
            "canaryTrafficPercent: \"20\"",
            "canaryTrafficPercent: \"50\"",
        );
    assert_ne!(edited, text, "the example names 80 and 20");
    let edited_at = Instant::now();
    std::fs::write(&example, edited).unwrap();
    let deadline = edited_at + Duration::from_secs(60);
    while weights(&http).await != [5000, 5000] {
        assert!(
            Instant::now() < deadline,
            "the edit did not reach the compose Envoy within 60 s (it runs {:?}):\n{}",
            weights(&http).await,
            compose.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "FIGURE manifest edit -> in the compose Envoy: {:?}",
        edited_at.elapsed()
    );
    // Every worker takes the new configuration within a tick of the main thread.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = rest_tally(&url, NS, REQUESTS, CONCURRENCY).await;
    assert_split("REST 50/50 after the edit", &tally, 50, 50);

    drop(compose);
    let left = run(
        Command::new("docker").args([
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={PROJECT}"),
        ]),
        "docker ps",
    );
    assert!(
        left.stdout.is_empty(),
        "docker-compose down left containers"
    );
}
