//! Development binary exposing `berth oci ...` on its own, used by the
//! integration tests (`CARGO_BIN_EXE_berth-oci-dev`). The real `berth`
//! binary wires the same entry points.

use clap::Parser;

#[derive(Parser)]
#[command(name = "berth-oci-dev")]
struct Cli {
    #[command(subcommand)]
    cmd: Top,
}

#[derive(clap::Subcommand)]
enum Top {
    /// OCI runtime commands.
    Oci(berth_runtime::oci::OciCommand),
}

fn main() {
    // The container init must run before anything else (no threads).
    if berth_runtime::oci::is_init_invocation() {
        berth_runtime::oci::init_main();
    }
    let Top::Oci(cmd) = Cli::parse().cmd;
    match berth_runtime::oci::run_oci_command(cmd) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("berth oci: {e:#}");
            std::process::exit(1);
        }
    }
}
