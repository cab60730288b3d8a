//! `gateway-files`: renders the local gateway's Envoy files once, from a filter
//! configuration (DESIGN.md section 3) and the ModelMesh upstreams per namespace.
//!
//! Every member of every group is routed as an exposed isvc; `--isvc ns/name` adds
//! plain ones. `modelsplit local` does the same from manifests, and keeps watching.

use anyhow::{bail, Context};
use clap::Parser;
use modelsplit_e2e::gateway::filter_wasm_path;
use modelsplit_e2e::gateway_files::{
    render_bootstrap, transition_steps, write_atomically, BootstrapSettings, ExposedIsvc,
    GatewayState, Upstream, BOOTSTRAP_FILE,
};
use modelsplit_filter::config::FilterConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The filter configuration JSON.
    #[arg(long)]
    config: PathBuf,
    /// Directory to write bootstrap.json, ecds.json, rds.json and cds.json into.
    #[arg(long)]
    out: PathBuf,
    /// ModelMesh of a namespace: `NAMESPACE=REST_ADDR,GRPC_ADDR` (repeatable).
    #[arg(long = "upstream", value_name = "NS=REST,GRPC", required = true)]
    upstreams: Vec<String>,
    /// An exposed isvc outside any group: `NAMESPACE/NAME` (repeatable).
    #[arg(long = "isvc", value_name = "NS/NAME")]
    isvcs: Vec<String>,
    /// Gateway listener (HTTP/1.1 and h2c).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Envoy admin interface.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// The filter module (default: the workspace's release build).
    #[arg(long)]
    wasm: Option<PathBuf>,
}

fn parse_upstream(text: &str) -> anyhow::Result<Upstream> {
    let usage = || {
        format!("--upstream {text:?}: expected NAMESPACE=REST_ADDR,GRPC_ADDR like apps=127.0.0.1:8008,127.0.0.1:8033")
    };
    let (namespace, addresses) = text.split_once('=').with_context(usage)?;
    let (rest, grpc) = addresses.split_once(',').with_context(usage)?;
    Ok(Upstream::at(
        namespace,
        rest.parse().with_context(usage)?,
        grpc.parse().with_context(usage)?,
    ))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let json = std::fs::read(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let config = FilterConfig::from_json(&json).with_context(|| {
        format!(
            "{} is not a valid filter configuration",
            args.config.display()
        )
    })?;
    let upstreams = args
        .upstreams
        .iter()
        .map(|u| parse_upstream(u))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let mut isvcs: Vec<ExposedIsvc> = Vec::new();
    for group in &config.groups {
        for member in &group.members {
            isvcs.push(ExposedIsvc::new(&group.namespace, &member.name));
        }
    }
    for text in &args.isvcs {
        let (namespace, name) = text
            .split_once('/')
            .with_context(|| format!("--isvc {text:?}: expected NAMESPACE/NAME"))?;
        isvcs.push(ExposedIsvc::new(namespace, name));
    }
    for isvc in &isvcs {
        if !upstreams.iter().any(|u| u.namespace == isvc.namespace) {
            bail!(
                "isvc {}/{} has no --upstream for namespace {}",
                isvc.namespace,
                isvc.name,
                isvc.namespace
            );
        }
    }

    let wasm = args.wasm.unwrap_or_else(filter_wasm_path);
    let wasm = wasm.canonicalize().with_context(|| {
        format!(
            "filter module {} (build it with scripts/build-wasm.sh)",
            wasm.display()
        )
    })?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let out = args.out.canonicalize()?;
    let state = GatewayState {
        config,
        isvcs,
        upstreams,
    };
    for step in transition_steps(None, &state, &wasm) {
        for (file, contents) in step {
            write_atomically(&out, file, &contents).with_context(|| format!("writing {file}"))?;
        }
    }
    let bootstrap = render_bootstrap(&BootstrapSettings {
        listener: args.listen,
        admin: args.admin,
        config_dir: out.clone(),
    });
    write_atomically(&out, BOOTSTRAP_FILE, &bootstrap)?;
    println!(
        "wrote {}; start Envoy with: envoy -c {} --concurrency 2",
        out.display(),
        out.join(BOOTSTRAP_FILE).display()
    );
    Ok(())
}
