//! The man page and the shell completions, generated from the clap definitions in
//! [`crate::cmd::cli`], so they can never say something the parser does not do.
//!
//! The binary prints them through two hidden subcommands, `connwatch man` and
//! `connwatch completions <shell>`. `cargo xtask dist` runs those and writes the
//! results to `packaging/`, where they are committed: packagers and readers of
//! the repository get them without the BPF toolchain the binary needs to build.
//! The test at the bottom of this file compares the committed files with what the
//! current definitions generate, so a changed flag or help text that was not
//! regenerated fails `cargo test` instead of drifting.
//!
//! Everything is rendered into memory first: the generators panic when their
//! writer fails, and standard output can fail (a closed pipe); writing the buffer
//! ourselves turns that into an error.

use std::io::Write as _;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use crate::cmd::cli::Cli;

/// The name the completions complete and the man page documents.
const BIN: &str = "connwatch";

/// The files `cargo xtask dist` writes, relative to the repository root, with the
/// arguments of the binary that print each one. xtask keeps the same list (it
/// cannot depend on this crate); its tests check both lists name the same files.
pub const GENERATED_FILES: [(&str, &[&str]); 4] = [
    ("packaging/connwatch.1", &["man"]),
    (
        "packaging/completions/connwatch.bash",
        &["completions", "bash"],
    ),
    ("packaging/completions/_connwatch", &["completions", "zsh"]),
    (
        "packaging/completions/connwatch.fish",
        &["completions", "fish"],
    ),
];

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut out);
    out
}

/// The man page, section 1, in roff: the top-level page clap_mangen renders, then
/// each subcommand's synopsis, description and options (as subsections, so one
/// page documents every flag), then exit status and environment.
pub fn man_page() -> anyhow::Result<Vec<u8>> {
    // No `help` subcommand in the page (as clap_mangen::generate_to does).
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Propagates the global flags and sets each subcommand's bin name
    // ("connwatch watch"), which its synopsis shows.
    cmd.build();
    let mut out = Vec::new();
    let man = Man::new(cmd.clone());
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_bin_name().unwrap_or(sub.get_name());
        let mut section = Roff::new();
        section.control("SH", [format!("COMMAND: {name}").to_uppercase().as_str()]);
        section.to_writer(&mut out)?;
        let man = Man::new(sub.clone());
        let mut body = Vec::new();
        man.render_synopsis_section(&mut body)?;
        man.render_description_section(&mut body)?;
        man.render_options_section(&mut body)?;
        out.extend(demote_sections(&body));
    }
    footer().to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    Ok(keep_first_preamble(&out))
}

/// Each rendered piece starts with roff's two-line `Aq` string definition; the
/// page needs it once, at the top.
fn keep_first_preamble(roff: &[u8]) -> Vec<u8> {
    const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    let text = String::from_utf8_lossy(roff);
    match text.split_once(PREAMBLE) {
        Some((head, rest)) => [head, PREAMBLE, &rest.replace(PREAMBLE, "")]
            .concat()
            .into_bytes(),
        None => text.into_owned().into_bytes(),
    }
}

/// `.SH` headings become `.SS`: a subcommand's sections nest under its own.
fn demote_sections(roff: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line.strip_prefix(".SH ") {
            Some(rest) => {
                out.push_str(".SS ");
                out.push_str(rest);
            }
            None => out.push_str(line),
        }
    }
    out.into_bytes()
}

/// Sections clap does not know about: exit codes, environment, files, see also.
fn footer() -> Roff {
    use crate::cmd::exit;
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        (
            0,
            "Stopped by --duration, SIGINT or SIGTERM, after a last report.",
        ),
        (
            exit::FAILURE,
            "A runtime failure: the kernel refused a program, an output file could not be written.",
        ),
        (
            exit::USAGE,
            "Bad usage: flags, a Redis URL, an unreadable password file, a missing or unusable \
certificate file (--cacert, --cert, --key).",
        ),
        (
            exit::NO_PRIVILEGES,
            "Not enough privileges to load the probes.",
        ),
    ] {
        roff.control("TP", []);
        roff.text([bold(code.to_string())]);
        roff.text([roman(meaning)]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, meaning) in [
        (
            "RUST_LOG",
            "Log filter (e.g. debug, connwatch=trace); overrides -v and -q.",
        ),
        (
            "REDISCLI_AUTH",
            "The Redis password, when --password-file is not given. Never printed, logged or reported.",
        ),
    ] {
        roff.control("TP", []);
        roff.text([bold(name)]);
        roff.text([roman(meaning)]);
    }
    roff.control("SH", ["PRIVILEGES"]);
    roff.text([roman(
        "Loading the probes needs root, or CAP_BPF and CAP_PERFMON. A non-root user also needs \
CAP_DAC_READ_SEARCH (tracefs and /proc/PID/fd of the Redis process are readable only by their \
owners) and CAP_SYS_PTRACE (to match Redis's listening socket to its process in /proc/PID/fd). \
CAP_SYS_ADMIN is needed only when tracefs is not mounted and connwatch has to mount it. \
The systemd unit shipped with connwatch (connwatch.service) explains each capability.",
    )]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "redis-server(1), systemd.exec(5), capabilities(7); docs/REPORT.md and docs/DIAGNOSIS.md \
in the connwatch repository.",
    )]);
    roff
}

