//! The initramfs: the guest runner as `/init`, the release `connwatch`,
//! `redis-server` and `prlimit`, every shared library `ldd` names for them (at
//! the host's paths, its symlinks such as `/lib -> usr/lib` kept as symlinks),
//! the sock_diag modules, and `/dev/console`. Written uncompressed: under TCG the
//! kernel would spend longer inflating it than copying it.

use std::collections::BTreeMap;
use std::fs;
use std::io::BufWriter;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};

use super::cpio;

/// Where the guest finds the modules to load (vm-guest/src/system.rs).
pub const GUEST_MODULE_DIR: &str = "usr/lib/modules/connwatch";
/// Host programs the cases run, copied with their libraries.
pub const HOST_PROGRAMS: [&str; 2] = ["/usr/bin/redis-server", "/usr/bin/prlimit"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Dir,
    /// A host file, copied with its permission bits.
    File(PathBuf),
    Symlink(String),
    CharDev(u32, u32),
}

/// The initramfs's tree, by path relative to its root; sorted, so a directory
/// always comes before what it holds.
#[derive(Debug, Default)]
pub struct Tree {
    entries: BTreeMap<String, Source>,
}

impl Tree {
    /// A directory and its parents.
    pub fn dir(&mut self, path: &str) -> anyhow::Result<()> {
        let path = path.trim_matches('/');
        if path.is_empty() {
            return Ok(());
        }
        match self.entries.get(path) {
            Some(Source::Dir) => return Ok(()),
            Some(other) => bail!("{path} is already in the initramfs as {other:?}"),
            None => {}
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.entries.insert(path.to_owned(), Source::Dir);
        Ok(())
    }

    fn insert(&mut self, path: &str, source: Source) -> anyhow::Result<()> {
        let path = path.trim_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        match self.entries.get(path) {
            Some(existing) if *existing == source => Ok(()),
            Some(existing) => {
                bail!("{path} is already in the initramfs as {existing:?}, not {source:?}")
            }
            None => {
                self.entries.insert(path.to_owned(), source);
                Ok(())
            }
        }
    }

    /// A host file at another path in the initramfs.
    pub fn file(&mut self, path: &str, host: &Path) -> anyhow::Result<()> {
        if !host.is_file() {
            bail!("{} does not exist", host.display());
        }
        self.insert(path, Source::File(host.to_path_buf()))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> anyhow::Result<()> {
        self.insert(path, Source::Symlink(target.to_owned()))
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) -> anyhow::Result<()> {
        self.insert(path, Source::CharDev(major, minor))
    }

    /// The host file at `path` at the same path, with every symlink on the way
    /// (`/lib64 -> usr/lib64`, `ld-linux-x86-64.so.2 -> ../lib/…`) as a symlink, so
    /// the loader finds libraries where the host's does.
    pub fn mirror(&mut self, path: &Path) -> anyhow::Result<()> {
        if !path.is_absolute() {
            bail!("{} is not an absolute path", path.display());
        }
        // Components still to walk, last first (popped from the end); a symlink's
        // target is pushed in place of the link.
        let mut todo: Vec<PathBuf> = Vec::new();
        push_components(&mut todo, path);
        let mut current = PathBuf::from("/");
        let mut hops = 0;
        while let Some(part) = todo.pop() {
            if part == Path::new("..") {
                current.pop();
                continue;
            }
            if part == Path::new(".") {
                continue;
            }
            let next = current.join(&part);
            let rel = relative(&next)?;
            let meta = fs::symlink_metadata(&next).with_context(|| {
                format!("{} (on the way to {})", next.display(), path.display())
            })?;
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > 40 {
                    bail!("too many symlinks resolving {}", path.display());
                }
                let target = fs::read_link(&next)
                    .with_context(|| format!("reading the link {}", next.display()))?;
                let target_text = target
                    .to_str()
                    .ok_or_else(|| anyhow!("{} links to a non-UTF-8 path", next.display()))?;
                self.symlink(&rel, target_text)?;
                if target.is_absolute() {
                    current = PathBuf::from("/");
                }
                push_components(&mut todo, &target);
            } else if meta.is_dir() {
                self.dir(&rel)?;
                current = next;
            } else {
                if !todo.is_empty() {
                    bail!(
                        "{} is not a directory (resolving {})",
                        next.display(),
                        path.display()
                    );
                }
                self.insert(&rel, Source::File(next.clone()))?;
                current = next;
            }
        }
        Ok(())
    }

    /// Writes the archive; returns its size in bytes.
    pub fn write(&self, out: &Path) -> anyhow::Result<u64> {
        let partial = out.with_extension("partial");
        let file = fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut writer = cpio::Writer::new(BufWriter::new(file));
        for (path, source) in &self.entries {
            let kind = match source {
                Source::Dir => cpio::Kind::Dir { mode: 0o755 },
                Source::Symlink(target) => cpio::Kind::Symlink {
                    target: target.clone(),
                },
                Source::CharDev(major, minor) => cpio::Kind::CharDev {
                    mode: 0o600,
                    major: *major,
                    minor: *minor,
                },
                Source::File(host) => {
                    let data =
                        fs::read(host).with_context(|| format!("reading {}", host.display()))?;
                    let mode = fs::metadata(host)
                        .with_context(|| format!("reading {}", host.display()))?
                        .permissions()
                        .mode()
                        & 0o7777;
                    cpio::Kind::File { mode, data }
                }
            };
            writer
                .entry(path, &kind)
                .with_context(|| format!("writing {path} into {}", partial.display()))?;
        }
        let (_, size) = writer
            .finish()
            .with_context(|| format!("writing {}", partial.display()))?;
        fs::rename(&partial, out).with_context(|| format!("renaming {}", partial.display()))?;
        Ok(size)
    }

    #[cfg(test)]
    fn listing(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(p, s)| match s {
                Source::Dir => format!("{p}/"),
                Source::File(h) => format!("{p} <- {}", h.display()),
                Source::Symlink(t) => format!("{p} -> {t}"),
                Source::CharDev(a, b) => format!("{p} c {a}:{b}"),
            })
            .collect()
    }
}

