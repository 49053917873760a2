//! The runc-compatible `berth oci ...` command line.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::builtin::{BuiltinExecutor, InitCommand};
use super::{init_main, load_spec, CreateOpts, Executor};
use crate::linux::process;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `berth oci`: manage OCI containers with the built-in executor.
#[derive(Debug, Args)]
pub struct OciCommand {
    /// State directory root.
    #[arg(long, global = true, default_value = "/run/berth/oci")]
    pub root: PathBuf,
    /// Log file (errors are appended here as well as printed).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Accepted for runc compatibility; ignored.
    #[arg(long, global = true, hide = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility; ignored.
    #[arg(long, global = true, hide = true)]
    pub debug: bool,
    #[command(subcommand)]
    pub command: OciSubcommand,
}

#[derive(Debug, Subcommand)]
pub enum OciSubcommand {
    /// Create a container (its process waits for `start`).
    Create {
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        id: String,
    },
    /// Start a created container.
    Start { id: String },
    /// Print the state of a container as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to the container init.
    Kill {
        /// Signal every process of the container.
        #[arg(long, short)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container.
    Delete {
        #[arg(long, short)]
        force: bool,
        id: String,
    },
    /// Create and start a container, wait for it and exit with its status.
    Run {
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        /// Return after start instead of waiting.
        #[arg(long, short)]
        detach: bool,
        id: String,
    },
    /// Run a process in a running container.
    Exec {
        /// JSON file with an OCI process; otherwise ARGS are used.
        #[arg(long, short)]
        process: Option<PathBuf>,
        #[arg(long, short)]
        detach: bool,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long, short)]
        tty: bool,
        #[arg(long)]
        cwd: Option<PathBuf>,
        #[arg(long, short)]
        env: Vec<String>,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List the processes of a container.
    Ps {
        #[arg(long, short, default_value = "table")]
        format: String,
        id: String,
    },
    /// Print the executor's features as JSON.
    Features,
    /// Internal: the container init (started by `create`).
    #[command(hide = true)]
    Init,
}

/// Parses `SIGKILL`, `KILL` or `9`.
pub fn parse_signal(s: &str) -> anyhow::Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let name = s.to_uppercase();
    let name = if name.starts_with("SIG") { name } else { format!("SIG{name}") };
    let sig: Signal = name.parse().with_context(|| format!("unknown signal {s:?}"))?;
    Ok(sig as i32)
}

/// Runs a `berth oci` subcommand; returns the process exit code.
///
/// `Init` never returns. Call this from a single-threaded context (no
/// tokio runtime yet): `init` must not run in a multi-threaded process.
pub fn run_oci_command(cmd: OciCommand) -> anyhow::Result<i32> {
    if let OciSubcommand::Init = cmd.command {
        init_main();
    }
    let exec = BuiltinExecutor::new(&cmd.root, InitCommand::forking());
    let result = dispatch(&exec, cmd.command);
    if let (Err(e), Some(log)) = (&result, &cmd.log) {
        log_error(log, cmd.log_format, &format!("{e:#}"));
    }
    result
}

fn log_error(path: &PathBuf, format: LogFormat, msg: &str) {
    let time = chrono::Utc::now().to_rfc3339();
    let line = match format {
        LogFormat::Json => serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string(),
        LogFormat::Text => format!("time=\"{time}\" level=error msg={msg:?}"),
    };
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}

/// Waits for `pid` (a child of this subreaper), reaping other orphans, and
/// returns its exit code (128+signal when killed).
fn wait_for(pid: i32) -> anyhow::Result<i32> {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => return Ok(code),
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => return Ok(128 + sig as i32),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::ECHILD) => bail!("process {pid} is not our child (no subreaper?)"),
            Err(e) => bail!("waitpid: {e}"),
        }
    }
}

