//! `berth container`: standalone containers from CRI container configs
//! (crictl's JSON format), on any runtime handler.

use berth_runtime::container::{CreateOptions, Manager, ManagerConfig, State, Status};
use berth_runtime::image::ImageService;
use berth_runtime::Config;
use clap::{Args, Subcommand};
use cri_proto::v1::{ContainerConfig, ContainerMetadata, ImageSpec, KeyValue};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub enum ContainerCommand {
    /// Create a container (not started); prints its ID.
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Create and start a container; waits for it and exits with its code unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Print the ID and return at once.
        #[arg(short, long)]
        detach: bool,
        /// Remove the container after it exits.
        #[arg(long, conflicts_with = "detach")]
        rm: bool,
    },
    /// Stop a container: its stop signal, then SIGKILL after the timeout.
    Stop {
        id: String,
        /// Seconds to wait before SIGKILL.
        #[arg(short, long, default_value_t = 10)]
        timeout: u64,
    },
    /// Remove containers (running ones are killed).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List containers.
    #[command(alias = "ls")]
    Ps {
        /// Include exited containers.
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        quiet: bool,
        /// table or json
        #[arg(short, long, default_value = "table")]
        output: String,
    },
    /// Show a container's status and config as JSON.
    Inspect { id: String },
    /// Print a container's logs (stdout to stdout, stderr to stderr).
    Logs { id: String },
    /// Wait for a container to exit and print its exit code.
    Wait { id: String },
}

#[derive(Args)]
pub struct CreateArgs {
    /// A CRI ContainerConfig as JSON (crictl's format); flags below override it.
    #[arg(long, value_name = "FILE")]
    cri_config: Option<PathBuf>,
    /// Image reference (must be pulled).
    #[arg(long)]
    image: Option<String>,
    /// Container name.
    #[arg(long)]
    name: Option<String>,
    /// Runtime handler: builtin (default), runc, crun, or one from the config.
    #[arg(long, default_value = "builtin")]
    runtime: String,
    /// Log file (CRI format).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Pids limit of the container's cgroup.
    #[arg(long, value_name = "N")]
    pids_limit: Option<i64>,
    /// Environment variables, KEY=VALUE.
    #[arg(short, long)]
    env: Vec<String>,
    /// Command and arguments (replace the image's entrypoint and cmd).
    #[arg(last = true)]
    command: Vec<String>,
}

