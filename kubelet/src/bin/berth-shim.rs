//! `berth-shim --config FILE`: the small per-container shim. It runs the
//! same monitor as `berth shim` but creates the container through the OCI
//! runtime's command line (`berth oci`, runc, crun), so it links none of the
//! executor, spec or image code and stays small (see hack/bench.sh).

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let mut config: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--config") => config = args.next().map(PathBuf::from),
            Some(s) if s.starts_with("--config=") => config = Some(PathBuf::from(&s["--config=".len()..])),
            Some("-h" | "--help") => {
                println!("usage: berth-shim --config <state dir>/shim.json\n(started by the berth daemon, with its readiness pipe on fd 3)");
                return;
            }
            _ => {
                eprintln!("berth-shim: unexpected argument {a:?}; usage: berth-shim --config FILE");
                std::process::exit(2);
            }
        }
    }
    let Some(config) = config else {
        eprintln!("berth-shim: --config FILE is required");
        std::process::exit(2);
    };
    berth_runtime::shim::run_cli(&config)
}
