//! `modelsplit-load`: a small load client for the local gateway (the demo uses it).
//!
//! - `split`: sends requests to a group (REST or gRPC) and prints how many reached
//!   each member against the weights Envoy runs with (read from its admin API).
//! - `sticky`: many users, several requests each, with the group's sticky header;
//!   checks every user stayed on one member and shows how users spread.
//! - `wait-split`: waits until Envoy runs a group with the expected shares and
//!   prints how long after a given moment (the manifest edit) that happened.
//! - `steady`: a steady REST load on a group for a while (what an automated rollout
//!   judges), then how many answers each member gave and how many were errors.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use modelsplit_e2e::envoy_admin::{applied_filter_config, find_group, shares};
use modelsplit_e2e::http::HttpClient;
use modelsplit_e2e::kserve::grpc_inference_service_client::GrpcInferenceServiceClient;
use modelsplit_e2e::kserve::ModelInferRequest;
use modelsplit_e2e::load::run_many;
use modelsplit_e2e::observe::{Observed, Tally};
use modelsplit_e2e::split::check_split;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(version, about = "Load client for the modelsplit local gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send requests to a group and compare the members' counts with the weights.
    Split(SplitArgs),
    /// Send requests as many users with the sticky header; check each stays on one member.
    Sticky(StickyArgs),
    /// Wait until Envoy runs the group with the expected shares.
    WaitSplit(WaitArgs),
    /// A steady REST load on a group for a while; prints the answers per member.
    Steady(SteadyArgs),
}

#[derive(Args)]
struct Target {
    /// The gateway listener.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Envoy's admin API (where the weights in force are read).
    #[arg(long, default_value = "http://127.0.0.1:9901")]
    admin: String,
    /// The group as NAMESPACE/NAME.
    #[arg(long)]
    group: String,
}

impl Target {
    fn group(&self) -> anyhow::Result<(&str, &str)> {
        self.group
            .split_once('/')
            .with_context(|| format!("--group {:?} must be NAMESPACE/NAME", self.group))
    }
}

#[derive(Args)]
struct SplitArgs {
    #[command(flatten)]
    target: Target,
    /// Use gRPC ModelInfer with the mm-vmodel-id header instead of REST.
    #[arg(long)]
    grpc: bool,
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

#[derive(Args)]
struct StickyArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long, default_value_t = 300)]
    users: usize,
    /// Requests per user.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

#[derive(Args)]
struct WaitArgs {
    #[command(flatten)]
    target: Target,
    /// The expected shares, e.g. ai-model-one=50,ai-model-two=50 (percent).
    #[arg(long)]
    expect: String,
    /// The moment to measure from, in milliseconds since the Unix epoch (default: now).
    #[arg(long)]
    since_ms: Option<u128>,
    #[arg(long, default_value_t = 15)]
    timeout_seconds: u64,
}

#[derive(Args)]
struct SteadyArgs {
    #[command(flatten)]
    target: Target,
    /// Requests per second (spread over the workers).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    #[arg(long, default_value_t = 4)]
    concurrency: u32,
    /// Stop after this long (or when interrupted).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Split(args) => split(args).await,
        Command::Sticky(args) => sticky(args).await,
        Command::WaitSplit(args) => wait_split(args).await,
        Command::Steady(args) => steady(args).await,
    }
}

/// The group's member weights as Envoy runs them.
async fn weights_in_force(
    http: &HttpClient,
    target: &Target,
) -> anyhow::Result<Vec<(String, u32)>> {
    let (namespace, name) = target.group()?;
    let config = applied_filter_config(http, &target.admin)
        .await
        .with_context(|| {
            format!(
                "no modelsplit filter configuration at {} (is Envoy running?)",
                target.admin
            )
        })?;
    let group = find_group(&config, namespace, name)
        .with_context(|| format!("Envoy runs no group {namespace}/{name}"))?;
    Ok(group
        .members
        .iter()
        .map(|m| (m.name.clone(), m.weight))
        .collect())
}

