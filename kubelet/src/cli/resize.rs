//! `berth resize pod NAME -c C ...`: in-place resize of a container's cpu
//! and memory, like `kubectl patch pod --subresource resize` (with
//! `kubectl set resources`' `--requests`/`--limits` syntax).

use super::run::api_socket;
use berth_kubelet::api::Client;
use berth_kubelet::engine::resize::ResizeRequest;
use berth_runtime::Config;
use clap::Subcommand;
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ResizeWhat {
    /// Change a container's cpu and memory while it runs.
    #[command(alias = "pods", alias = "po")]
    Pod {
        name: String,
        /// The container (default: the only one).
        #[arg(short, long)]
        container: Option<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// New cpu limit; the request follows when it equalled the limit.
        #[arg(long)]
        cpu: Option<String>,
        /// New memory limit; the request follows when it equalled the limit.
        #[arg(long)]
        memory: Option<String>,
        /// Requests to set, e.g. cpu=100m,memory=64Mi.
        #[arg(long)]
        requests: Option<String>,
        /// Limits to set, e.g. cpu=200m,memory=128Mi.
        #[arg(long)]
        limits: Option<String>,
    },
}

fn pairs(s: &Option<String>) -> anyhow::Result<BTreeMap<String, String>> {
    match s {
        Some(s) => berth_kubelet::engine::node::parse_pairs(s, '=').map_err(|e| anyhow::anyhow!("{e}")),
        None => Ok(BTreeMap::new()),
    }
}

pub async fn run(cfg: Config, what: ResizeWhat) -> anyhow::Result<ExitCode> {
    let ResizeWhat::Pod { name, container, namespace, cpu, memory, requests, limits } = what;
    let client = Client::new(&api_socket(&cfg));
    let pod = client.pod(&namespace, &name).await?;
    let spec = pod.spec.clone().unwrap_or_default();
    let container = match container {
        Some(c) => c,
        None if spec.containers.len() == 1 => spec.containers[0].name.clone(),
        None => anyhow::bail!("pod {name} has {} containers: name one with -c", spec.containers.len()),
    };
    let c = spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == container).ok_or_else(|| anyhow::anyhow!("container {container:?} not found in pod {name}"))?;
    let mut req = ResizeRequest { container: container.clone(), requests: pairs(&requests)?, limits: pairs(&limits)? };
    for (k, v) in [("cpu", cpu), ("memory", memory)] {
        let Some(v) = v else { continue };
        let r = c.resources.clone().unwrap_or_default();
        let cur_req = r.requests.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone());
        let cur_lim = r.limits.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone());
        req.limits.insert(k.into(), v.clone());
        let same = match (&cur_req, &cur_lim) {
            (Some(a), Some(b)) => berth_kubelet::manifest::quantity::compare(a, b) == Some(std::cmp::Ordering::Equal),
            (None, _) => true,
            _ => false,
        };
        if same && !req.requests.contains_key(k) {
            req.requests.insert(k.into(), v);
        }
    }
    if req.requests.is_empty() && req.limits.is_empty() {
        anyhow::bail!("nothing to change: give --cpu, --memory, --requests or --limits");
    }
    client.resize(&namespace, &name, &req).await?;
    println!("pod/{name} resized");
    Ok(ExitCode::SUCCESS)
}
