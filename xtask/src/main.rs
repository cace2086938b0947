//! `cargo xtask <cmd>`: the developer entry points of connwatch.
//!
//! - `setup`: installs what building and testing need (idempotent).
//! - `build`: setup, then builds the agent (agent/build.rs builds the BPF object).
//! - `test`: setup, then the unit tests and the root integration tests.
//! - `demo`: setup, build, a scratch redis-server, `connwatch watch` and a traffic mix.
//! - `bench`: release build, then connwatch's cost to Redis measured side by side (docs/PERFORMANCE.md).
//! - `dist`: setup, release build, then regenerates the man page and completions in packaging/.
//! - `vm-test`: setup, release build, then a smoke set of connwatch cases inside a qemu VM
//!   booting Debian's cloud kernel of a series (6.1 by default).

mod bench;
mod demo;
mod dist;
mod hermetic;
mod process;
mod redis;
mod setup;
mod test_cmd;
mod traffic;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Developer tasks for connwatch")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what is missing: llvm-22-dev, redis-server, redis-tools, python3-redis, prometheus, chromium, bpftrace, bpftool, qemu-system-x86, python3-pip, nightly rust-src, bpf-linker 0.13.0, the Node.js test clients and the OTLP receiver's Python packages.
    Setup,
    /// Setup, then build the connwatch agent (and its BPF programs).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Setup, then run the unit tests and the root integration tests (needs root).
    Test,
    /// Setup, build, then watch a scratch redis-server while a traffic mix runs against it (needs root).
    Demo {
        /// How long connwatch watches, in seconds.
        #[arg(long, default_value_t = 45, value_parser = clap::value_parser!(u64).range(1..=3600))]
        seconds: u64,
    },
    /// Setup, release build, then measure connwatch's cost to a scratch redis-server (needs root; writes docs/PERFORMANCE.md).
    Bench {
        /// Rounds per condition (attached/detached; none/poller/connwatch).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=20))]
        rounds: u64,
        /// Idle-connection levels for the CLIENT LIST comparison and memory, e.g. 5000,10000.
        #[arg(long, value_delimiter = ',', default_values_t = [5000u64, 10000, 15000], value_parser = clap::value_parser!(u64).range(1..=15000))]
        idle: Vec<u64>,
        /// Run only this part (ndjson: about 2 minutes after the build) and replace its section of docs/PERFORMANCE.md.
        #[arg(long, value_enum)]
        only: Option<bench::Part>,
    },
    /// Setup, release build, then regenerate packaging/connwatch.1 and packaging/completions/ from the binary.
    Dist,
    /// Setup, release build, then boot Debian's cloud kernel in qemu and run a smoke set of connwatch cases inside.
    VmTest {
        /// The kernel series: the newest linux-image-<SERIES>.0-*-cloud-amd64-unsigned apt-cache offers.
        #[arg(long, default_value = "6.1")]
        kernel: String,
        /// auto: KVM when /dev/kvm works and the guest reaches init within 10 s, else TCG.
        #[arg(long, value_enum, default_value_t = vm::Accel::Auto)]
        accel: vm::Accel,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` joins the context chain on one line:
            // "setup failed at step 'apt-get install llvm-22-dev': exit status 100".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Setup => {
            setup::run()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { release } => {
            setup::run()?;
            process::build_agent(release)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Test => {
            setup::run()?;
            test_cmd::run()
        }
        Command::Demo { seconds } => {
            setup::run()?;
            process::build_agent(false)?;
            demo::run(seconds)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { rounds, idle, only } => {
            setup::run()?;
            bench::run(&bench::Options {
                rounds: usize::try_from(rounds)?,
                idle: idle
                    .into_iter()
                    .map(usize::try_from)
                    .collect::<Result<_, _>>()?,
                only,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dist => {
            setup::run()?;
            dist::run()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::VmTest { kernel, accel } => {
            setup::run()?;
            vm::run(&vm::Options {
                series: kernel,
                accel,
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
