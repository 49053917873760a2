//! kubectl-like commands against a running `berth run`: get, describe,
//! logs, exec, delete.

use super::run::api_socket;
use berth_kubelet::api::Client;
use berth_kubelet::output;
use berth_runtime::Config;
use clap::{Args, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Pod;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Wide,
    Yaml,
    Json,
    Name,
}

#[derive(Subcommand)]
pub enum GetWhat {
    /// List pods.
    #[command(alias = "pod", alias = "po")]
    Pods {
        /// Only these pods.
        names: Vec<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Pods of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long, value_enum)]
        output: Option<OutputFormat>,
        /// Keep watching for changes.
        #[arg(short, long)]
        watch: bool,
    },
    /// Show the node: conditions, capacity, allocatable (with -o).
    #[command(alias = "node", alias = "no")]
    Nodes {
        #[arg(short, long, value_enum)]
        output: Option<OutputFormat>,
    },
}

#[derive(Subcommand)]
pub enum DescribeWhat {
    /// Show a pod's details, conditions and events.
    #[command(alias = "pods", alias = "po")]
    Pod {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Subcommand)]
pub enum DeleteWhat {
    /// Delete pods (graceful: preStop hooks, then the stop signal).
    #[command(alias = "pods", alias = "po")]
    Pod {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Seconds to give the pod to terminate (default: the pod's own).
        #[arg(long)]
        grace_period: Option<i64>,
    },
}

#[derive(Args)]
pub struct LogsArgs {
    pod: String,
    /// Container (default: the only or first one).
    #[arg(short, long)]
    container: Option<String>,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Keep streaming new lines, across log rotation and restarts.
    #[arg(short, long)]
    follow: bool,
    /// The previous instance of the container.
    #[arg(short, long)]
    previous: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    /// Prefix each line with its RFC 3339 time.
    #[arg(long)]
    timestamps: bool,
}

#[derive(Args)]
pub struct ExecArgs {
    pod: String,
    #[arg(short, long)]
    container: Option<String>,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn client(cfg: &Config) -> Client {
    Client::new(&api_socket(cfg))
}

pub async fn get(cfg: Config, what: GetWhat) -> anyhow::Result<ExitCode> {
    let (names, namespace, all_namespaces, fmt, watch) = match what {
        GetWhat::Pods { names, namespace, all_namespaces, output, watch } => (names, namespace, all_namespaces, output, watch),
        GetWhat::Nodes { output } => return get_nodes(&cfg, output).await,
    };
    let c = client(&cfg);
    let select = |pods: Vec<Pod>| -> Vec<Pod> {
        pods.into_iter()
            .filter(|p| all_namespaces || p.metadata.namespace.as_deref().unwrap_or("default") == namespace)
            .filter(|p| names.is_empty() || names.iter().any(|n| Some(n.as_str()) == p.metadata.name.as_deref()))
            .collect()
    };
    let pods = select(c.pods().await?);
    for n in &names {
        if !pods.iter().any(|p| p.metadata.name.as_deref() == Some(n.as_str())) {
            eprintln!("Error from server (NotFound): pods \"{n}\" not found");
        }
    }
    let wide = fmt == Some(OutputFormat::Wide);
    let opts = |no_headers: bool| output::TableOptions { wide, show_namespace: Some(all_namespaces), no_headers };
    let now = output::Timestamp::now;
    let single = names.len() == 1;
    match fmt {
        Some(OutputFormat::Json) => print!("{}", output::pods_document(&pods, output::Format::Json, single)),
        Some(OutputFormat::Yaml) => print!("{}", output::pods_document(&pods, output::Format::Yaml, single)),
        Some(OutputFormat::Name) => pods.iter().for_each(|p| println!("pod/{}", p.metadata.name.as_deref().unwrap_or(""))),
        _ => {
            if pods.is_empty() && !watch {
                if all_namespaces {
                    eprintln!("No resources found");
                } else {
                    eprintln!("No resources found in {namespace} namespace.");
                }
            } else {
                print!("{}", output::pods_table(&pods, &opts(false), now()));
            }
        }
    }
    if !watch {
        return Ok(if names.len() > pods.len() { ExitCode::FAILURE } else { ExitCode::SUCCESS });
    }
    // Rows that change, like kubectl -w (AGE aside).
    let key = |p: &Pod| {
        let r = output::pod_row(p, now());
        format!("{}\t{}\t{}\t{}", r.namespace, r.ready, r.status, r.restarts)
    };
    let mut last: std::collections::BTreeMap<String, String> = Default::default();
    for p in &pods {
        last.insert(p.metadata.uid.clone().unwrap_or_default(), key(p));
    }
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pods = select(c.pods().await?);
        for p in &pods {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let k = key(p);
            if last.get(&uid) != Some(&k) {
                print!("{}", output::pods_table(std::slice::from_ref(p), &opts(true), now()));
                std::io::stdout().flush()?;
                last.insert(uid, k);
            }
        }
    }
}

async fn get_nodes(cfg: &Config, fmt: Option<OutputFormat>) -> anyhow::Result<ExitCode> {
    let node = client(cfg).node().await?;
    let name = node.metadata.name.clone().unwrap_or_default();
    match fmt {
        Some(OutputFormat::Json) => println!("{}", serde_json::to_string_pretty(&node)?),
        Some(OutputFormat::Yaml) => print!("{}", serde_yaml::to_string(&node)?),
        Some(OutputFormat::Name) => println!("node/{name}"),
        _ => {
            let conds = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
            let mut status = vec!["Ready".to_string()];
            status.extend(conds.iter().filter(|c| c.type_ != "Ready" && c.status == "True").map(|c| c.type_.clone()));
            let version = node.status.as_ref().and_then(|s| s.node_info.as_ref()).map(|i| i.kubelet_version.clone()).unwrap_or_default();
            let w = name.len().max(4) + 3;
            println!("{:<w$}{:<10}{:<10}VERSION", "NAME", "STATUS", "ROLES");
            println!("{:<w$}{:<10}{:<10}{}", name, status.join(","), "<none>", version);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn describe(cfg: Config, what: DescribeWhat) -> anyhow::Result<ExitCode> {
    let DescribeWhat::Pod { name, namespace } = what;
    let c = client(&cfg);
    let pod = c.pod(&namespace, &name).await?;
    let events = c.events(&namespace, &name).await?;
    print!("{}", output::describe_pod(&pod, Some(&events), output::Timestamp::now()));
    Ok(ExitCode::SUCCESS)
}

pub async fn delete(cfg: Config, what: DeleteWhat) -> anyhow::Result<ExitCode> {
    let DeleteWhat::Pod { names, namespace, grace_period } = what;
    let c = client(&cfg);
    let mut code = ExitCode::SUCCESS;
    for n in names {
        match c.delete(&namespace, &n, grace_period).await {
            Ok(()) => println!("pod \"{n}\" deleted"),
            Err(e) => {
                eprintln!("Error from server (NotFound): {e}");
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}

/// The container a command means: the named one, else the first app container.
fn pick_container(pod: &Pod, name: Option<&str>) -> anyhow::Result<String> {
    let spec = pod.spec.as_ref().ok_or_else(|| anyhow::anyhow!("pod has no spec"))?;
    match name {
        Some(n) => {
            let known = spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(|c| c.name == n);
            if !known {
                anyhow::bail!("container {n} is not valid for pod {}", pod.metadata.name.as_deref().unwrap_or(""));
            }
            Ok(n.to_string())
        }
        None => Ok(spec.containers.first().map(|c| c.name.clone()).unwrap_or_default()),
    }
}

fn restart_count(pod: &Pod, container: &str) -> Option<i32> {
    let st = pod.status.as_ref()?;
    st.container_statuses.iter().flatten().chain(st.init_container_statuses.iter().flatten()).find(|s| s.name == container).map(|s| s.restart_count)
}

pub async fn logs(cfg: Config, a: LogsArgs) -> anyhow::Result<ExitCode> {
    let c = client(&cfg);
    let info = c.info().await?;
    let pod = c.pod(&a.namespace, &a.pod).await?;
    let container = pick_container(&pod, a.container.as_deref())?;
    let dir = PathBuf::from(&info.log_root).join(format!(
        "{}_{}_{}",
        a.namespace,
        a.pod,
        pod.metadata.uid.as_deref().unwrap_or("")
    ));
    let count = restart_count(&pod, &container).unwrap_or(0);
    let attempt = if a.previous {
        if count == 0 {
            anyhow::bail!("previous terminated container \"{container}\" in pod \"{}\" not found", a.pod);
        }
        count - 1
    } else {
        count
    };
    let path = dir.join(&container).join(format!("{attempt}.log"));
    let mut out = LogPrinter { timestamps: a.timestamps, pending: [Vec::new(), Vec::new()] };
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !a.follow {
                anyhow::bail!("container \"{container}\" in pod \"{}\" is waiting to start: no logs yet", a.pod);
            }
            Vec::new()
        }
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    if let Some(n) = a.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    for l in &lines {
        out.record(l)?;
    }
    if !a.follow || a.previous {
        return Ok(ExitCode::SUCCESS);
    }
    follow(&c, &a, &container, &path, text.len() as u64, count, &mut out).await
}

/// Follows a log file by offset; starts over when the file is rotated or
/// reopened (a new inode, or shorter than what was read), and moves to the
/// next attempt's file when the container restarts.
async fn follow(c: &Client, a: &LogsArgs, container: &str, path: &std::path::Path, mut offset: u64, mut count: i32, out: &mut LogPrinter) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::MetadataExt;
    let mut path = path.to_path_buf();
    let mut ino = std::fs::metadata(&path).map(|m| m.ino()).unwrap_or(0);
    let mut carry = Vec::new();
    loop {
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.ino() != ino || meta.len() < offset {
                ino = meta.ino();
                offset = 0;
                carry.clear();
            }
            if meta.len() > offset {
                let mut f = std::fs::File::open(&path)?;
                f.seek(SeekFrom::Start(offset))?;
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                offset += buf.len() as u64;
                carry.extend_from_slice(&buf);
                while let Some(i) = carry.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = carry.drain(..=i).collect();
                    out.record(&line[..line.len() - 1])?;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        // The pod gone or the container restarted: stop, or move on.
        match c.pod(&a.namespace, &a.pod).await {
            Ok(p) => {
                let now = restart_count(&p, container).unwrap_or(count);
                if now != count {
                    count = now;
                    path = path.with_file_name(format!("{count}.log"));
                    offset = 0;
                    ino = 0;
                    carry.clear();
                }
            }
            Err(_) => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Writes CRI log records as plain lines, joining partial records.
struct LogPrinter {
    timestamps: bool,
    pending: [Vec<u8>; 2],
}

impl LogPrinter {
    fn record(&mut self, line: &[u8]) -> anyhow::Result<()> {
        let Some(r) = berth_runtime::logs::parse_record(line) else { return Ok(()) };
        let buf = &mut self.pending[r.stream as usize];
        buf.extend_from_slice(&r.content);
        if r.partial {
            return Ok(());
        }
        let mut text = std::mem::take(buf);
        text.push(b'\n');
        let stdout = std::io::stdout();
        let mut w = stdout.lock();
        if self.timestamps {
            write!(w, "{} ", r.time)?;
        }
        w.write_all(&text)?;
        w.flush()?;
        Ok(())
    }
}

pub async fn exec(cfg: Config, a: ExecArgs) -> anyhow::Result<ExitCode> {
    let c = client(&cfg);
    let info = c.info().await?;
    let pod = c.pod(&a.namespace, &a.pod).await?;
    let container = pick_container(&pod, a.container.as_deref())?;
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten()).find(|s| s.name == container).cloned())
        .and_then(|s| s.state.and_then(|st| st.running).and(s.container_id))
        .ok_or_else(|| anyhow::anyhow!("container {container} is not running"))?;
    let id = id.split_once("://").map(|(_, i)| i.to_string()).unwrap_or(id);
    let cri = berth_kubelet::engine::cri::Cri::connect(&info.cri_socket).await?;
    super::exec::exec(cri, &id, a.command, a.stdin, a.tty).await
}

/// `berth stop`: terminates a running `berth run` and its pods.
pub async fn stop(cfg: Config) -> anyhow::Result<ExitCode> {
    let c = client(&cfg);
    let info = c.info().await?;
    c.shutdown().await?;
    println!("berth (pid {}) stopped", info.pid);
    Ok(ExitCode::SUCCESS)
}
