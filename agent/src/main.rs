//! The `connwatch` binary: parse the command line, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = connwatch::cli::Cli::parse();
    connwatch::run::init_logging(cli.verbose, cli.quiet);
    match connwatch::run::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // One line: the outermost context and its causes, joined.
            eprintln!("connwatch: error: {err:#}");
            ExitCode::from(connwatch::run::exit_code_for(&err))
        }
    }
}
