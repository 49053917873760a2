//! `berth-pause [--net|--netns PATH] [--ipc] [--uts] [--pid] [--hostname H]
//! [--sysctl K=V]... [--cgroup PATH]`: the pause process of a pod sandbox,
//! the same code as `berth pause` in a small binary that starts quickly and
//! holds little memory for the pod's lifetime.

use berth_runtime::sandbox::pause::{pause_main, PauseArgs};

fn main() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: berth-pause [--net | --netns PATH] [--ipc] [--uts] [--pid] [--hostname NAME] [--sysctl KEY=VALUE]... [--cgroup PATH]\n\
             (started by the berth daemon, with its report pipe on fd 3)"
        );
        return;
    }
    match PauseArgs::parse(args) {
        Ok(a) => pause_main(&a),
        Err(e) => {
            eprintln!("berth-pause: {e}");
            std::process::exit(2);
        }
    }
}
