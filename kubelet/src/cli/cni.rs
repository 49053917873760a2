//! `berth cni` (hidden): the pod network as `berth cri` sets it up, for
//! diagnosis and for hack/bench.sh.

use berth_cni::{netns, PodNetworks, PodSpec};
use berth_runtime::Config;
use clap::Subcommand;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Subcommand)]
pub enum CniCommand {
    /// Whether pods can get networking now (the CRI NetworkReady condition).
    Status,
    /// Times CNI ADD and DEL of the pod networks (loopback and the pod
    /// network) for throwaway network namespaces; prints medians.
    Bench {
        /// Measured pods.
        #[arg(long, default_value_t = 30)]
        count: usize,
        /// Unmeasured pods first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
    },
}

/// Median, 10th and 90th percentile (nearest rank) in ms.
fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let rank = |p: f64| v[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    let med = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    (med, rank(0.10), rank(0.90))
}

pub fn run(cfg: Config, cmd: CniCommand) -> anyhow::Result<ExitCode> {
    let net = PodNetworks::new(cfg.cni_options())?;
    match cmd {
        CniCommand::Status => match net.status() {
            Ok(()) => {
                println!("NetworkReady: true ({})", net.plan()?.main().source.as_ref().map_or_else(|| format!("default network on bridge {}, pod CIDR {}", cfg.cni.bridge, net.pod_cidr()), |p| p.display().to_string()));
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("NetworkReady: false: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
        CniCommand::Bench { count, warmup } => {
            anyhow::ensure!(count > 0, "--count must be at least 1");
            let plan = net.plan()?;
            let (mut add, mut del, mut total) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..warmup + count {
                let id = format!("berthbench{}x{i}", std::process::id());
                let path = net.netns_path(&id);
                netns::create(&path).map_err(|e| anyhow::anyhow!("creating network namespace {}: {e}", path.display()))?;
                let spec = PodSpec { id: id.clone(), name: format!("bench-{i}"), namespace: "bench".into(), uid: id.clone(), ..Default::default() };
                let t0 = Instant::now();
                let added = net.setup(&spec, &path, &plan);
                let t1 = Instant::now();
                let deleted = net.teardown(&id, Some(&path), &plan.attachments());
                let t2 = Instant::now();
                let removed = netns::remove(&path);
                added?;
                deleted?;
                removed?;
                if i >= warmup {
                    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
                    add.push(ms(t1 - t0));
                    del.push(ms(t2 - t1));
                    total.push(ms(t2 - t0));
                }
            }
            let names: Vec<String> = plan.networks.iter().map(|(l, a)| format!("{} on {} ({})", l.name, a.ifname, l.plugins.iter().map(|p| p.plugin_type.as_str()).collect::<Vec<_>>().join("+"))).collect();
            println!("networks: {}", names.join(", "));
            println!("{:<12} {:>10} {:>8} {:>8}", "per pod", "median ms", "p10 ms", "p90 ms");
            for (label, v) in [("ADD", &mut add), ("DEL", &mut del), ("ADD+DEL", &mut total)] {
                let (m, lo, hi) = stats(v);
                println!("{label:<12} {m:>10.2} {lo:>8.2} {hi:>8.2}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
