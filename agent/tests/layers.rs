//! The shape of `agent/src`, checked: the layers import only the layers before
//! them, no two files depend on each other (directly or around a loop), and no
//! file holds more than `MAX_RUNTIME_LINES` lines of runtime code (code before its
//! `#[cfg(test)]` module).
//!
//! It reads the sources, not the compiler's view, so it looks at what a person
//! reads: `use crate::…` trees, `super::…` paths and inline `crate::…` paths in
//! runtime code. Test modules are left out: a test may reach into any layer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, in order: each may import itself and the layers before it, with
/// one exception: `source` and `core` are siblings and never import each other.
const LAYERS: [&str; 6] = ["model", "source", "core", "diagnose", "report", "cmd"];

/// Runtime code (before `#[cfg(test)]`) per file.
const MAX_RUNTIME_LINES: usize = 600;

type Module = Vec<String>;

struct Tree {
    /// Module path → its file's runtime text.
    files: BTreeMap<Module, String>,
    /// Module path of a `mod.rs` → name → where its `pub use` takes it from.
    reexports: BTreeMap<Module, BTreeMap<String, Module>>,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Everything before the file's first `#[cfg(test)]` at column 0.
fn runtime_text(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn module_of(rel: &Path) -> Module {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into full paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        return vec![path.to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand)
        .map(|p| {
            if p == "self" {
                prefix.trim_end_matches("::").to_string()
            } else {
                format!("{prefix}{p}")
            }
        })
        .collect()
}

/// Absolute module paths (`crate::a::b::Name` as ["a", "b", "Name"]) that `text`,
/// the file of module `me`, refers to.
fn references(me: &Module, is_mod_rs: bool, text: &str) -> Vec<Module> {
    let mut out = Vec::new();
    let absolute = |path: &str| -> Option<Module> {
        let segs: Vec<&str> = path.split("::").map(str::trim).collect();
        match *segs.first()? {
            "crate" => Some(segs[1..].iter().map(|s| s.to_string()).collect()),
            "super" => {
                // `super` of a mod.rs is its folder's parent; of a file, its folder.
                let mut base = me.clone();
                let mut rest = &segs[..];
                while rest.first() == Some(&"super") {
                    if is_mod_rs || base.len() > 1 {
                        base.pop();
                    }
                    rest = &rest[1..];
                }
                if !is_mod_rs && me.len() == 1 {
                    base.clear();
                }
                base.extend(rest.iter().map(|s| s.to_string()));
                Some(base)
            }
            _ => None,
        }
    };
    // `use` statements, possibly over several lines.
    let mut rest = text;
    while let Some(at) = rest.find("use ") {
        let before = &rest[..at];
        rest = &rest[at + 4..];
        if !(before.is_empty() || before.ends_with(['\n', ' ', '('])) {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        let tree: String = rest[..end].split_whitespace().collect::<Vec<_>>().join(" ");
        if tree.starts_with("crate::") || tree.starts_with("super::") {
            out.extend(expand(&tree).iter().filter_map(|p| absolute(p)));
        }
    }
    // Inline paths in code (not in comments): `crate::a::b`.
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for (i, _) in code.match_indices("crate::") {
        let tail: String = code[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        if let Some(m) = absolute(tail.trim_end_matches(':')) {
            out.push(m);
        }
    }
    out
}

fn load() -> Tree {
    let root = src_dir();
    let mut paths = Vec::new();
    walk(&root, &mut paths);
    let mut files = BTreeMap::new();
    let mut reexports = BTreeMap::new();
    for path in paths {
        let rel = path.strip_prefix(&root).unwrap();
        if rel == Path::new("main.rs") {
            continue;
        }
        let me = module_of(rel);
        let text = runtime_text(&fs::read_to_string(&path).unwrap());
        if rel.ends_with("mod.rs") || rel == Path::new("lib.rs") {
            let mut names = BTreeMap::new();
            for line in text.split(';') {
                let line = line.trim();
                if let Some(tree) = line.strip_prefix("pub use ") {
                    let tree: String = tree.split_whitespace().collect::<Vec<_>>().join(" ");
                    for path in expand(&tree) {
                        let segs: Vec<String> = path.split("::").map(|s| s.to_string()).collect();
                        let mut full = me.clone();
                        let segs = match segs.first().map(String::as_str) {
                            Some("crate") => {
                                full.clear();
                                segs[1..].to_vec()
                            }
                            _ => segs,
                        };
                        full.extend(segs.iter().cloned());
                        if let Some(name) = segs.last() {
                            names.insert(name.clone(), full);
                        }
                    }
                }
            }
            reexports.insert(me.clone(), names);
        }
        files.insert(me, text);
    }
    Tree { files, reexports }
}

impl Tree {
    /// The file a path lands in: the longest prefix that is a file, followed
    /// through its folder's `pub use` re-exports.
    fn file_of(&self, path: &Module) -> Option<Module> {
        let mut path = path.clone();
        for _ in 0..8 {
            let n = (0..=path.len())
                .rev()
                .find(|&n| self.files.contains_key(&path[..n]))?;
            let file = path[..n].to_vec();
            let next = path.get(n);
            match next.and_then(|name| self.reexports.get(&file)?.get(name)) {
                Some(target) if target != &path[..=n] => {
                    let mut p = target.clone();
                    p.extend(path[n + 1..].iter().cloned());
                    path = p;
                }
                _ => return Some(file),
            }
        }
        None
    }

    fn edges(&self) -> BTreeMap<Module, BTreeSet<Module>> {
        let mut edges = BTreeMap::new();
        for (me, text) in &self.files {
            let is_mod_rs = self.reexports.contains_key(me);
            let mut to = BTreeSet::new();
            for r in references(me, is_mod_rs, text) {
                if let Some(file) = self.file_of(&r)
                    && &file != me
                    && !file.is_empty()
                {
                    to.insert(file);
                }
            }
            edges.insert(me.clone(), to);
        }
        edges
    }
}

fn layer(m: &Module) -> Option<usize> {
    LAYERS
        .iter()
        .position(|l| m.first().is_some_and(|f| f == l))
}

fn allowed(from: usize, to: usize) -> bool {
    let (source, core) = (1, 2);
    if (from == source && to == core) || (from == core && to == source) {
        return false;
    }
    to <= from
}

#[test]
fn every_file_belongs_to_a_layer() {
    let tree = load();
    let strays: Vec<String> = tree
        .files
        .keys()
        .filter(|m| !m.is_empty() && layer(m).is_none() && m.as_slice() != ["testing"])
        .map(|m| m.join("::"))
        .collect();
    assert!(strays.is_empty(), "modules outside the layers: {strays:?}");
}

#[test]
fn layers_import_only_the_layers_before_them() {
    let tree = load();
    let mut wrong = Vec::new();
    for (from, tos) in tree.edges() {
        let Some(lf) = layer(&from) else { continue };
        for to in tos {
            if let Some(lt) = layer(&to)
                && !allowed(lf, lt)
            {
                wrong.push(format!("{} -> {}", from.join("::"), to.join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_two_files_depend_on_each_other() {
    let edges = load().edges();
    // Tarjan's strongly connected components: any component of two or more files
    // is a cycle.
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        next: usize,
        cycles: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.join("::"));
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.cycles.push(component);
            }
        }
    }
    let mut s = State {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        cycles: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    assert!(
        s.cycles.is_empty(),
        "files that depend on each other: {:?}",
        s.cycles
    );
}

#[test]
fn no_file_holds_more_than_600_lines_of_runtime_code() {
    let root = src_dir();
    let mut paths = Vec::new();
    walk(&root, &mut paths);
    let big: Vec<String> = paths
        .iter()
        .filter_map(|p| {
            let n = runtime_text(&fs::read_to_string(p).unwrap())
                .lines()
                .count();
            (n > MAX_RUNTIME_LINES)
                .then(|| format!("{} ({n})", p.strip_prefix(&root).unwrap().display()))
        })
        .collect();
    assert!(
        big.is_empty(),
        "runtime code over {MAX_RUNTIME_LINES} lines: {big:?}"
    );
}

/// The checker itself: a use tree expands to every path in it.
#[test]
fn use_trees_expand_to_full_paths() {
    assert_eq!(
        expand("crate::core::{conn::{Conn, ConnTable}, client, self}"),
        [
            "crate::core::conn::Conn",
            "crate::core::conn::ConnTable",
            "crate::core::client",
            "crate::core"
        ]
    );
    assert_eq!(
        expand("super::text::human_bytes as hb"),
        ["super::text::human_bytes"]
    );
}

/// The checker finds what it is for: an edge from core to report is refused,
/// and a loop of two files is a cycle.
#[test]
fn the_rules_refuse_what_they_should() {
    assert!(!allowed(2, 4), "core -> report");
    assert!(!allowed(1, 2) && !allowed(2, 1), "source <-> core");
    assert!(allowed(3, 2) && allowed(5, 0) && allowed(0, 0));
    let me: Module = vec!["core".into(), "tracker".into()];
    let refs = references(
        &me,
        false,
        "use super::conn::Conn;\nfn f() { crate::report::text::render(); }\n",
    );
    assert_eq!(
        refs,
        [
            vec!["core".to_string(), "conn".into(), "Conn".into()],
            vec!["report".to_string(), "text".into(), "render".into()],
        ]
    );
}
