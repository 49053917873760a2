//! `berth-pause`: the pause process of a pod sandbox, the same code and
//! options as `berth pause` in a small binary that starts quickly and holds
//! little memory for the pod's lifetime.

use berth_runtime::sandbox::pause::{pause_main, PauseArgs};
use clap::Parser;

/// The pause process of a pod sandbox (started by the berth daemon, with its
/// report pipe on fd 3).
#[derive(Parser)]
#[command(name = "berth-pause")]
struct Cli {
    #[command(flatten)]
    args: PauseArgs,
}

fn main() {
    pause_main(&Cli::parse().args)
}
