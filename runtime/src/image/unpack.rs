//! Applies layer tars to snapshot directories.
