//! What the binary runs: logging set-up, command dispatch, exit codes.

use std::process::ExitCode;

use crate::cmd::cli::{Cli, Command};
use crate::cmd::exit;
use crate::source::probe::MissingPrivileges;
use crate::source::redis::RedisArgError;

/// Log to stderr; `RUST_LOG` overrides the level given by -v/-q. The kernel
/// programs' diagnostics (debug level) show whatever the level: they are sent only
/// with `--debug-probes`.
pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = format!("{level},{}=debug", connwatch_common::KERNEL_LOG_TARGET);
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter))
        .format_timestamp_millis()
        .init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Watch(args) => crate::cmd::watch::watch(args),
        Command::Capture(args) => crate::cmd::record::capture(args),
        Command::Analyze(args) => crate::cmd::analyze::analyze(args),
        Command::Check(args) => Ok(crate::cmd::check::check(args)),
        Command::Completions { shell } => {
            crate::cmd::docs_gen::print_completions(shell).map(|()| ExitCode::SUCCESS)
        }
        Command::Man => crate::cmd::docs_gen::print_man().map(|()| ExitCode::SUCCESS),
    }
}

pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<MissingPrivileges>().is_some() {
        exit::NO_PRIVILEGES
    } else if err.downcast_ref::<RedisArgError>().is_some()
        || err.downcast_ref::<crate::cmd::live::UsageError>().is_some()
    {
        exit::USAGE
    } else {
        exit::FAILURE
    }
}
