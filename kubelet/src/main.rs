//! `berth`: a Kubernetes node agent, CRI server and container runtime.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
