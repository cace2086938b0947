//! Reading what the guest printed on the serial console (the shapes are
//! vm-guest/src/protocol.rs's): its cases, its summary line and the tracepoint
//! format files.

const INIT: &str = "connwatch-vm: init";
const FORMAT_BEGIN: &str = "connwatch-vm: format begin ";
const FORMAT_END: &str = "connwatch-vm: format end";
const KERNEL: &str = "connwatch-vm: kernel ";

/// Whether a console line is the guest's first: its init started. The firmware
/// may leave its own text before it on the same line ("Booting from ROM...").
pub fn is_init(line: &str) -> bool {
    line.trim_end().ends_with(INIT)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Console {
    /// `(name, None)` for a PASS, `(name, Some(why))` for a FAIL.
    pub cases: Vec<(String, Option<String>)>,
    /// The `N passed, N failed` line.
    pub summary: Option<(usize, usize)>,
    /// `(path, text)` of each tracepoint format printed.
    pub formats: Vec<(String, String)>,
    /// The guest's "kernel …, init at … s uptime" line.
    pub kernel: Option<String>,
}

/// A console line without terminal control sequences (SeaBIOS clears the screen
/// with `ESC c`, `ESC [?7l`, `ESC [2J` in front of the guest's first line).
pub fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        // CSI: parameters and intermediates, up to a final byte @ to ~. Any other
        // escape is two characters (ESC c: reset).
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// `N passed, N failed`.
pub fn summary_line(line: &str) -> Option<(usize, usize)> {
    let (passed, failed) = line
        .trim()
        .strip_suffix(" failed")?
        .split_once(" passed, ")?;
    Some((passed.parse().ok()?, failed.parse().ok()?))
}

/// Reads the console lines (trailing `\r` already gone or not).
pub fn parse<S: AsRef<str>>(lines: &[S]) -> Console {
    let mut console = Console::default();
    let mut format: Option<(String, String)> = None;
    for line in lines {
        let line = line.as_ref().trim_end_matches(['\r', '\n']);
        if let Some((path, text)) = &mut format {
            if line == FORMAT_END {
                console
                    .formats
                    .push((std::mem::take(path), std::mem::take(text)));
                format = None;
            } else {
                text.push_str(line);
                text.push('\n');
            }
            continue;
        }
        if let Some(path) = line.strip_prefix(FORMAT_BEGIN) {
            format = Some((path.to_owned(), String::new()));
        } else if let Some(rest) = line.strip_prefix("PASS ") {
            let name = rest.split_whitespace().next().unwrap_or("");
            console.cases.push((name.to_owned(), None));
        } else if let Some(rest) = line.strip_prefix("FAIL ") {
            let (name, why) = rest.split_once(": ").unwrap_or((rest, ""));
            console.cases.push((name.to_owned(), Some(why.to_owned())));
        } else if let Some(counts) = summary_line(line) {
            console.summary = Some(counts);
        } else if let Some(kernel) = line.strip_prefix(KERNEL) {
            console.kernel = Some(kernel.to_owned());
        }
    }
    console
}

impl Console {
    /// `Ok(passed)` when the guest printed a summary, every case passed and the
    /// PASS/FAIL lines agree with it; else one line saying what went wrong.
    pub fn verdict(&self) -> Result<usize, String> {
        let failed: Vec<&str> = self
            .cases
            .iter()
            .filter(|(_, why)| why.is_some())
            .map(|(name, _)| name.as_str())
            .collect();
        let passed = self.cases.len() - failed.len();
        let Some((said_passed, said_failed)) = self.summary else {
            return Err(format!(
                "the VM printed no summary line ({passed} passed and {} failed before it stopped)",
                failed.len()
            ));
        };
        if (said_passed, said_failed) != (passed, failed.len()) {
            return Err(format!(
                "the summary says {said_passed} passed, {said_failed} failed, but the console shows {passed} PASS and {} FAIL lines",
                failed.len()
            ));
        }
        if !failed.is_empty() {
            return Err(format!(
                "{} of {} cases failed: {}",
                failed.len(),
                self.cases.len(),
                failed.join(", ")
            ));
        }
        if passed == 0 {
            return Err("no case ran".into());
        }
        Ok(passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_line_is_found_after_the_firmware_s_text() {
        assert!(is_init("connwatch-vm: init\r"));
        assert!(is_init("Booting from ROM...connwatch-vm: init\r"));
        assert!(!is_init(
            "connwatch-vm: kernel 6.1.0, init at 1.25 s uptime"
        ));
        assert!(!is_init("Booting from ROM..."));
    }

    const RUN: &str = "\
connwatch-vm: init\r
connwatch-vm: kernel 6.1.0-57-cloud-amd64, init at 2.10 s uptime\r
PASS watch_counts (12.3 s; 5 held + 20 short exact)\r
FAIL refused: 7 refused attempts reported as {\"refused\":0} (want 7): a silent 0\r
  | {\r
  | }\r
PASS capabilities (4.0 s)\r
2 passed, 1 failed\r
connwatch-vm: format begin /sys/kernel/tracing/events/tcp/tcp_send_reset/format\r
name: tcp_send_reset\r
ID: 1234\r
\r
print fmt: \"x\"\r
connwatch-vm: format end\r
connwatch-vm: done\r
";

    #[test]
    fn cases_summary_formats_and_kernel_are_read() {
        let lines: Vec<&str> = RUN.lines().collect();
        let console = parse(&lines);
        assert_eq!(
            console.cases,
            [
                ("watch_counts".to_owned(), None),
                (
                    "refused".to_owned(),
                    Some(
                        "7 refused attempts reported as {\"refused\":0} (want 7): a silent 0"
                            .to_owned()
                    )
                ),
                ("capabilities".to_owned(), None),
            ]
        );
        assert_eq!(console.summary, Some((2, 1)));
        assert_eq!(
            console.formats,
            [(
                "/sys/kernel/tracing/events/tcp/tcp_send_reset/format".to_owned(),
                "name: tcp_send_reset\nID: 1234\n\nprint fmt: \"x\"\n".to_owned()
            )]
        );
        assert_eq!(
            console.kernel.as_deref(),
            Some("6.1.0-57-cloud-amd64, init at 2.10 s uptime")
        );
        assert_eq!(
            console.verdict(),
            Err("1 of 3 cases failed: refused".to_owned())
        );
    }

    #[test]
    fn terminal_control_sequences_are_removed() {
        assert_eq!(
            strip_escapes("\x1bc\x1b[?7l\x1b[2Jconnwatch-vm: init"),
            "connwatch-vm: init"
        );
        assert_eq!(
            strip_escapes("\x1b[0mSeaBIOS (version 1.16.2)"),
            "SeaBIOS (version 1.16.2)"
        );
        assert_eq!(strip_escapes("plain"), "plain");
        assert_eq!(strip_escapes("cut\x1b"), "cut");
    }

    #[test]
    fn summary_lines_are_exact() {
        assert_eq!(summary_line("6 passed, 0 failed"), Some((6, 0)));
        assert_eq!(summary_line("6 passed, 0 failed\r"), Some((6, 0)));
        assert_eq!(summary_line("test result: 6 passed, 0 failed"), None);
        assert_eq!(summary_line("6 passed"), None);
        assert_eq!(summary_line("x passed, 0 failed"), None);
        assert_eq!(summary_line(""), None);
    }

    #[test]
    fn a_run_passes_only_with_a_summary_that_matches_its_cases() {
        let all = ["PASS a (1.0 s)", "PASS b (1.0 s)", "2 passed, 0 failed"];
        assert_eq!(parse(&all).verdict(), Ok(2));
        let cut = ["PASS a (1.0 s)"];
        assert_eq!(
            parse(&cut).verdict(),
            Err(
                "the VM printed no summary line (1 passed and 0 failed before it stopped)"
                    .to_owned()
            )
        );
        let lying = ["PASS a (1.0 s)", "3 passed, 0 failed"];
        assert_eq!(
            parse(&lying).verdict(),
            Err("the summary says 3 passed, 0 failed, but the console shows 1 PASS and 0 FAIL lines".to_owned())
        );
        assert_eq!(
            parse(&["0 passed, 0 failed"]).verdict(),
            Err("no case ran".to_owned())
        );
    }
}
