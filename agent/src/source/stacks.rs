//! Where a leaking process opens its connections (`watch --stacks`): the user
//! stacks the kernel took at `connect()`, read from its stack map by id and
//! symbolized through the process's memory map (`/proc/PID/maps`) and the ELF
//! symbol tables of its modules.
//!
//! The kernel walks the stack by frame pointers, so only code built with them
//! (`-fno-omit-frame-pointer`) gives a whole stack; the C library's `connect()`
//! wrapper has none, so the function that calls `connect()` itself is skipped and
//! its caller is the second frame. Interpreted runtimes (python, node, ruby…)
//! show the interpreter's own functions, which say nothing of the script: for
//! them the report says so and shows the command line instead.
//!
//! One call path has one stack id in the kernel, so the work is per distinct
//! path and process, cached: a leak reported every interval is symbolized once.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::maps::{MapData, StackTraceMap};
use object::{Object as _, ObjectSegment as _, ObjectSymbol as _, SymbolKind};
use serde_json::{Map, Value, json};

use crate::model::{FastMap, InstanceKey, Nanos, Report, StackCounts, VerdictKind};

/// Stacks shown per process, most connections first.
pub const TOP_STACKS: usize = 3;
/// Frames shown per stack, innermost first.
pub const MAX_FRAMES: usize = 16;
/// The command line is cut to this many characters.
pub const CMDLINE_MAX: usize = 200;
/// Symbolized (pid, stack) pairs and module symbol tables kept; past it the cache
/// starts again.
const MAX_CACHED_STACKS: usize = 4096;
const MAX_CACHED_MODULES: usize = 32;
/// Modules larger than this are not read for symbols (shown as module+offset).
const MAX_MODULE_BYTES: u64 = 1 << 30;

/// One line of `/proc/PID/maps`: an address range mapped from `path` at `offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    /// Device and inode: the file's identity (0 for anonymous memory).
    pub dev: String,
    pub inode: u64,
    /// The file's path, `[vdso]`-like names, or empty for anonymous memory.
    pub path: String,
}

/// A `/proc/PID/maps` line; `None` for one that is not laid out as the kernel
/// writes it.
pub fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut rest = line;
    let mut field = || {
        let t = rest.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        (!f.is_empty()).then_some(f)
    };
    let range = field()?;
    let _perms = field()?;
    let offset = u64::from_str_radix(field()?, 16).ok()?;
    let dev = field()?.to_string();
    let inode = field()?.parse().ok()?;
    let (start, end) = range.split_once('-')?;
    let path = rest.trim().to_string();
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset,
        dev,
        inode,
        path,
    })
}

/// A module's function symbols, sorted by address, and its loadable segments
/// (virtual address, file offset, file size) to turn file offsets into addresses.
#[derive(Debug, Default)]
pub struct Module {
    symbols: Vec<(u64, u64, String)>,
    segments: Vec<(u64, u64, u64)>,
}

impl Module {
    /// The symbols and segments of the ELF file `data` (`.symtab`, else only
    /// `.dynsym` in a stripped file).
    pub fn parse<'a, R: object::ReadRef<'a>>(data: R) -> Option<Module> {
        let file = object::File::parse(data).ok()?;
        let segments = file
            .segments()
            .map(|s| {
                let (offset, size) = s.file_range();
                (s.address(), offset, size)
            })
            .collect();
        let mut symbols: Vec<(u64, u64, String)> = file
            .symbols()
            .chain(file.dynamic_symbols())
            .filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0)
            .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
            .filter(|(_, _, name)| !name.is_empty())
            .collect();
        // Of the names one address has (`__connect`, `connect`), the public one:
        // the fewest leading underscores.
        let underscores = |name: &str| name.len() - name.trim_start_matches('_').len();
        symbols.sort_by(|a, b| (a.0, underscores(&a.2), &a.2).cmp(&(b.0, underscores(&b.2), &b.2)));
        symbols.dedup_by_key(|s| s.0);
        Some(Module { symbols, segments })
    }

    /// The virtual address (as `nm` and `addr2line` number it) of file offset `fo`.
    pub fn address_of(&self, fo: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|&&(_, off, size)| fo >= off && fo < off.saturating_add(size))
            .map(|&(addr, off, _)| addr + (fo - off))
    }

    /// The function holding `addr`, and `addr`'s offset in it.
    pub fn symbol_at(&self, addr: u64) -> Option<(&str, u64)> {
        let at = self
            .symbols
            .partition_point(|s| s.0 <= addr)
            .checked_sub(1)?;
        let (start, size, name) = &self.symbols[at];
        (*size == 0 || addr < start + size).then_some((name.as_str(), addr - start))
    }
}

