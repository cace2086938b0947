//! The tracepoints' record layouts, read from the running kernel at load and
//! compared with the ones the programs were built for
//! ([`connwatch_common::tracepoints::LAYOUTS`]).
//!
//! The programs read tracepoint fields at compiled-in offsets. A kernel whose
//! record differs (a field moved, resized or gone, as `tcp:tcp_send_reset` did
//! when it learned to report resets sent without a socket) would have them read
//! the wrong bytes, and report wrong numbers without a word. So before anything is
//! attached each layout is checked against `events/<category>/<name>/format`; a
//! program whose layout differs is not attached: the agent stops if it is the one
//! every count comes from, and otherwise says what is lost and reports it as
//! unknown.

use std::fmt;
use std::path::Path;

use connwatch_common::tracepoints::{LAYOUTS, Layout};

/// One field as a format file describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatField {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// Why a program's layout does not hold on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The format file could not be read.
    Unreadable(String),
    /// A field the program reads is not in the record.
    Missing { field: &'static str },
    /// A field is elsewhere, or of another size.
    Moved {
        field: &'static str,
        built: (usize, usize),
        found: (usize, usize),
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Unreadable(e) => write!(f, "its format file cannot be read: {e}"),
            Mismatch::Missing { field } => write!(f, "field `{field}` is missing"),
            Mismatch::Moved {
                field,
                built,
                found,
            } => write!(
                f,
                "field `{field}` is at offset {} (size {}) on this kernel, connwatch was built for offset {} (size {})",
                found.0, found.1, built.0, built.1
            ),
        }
    }
}

/// Parses the `field:` lines of a tracepoint's format file:
/// `\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;`. Lines it cannot read
/// are skipped (a field missing from the result is reported as missing).
pub fn parse_format(text: &str) -> Vec<FormatField> {
    text.lines()
        .filter_map(|line| {
            let mut name = None;
            let (mut offset, mut size) = (None, None);
            for part in line.split(';').map(str::trim) {
                if let Some(decl) = part.strip_prefix("field:") {
                    // The last word of the declaration, without an array size.
                    let word = decl.split_whitespace().last()?;
                    let word = word.split('[').next()?.trim_start_matches('*');
                    name = Some(word.to_string());
                } else if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.trim().parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.trim().parse().ok();
                }
            }
            Some(FormatField {
                name: name?,
                offset: offset?,
                size: size?,
            })
        })
        .collect()
}

/// Whether `layout` holds for a record described by `fields`.
pub fn check(layout: &Layout, fields: &[FormatField]) -> Result<(), Mismatch> {
    for want in layout.fields {
        let Some(got) = fields.iter().find(|f| f.name == want.name) else {
            return Err(Mismatch::Missing { field: want.name });
        };
        if (got.offset, got.size) != (want.offset, want.size) {
            return Err(Mismatch::Moved {
                field: want.name,
                built: (want.offset, want.size),
                found: (got.offset, got.size),
            });
        }
    }
    Ok(())
}

/// The number a format file's print format gives `symbol` in a
/// `__print_symbolic` table (`{ 3, "NO_SOCKET" }`): how the kernel numbers an enum
/// value the record holds. `None` when the table does not list it.
pub fn symbol_value(text: &str, symbol: &str) -> Option<u32> {
    let print = text.lines().find(|l| l.starts_with("print fmt:"))?;
    let quoted = format!("\"{symbol}\"");
    let at = print.find(&quoted)?;
    let before = &print[..at];
    let open = before.rfind('{')?;
    before[open + 1..]
        .trim()
        .strip_suffix(',')?
        .trim()
        .parse()
        .ok()
}

/// The format file of `category:name` under `tracefs`.
pub fn format_text(tracefs: &Path, category: &str, name: &str) -> Result<String, Mismatch> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    std::fs::read_to_string(&path)
        .map_err(|e| Mismatch::Unreadable(format!("{}: {e}", path.display())))
}

