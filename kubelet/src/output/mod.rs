//! kubectl-like output.