/// The last component of a module's path.
fn base_name(path: &str) -> &str {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    path.rsplit('/').next().unwrap_or(path)
}

/// How one frame is shown: `module!symbol+0xoff`; `module+0xaddr` (the ELF
/// address, for `addr2line -e`) without a symbol; `[vdso]+0xoff` in a named
/// mapping that is no file; the bare address in anonymous memory (JIT code) or
/// outside every mapping. `inner`: the innermost frame (an instruction pointer;
/// the others are return addresses, looked up one byte back so a call at a
/// function's end is not given to the next function).
pub fn format_frame(
    ip: u64,
    inner: bool,
    maps: &[Mapping],
    module: &mut dyn FnMut(&Mapping) -> Option<Arc<Module>>,
) -> String {
    let Some(m) = maps.iter().find(|m| ip >= m.start && ip < m.end) else {
        return format!("{ip:#x}");
    };
    if m.path.is_empty() {
        return format!("{ip:#x}");
    }
    if !m.path.starts_with('/') {
        return format!("{}+{:#x}", m.path, ip - m.start);
    }
    let name = base_name(&m.path);
    let fo = ip - m.start + m.offset;
    let lookup = if inner { fo } else { fo.saturating_sub(1) };
    let Some(module) = module(m) else {
        return format!("{name}+{fo:#x}");
    };
    let (Some(addr), Some(at)) = (module.address_of(fo), module.address_of(lookup)) else {
        return format!("{name}+{fo:#x}");
    };
    match module.symbol_at(at) {
        Some((symbol, off)) => format!("{name}!{symbol}+{:#x}", off + (addr - at)),
        None => format!("{name}+{addr:#x}"),
    }
}

/// The interpreted runtime a process runs, by its executable's name or its
/// frames' modules (`libpython3.12.so`): its user stack is the interpreter's.
pub fn interpreter(exe: &str, modules: &[&str]) -> Option<&'static str> {
    const RUNTIMES: &[(&str, &str)] = &[
        ("python", "python"),
        ("libpython", "python"),
        ("pypy", "python"),
        ("node", "node"),
        ("libnode", "node"),
        ("ruby", "ruby"),
        ("libruby", "ruby"),
        ("perl", "perl"),
        ("libperl", "perl"),
        ("php", "php"),
        ("java", "java"),
        ("libjvm", "java"),
        ("bun", "javascript"),
        ("deno", "javascript"),
    ];
    let runtime = |name: &str| {
        RUNTIMES
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix))
            .map(|&(_, r)| r)
    };
    runtime(base_name(exe)).or_else(|| modules.iter().find_map(|m| runtime(base_name(m))))
}

/// `/proc/PID/cmdline` as one line: arguments joined by spaces, control characters
/// as `?`, cut to [`CMDLINE_MAX`] characters (`…` when cut). `None` when empty (a
/// kernel thread, or a process gone).
pub fn cmdline_text(raw: &[u8]) -> Option<String> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return None;
    }
    let text: String = String::from_utf8_lossy(raw)
        .chars()
        .map(|c| match c {
            '\0' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect();
    let mut cut: String = text.chars().take(CMDLINE_MAX).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    Some(cut)
}

/// How many of a process's connections have each stack id (`None`: no stack),
/// most first: `(instance, client address, pid, now, idle at least)`.
pub type CountsOf<'a> =
    dyn Fn(InstanceKey, std::net::IpAddr, u32, Nanos, std::time::Duration) -> StackCounts + 'a;

/// What is known of one process's stacks, for a leak verdict's evidence.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStacks {
    /// The stacks (count, frames), most connections first; `None` when they say
    /// nothing (interpreted) or could not be read.
    pub stacks: Option<Vec<(u64, Arc<Vec<String>>)>>,
    /// Connections whose stack the kernel did not take.
    pub missing: u64,
    pub interpreter: Option<&'static str>,
    pub cmdline: Option<String>,
    /// Why `stacks` is `None`, or what it lacks.
    pub note: Option<String>,
}

