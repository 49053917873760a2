//! A CRI client for hack/bench.sh: times the pod lifecycle against any CRI
//! runtime on a unix socket, and starts or removes pods for memory readings.
//!
//! ```text
//! cri-bench cycle --target berth=/run/a.sock --target containerd=/run/b.sock \
//!     --image IMG --tag T --pods 30 --warmup 3 --cgroup-parent /T --log-dir DIR
//! cri-bench trace --socket S --name berth --image IMG --tag T ...
//! cri-bench up   --socket S --name berth --image IMG --tag T --pods 50 ...
//! cri-bench down --socket S --tag T
//! ```
//!
//! `cycle` runs, per pod and per target (interleaved, the order alternating
//! every round): RunPodSandbox, CreateContainer, StartContainer (the pod is
//! up), StopContainer (timeout 0: SIGKILL), RemoveContainer, StopPodSandbox,
//! RemovePodSandbox (the pod is gone), timing each RPC, and prints the
//! median, p10 and p90 of every phase side by side with ratios to the first
//! target. `trace` runs one pod and prints when each RPC started and ended.
//! `up` leaves pods running and prints, per pod, `SANDBOX_ID
//! PAUSE_PID CONTAINER_ID CONTAINER_PID`; `down` removes every pod labelled
//! with the tag.
//!
//! The pods look like kubelet's: network and IPC namespaces of the pod, a
//! PID namespace per container, a cgroup parent per pod, a log directory,
//! label `berth-bench=TAG`; the container runs `sleep 3600`.

use anyhow::{bail, Context, Result};
use berth_tests::connect_unix;
use clap::{Parser, Subcommand};
use cri_proto::v1 as cri;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tonic::transport::Channel;

type Client = RuntimeServiceClient<Channel>;

const LABEL: &str = "berth-bench";
const PHASES: [&str; 7] = ["RunPodSandbox", "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox"];

#[derive(Parser)]
#[command(about = "Time the CRI pod lifecycle against CRI runtimes")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct PodOpts {
    /// The container image (present in every runtime already).
    #[arg(long)]
    image: String,
    /// Label value of every pod (`berth-bench=TAG`), also in names and uids.
    #[arg(long)]
    tag: String,
    /// Pod cgroups go under `<parent>/<target>-<n>`.
    #[arg(long)]
    cgroup_parent: String,
    /// Pod log directories go under `<dir>/<target>-<n>`.
    #[arg(long)]
    log_dir: PathBuf,
    /// The CRI runtime handler ("" for the default).
    #[arg(long, default_value = "")]
    handler: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Time create-to-removed pod cycles, interleaved over the targets.
    Cycle {
        /// NAME=SOCKET, in table order; ratios are to the first.
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        #[arg(long, default_value_t = 30)]
        pods: usize,
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Also write every run's phase times (µs) to DIR/<target>.tsv.
        #[arg(long)]
        raw: Option<PathBuf>,
        #[command(flatten)]
        pod: PodOpts,
    },
    /// One pod cycle with the start and end of every RPC.
    Trace {
        #[arg(long)]
        socket: PathBuf,
        /// Target name, for pod names and cgroups.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        pod: PodOpts,
    },
    /// Start pods with a running container and leave them running.
    Up {
        #[arg(long)]
        socket: PathBuf,
        /// Target name, for pod names and cgroups.
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 50)]
        pods: usize,
        #[command(flatten)]
        pod: PodOpts,
    },
    /// Remove every pod labelled berth-bench=TAG, with its containers.
    Down {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        tag: String,
    },
}

fn pod_config(o: &PodOpts, target: &str, n: usize) -> cri::PodSandboxConfig {
    let name = format!("bench-{target}-{n}");
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: name.clone(), namespace: "bench".into(), uid: format!("{}-{target}-{n}", o.tag), attempt: 0 }),
        hostname: name,
        log_directory: o.log_dir.join(format!("{target}-{n}")).to_string_lossy().into_owned(),
        labels: [(LABEL.to_string(), o.tag.clone())].into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/{target}-{n}", o.cgroup_parent.trim_end_matches('/')),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Pod as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(o: &PodOpts) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "main".into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: o.image.clone(), ..Default::default() }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "main/0.log".into(),
        labels: [(LABEL.to_string(), o.tag.clone())].into(),
        linux: Some(cri::LinuxContainerConfig { security_context: Some(Default::default()), ..Default::default() }),
        ..Default::default()
    }
}

/// Kubelet makes the pod's log directory before RunPodSandbox.
fn make_log_dir(pod: &cri::PodSandboxConfig) -> Result<()> {
    let d = Path::new(&pod.log_directory).join("main");
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))
}