impl CreateArgs {
    fn config(&self) -> anyhow::Result<ContainerConfig> {
        let mut c = match &self.cri_config {
            Some(p) => {
                let text = std::fs::read(p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?;
                let bad = |e: serde_json::Error| anyhow::anyhow!("{}: not a CRI ContainerConfig: {e}", p.display());
                let mut v: serde_json::Value = serde_json::from_slice(&text).map_err(bad)?;
                envs_as_bytes(&mut v);
                serde_json::from_value(v).map_err(bad)?
            }
            None => ContainerConfig::default(),
        };
        if let Some(i) = &self.image {
            c.image = Some(ImageSpec { image: i.clone(), ..Default::default() });
        }
        let meta = c.metadata.get_or_insert_with(ContainerMetadata::default);
        if let Some(n) = &self.name {
            meta.name = n.clone();
        }
        if meta.name.is_empty() {
            meta.name = format!("c{}", &hex_id()[..8]);
        }
        for e in &self.env {
            let (k, v) = e.split_once('=').ok_or_else(|| anyhow::anyhow!("--env {e:?}: want KEY=VALUE"))?;
            c.envs.push(KeyValue { key: k.into(), value: v.into() });
        }
        if !self.command.is_empty() {
            c.command = self.command.clone();
            c.args.clear();
        }
        Ok(c)
    }
}

/// crictl writes env values as strings, while this crate's KeyValue.value
/// is proto `bytes` (a byte array in serde): accept both.
fn envs_as_bytes(v: &mut serde_json::Value) {
    let Some(envs) = v.get_mut("envs").and_then(|e| e.as_array_mut()) else { return };
    for kv in envs {
        if let Some(s) = kv.get("value").and_then(|s| s.as_str()).map(str::to_string) {
            kv["value"] = serde_json::Value::from(s.into_bytes());
        }
    }
}

fn hex_id() -> String {
    format!("{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

fn manager(cfg: &Config, pids_limit: Option<i64>) -> anyhow::Result<Manager> {
    let images = ImageService::open(cfg)?;
    let exe = std::env::current_exe()?;
    let mut mc = ManagerConfig::from_config(cfg, exe);
    mc.pids_limit = pids_limit;
    Ok(Manager::new(mc, images)?)
}

async fn create(m: &Manager, a: &CreateArgs) -> anyhow::Result<String> {
    let c = a.config()?;
    let opts = CreateOptions { handler: a.runtime.clone(), log_path: a.log.clone(), ..Default::default() };
    Ok(m.create(&c, opts).await?)
}

pub async fn run(cfg: Config, cmd: ContainerCommand) -> anyhow::Result<ExitCode> {
    let pids_limit = match &cmd {
        ContainerCommand::Create(a) | ContainerCommand::Run { create: a, .. } => a.pids_limit,
        _ => None,
    };
    if let Some(n) = pids_limit.filter(|n| *n <= 0) {
        anyhow::bail!("--pids-limit {n}: must be positive");
    }
    let m = manager(&cfg, pids_limit)?;
    match cmd {
        ContainerCommand::Create(a) => println!("{}", create(&m, &a).await?),
        ContainerCommand::Start { id } => m.start(&m.resolve(&id)?)?,
        ContainerCommand::Run { create: a, detach, rm } => {
            let id = create(&m, &a).await?;
            if let Err(e) = m.start(&id) {
                let _ = m.remove(&id).await;
                return Err(e.into());
            }
            if detach {
                println!("{id}");
                return Ok(ExitCode::SUCCESS);
            }
            m.wait(&id, None).await?;
            let st = m.status(&id)?;
            if let Some(p) = &st.record.log_path {
                print_log(p)?;
            }
            if rm {
                m.remove(&id).await?;
            }
            return Ok(ExitCode::from(st.exit_code.clamp(0, 255) as u8));
        }
        ContainerCommand::Stop { id, timeout } => {
            let id = m.resolve(&id)?;
            m.stop(&id, Duration::from_secs(timeout)).await?;
            println!("{id}");
        }
        ContainerCommand::Rm { ids } => {
            for id in ids {
                let id = m.resolve(&id)?;
                m.remove(&id).await?;
                println!("{id}");
            }
        }
        ContainerCommand::Ps { all, quiet, output } => {
            let mut list = Vec::new();
            for r in m.records()? {
                let st = m.status(&r.id)?;
                if all || st.state != State::Exited {
                    list.push(st);
                }
            }
            match output.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&list)?),
                "table" if quiet => list.iter().for_each(|s| println!("{}", s.record.id)),
                "table" => print_table(&list),
                other => anyhow::bail!("unknown output format {other:?} (table, json)"),
            }
        }
        ContainerCommand::Inspect { id } => {
            let st = m.status(&m.resolve(&id)?)?;
            println!("{}", serde_json::to_string_pretty(&st)?);
        }
        ContainerCommand::Logs { id } => {
            let st = m.status(&m.resolve(&id)?)?;
            let path = st.record.log_path.ok_or_else(|| anyhow::anyhow!("container {} has no log file", st.record.id))?;
            print_log(&path)?;
        }
        ContainerCommand::Wait { id } => {
            let id = m.resolve(&id)?;
            m.wait(&id, None).await?;
            println!("{}", m.status(&id)?.exit_code);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a CRI log: stdout lines to stdout, stderr lines to stderr.
fn print_log(path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    let text = std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    for (stream, mut line) in berth_runtime::logs::read_lines(&text) {
        line.push(b'\n');
        match stream {
            berth_runtime::logs::Stream::Stdout => std::io::stdout().write_all(&line)?,
            berth_runtime::logs::Stream::Stderr => std::io::stderr().write_all(&line)?,
        }
    }
    Ok(())
}

fn print_table(list: &[Status]) {
    let mut rows = vec![["CONTAINER".to_string(), "IMAGE".into(), "STATE".into(), "NAME".into(), "RUNTIME".into(), "EXIT".into()]];
    for s in list {
        let name = s.record.config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let exit = if s.state == State::Exited { format!("{} ({})", s.exit_code, s.reason) } else { String::new() };
        rows.push([s.record.id[..13].to_string(), s.record.image_ref.clone(), s.state.as_str().into(), name, s.record.handler.clone(), exit]);
    }
    let widths: Vec<usize> = (0..6).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        println!("{}", line.join("   ").trim_end());
    }
}