impl ProcessStacks {
    /// Adds the fields to a verdict's evidence: `stacks`, `stacks_missing`,
    /// `interpreter`, `cmdline`, `stacks_note` (each `null` when unknown).
    pub fn add_to(&self, evidence: &mut Map<String, Value>) {
        let stacks = self.stacks.as_ref().map(|all| {
            all.iter()
                .map(|(count, frames)| json!({"count": count, "frames": frames.as_slice()}))
                .collect::<Vec<_>>()
        });
        evidence.insert("stacks".into(), json!(stacks));
        evidence.insert("stacks_missing".into(), json!(self.missing));
        evidence.insert("interpreter".into(), json!(self.interpreter));
        evidence.insert("cmdline".into(), json!(self.cmdline));
        evidence.insert("stacks_note".into(), json!(self.note));
    }
}

/// The symbolizer: the kernel's stack map and what was read of the processes.
pub struct Stacks {
    map: StackTraceMap<MapData>,
    proc_root: PathBuf,
    /// (pid, stack id) → frames.
    frames: FastMap<(u32, u32), Arc<Vec<String>>>,
    /// (pid, device, inode) → symbols (`None`: not an ELF file we could read).
    modules: FastMap<(u32, String, u64), Option<Arc<Module>>>,
}

impl Stacks {
    pub fn new(map: StackTraceMap<MapData>) -> Self {
        Stacks {
            map,
            proc_root: PathBuf::from("/proc"),
            frames: FastMap::default(),
            modules: FastMap::default(),
        }
    }

    /// Adds the stacks of each leak's process to its evidence: for a leak verdict
    /// naming a local `pid`, the stacks of that process's connections from the
    /// verdict's address idle longer than its `idle_over_s` (`counts` gives them).
    pub fn annotate(&mut self, report: &mut Report, now: Nanos, counts: &CountsOf) {
        let instance = report
            .instance
            .as_ref()
            .map(|i| i.key())
            .unwrap_or_default();
        for v in report
            .verdicts
            .iter_mut()
            .filter(|v| v.kind == VerdictKind::Leak)
        {
            let (Some(addr), Some(pid)) = (
                v.addr,
                v.evidence
                    .get("pid")
                    .and_then(Value::as_u64)
                    .and_then(|p| u32::try_from(p).ok()),
            ) else {
                continue;
            };
            let idle = v
                .evidence
                .get("idle_over_s")
                .and_then(Value::as_f64)
                .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
                .unwrap_or_default();
            let found = self.of_process(pid, &counts(instance, addr, pid, now, idle));
            found.add_to(&mut v.evidence);
        }
    }