/// Pushes `path`'s components onto `todo` so that popping yields them in order.
fn push_components(todo: &mut Vec<PathBuf>, path: &Path) {
    for c in path.components().rev() {
        match c {
            Component::Normal(name) => todo.push(PathBuf::from(name)),
            Component::ParentDir => todo.push(PathBuf::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
}

fn relative(path: &Path) -> anyhow::Result<String> {
    let text = path
        .to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", path.display()))?;
    Ok(text.trim_start_matches('/').to_owned())
}

/// The libraries in `ldd` output: the `=> /path` of each, and the loader's own
/// line (`/lib64/ld-linux-x86-64.so.2 (0x…)`); the vDSO has no file. A library
/// `not found` is an error naming it.
pub fn ldd_paths(output: &str) -> Result<Vec<PathBuf>, String> {
    let mut paths = Vec::new();
    for line in output.lines().map(str::trim) {
        if let Some((name, rest)) = line.split_once("=>") {
            let rest = rest.trim();
            if rest.starts_with("not found") {
                return Err(format!("{} not found", name.trim()));
            }
            let path = rest.split(" (").next().unwrap_or("").trim();
            if path.starts_with('/') {
                paths.push(PathBuf::from(path));
            }
        } else if line.starts_with('/') {
            let path = line.split(" (").next().unwrap_or("").trim();
            paths.push(PathBuf::from(path));
        }
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// `ldd program`'s libraries (none for a static program).
fn libraries(program: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = std::process::Command::new("ldd")
        .arg(program)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running ldd {}", program.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", program.display(), stderr.trim());
    }
    ldd_paths(&stdout).map_err(|missing| anyhow!("ldd {}: {missing}", program.display()))
}

/// Inputs of the initramfs.
pub struct Inputs<'a> {
    pub guest: &'a Path,
    pub connwatch: &'a Path,
    pub modules: &'a Path,
}

/// Builds the tree the guest needs and writes it to `out`; returns its size.
pub fn build(inputs: &Inputs<'_>, out: &Path) -> anyhow::Result<u64> {
    let mut tree = Tree::default();
    for dir in ["dev", "proc", "sys", "tmp", "run", "etc", "usr/bin"] {
        tree.dir(dir)?;
    }
    // The kernel opens /dev/console for init's stdin/stdout/stderr before any
    // devtmpfs is mounted.
    tree.char_dev("dev/console", 5, 1)?;
    tree.char_dev("dev/null", 1, 3)?;
    tree.file("init", inputs.guest)?;
    tree.file("usr/bin/connwatch", inputs.connwatch)?;
    let mut programs = vec![inputs.guest.to_path_buf(), inputs.connwatch.to_path_buf()];
    for program in HOST_PROGRAMS {
        let path = Path::new(program);
        if !path.is_file() {
            bail!(
                "{program} not found (cargo xtask setup installs redis-server; prlimit is util-linux's)"
            );
        }
        tree.mirror(path)?;
        programs.push(path.to_path_buf());
    }
    for program in &programs {
        for lib in libraries(program)? {
            tree.mirror(&lib)?;
        }
    }
    let order = inputs.modules.join(super::kernel::MODULE_ORDER);
    let names =
        fs::read_to_string(&order).with_context(|| format!("reading {}", order.display()))?;
    for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
        tree.file(
            &format!("{GUEST_MODULE_DIR}/{name}"),
            &inputs.modules.join(name),
        )?;
    }
    tree.file(
        &format!("{GUEST_MODULE_DIR}/{}", super::kernel::MODULE_ORDER),
        &order,
    )?;
    tree.write(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_every_library_and_the_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007ffc1b5f2000)\n\
                   \tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x00007f0e1a000000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e19e00000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1a2a0000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e19e00000)\n";
        assert_eq!(
            ldd_paths(out).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libssl.so.3"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert_eq!(
            ldd_paths("\tstatically linked\n").unwrap(),
            Vec::<PathBuf>::new()
        );
        assert_eq!(
            ldd_paths("\tlibfoo.so.1 => not found\n").unwrap_err(),
            "libfoo.so.1 not found"
        );
    }

    #[test]
    fn parents_come_first_and_conflicts_are_refused() {
        let mut tree = Tree::default();
        tree.char_dev("dev/console", 5, 1).unwrap();
        tree.symlink("lib", "usr/lib").unwrap();
        tree.dir("usr/lib/x86_64-linux-gnu").unwrap();
        // The same entry twice is fine; another kind at the same path is not.
        tree.symlink("lib", "usr/lib").unwrap();
        assert!(tree.dir("lib").is_err());
        assert!(tree.symlink("lib", "usr/lib64").is_err());
        assert_eq!(
            tree.listing(),
            [
                "dev/",
                "dev/console c 5:1",
                "lib -> usr/lib",
                "usr/",
                "usr/lib/",
                "usr/lib/x86_64-linux-gnu/"
            ]
        );
    }

    #[test]
    fn a_mirrored_path_keeps_its_symlinks() {
        let root = std::env::temp_dir().join(format!("xtask-initrd-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("usr/lib/arch")).unwrap();
        fs::write(root.join("usr/lib/arch/ld.so"), b"loader").unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("../lib/arch/ld.so", root.join("usr/lib/ld-link")).unwrap();

        let mut tree = Tree::default();
        tree.mirror(&root.join("lib/ld-link")).unwrap();
        let rel = relative(&root).unwrap();
        let want: Vec<String> = [
            "lib -> usr/lib".to_owned(),
            "usr/".to_owned(),
            "usr/lib/".to_owned(),
            "usr/lib/arch/".to_owned(),
            format!("usr/lib/arch/ld.so <- /{rel}/usr/lib/arch/ld.so"),
            "usr/lib/ld-link -> ../lib/arch/ld.so".to_owned(),
        ]
        .iter()
        .map(|e| format!("{rel}/{e}"))
        .collect();
        let mut got = tree.listing();
        // The temp dir's own ancestors come first.
        got.retain(|e| e.starts_with(&format!("{rel}/")) && *e != format!("{rel}/"));
        assert_eq!(got, want);

        let out = root.join("initrd.cpio");
        let size = tree.write(&out).unwrap();
        assert_eq!(fs::metadata(&out).unwrap().len(), size);
        let bytes = fs::read(&out).unwrap();
        assert!(bytes.windows(6).any(|w| w == b"loader"));
        fs::remove_dir_all(&root).unwrap();
    }
}
