//! `modelmesh-standin`: a ModelMesh stand-in for one namespace (KServe v2 REST + gRPC).

use anyhow::Context;
use clap::Parser;
use modelsplit_e2e::standin::{StandIn, StandInConfig};
use std::net::SocketAddr;

/// Serves KServe v2 REST and gRPC for one namespace, answering as the model asked for.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Namespace this stand-in plays (reported in every answer).
    #[arg(long)]
    namespace: String,
    /// REST listen address (ModelMesh's REST proxy is on 8008).
    #[arg(long, default_value = "127.0.0.1:8008")]
    rest: SocketAddr,
    /// gRPC (h2c) listen address (ModelMesh serves on 8033).
    #[arg(long, default_value = "127.0.0.1:8033")]
    grpc: SocketAddr,
    /// Only these models exist (comma-separated); others get 404 / NOT_FOUND. Default: any.
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Answer every n-th request to --fail-model with an error (REST 503, gRPC UNAVAILABLE).
    #[arg(long, value_name = "N", requires = "fail_model")]
    fail_every: Option<u64>,
    /// The model that fails (see --fail-every).
    #[arg(long, value_name = "MODEL", requires = "fail_every")]
    fail_model: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = StandInConfig {
        namespace: args.namespace.clone(),
        models: args
            .models
            .map(|m| m.into_iter().filter(|m| !m.is_empty()).collect()),
        failing: args.fail_model.zip(args.fail_every.map(|n| n.max(1))),
    };
    let standin = StandIn::start(config, args.rest, args.grpc)
        .await
        .with_context(|| format!("starting the stand-in for namespace {}", args.namespace))?;
    println!(
        "modelmesh-standin namespace={} rest={} grpc={}",
        standin.namespace, standin.rest_addr, standin.grpc_addr
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = standin.wait() => anyhow::bail!("a stand-in server stopped unexpectedly"),
    }
    Ok(())
}