    /// The stacks of `pid` for `counts` (stack id or none, with how many).
    pub fn of_process(&mut self, pid: u32, counts: &[(Option<u32>, u64)]) -> ProcessStacks {
        let dir = self.proc_root.join(pid.to_string());
        let cmdline = std::fs::read(dir.join("cmdline"))
            .ok()
            .and_then(|raw| cmdline_text(&raw));
        let exe = std::fs::read_link(dir.join("exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let missing = counts.iter().filter(|c| c.0.is_none()).map(|c| c.1).sum();
        let mut out = ProcessStacks {
            missing,
            cmdline,
            ..ProcessStacks::default()
        };
        let maps = match read_maps(&dir) {
            Ok(maps) => maps,
            Err(e) => {
                out.note = Some(format!(
                    "the memory map of pid {pid} could not be read ({e}): its stacks cannot be symbolized"
                ));
                return out;
            }
        };
        let modules: Vec<&str> = maps.iter().map(|m| m.path.as_str()).collect();
        if let Some(runtime) = interpreter(&exe, &modules) {
            out.interpreter = Some(runtime);
            out.note = Some(format!(
                "interpreted ({runtime}): the stack at connect() is the interpreter's own code, not the program's; the command line says which program runs"
            ));
            return out;
        }
        let mut stacks = Vec::new();
        for &(id, count) in counts {
            let Some(id) = id else { continue };
            if stacks.len() == TOP_STACKS {
                break;
            }
            match self.frames_of(pid, id, &maps) {
                Some(frames) => stacks.push((count, frames)),
                None => out.missing += count,
            }
        }
        if stacks.is_empty() {
            out.note = Some(
                "the kernel took no stack for these connections (opened before connwatch started, or its stack map was full)".into(),
            );
            return out;
        }
        if out.missing > 0 {
            out.note = Some(format!(
                "{} of the connections have no stack (opened before connwatch started, or the kernel's stack map was full)",
                out.missing
            ));
        }
        out.stacks = Some(stacks);
        out
    }

    /// The frames of stack `id` in `pid`, from the cache or the kernel's map.
    fn frames_of(&mut self, pid: u32, id: u32, maps: &[Mapping]) -> Option<Arc<Vec<String>>> {
        if let Some(f) = self.frames.get(&(pid, id)) {
            return Some(f.clone());
        }
        let trace = self.map.get(&id, 0).ok()?;
        let ips: Vec<u64> = trace
            .frames()
            .iter()
            .map(|f| f.ip)
            .filter(|&ip| ip != 0)
            .collect();
        if ips.is_empty() {
            return None;
        }
        if self.modules.len() >= MAX_CACHED_MODULES {
            self.modules.clear();
        }
        let (modules, root) = (&mut self.modules, self.proc_root.join(pid.to_string()));
        let mut module = |m: &Mapping| {
            modules
                .entry((pid, m.dev.clone(), m.inode))
                .or_insert_with(|| read_module(&root, &m.path).map(Arc::new))
                .clone()
        };
        let frames: Vec<String> = ips
            .iter()
            .take(MAX_FRAMES)
            .enumerate()
            .map(|(i, &ip)| format_frame(ip, i == 0, maps, &mut module))
            .collect();
        if self.frames.len() >= MAX_CACHED_STACKS {
            self.frames.clear();
        }
        let frames = Arc::new(frames);
        self.frames.insert((pid, id), frames.clone());
        Some(frames)
    }
}

/// The mappings of `/proc/PID/maps` (`dir` is `/proc/PID`).
fn read_maps(dir: &Path) -> std::io::Result<Vec<Mapping>> {
    let file = std::fs::File::open(dir.join("maps"))?;
    let mut maps = Vec::new();
    for line in BufReader::new(file).lines() {
        if let Some(m) = parse_maps_line(&line?) {
            maps.push(m);
        }
    }
    Ok(maps)
}

/// The symbols of the module at `path` as the process sees it (through
/// `/proc/PID/root`, so a container's files are its own), read lazily.
fn read_module(root: &Path, path: &str) -> Option<Module> {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let file = std::fs::File::open(root.join("root").join(path.trim_start_matches('/'))).ok()?;
    if file.metadata().ok()?.len() > MAX_MODULE_BYTES {
        return None;
    }
    let cache = object::ReadCache::new(file);
    Module::parse(&cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_are_parsed_with_paths_that_hold_spaces() {
        let m = parse_maps_line(
            "55d0c0a00000-55d0c0a01000 r-xp 00001000 fd:01 1234567                    /opt/my app/bin (deleted)",
        )
        .unwrap();
        assert_eq!(
            (
                m.start,
                m.end,
                m.offset,
                m.dev.as_str(),
                m.inode,
                m.path.as_str()
            ),
            (
                0x55d0c0a00000,
                0x55d0c0a01000,
                0x1000,
                "fd:01",
                1234567,
                "/opt/my app/bin (deleted)"
            )
        );
        let anon = parse_maps_line("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!((anon.inode, anon.path.as_str()), (0, ""));
        assert_eq!(parse_maps_line("garbage"), None);
        assert_eq!(parse_maps_line("1-2 r-xp zz 00:00 0"), None);
    }

    /// A function of this test binary, symbolized through this process's own map
    /// and ELF file, as a leaking process's frames are.
    #[inline(never)]
    fn a_marker_function_for_symbols() -> u64 {
        std::hint::black_box(a_marker_function_for_symbols as *const () as u64)
    }

    #[test]
    fn a_frame_of_this_binary_is_named_by_its_symbol() {
        let ip = a_marker_function_for_symbols() + 4;
        let maps = read_maps(Path::new("/proc/self")).unwrap();
        let root = Path::new("/proc/self");
        let mut module = |m: &Mapping| read_module(root, &m.path).map(Arc::new);
        let frame = format_frame(ip, true, &maps, &mut module);
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        assert!(
            frame.starts_with(&format!("{name}!"))
                && frame.contains("a_marker_function_for_symbols")
                && frame.ends_with("+0x4"),
            "{frame}"
        );
        // Without symbols: the module and the ELF address.
        let mut none = |_: &Mapping| Some(Arc::new(Module::default()));
        let bare = format_frame(ip, true, &maps, &mut none);
        assert!(bare.starts_with(&format!("{name}+0x")), "{bare}");
        // Outside every mapping: the bare address.
        assert_eq!(format_frame(8, true, &maps, &mut module), "0x8");
    }

    #[test]
    fn symbols_are_found_by_address_within_their_size() {
        let m = Module {
            symbols: vec![
                (0x1000, 0x20, "dial".into()),
                (0x1040, 0, "sized_unknown".into()),
            ],
            segments: vec![(0x1000, 0x1000, 0x1000)],
        };
        assert_eq!(m.symbol_at(0x1010), Some(("dial", 0x10)));
        assert_eq!(
            m.symbol_at(0x1020),
            None,
            "past dial's end, before the next"
        );
        assert_eq!(m.symbol_at(0x1050), Some(("sized_unknown", 0x10)));
        assert_eq!(m.symbol_at(0x0fff), None);
        assert_eq!(m.address_of(0x1800), Some(0x1800));
        assert_eq!(m.address_of(0x2000), None);
        // A return address at a function's very end is looked up one byte back.
        let maps = vec![Mapping {
            start: 0x7000_0000,
            end: 0x7000_2000,
            offset: 0,
            dev: "fd:01".into(),
            inode: 5,
            path: "/usr/bin/app".into(),
        }];
        let m = Arc::new(m);
        let mut module = |_: &Mapping| Some(m.clone());
        assert_eq!(
            format_frame(0x7000_1020, false, &maps, &mut module),
            "app!dial+0x20"
        );
        assert_eq!(
            format_frame(0x7000_1020, true, &maps, &mut module),
            "app+0x1020"
        );
        let vdso = Mapping {
            path: "[vdso]".into(),
            inode: 0,
            ..maps[0].clone()
        };
        assert_eq!(
            format_frame(0x7000_0010, true, &[vdso], &mut module),
            "[vdso]+0x10"
        );
    }

    #[test]
    fn interpreted_runtimes_are_told_by_their_executable_or_library() {
        assert_eq!(interpreter("/usr/bin/python3.12", &[]), Some("python"));
        assert_eq!(interpreter("/usr/local/bin/node", &[]), Some("node"));
        assert_eq!(
            interpreter("/opt/app/uwsgi", &["/usr/lib/libpython3.11.so.1.0", ""]),
            Some("python")
        );
        assert_eq!(interpreter("/usr/bin/ruby3.2", &[]), Some("ruby"));
        assert_eq!(
            interpreter("/opt/app/server", &["/usr/lib/x86_64-linux-gnu/libc.so.6"]),
            None
        );
    }

    #[test]
    fn the_command_line_is_one_line_and_cut() {
        assert_eq!(
            cmdline_text(b"python3\0/tmp/leak.py\0--port\x006379\0").as_deref(),
            Some("python3 /tmp/leak.py --port 6379")
        );
        assert_eq!(cmdline_text(b"a\x1b[2J\0").as_deref(), Some("a?[2J"));
        assert_eq!(cmdline_text(b""), None);
        let long = vec![b'x'; CMDLINE_MAX + 5];
        let cut = cmdline_text(&long).unwrap();
        assert_eq!(cut.chars().count(), CMDLINE_MAX + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn evidence_holds_every_field_null_when_unknown() {
        let mut evidence = Map::new();
        ProcessStacks {
            stacks: Some(vec![(
                7,
                Arc::new(vec!["app!leak_loop+0x1f".into(), "app!main+0x9".into()]),
            )]),
            missing: 1,
            interpreter: None,
            cmdline: Some("./app 6379".into()),
            note: None,
        }
        .add_to(&mut evidence);
        assert_eq!(
            Value::Object(evidence.clone()),
            json!({"stacks": [{"count": 7, "frames": ["app!leak_loop+0x1f", "app!main+0x9"]}],
                   "stacks_missing": 1, "interpreter": null, "cmdline": "./app 6379", "stacks_note": null})
        );
        let mut interpreted = Map::new();
        ProcessStacks {
            interpreter: Some("python"),
            cmdline: Some("python3 leak.py".into()),
            note: Some("interpreted (python): …".into()),
            ..ProcessStacks::default()
        }
        .add_to(&mut interpreted);
        assert_eq!(interpreted["stacks"], Value::Null);
        assert_eq!(interpreted["interpreter"], "python");
        assert_eq!(interpreted["cmdline"], "python3 leak.py");
    }
}
