//! `berth`: a Kubernetes node agent, CRI server and container runtime.

fn main() {}
