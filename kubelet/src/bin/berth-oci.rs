//! `berth-oci`: Berth's built-in OCI runtime on its own, with runc's command
//! line (`berth-oci [--root DIR] create|start|state|kill|delete|run|exec|ps|features`).
//! The same code as `berth oci`, in a small binary that starts quickly: the
//! shim runs it for every container of the builtin handler.

use clap::Parser;

#[derive(Parser)]
#[command(name = "berth-oci", version, about = "Berth's built-in OCI runtime, with runc's command line")]
struct Cli {
    #[command(flatten)]
    oci: berth_runtime::oci::OciCommand,
}

fn main() {
    // A re-executed container init (`berth-oci oci init`) runs before
    // anything else, single-threaded.
    if berth_runtime::oci::is_init_invocation() {
        berth_runtime::oci::init_main();
    }
    match berth_runtime::oci::run_oci_command(Cli::parse().oci) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("berth-oci: {e:#}");
            std::process::exit(1);
        }
    }
}