/// Each program's layout checked against the format files under `tracefs`.
pub fn check_all(tracefs: &Path) -> Vec<(&'static Layout, Result<(), Mismatch>)> {
    LAYOUTS
        .iter()
        .map(|layout| {
            let result = format_text(tracefs, layout.category, layout.name)
                .and_then(|text| check(layout, &parse_format(&text)));
            (layout, result)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sock:inet_sock_set_state`'s format file on 6.18 (and 6.1).
    const SET_STATE: &str = "name: inet_sock_set_state
ID: 1474
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;

print fmt: \"family=%s protocol=%s sport=%hu\", REC->family
";

    fn layout(program: &str) -> &'static Layout {
        LAYOUTS.iter().find(|l| l.program == program).unwrap()
    }

    #[test]
    fn fields_are_read_with_their_offsets_and_sizes() {
        let fields = parse_format(SET_STATE);
        assert_eq!(fields.len(), 15);
        assert_eq!(
            fields[4],
            FormatField {
                name: "skaddr".into(),
                offset: 8,
                size: 8
            }
        );
        assert_eq!(
            fields[13],
            FormatField {
                name: "saddr_v6".into(),
                offset: 40,
                size: 16
            }
        );
        assert_eq!(check(layout("inet_sock_set_state"), &fields), Ok(()));
    }

    #[test]
    fn a_moved_resized_or_missing_field_is_caught() {
        let moved = SET_STATE.replace("__u16 sport;\toffset:24", "__u16 sport;\toffset:48");
        assert_eq!(
            check(layout("inet_sock_set_state"), &parse_format(&moved)),
            Err(Mismatch::Moved {
                field: "sport",
                built: (24, 2),
                found: (48, 2)
            })
        );
        let resized = SET_STATE.replace(
            "int newstate;\toffset:20;\tsize:4",
            "int newstate;\toffset:20;\tsize:8",
        );
        let err = check(layout("inet_sock_set_state"), &parse_format(&resized)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `newstate` is at offset 20 (size 8) on this kernel, connwatch was built for offset 20 (size 4)"
        );
        let missing = SET_STATE.replace("protocol;", "proto;");
        assert_eq!(
            check(layout("inet_sock_set_state"), &parse_format(&missing)),
            Err(Mismatch::Missing { field: "protocol" })
        );
    }

    /// 6.1's `tcp:tcp_send_reset` (a socket's reset only: ports and 4-byte
    /// addresses of its own) does not match the layout the program reads.
    #[test]
    fn the_older_send_reset_record_is_refused() {
        let old = "\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:32;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:38;\tsize:4;\tsigned:0;
";
        assert!(matches!(
            check(layout("tcp_send_reset"), &parse_format(old)),
            Err(Mismatch::Moved { field: "saddr", .. })
        ));
    }

    /// Debian 12's 6.1 `skb:kfree_skb` (no `rx_sk`): the older program's layout,
    /// not the newer one's; and the number of `NO_SOCKET` read from its print format.
    const KFREE_SKB_6_1: &str = "name: kfree_skb
ID: 1381
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:28;\tsize:4;\tsigned:0;

print fmt: \"skbaddr=%p protocol=%u location=%p reason: %s\", REC->skbaddr, REC->protocol, REC->location, __print_symbolic(REC->reason, { 1, \"NOT_SPECIFIED\" }, { 2, \"NO_SOCKET\" }, { 3, \"PKT_TOO_SMALL\" }, { 68, \"MAX\" })
";

    #[test]
    fn each_kfree_skb_record_matches_one_program() {
        let fields = parse_format(KFREE_SKB_6_1);
        assert_eq!(check(layout("kfree_skb"), &fields), Ok(()));
        assert_eq!(
            check(layout("kfree_skb_rx_sk"), &fields),
            Err(Mismatch::Moved {
                field: "protocol",
                built: (32, 2),
                found: (24, 2)
            })
        );
        assert_eq!(symbol_value(KFREE_SKB_6_1, "NO_SOCKET"), Some(2));
        assert_eq!(symbol_value(KFREE_SKB_6_1, "NOT_SPECIFIED"), Some(1));
        assert_eq!(symbol_value(KFREE_SKB_6_1, "SOCKET_CLOSE"), None);
        // Only the print format's table counts, not a name elsewhere.
        assert_eq!(symbol_value("field:int NO_SOCKET;\n", "NO_SOCKET"), None);
        assert_eq!(
            symbol_value("print fmt: \"%s\", { x, \"NO_SOCKET\" }", "NO_SOCKET"),
            None
        );
    }
}
