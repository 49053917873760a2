//! Test harness for end-to-end tests of the berth binary.
