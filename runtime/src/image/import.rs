//! Reads image archives.
