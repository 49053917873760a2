//! The `berth` command line.

mod cni;
mod containers;
mod exec;
mod images;
mod pods;
mod resize;
mod run;
mod top;

use berth_runtime::Config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "berth", version, about = "Run Kubernetes pods: standalone, as a CRI server, or as a node agent")]
pub struct Cli {
    /// Config file (TOML).
    #[arg(long, global = true, env = "BERTH_CONFIG", default_value = "/etc/berth/config.toml")]
    config: PathBuf,
    /// State root (overrides the config file).
    #[arg(long, global = true, env = "BERTH_ROOT")]
    root: Option<PathBuf>,
    /// Volatile state root (default: the config's, or ROOT/run when --root is given).
    #[arg(long, global = true, env = "BERTH_RUN_ROOT")]
    run_root: Option<PathBuf>,
    /// cgroupfs parent for container cgroups (overrides the config file).
    #[arg(long, global = true, env = "BERTH_CGROUP_PARENT")]
    cgroup_parent: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, global = true, env = "BERTH_LOG", default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Pod manifests on this machine (standalone mode), in the foreground or with --detach.
    Run(run::RunArgs),
    /// Display pods of a running `berth run`.
    #[command(subcommand)]
    Get(pods::GetWhat),
    /// Show details of a pod: status, conditions, events.
    #[command(subcommand)]
    Describe(pods::DescribeWhat),
    /// Print a container's logs.
    Logs(pods::LogsArgs),
    /// Run a command in a container of a pod.
    Exec(pods::ExecArgs),
    /// Delete pods gracefully.
    #[command(subcommand)]
    Delete(pods::DeleteWhat),
    /// Stop a running `berth run` (e.g. one started with --detach): every pod terminates gracefully.
    Stop,
    /// Show CPU and memory use of pods or of the node.
    #[command(subcommand)]
    Top(top::TopWhat),
    /// Resize a running pod's container in place (cpu, memory).
    #[command(subcommand)]
    Resize(resize::ResizeWhat),
    /// Manage images: pull, list, remove, import, inspect.
    #[command(subcommand)]
    Images(images::ImagesCommand),
    /// Serve the Kubernetes CRI v1 API (RuntimeService and ImageService) on a unix socket.
    Cri {
        /// The socket path.
        #[arg(long, default_value = berth_runtime::server::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Address of the streaming server for exec, attach and port-forward
        /// (overrides the config's `stream_address`; default 127.0.0.1:0, a free port).
        #[arg(long)]
        stream_address: Option<std::net::SocketAddr>,
    },
    /// Run and manage standalone containers from CRI container configs.
    #[command(subcommand, alias = "containers")]
    Container(containers::ContainerCommand),
    /// The built-in OCI runtime, with runc's command line (create, start, state, kill, delete, run, exec, ps, features).
    Oci(berth_runtime::oci::OciCommand),
    /// Internal: the per-container shim.
    #[command(hide = true)]
    Shim {
        #[arg(long)]
        config: PathBuf,
    },
    /// Internal: a pod sandbox's pause process.
    #[command(hide = true)]
    Pause(berth_runtime::sandbox::pause::PauseArgs),
    /// Internal: run a command in a container to completion.
    #[command(hide = true)]
    ExecSync(berth_runtime::container::exec::ExecSyncArgs),
    /// Internal: the pod network as `berth cri` sets it up (status, bench).
    #[command(hide = true, subcommand)]
    Cni(cni::CniCommand),
}

impl Cli {
    fn load_config(&self) -> anyhow::Result<Config> {
        let mut cfg = if self.config.exists() {
            Config::load(&self.config)?
        } else if self.config.as_os_str() != "/etc/berth/config.toml" {
            anyhow::bail!("config file {} does not exist", self.config.display());
        } else {
            Config::default()
        };
        if let Some(root) = &self.root {
            cfg.root = root.clone();
            cfg.run_root = root.join("run");
        }
        if let Some(run) = &self.run_root {
            cfg.run_root = run.clone();
        }
        if let Some(p) = &self.cgroup_parent {
            cfg.cgroup_parent = p.clone();
        }
        Ok(cfg)
    }
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

pub fn main() -> ExitCode {
    // A container init must run before any other thread exists.
    if berth_runtime::oci::is_init_invocation() {
        berth_runtime::oci::init_main();
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Shim { config } => berth_runtime::shim::run(&config),
        // Before any thread exists: it unshares namespaces and forks.
        Command::Pause(args) => berth_runtime::sandbox::pause::pause_main(&args),
        Command::ExecSync(args) => berth_runtime::container::exec::exec_sync_main(&args),
        Command::Oci(cmd) => {
            return match berth_runtime::oci::run_oci_command(cmd) {
                Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => {
                    eprintln!("berth oci: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {}
    }
    init_tracing(&cli.log_level);
    let config_path = cli.config.clone();
    let res = (|| -> anyhow::Result<ExitCode> {
        let cfg = cli.load_config()?;
        let rt = tokio::runtime::Runtime::new()?;
        match cli.command {
            Command::Images(cmd) => rt.block_on(images::run(cfg, cmd)),
            Command::Run(args) => rt.block_on(run::run(cfg, args, std::env::current_exe()?, config_path)),
            Command::Get(what) => rt.block_on(pods::get(cfg, what)),
            Command::Describe(what) => rt.block_on(pods::describe(cfg, what)),
            Command::Logs(args) => rt.block_on(pods::logs(cfg, args)),
            Command::Exec(args) => rt.block_on(pods::exec(cfg, args)),
            Command::Delete(what) => rt.block_on(pods::delete(cfg, what)),
            Command::Stop => rt.block_on(pods::stop(cfg)),
            Command::Top(what) => rt.block_on(top::run(cfg, what)),
            Command::Resize(what) => rt.block_on(resize::run(cfg, what)),
            Command::Container(cmd) => rt.block_on(containers::run(cfg, cmd)),
            Command::Cni(cmd) => cni::run(cfg, cmd),
            Command::Cri { socket, stream_address } => rt.block_on(async {
                let mut cfg = cfg;
                if let Some(a) = stream_address {
                    cfg.stream_address = a;
                    cfg.validate()?;
                }
                let exe = std::env::current_exe()?;
                berth_runtime::server::serve(&cfg, &socket, exe, shutdown_signal()).await?;
                Ok(ExitCode::SUCCESS)
            }),
            Command::Oci(_) | Command::Shim { .. } | Command::Pause(_) | Command::ExecSync(_) => unreachable!("handled before the runtime starts"),
        }
    })();
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}
