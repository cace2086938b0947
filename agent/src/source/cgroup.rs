//! A cgroup's path from its id: the kernel reports the id of the cgroup (v2) of a
//! process that connects (`bpf_get_current_cgroup_id()`), which is the inode number
//! of the cgroup's directory under /sys/fs/cgroup. One walk of that tree indexes
//! every directory; the index is kept, and walked again (at most once a second)
//! only when an id it does not hold comes up: a container started since. Paths
//! are as the agent's cgroup namespace shows them (the host's, when it runs there).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where cgroup v2 is mounted: alone, or beside v1 (systemd's hybrid layout).
pub const CGROUP_ROOTS: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
/// At most this often a walk for an unknown id.
const REWALK_AFTER: Duration = Duration::from_secs(1);
/// A walk stops after this many directories (a host has a few thousand) and this depth.
const MAX_DIRS: usize = 200_000;
const MAX_DEPTH: usize = 32;

pub struct CgroupPaths {
    root: PathBuf,
    paths: HashMap<u64, Arc<str>>,
    last_walk: Option<Instant>,
    /// Walks done so far.
    pub walks: u64,
}

impl Default for CgroupPaths {
    /// The paths under the host's cgroup v2 mount (the first of [`CGROUP_ROOTS`]
    /// that is one); none without it (cgroup v1 only).
    fn default() -> Self {
        let root = CGROUP_ROOTS
            .into_iter()
            .find(|r| Path::new(r).join("cgroup.procs").exists());
        Self::new(root.unwrap_or(CGROUP_ROOTS[0]))
    }
}

impl CgroupPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CgroupPaths {
            root: root.into(),
            paths: HashMap::new(),
            last_walk: None,
            walks: 0,
        }
    }

    /// The path (from the root, starting with `/`) of the cgroup whose id is `id`;
    /// `None` when no directory has it (gone already, or not cgroup v2).
    pub fn path(&mut self, id: u64) -> Option<Arc<str>> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.paths.get(&id) {
            return Some(Arc::clone(p));
        }
        if self.last_walk.is_some_and(|at| at.elapsed() < REWALK_AFTER) {
            return None;
        }
        self.walk();
        self.paths.get(&id).cloned()
    }

    fn walk(&mut self) {
        self.last_walk = Some(Instant::now());
        self.walks += 1;
        // Rebuilt from scratch: cgroups removed since are forgotten.
        self.paths.clear();
        let mut stack: Vec<(PathBuf, usize)> = vec![(self.root.clone(), 0)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                continue;
            };
            self.paths
                .insert(meta.ino(), relative(&self.root, &dir).into());
            if self.paths.len() >= MAX_DIRS || depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
    }
}

fn relative(root: &Path, dir: &Path) -> String {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    format!("/{}", rel.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_directory_inodes_found_once_and_new_ones_after_a_pause() {
        let root = std::env::temp_dir().join(format!("connwatch-cgroups-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let scope = root.join("system.slice/docker-abc.scope");
        std::fs::create_dir_all(&scope).unwrap();
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let mut paths = CgroupPaths::new(&root);
        assert_eq!(
            paths.path(ino(&scope)).as_deref(),
            Some("/system.slice/docker-abc.scope")
        );
        assert_eq!(paths.path(ino(&root)).as_deref(), Some("/"));
        assert_eq!(paths.walks, 1);
        // Unknown: one walk, then none for a second.
        assert_eq!(paths.path(u64::MAX), None);
        let late = root.join("late.slice");
        std::fs::create_dir(&late).unwrap();
        assert_eq!(paths.path(ino(&late)), None);
        assert_eq!(paths.walks, 1);
        paths.last_walk = Some(Instant::now() - REWALK_AFTER);
        assert_eq!(paths.path(ino(&late)).as_deref(), Some("/late.slice"));
        assert_eq!(paths.walks, 2);
        assert_eq!(paths.path(0), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
