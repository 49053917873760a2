//! Probe tests against real local servers.