/// Runs one RPC, adding its (start, end) to `times`.
macro_rules! timed {
    ($times:expr, $phase:expr, $call:expr) => {{
        let t0 = Instant::now();
        let r = $call.await.with_context(|| format!("{}", $phase))?;
        $times.push((t0, Instant::now()));
        r.into_inner()
    }};
}

/// One pod from RunPodSandbox to RemovePodSandbox: when each phase started and ended.
async fn cycle_once(rt: &mut Client, o: &PodOpts, target: &str, n: usize) -> Result<Vec<(Instant, Instant)>> {
    let pod = pod_config(o, target, n);
    make_log_dir(&pod)?;
    let mut t = Vec::with_capacity(PHASES.len());
    let sid = timed!(t, PHASES[0], rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pod.clone()), runtime_handler: o.handler.clone() })).pod_sandbox_id;
    let cid = timed!(
        t,
        PHASES[1],
        rt.create_container(cri::CreateContainerRequest { pod_sandbox_id: sid.clone(), config: Some(container_config(o)), sandbox_config: Some(pod.clone()) })
    )
    .container_id;
    timed!(t, PHASES[2], rt.start_container(cri::StartContainerRequest { container_id: cid.clone() }));
    timed!(t, PHASES[3], rt.stop_container(cri::StopContainerRequest { container_id: cid.clone(), timeout: 0 }));
    timed!(t, PHASES[4], rt.remove_container(cri::RemoveContainerRequest { container_id: cid }));
    timed!(t, PHASES[5], rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sid.clone() }));
    timed!(t, PHASES[6], rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid }));
    let _ = std::fs::remove_dir_all(&pod.log_directory);
    Ok(t)
}