async fn split(args: SplitArgs) -> anyhow::Result<()> {
    let http = HttpClient::default();
    let target = &args.target;
    let (namespace, name) = target.group()?;
    let weights = weights_in_force(&http, target).await?;
    let observed = if args.grpc {
        let channel = tonic::transport::Channel::from_shared(target.gateway.clone())?
            .connect()
            .await
            .with_context(|| format!("gRPC connection to {}", target.gateway))?;
        let client = GrpcInferenceServiceClient::new(channel);
        let group = name.to_string();
        run_many(args.requests, args.concurrency, move |i| {
            let mut client = client.clone();
            let mut request = tonic::Request::new(ModelInferRequest {
                id: i.to_string(),
                ..Default::default()
            });
            if let Ok(value) = group.parse() {
                request.metadata_mut().insert("mm-vmodel-id", value);
            }
            async move { Observed::from_grpc(&client.model_infer(request).await) }
        })
        .await
    } else {
        let url = format!(
            "{}/modelmesh/{namespace}/v2/models/{name}/infer",
            target.gateway
        );
        let client = http.clone();
        run_many(args.requests, args.concurrency, move |_| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                match client
                    .post_json(&url, &[], &serde_json::json!({"inputs": []}))
                    .await
                {
                    Ok(reply) => Observed::from_rest(&reply),
                    Err(_) => Observed {
                        status: 0xffff,
                        routed_to: None,
                        model: None,
                        namespace: None,
                        upstream_path: None,
                    },
                }
            }
        })
        .await
    };
    let tally = Tally::of(&observed, namespace);
    let weights_ref: Vec<(&str, u32)> = weights.iter().map(|(m, w)| (m.as_str(), *w)).collect();
    let check = check_split(&tally.by_member, &weights_ref);
    let total_weight: u64 = weights.iter().map(|(_, w)| u64::from(*w)).sum();
    let received: u64 = tally.by_member.values().sum();
    println!(
        "{} {namespace}/{name}: {} requests, {} failed",
        if args.grpc { "gRPC" } else { "REST" },
        observed.len(),
        tally.problem_count
    );
    println!(
        "  {:<16} {:>10} {:>10} {:>10}",
        "member", "weight", "received", "share"
    );
    for (member, weight) in &weights {
        let count = tally.by_member.get(member).copied().unwrap_or(0);
        println!(
            "  {member:<16} {:>9.2}% {count:>10} {:>9.2}%",
            f64::from(*weight) * 100.0 / total_weight.max(1) as f64,
            count as f64 * 100.0 / received.max(1) as f64
        );
    }
    println!(
        "  chi-square {:.2} ({} df, critical {:.2} at p = 1e-5): {}",
        check.chi_square,
        check.degrees_of_freedom,
        check.critical,
        if check.passes() {
            "consistent with the weights"
        } else {
            "NOT consistent with the weights"
        }
    );
    for problem in &tally.problems {
        println!("  failed: {problem}");
    }
    if tally.problem_count > 0 || !check.passes() {
        bail!("the split does not match the weights Envoy runs with");
    }
    Ok(())
}

async fn sticky(args: StickyArgs) -> anyhow::Result<()> {
    let http = HttpClient::default();
    let target = &args.target;
    let (namespace, name) = target.group()?;
    let config = applied_filter_config(&http, &target.admin)
        .await
        .context("no modelsplit filter configuration (is Envoy running?)")?;
    let group = find_group(&config, namespace, name)
        .with_context(|| format!("Envoy runs no group {namespace}/{name}"))?;
    let header = group
        .sticky_header
        .clone()
        .with_context(|| format!("group {namespace}/{name} is not sticky"))?;
    let url = format!(
        "{}/modelmesh/{namespace}/v2/models/{name}/infer",
        target.gateway
    );
    let users = args.users;
    let observed = run_many(users * args.repeat, 32, move |i| {
        let (client, url, header) = (http.clone(), url.clone(), header.clone());
        async move {
            let user = format!("user-{}", i % users);
            let reply = client
                .post_json(
                    &url,
                    &[(header.as_str(), user.as_str())],
                    &serde_json::json!({}),
                )
                .await;
            (user, reply.ok().and_then(|r| Observed::from_rest(&r).model))
        }
    })
    .await;
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut failed = 0;
    for (user, model) in observed {
        match model {
            Some(model) => {
                seen.entry(user).or_default().insert(model);
            }
            None => failed += 1,
        }
    }
    let moved = seen.values().filter(|m| m.len() > 1).count();
    let mut users_per_member: BTreeMap<String, usize> = BTreeMap::new();
    for members in seen.values().filter(|m| m.len() == 1) {
        for m in members {
            *users_per_member.entry(m.clone()).or_default() += 1;
        }
    }
    println!(
        "REST {namespace}/{name} sticky on {}: {} users x {} requests, {failed} failed, {moved} users saw more than one member",
        group.sticky_header.as_deref().unwrap_or_default(),
        users,
        args.repeat
    );
    for (member, share) in shares(group) {
        let count = users_per_member.get(&member).copied().unwrap_or(0);
        println!(
            "  {member:<16} weight {share:>6.2}%  users {count:>5} ({:.1}%)",
            count as f64 * 100.0 / users.max(1) as f64
        );
    }
    if failed > 0 || moved > 0 {
        bail!("sticky routing did not hold");
    }
    Ok(())
}

