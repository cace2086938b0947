//! The lines the guest prints on the serial console, which `cargo xtask vm-test`
//! reads (xtask/src/vm/console.rs parses exactly these shapes):
//!
//! ```text
//! connwatch-vm: init                      the first line: init runs
//! PASS <name> (<seconds> s[; <note>])     a case passed
//! FAIL <name>: <why>                      a case failed, on one line…
//!   | <detail>                            …with the detail (the last report) under it
//! <N> passed, <N> failed                  after the last case
//! connwatch-vm: format begin <path>       a tracepoint's format file, verbatim,
//! connwatch-vm: format end                up to this line
//! connwatch-vm: done                      the last line before the power-off
//! ```

use std::time::Duration;

pub const INIT: &str = "connwatch-vm: init";
pub const DONE: &str = "connwatch-vm: done";
pub const FORMAT_BEGIN: &str = "connwatch-vm: format begin ";
pub const FORMAT_END: &str = "connwatch-vm: format end";
/// At most this many detail lines under a FAIL: a report is long, the console slow.
const MAX_DETAIL_LINES: usize = 120;
/// Of those, the first lines kept when a message is longer.
const HEAD_LINES: usize = 20;

pub fn pass(name: &str, took: Duration, note: Option<&str>) -> String {
    let secs = took.as_secs_f64();
    match note {
        Some(note) => format!("PASS {name} ({secs:.1} s; {note})"),
        None => format!("PASS {name} ({secs:.1} s)"),
    }
}

/// `FAIL name: first line`, then up to [`MAX_DETAIL_LINES`] more lines as `  | …`:
/// the first [`HEAD_LINES`] and the last ones, where a verifier log says why it
/// refused a program.
pub fn fail(name: &str, why: &str) -> Vec<String> {
    let mut lines = why.lines();
    let first = lines.next().unwrap_or("").trim();
    // assert_eq!'s own words say nothing the message after them does not.
    let first = first
        .strip_prefix("assertion `left == right` failed: ")
        .unwrap_or(first);
    let first = if first.is_empty() {
        "(no message)"
    } else {
        first
    };
    let mut out = vec![format!("FAIL {name}: {first}")];
    let rest: Vec<&str> = lines.collect();
    if rest.len() <= MAX_DETAIL_LINES {
        out.extend(rest.iter().map(|l| format!("  | {l}")));
    } else {
        let tail = MAX_DETAIL_LINES - HEAD_LINES;
        out.extend(rest[..HEAD_LINES].iter().map(|l| format!("  | {l}")));
        out.push(format!(
            "  | … {} lines left out …",
            rest.len() - MAX_DETAIL_LINES
        ));
        out.extend(rest[rest.len() - tail..].iter().map(|l| format!("  | {l}")));
    }
    out
}

pub fn summary(passed: usize, failed: usize) -> String {
    format!("{passed} passed, {failed} failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_shapes_xtask_reads() {
        assert_eq!(
            pass("watch_counts", Duration::from_millis(12_340), None),
            "PASS watch_counts (12.3 s)"
        );
        assert_eq!(
            pass("refused", Duration::from_secs(2), Some("refused: null")),
            "PASS refused (2.0 s; refused: null)"
        );
        assert_eq!(
            fail("refused", "totals.refused stayed 0\n{\n  \"a\": 1\n}"),
            [
                "FAIL refused: totals.refused stayed 0",
                "  | {",
                "  |   \"a\": 1",
                "  | }"
            ]
        );
        assert_eq!(fail("x", ""), ["FAIL x: (no message)"]);
        assert_eq!(
            fail(
                "x",
                "assertion `left == right` failed: counts 1 (want 2)\n  left: 1"
            ),
            ["FAIL x: counts 1 (want 2)", "  |   left: 1"]
        );
        // A long message keeps its head and its end (a verifier log's reason).
        let long: Vec<String> = (0..=200).map(|i| format!("line {i}")).collect();
        let shown = fail("x", &long.join("\n"));
        assert_eq!(shown.len(), 1 + MAX_DETAIL_LINES + 1);
        assert_eq!(shown[1], "  | line 1");
        assert_eq!(shown[HEAD_LINES], "  | line 20");
        assert_eq!(shown[HEAD_LINES + 1], "  | … 80 lines left out …");
        assert_eq!(shown[HEAD_LINES + 2], "  | line 101");
        assert_eq!(shown.last().unwrap(), "  | line 200");
        assert_eq!(summary(5, 1), "5 passed, 1 failed");
    }
}