/// (median, p10, p90): nearest rank; the median of an even count averages the middle two.
fn stats(v: &[u64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_unstable();
    let n = v.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let rank = |p: f64| v[((p * n as f64).ceil() as usize).clamp(1, n) - 1] as f64;
    let med = if n % 2 == 1 { v[n / 2] as f64 } else { (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0 };
    (med / 1000.0, rank(0.10) / 1000.0, rank(0.90) / 1000.0)
}

async fn connect(socket: &Path) -> Result<Client> {
    Ok(RuntimeServiceClient::new(connect_unix(socket).await?))
}

async fn cycle(targets: &[String], pods: usize, warmup: usize, raw: Option<&Path>, o: &PodOpts) -> Result<()> {
    let mut clients = Vec::new();
    for t in targets {
        let (name, sock) = t.split_once('=').with_context(|| format!("--target {t:?}: want NAME=SOCKET"))?;
        clients.push((name.to_string(), connect(Path::new(sock)).await?));
    }
    // Per target: per run, µs per phase.
    let mut runs: BTreeMap<String, Vec<Vec<u64>>> = BTreeMap::new();
    for i in 0..warmup + pods {
        let order: Vec<usize> = if i % 2 == 0 { (0..clients.len()).collect() } else { (0..clients.len()).rev().collect() };
        for k in order {
            let (name, rt) = &mut clients[k];
            let t = cycle_once(rt, o, name, i).await.with_context(|| format!("{name}: pod {i}"))?;
            let t: Vec<u64> = t.iter().map(|(a, b)| (*b - *a).as_micros() as u64).collect();
            if i >= warmup {
                runs.entry(name.clone()).or_default().push(t);
            }
        }
    }
    if let Some(dir) = raw {
        for (name, rs) in &runs {
            let mut text = format!("{}\n", PHASES.join("\t"));
            for r in rs {
                text.push_str(&r.iter().map(u64::to_string).collect::<Vec<_>>().join("\t"));
                text.push('\n');
            }
            std::fs::write(dir.join(format!("{name}.tsv")), text)?;
        }
    }
    // Rows: every phase, then the sums.
    let names: Vec<String> = clients.iter().map(|(n, _)| n.clone()).collect();
    let mut rows: Vec<(String, BTreeMap<String, Vec<u64>>)> = Vec::new();
    let sum = |r: &[u64], range: std::ops::Range<usize>| r[range].iter().sum::<u64>();
    for (p, phase) in PHASES.iter().enumerate() {
        rows.push((phase.to_string(), names.iter().map(|n| (n.clone(), runs[n].iter().map(|r| r[p]).collect())).collect()));
    }
    for (label, range) in [("= pod start (run+create+start)", 0..3), ("= pod teardown (stop..remove)", 3..7), ("= total", 0..7)] {
        rows.push((label.to_string(), names.iter().map(|n| (n.clone(), runs[n].iter().map(|r| sum(r, range.clone())).collect())).collect()));
    }
    println!("{pods} pods per runtime after {warmup} warm-up, interleaved; milliseconds, median [p10 p90]");
    print!("{:<32}", "phase");
    for n in &names {
        print!(" {:>24}", n);
    }
    for n in names.iter().skip(1) {
        print!(" {:>16}", format!("{n}/{}", names[0]));
    }
    println!();
    for (label, per) in &rows {
        print!("{label:<32}");
        let meds: Vec<f64> = names.iter().map(|n| stats(&per[n]).0).collect();
        for n in &names {
            let (m, lo, hi) = stats(&per[n]);
            print!(" {:>24}", format!("{m:.2} [{lo:.2} {hi:.2}]"));
        }
        for m in meds.iter().skip(1) {
            print!(" {:>16}", if meds[0] > 0.0 { format!("{:.2}x", m / meds[0]) } else { "-".into() });
        }
        println!();
    }
    let start = |n: &String| stats(&runs[n].iter().map(|r| sum(r, 0..3)).collect::<Vec<_>>()).0;
    for n in names.iter().skip(1) {
        println!("pod start: {} takes {:.0}% of {n}'s time", names[0], 100.0 * start(&names[0]) / start(n));
    }
    Ok(())
}

fn info_pid(info: &std::collections::HashMap<String, String>) -> i64 {
    info.get("info").and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()).and_then(|v| v["pid"].as_i64()).unwrap_or(0)
}

async fn trace(socket: &Path, name: &str, o: &PodOpts) -> Result<()> {
    let mut rt = connect(socket).await?;
    let t = cycle_once(&mut rt, o, name, 0).await?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let origin = t[0].0;
    println!("{name}: one pod, ms from RunPodSandbox's start");
    for (phase, (a, b)) in PHASES.iter().zip(&t) {
        println!("  {:>8.2} .. {:>8.2}  {:>7.2}  {phase}", ms(*a - origin), ms(*b - origin), ms(*b - *a));
    }
    Ok(())
}

async fn up(socket: &Path, name: &str, pods: usize, o: &PodOpts) -> Result<()> {
    let mut rt = connect(socket).await?;
    for n in 0..pods {
        let pod = pod_config(o, name, n);
        make_log_dir(&pod)?;
        let sid = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pod.clone()), runtime_handler: o.handler.clone() })
            .await
            .context("RunPodSandbox")?
            .into_inner()
            .pod_sandbox_id;
        let cid = rt
            .create_container(cri::CreateContainerRequest { pod_sandbox_id: sid.clone(), config: Some(container_config(o)), sandbox_config: Some(pod) })
            .await
            .context("CreateContainer")?
            .into_inner()
            .container_id;
        rt.start_container(cri::StartContainerRequest { container_id: cid.clone() }).await.context("StartContainer")?;
        let ps = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: sid.clone(), verbose: true }).await?.into_inner();
        let cs = rt.container_status(cri::ContainerStatusRequest { container_id: cid.clone(), verbose: true }).await?.into_inner();
        let running = cs.status.as_ref().is_some_and(|s| s.state == cri::ContainerState::ContainerRunning as i32);
        let (pause, ctr) = (info_pid(&ps.info), info_pid(&cs.info));
        if !running || pause <= 0 || ctr <= 0 {
            bail!("pod {n}: container running {running}, pause pid {pause}, container pid {ctr}");
        }
        println!("{sid} {pause} {cid} {ctr}");
    }
    Ok(())
}

async fn down(socket: &Path, tag: &str) -> Result<()> {
    let mut rt = connect(socket).await?;
    let selector: std::collections::HashMap<String, String> = [(LABEL.to_string(), tag.to_string())].into();
    let filter = cri::ContainerFilter { label_selector: selector.clone(), ..Default::default() };
    for c in rt.list_containers(cri::ListContainersRequest { filter: Some(filter) }).await?.into_inner().containers {
        rt.stop_container(cri::StopContainerRequest { container_id: c.id.clone(), timeout: 0 }).await.context("StopContainer")?;
        rt.remove_container(cri::RemoveContainerRequest { container_id: c.id }).await.context("RemoveContainer")?;
    }
    let filter = cri::PodSandboxFilter { label_selector: selector, ..Default::default() };
    for p in rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(filter) }).await?.into_inner().items {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: p.id.clone() }).await.context("StopPodSandbox")?;
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: p.id }).await.context("RemovePodSandbox")?;
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Cycle { targets, pods, warmup, raw, pod } => cycle(&targets, pods, warmup, raw.as_deref(), &pod).await,
        Cmd::Trace { socket, name, pod } => trace(&socket, &name, &pod).await,
        Cmd::Up { socket, name, pods, pod } => up(&socket, &name, pods, &pod).await,
        Cmd::Down { socket, tag } => down(&socket, &tag).await,
    }
}