fn dispatch(exec: &BuiltinExecutor, cmd: OciSubcommand) -> anyhow::Result<i32> {
    match cmd {
        OciSubcommand::Create { bundle, pid_file, console_socket, id } => {
            exec.create(&id, &bundle, CreateOpts { pid_file, console_socket, ..Default::default() })?;
        }
        OciSubcommand::Start { id } => exec.start(&id)?,
        OciSubcommand::State { id } => println!("{}", serde_json::to_string_pretty(&exec.state(&id)?)?),
        OciSubcommand::Kill { all, id, signal } => exec.kill(&id, parse_signal(&signal)?, all)?,
        OciSubcommand::Delete { force, id } => exec.delete(&id, force)?,
        OciSubcommand::Run { bundle, pid_file, console_socket, detach, id } => {
            // The init is orphaned when the intermediate process exits:
            // adopt it so we can wait for it.
            process::set_child_subreaper()?;
            exec.create(&id, &bundle, CreateOpts { pid_file, console_socket, ..Default::default() })?;
            let pid = exec.state(&id)?.pid;
            if let Err(e) = exec.start(&id) {
                let _ = exec.delete(&id, true);
                return Err(e.into());
            }
            if detach {
                return Ok(0);
            }
            let code = wait_for(pid);
            exec.delete(&id, true)?;
            return code;
        }
        OciSubcommand::Exec { process: pfile, detach, pid_file, console_socket, tty, cwd, env, id, args } => {
            let process = match pfile {
                Some(p) => {
                    let data = std::fs::read(&p).with_context(|| format!("read {}", p.display()))?;
                    serde_json::from_slice(&data).with_context(|| format!("parse {}", p.display()))?
                }
                None => {
                    if args.is_empty() {
                        bail!("exec needs a command or --process");
                    }
                    let bundle = exec.state(&id)?.bundle;
                    let mut p = load_spec(&bundle)?.process().clone().unwrap_or_default();
                    p.set_args(Some(args));
                    p.set_terminal(Some(tty));
                    if let Some(c) = cwd {
                        p.set_cwd(c);
                    }
                    let mut e = p.env().clone().unwrap_or_default();
                    e.extend(env);
                    p.set_env(Some(e));
                    p
                }
            };
            if !detach {
                process::set_child_subreaper()?;
            }
            let pid = exec.exec(&id, &process, CreateOpts { pid_file, console_socket, ..Default::default() })?;
            if !detach {
                return wait_for(pid);
            }
        }
        OciSubcommand::Ps { format, id } => {
            let pids = exec.pids(&id)?;
            if format == "json" {
                println!("{}", serde_json::to_string(&pids)?);
            } else {
                println!("PID\tCMD");
                for p in pids {
                    let cmd = std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    println!("{p}\t{}", cmd.replace('\0', " ").trim());
                }
            }
        }
        OciSubcommand::Features => println!("{}", serde_json::to_string_pretty(&features())?),
        OciSubcommand::Init => init_main(),
    }
    Ok(0)
}

/// The executor's features, in the shape of `runc features`.
pub fn features() -> serde_json::Value {
    let caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": super::OCI_VERSION,
        "hooks": [],
        "mountOptions": ["ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "sync", "async",
            "dirsync", "remount", "mand", "nomand", "atime", "noatime", "diratime", "nodiratime", "relatime",
            "norelatime", "strictatime", "nostrictatime", "bind", "rbind", "private", "rprivate", "slave",
            "rslave", "shared", "rshared", "unbindable", "runbindable", "tmpcopyup"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": [format!("SCMP_ARCH_{}", std::env::consts::ARCH.to_uppercase())]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {"org.opencontainers.runc.checkpoint.enabled": "false"}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn parses_command_line() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            oci: OciCommand,
        }
        let c = Cli::parse_from(["x", "--root", "/r", "kill", "--all", "c1", "KILL"]);
        assert_eq!(c.oci.root, PathBuf::from("/r"));
        assert!(matches!(c.oci.command, OciSubcommand::Kill { all: true, ref signal, .. } if signal == "KILL"));
        let c = Cli::parse_from(["x", "exec", "c1", "sh", "-c", "echo hi"]);
        assert!(matches!(c.oci.command, OciSubcommand::Exec { ref args, .. } if args.len() == 3));
    }
}
