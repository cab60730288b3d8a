//! envoy/docker-compose.yaml's wiring, checked against the code it must agree with: the
//! container bootstrap's paths and ports, `modelsplit local`'s flags, and the stand-in
//! services; `docker-compose config` must accept it. Brought up for real in a Docker
//! engine by `docker_compose.rs`.

use modelsplit_controller::local::envoy_files::{render_bootstrap, BootstrapSettings};
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn envoy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../envoy")
}

fn compose() -> Value {
    let text = std::fs::read_to_string(envoy_dir().join("docker-compose.yaml"))
        .expect("envoy/docker-compose.yaml");
    let mut value: Value = serde_yaml::from_str(&text).expect("docker-compose.yaml is YAML");
    value.apply_merge().expect("YAML merge keys resolve");
    value
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The value after `flag` in a command line (every occurrence).
fn flag_values(command: &[String], flag: &str) -> Vec<String> {
    command
        .windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].clone())
        .collect()
}

#[test]
fn the_compose_file_agrees_with_the_bootstrap_and_modelsplit_local() {
    let compose = compose();
    let services = &compose["services"];
    let container = BootstrapSettings::container();
    let config_dir = container.config_dir.display().to_string();

    // Envoy: the official image, the checked-in bootstrap, the watched files.
    let envoy = &services["envoy"];
    let image = envoy["image"].as_str().unwrap_or_default();
    assert!(
        image.contains("envoyproxy/envoy:v1.40"),
        "Envoy image {image:?}"
    );
    let checked_in = std::fs::read_to_string(envoy_dir().join("bootstrap.json")).unwrap();
    assert_eq!(
        checked_in,
        render_bootstrap(&container),
        "envoy/bootstrap.json is stale"
    );
    let envoy_volumes = strings(&envoy["volumes"]);
    assert!(
        envoy_volumes.contains(&"./bootstrap.json:/etc/modelsplit/bootstrap.json:ro".to_string()),
        "{envoy_volumes:?}"
    );
    assert!(strings(&envoy["command"])
        .windows(2)
        .any(|w| w == ["-c", "/etc/modelsplit/bootstrap.json"]));
    assert!(
        envoy_volumes.contains(&format!("gateway:{config_dir}:ro")),
        "{envoy_volumes:?}"
    );
    let wasm_in_envoy: Vec<&str> = envoy_volumes
        .iter()
        .filter_map(|v| v.split(':').nth(1).filter(|t| t.ends_with(".wasm")))
        .collect();
    assert_eq!(wasm_in_envoy.len(), 1, "{envoy_volumes:?}");
    let ports = strings(&envoy["ports"]);
    assert!(
        ports
            .iter()
            .any(|p| p.ends_with(&format!(":{}", container.listener.port()))),
        "{ports:?}"
    );

    // Both `modelsplit local` services write where Envoy reads, for the module Envoy has.
    for name in ["render", "modelsplit-local"] {
        let service = &services[name];
        let command = strings(&service["command"]);
        assert_eq!(command.first().map(String::as_str), Some("local"), "{name}");
        assert_eq!(
            flag_values(&command, "--out").join(" "),
            config_dir,
            "{name}"
        );
        assert_eq!(
            flag_values(&command, "--wasm"),
            [wasm_in_envoy[0].to_string()],
            "{name}"
        );
        assert_eq!(
            flag_values(&command, "--listen"),
            [container.listener.to_string()],
            "{name}"
        );
        let volumes = strings(&service["volumes"]);
        assert!(
            volumes.contains(&format!("gateway:{config_dir}")),
            "{name}: {volumes:?}"
        );
        let manifests = flag_values(&command, "-f");
        assert_eq!(manifests.len(), 1, "{name}");
        let mount = volumes
            .iter()
            .find(|v| v.split(':').nth(1) == Some(manifests[0].as_str()))
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {}", manifests[0]));
        let source = mount.split(':').next().unwrap_or_default();
        assert!(
            envoy_dir().join(source).is_dir(),
            "{name}: {source} is not a directory next to the compose file"
        );

        // Every upstream is a stand-in service playing that namespace on those ports.
        let upstreams = flag_values(&command, "--upstream");
        assert!(!upstreams.is_empty(), "{name}");
        for upstream in upstreams {
            let (namespace, addresses) = upstream.split_once('=').expect("NS=REST,GRPC");
            let (rest, grpc) = addresses.split_once(',').expect("REST,GRPC");
            let (host, rest_port) = rest.rsplit_once(':').expect("host:port");
            let grpc_port = grpc.rsplit_once(':').expect("host:port").1;
            let standin = strings(&services[host]["command"]);
            assert!(
                !standin.is_empty(),
                "{name}: upstream host {host} is not a service"
            );
            assert_eq!(
                flag_values(&standin, "--namespace"),
                [namespace.to_string()],
                "{host}"
            );
            assert_eq!(
                flag_values(&standin, "--rest"),
                [format!("0.0.0.0:{rest_port}")],
                "{host}"
            );
            assert_eq!(
                flag_values(&standin, "--grpc"),
                [format!("0.0.0.0:{grpc_port}")],
                "{host}"
            );
        }
    }
    assert!(strings(&services["render"]["command"]).contains(&"--once".to_string()));
    let admin = flag_values(
        &strings(&services["modelsplit-local"]["command"]),
        "--admin",
    );
    assert_eq!(admin, [format!("http://envoy:{}", container.admin.port())]);
    assert!(
        container.admin.ip().is_unspecified(),
        "the admin API must be reachable from the modelsplit-local container"
    );

    // The images are built from Dockerfiles that exist.
    for name in ["render", "standin-modelmesh-apps"] {
        let dockerfile = services[name]["build"]["dockerfile"]
            .as_str()
            .expect("a Dockerfile");
        let context = services[name]["build"]["context"]
            .as_str()
            .expect("a build context");
        assert!(
            envoy_dir().join(context).join(dockerfile).is_file(),
            "{name}: {dockerfile}"
        );
    }
}

#[test]
fn docker_compose_accepts_the_file_where_installed() {
    let file = envoy_dir().join("docker-compose.yaml");
    let attempts: [&[&str]; 2] = [&["docker-compose"], &["docker", "compose"]];
    for tool in attempts {
        let mut command = Command::new(tool[0]);
        command
            .args(&tool[1..])
            .arg("-f")
            .arg(&file)
            .args(["config", "-q"]);
        let Ok(output) = command.output() else {
            continue; // not installed
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        if tool.len() == 2 && !output.status.success() && stderr.contains("unknown") {
            continue; // a docker client without the compose plugin
        }
        assert!(
            output.status.success(),
            "{} config rejects envoy/docker-compose.yaml:\n{stderr}",
            tool.join(" ")
        );
        eprintln!(
            "{} config accepts envoy/docker-compose.yaml",
            tool.join(" ")
        );
        return;
    }
    eprintln!(
        "neither docker-compose nor `docker compose` is installed: only the structure test ran"
    );
}
