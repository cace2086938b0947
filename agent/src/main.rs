//! The `connwatch` binary: parse the command line, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = connwatch::cmd::cli::Cli::parse();
    connwatch::cmd::run::init_logging(cli.verbose, cli.quiet);
    match connwatch::cmd::run::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // One line: the outermost context and its causes, joined.
            eprintln!("connwatch: error: {err:#}");
            ExitCode::from(connwatch::cmd::run::exit_code_for(&err))
        }
    }
}