async fn wait_split(args: WaitArgs) -> anyhow::Result<()> {
    let http = HttpClient::default();
    let target = &args.target;
    let (namespace, name) = target.group()?;
    let mut expected: Vec<(String, f64)> = Vec::new();
    for part in args.expect.split(',') {
        let (member, share) = part
            .split_once('=')
            .with_context(|| format!("--expect {part:?} must be MEMBER=PERCENT"))?;
        expected.push((
            member.trim().to_string(),
            share
                .trim()
                .parse()
                .with_context(|| format!("--expect {part:?}: not a number"))?,
        ));
    }
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let since = args.since_ms.unwrap_or_else(now_ms);
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    loop {
        if let Some(config) = applied_filter_config(&http, &target.admin).await {
            if let Some(group) = find_group(&config, namespace, name) {
                let mut now = shares(group);
                now.sort_by(|a, b| a.0.cmp(&b.0));
                let same = now.len() == expected.len()
                    && now
                        .iter()
                        .zip(&expected)
                        .all(|(a, b)| a.0 == b.0 && (a.1 - b.1).abs() < 0.01);
                if same {
                    println!(
                        "{namespace}/{name}: Envoy runs the new split {} ms after the manifest edit",
                        now_ms().saturating_sub(since)
                    );
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "Envoy did not run {namespace}/{name} as {} within {} s",
                args.expect,
                args.timeout_seconds
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

async fn steady(args: SteadyArgs) -> anyhow::Result<()> {
    let (namespace, name) = args.target.group()?;
    let url = format!(
        "{}/modelmesh/{namespace}/v2/models/{name}/infer",
        args.target.gateway
    );
    let http = HttpClient::default();
    let workers = args.concurrency.max(1);
    // Each worker sends one request per period, so together they keep the rate.
    let period = Duration::from_secs_f64(f64::from(workers) / f64::from(args.rate.max(1)));
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let mut answers: BTreeMap<String, (u64, u64)> = BTreeMap::new();
                let mut ticks = tokio::time::interval(period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while Instant::now() < until {
                    ticks.tick().await;
                    let (member, failed) = match http
                        .post_json(&url, &[], &serde_json::json!({"inputs": []}))
                        .await
                    {
                        Ok(reply) => (
                            Observed::from_rest(&reply)
                                .routed_to
                                .unwrap_or_else(|| "(no member)".to_string()),
                            reply.status >= 500,
                        ),
                        Err(_) => ("(no answer)".to_string(), true),
                    };
                    let counts = answers.entry(member).or_default();
                    counts.0 += 1;
                    counts.1 += u64::from(failed);
                }
                answers
            })
        })
        .collect();
    let mut answers: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for task in tasks {
        for (member, (n, failed)) in task.await? {
            let counts = answers.entry(member).or_default();
            counts.0 += n;
            counts.1 += failed;
        }
    }
    println!(
        "REST {namespace}/{name}: steady load for {} s",
        args.seconds
    );
    for (member, (n, failed)) in answers {
        println!("  {member:<16} {n:>7} answers, {failed:>5} errors");
    }
    Ok(())
}