/// `connwatch man`: the man page on standard output.
pub fn print_man() -> anyhow::Result<()> {
    write_stdout(&man_page().context("rendering the man page")?)
}

/// `connwatch completions <shell>`: the completion script on standard output.
pub fn print_completions(shell: Shell) -> anyhow::Result<()> {
    write_stdout(&completions(shell))
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("writing to standard output")
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use clap::Parser as _;

    use super::*;

    fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("agent/ has a parent")
            .to_path_buf()
    }

    /// What the binary prints for `args`, through the same parser it uses.
    fn generate(args: &[&str]) -> Vec<u8> {
        let cli = Cli::try_parse_from(std::iter::once(BIN).chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("connwatch {args:?}: {e}"));
        match cli.command {
            crate::cmd::cli::Command::Man => man_page().expect("man page"),
            crate::cmd::cli::Command::Completions { shell } => completions(shell),
            other => panic!("connwatch {args:?} parsed as {other:?}"),
        }
    }

    /// The committed files in packaging/ are what the clap definitions generate.
    /// `CONNWATCH_UPDATE_PACKAGING=1 cargo test -p connwatch --lib docs_gen`
    /// rewrites them (what `cargo xtask dist` does through the binary).
    #[test]
    fn committed_packaging_files_are_up_to_date() {
        let update = std::env::var_os("CONNWATCH_UPDATE_PACKAGING").is_some();
        let mut stale = Vec::new();
        for (path, args) in GENERATED_FILES {
            let want = generate(args);
            let file = repo_root().join(path);
            if update {
                if let Some(dir) = file.parent() {
                    std::fs::create_dir_all(dir).expect("create packaging dir");
                }
                std::fs::write(&file, &want).expect("write packaging file");
            } else if std::fs::read(&file).ok().as_deref() != Some(want.as_slice()) {
                stale.push(path);
            }
        }
        assert!(
            stale.is_empty(),
            "{stale:?} differ from what the clap definitions in agent/src/cmd/cli.rs generate; \
             regenerate them with `cargo xtask dist` \
             (or `CONNWATCH_UPDATE_PACKAGING=1 cargo test -p connwatch --lib docs_gen`) and commit them"
        );
    }

    #[test]
    fn man_page_documents_every_visible_subcommand_and_flag() {
        let page = String::from_utf8(man_page().expect("man page")).expect("utf-8");
        assert!(page.contains("\n.TH connwatch 1 "), "{page:.200}");
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            let heading = format!(
                ".SH \"COMMAND: CONNWATCH {}\"",
                sub.get_name().to_uppercase()
            );
            assert_eq!(
                page.contains(&heading),
                !sub.is_hide_set(),
                "{heading} in the man page"
            );
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    // roff escapes '-' as '\-'.
                    let flag = format!("\\-\\-{}", long.replace('-', "\\-"));
                    assert!(page.contains(&flag), "{flag} missing from the man page");
                }
            }
        }
        assert!(page.contains(".SH \"EXIT STATUS\""));
    }

    #[test]
    fn completions_know_the_subcommands_and_flags() {
        let bash = String::from_utf8(completions(Shell::Bash)).expect("utf-8");
        assert!(bash.contains("watch"));
        assert!(bash.contains("--port"));
        for shell in [Shell::Zsh, Shell::Fish] {
            assert!(!completions(shell).is_empty());
        }
    }

    #[test]
    fn man_page_defines_the_quote_string_once_before_use() {
        let page = String::from_utf8(man_page().expect("man page")).expect("utf-8");
        assert_eq!(page.matches(".ds Aq \\(aq").count(), 1);
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page:.80}");
    }

    #[test]
    fn demoting_touches_only_section_headings() {
        let roff = b".SH SYNOPSIS\n\\fBx\\fR\n.SH \"DIAGNOSIS THRESHOLDS\"\n.SS keep\n";
        assert_eq!(
            demote_sections(roff),
            b".SS SYNOPSIS\n\\fBx\\fR\n.SS \"DIAGNOSIS THRESHOLDS\"\n.SS keep\n"
        );
    }
}
