//! `berth top pods|node`: usage like `kubectl top`, from the running
//! daemon's latest sample (CRI pod and container stats, /proc for the node).

use super::run::api_socket;
use berth_kubelet::api::Client;
use berth_kubelet::engine::stats::Snapshot;
use berth_runtime::Config;
use clap::{Subcommand, ValueEnum};
use std::process::ExitCode;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SortBy {
    Cpu,
    Memory,
}

#[derive(Subcommand)]
pub enum TopWhat {
    /// CPU and memory of pods (or of their containers).
    #[command(alias = "pod", alias = "po")]
    Pods {
        /// Only this pod.
        name: Option<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// One line per container.
        #[arg(long)]
        containers: bool,
        #[arg(long, value_enum)]
        sort_by: Option<SortBy>,
        #[arg(long)]
        no_headers: bool,
    },
    /// CPU and memory of the node, against its allocatable.
    #[command(alias = "nodes", alias = "no")]
    Node {
        #[arg(long)]
        no_headers: bool,
    },
}

fn cpu(n: Option<u64>) -> String {
    format!("{}m", n.map(|n| n.div_ceil(1_000_000)).unwrap_or(0))
}

fn mem(b: Option<u64>) -> String {
    format!("{}Mi", b.unwrap_or(0) / (1024 * 1024))
}

/// Left-aligned columns three spaces apart, as kubectl prints them.
fn table(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n).map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i] + 3)).collect();
        out.push_str(line.concat().trim_end());
        out.push('\n');
    }
    out
}

pub async fn run(cfg: Config, what: TopWhat) -> anyhow::Result<ExitCode> {
    let client = Client::new(&api_socket(&cfg));
    let snap: Snapshot = client.stats().await?;
    match what {
        TopWhat::Pods { name, namespace, all_namespaces, containers, sort_by, no_headers } => {
            let mut pods: Vec<_> = snap
                .pods
                .iter()
                .filter(|p| all_namespaces || p.namespace == namespace)
                .filter(|p| name.as_deref().is_none_or(|n| n == p.name))
                .filter(|p| p.cpu_nano_cores.is_some())
                .cloned()
                .collect();
            if pods.is_empty() {
                if let Some(n) = &name {
                    if snap.pods.iter().any(|p| &p.name == n && (all_namespaces || p.namespace == namespace)) {
                        anyhow::bail!("metrics not available yet");
                    }
                    anyhow::bail!("pods \"{n}\" not found in namespace \"{namespace}\"");
                }
                if snap.pods.is_empty() {
                    eprintln!("No resources found");
                    return Ok(ExitCode::SUCCESS);
                }
                anyhow::bail!("metrics not available yet");
            }
            match sort_by {
                Some(SortBy::Cpu) => pods.sort_by_key(|p| std::cmp::Reverse(p.cpu_nano_cores)),
                Some(SortBy::Memory) => pods.sort_by_key(|p| std::cmp::Reverse(p.memory_working_set_bytes)),
                None => {}
            }
            let mut rows = Vec::new();
            let ns = |p: &berth_kubelet::engine::stats::PodUsage| if all_namespaces { vec![p.namespace.clone()] } else { vec![] };
            if !no_headers {
                let mut h: Vec<String> = if all_namespaces { vec!["NAMESPACE".into()] } else { vec![] };
                if containers {
                    h.extend(["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"].map(String::from));
                } else {
                    h.extend(["NAME", "CPU(cores)", "MEMORY(bytes)"].map(String::from));
                }
                rows.push(h);
            }
            for p in &pods {
                if containers {
                    for c in &p.containers {
                        let mut r = ns(p);
                        r.extend([p.name.clone(), c.name.clone(), cpu(c.cpu_nano_cores), mem(c.memory_working_set_bytes)]);
                        rows.push(r);
                    }
                } else {
                    let mut r = ns(p);
                    r.extend([p.name.clone(), cpu(p.cpu_nano_cores), mem(p.memory_working_set_bytes)]);
                    rows.push(r);
                }
            }
            print!("{}", table(&rows));
        }
        TopWhat::Node { no_headers } => {
            let node = client.node().await?;
            let Some(used) = snap.node.cpu_nano_cores else { anyhow::bail!("metrics not available yet") };
            let alloc = node.status.as_ref().and_then(|s| s.allocatable.clone()).unwrap_or_default();
            let parse = |k: &str| alloc.get(k).and_then(|q| berth_kubelet::manifest::quantity::ParsedQuantity::parse(&q.0).ok());
            let cpu_alloc = parse("cpu").map(|q| q.milli_value()).unwrap_or(0);
            let mem_alloc = parse("memory").map(|q| q.value()).unwrap_or(0);
            let cpu_m = used.div_ceil(1_000_000) as i64;
            let mem_b = snap.node.memory_working_set_bytes as i64;
            let pct = |a: i64, b: i64| if b > 0 { format!("{}%", a * 100 / b) } else { "<unknown>".into() };
            let mut rows = Vec::new();
            if !no_headers {
                rows.push(["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"].map(String::from).to_vec());
            }
            rows.push(vec![node.metadata.name.clone().unwrap_or_default(), format!("{cpu_m}m"), pct(cpu_m, cpu_alloc), mem(Some(mem_b as u64)), pct(mem_b, mem_alloc)]);
            print!("{}", table(&rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}
