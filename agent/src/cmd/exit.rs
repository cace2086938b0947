//! Exit codes, documented in README.md.

/// A runtime failure (kernel refused a program, I/O error).
pub const FAILURE: u8 = 1;
/// Bad command-line usage (clap's code too).
pub const USAGE: u8 = 2;
/// Not enough privileges to load the probes.
pub const NO_PRIVILEGES: u8 = 3;
