//! The Debian cloud kernel the VM boots: the newest
//! `linux-image-<series>.0-<abi>-cloud-amd64-unsigned` apt-cache offers, downloaded
//! once with `apt-get download` (apt checks its hash against the signed index) and
//! unpacked once with `dpkg-deb -x`. Both stay under `target/vm/`, so a second run
//! downloads and unpacks nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};

use crate::process::{self, display, run_checked};

/// Modules connwatch's sock_diag scans need that Debian's cloud kernel builds as
/// modules (`CONFIG_INET_DIAG=m`, `CONFIG_INET_TCP_DIAG=m`); a normal system loads
/// them on demand with modprobe, which the initramfs does not have. In load order.
pub const MODULES: [&str; 2] = [
    "kernel/net/ipv4/inet_diag.ko",
    "kernel/net/ipv4/tcp_diag.ko",
];
/// The file in a kernel's modules directory that names the modules to load, in order.
pub const MODULE_ORDER: &str = "order";

/// A kernel ready to boot: `target/vm/kernel/<release>/` with `vmlinuz`, `config`
/// and `modules/` (the [`MODULES`] it has as files, and `order`).
#[derive(Debug)]
pub struct Kernel {
    pub release: String,
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
}

/// `6.1`: a major and a minor number, as Debian's package names carry them.
pub fn check_series(series: &str) -> anyhow::Result<()> {
    let ok = series
        .split_once('.')
        .is_some_and(|(major, minor)| is_number(major) && is_number(minor));
    if !ok {
        bail!("--kernel takes a kernel series such as 6.1, not {series:?}");
    }
    Ok(())
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The release of a cloud image package of `series`:
/// `linux-image-6.1.0-57-cloud-amd64-unsigned` → (57, `6.1.0-57-cloud-amd64`).
pub fn release_of(package: &str, series: &str) -> Option<(u32, String)> {
    let abi = package
        .strip_prefix("linux-image-")?
        .strip_prefix(series)?
        .strip_prefix(".0-")?
        .strip_suffix("-cloud-amd64-unsigned")?;
    if !is_number(abi) {
        return None;
    }
    let n = abi.parse().ok()?;
    Some((n, format!("{series}.0-{abi}-cloud-amd64")))
}

/// The package with the highest ABI number in `apt-cache search --names-only`
/// output ("NAME - description" lines), e.g. `linux-image-6.1.0-57-cloud-amd64-unsigned`
/// over `…-50-…`; other lines are ignored.
pub fn newest_package(search_output: &str, series: &str) -> Option<String> {
    search_output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| release_of(name, series).map(|(abi, _)| (abi, name)))
        .max_by_key(|(abi, _)| *abi)
        .map(|(_, name)| name.to_owned())
}

/// The newest release among names of cached kernel directories
/// (`6.1.0-57-cloud-amd64`), for a machine whose apt lists offer none.
pub fn newest_cached<'a>(names: impl IntoIterator<Item = &'a str>, series: &str) -> Option<String> {
    names
        .into_iter()
        .filter_map(|name| release_of(&format!("linux-image-{name}-unsigned"), series))
        .max_by_key(|(abi, _)| *abi)
        .map(|(_, release)| release)
}

fn say(message: &str) {
    eprintln!("vm-test: {message}");
}

/// The newest kernel of `series` unpacked under `kernels` already, if any.
fn cached_release(kernels: &Path, series: &str) -> Option<String> {
    let names: Vec<String> = fs::read_dir(kernels)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("vmlinuz").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    newest_cached(names.iter().map(String::as_str), series)
}

/// The kernel of `series` under `vm_dir`, downloading and unpacking it if needed.
pub fn ensure(vm_dir: &Path, series: &str) -> anyhow::Result<Kernel> {
    let kernels = vm_dir.join("kernel");
    let pattern = format!(
        "^linux-image-{}\\.0-[0-9]+-cloud-amd64-unsigned$",
        series.replace('.', "\\.")
    );
    let search = || -> anyhow::Result<Option<String>> {
        let found = process::query("apt-cache", &["search", "--names-only", &pattern])?
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default();
        Ok(newest_package(&found, series))
    };
    let mut package = search()?;
    if package.is_none() && cached_release(&kernels, series).is_none() {
        // A machine whose package lists were never fetched (or were cleaned, as
        // in container images): fetch them once and look again.
        say("apt-cache offers no cloud kernel: running apt-get update -q once");
        let updated = Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        if updated.is_ok_and(|s| s.success()) {
            package = search()?;
        }
    }
    let Some(package) = package else {
        // Offline or without the lists: a kernel unpacked earlier still boots.
        let release = cached_release(&kernels, series).ok_or_else(|| {
            anyhow!(
                "apt-cache offers no linux-image-{series}.0-*-cloud-amd64-unsigned and none is cached in {} \
                 (Debian 12 has the 6.1 kernels in bookworm and bookworm-security; run apt-get update)",
                kernels.display()
            )
        })?;
        say(&format!(
            "apt-cache offers no {series} cloud kernel; using the cached {release}"
        ));
        return Ok(kernel_at(&kernels, &release));
    };
    let (_, release) = release_of(&package, series)
        .ok_or_else(|| anyhow!("{package} is not a {series} cloud kernel package"))?;
    let kernel = kernel_at(&kernels, &release);
    if kernel.vmlinuz.is_file() {
        say(&format!(
            "kernel {release} already unpacked in {}",
            kernels.join(&release).display()
        ));
        return Ok(kernel);
    }
    let deb = download(&vm_dir.join("debs"), &package)?;
    unpack(&deb, &kernels, &release)?;
    Ok(kernel)
}

fn kernel_at(kernels: &Path, release: &str) -> Kernel {
    let dir = kernels.join(release);
    Kernel {
        release: release.to_owned(),
        vmlinuz: dir.join("vmlinuz"),
        modules: dir.join("modules"),
    }
}

/// The cached `.deb` of `package` in `debs`, fetched with `apt-get download` first
/// when absent (into a scratch directory, moved in once whole).
fn download(debs: &Path, package: &str) -> anyhow::Result<PathBuf> {
    if let Some(deb) = find_deb(debs, package)? {
        say(&format!("{} already downloaded", deb.display()));
        return Ok(deb);
    }
    let partial = debs.join("partial");
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut cmd = Command::new("apt-get");
    // As root, apt downloads as the user _apt, who may not write into target/.
    cmd.args(["download", "-q", "-o", "APT::Sandbox::User=root", package])
        .current_dir(&partial);
    let shown = display(&cmd);
    say(&format!("downloading {package} ({shown}) ..."));
    run_checked(&mut cmd).with_context(|| format!("{shown} failed"))?;
    let fetched = find_deb(&partial, package)?
        .ok_or_else(|| anyhow!("{shown} left no {package}_*.deb in {}", partial.display()))?;
    let name = fetched
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", fetched.display()))?;
    let deb = debs.join(name);
    fs::rename(&fetched, &deb)
        .with_context(|| format!("moving {} to {}", fetched.display(), deb.display()))?;
    fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    Ok(deb)
}

fn find_deb(dir: &Path, package: &str) -> anyhow::Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    Ok(entries.flatten().map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
    }))
}

/// `dpkg-deb -x` into a scratch directory, then keep only the kernel image, its
/// config and the [`MODULES`]; `vmlinuz` is written last, so its presence means
/// the rest is there.
fn unpack(deb: &Path, kernels: &Path, release: &str) -> anyhow::Result<()> {
    let scratch = kernels.join(format!(".unpack-{release}"));
    if scratch.exists() {
        fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    }
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("-x").arg(deb).arg(&scratch);
    let shown = display(&cmd);
    say(&format!("unpacking: {shown}"));
    run_checked(&mut cmd).with_context(|| format!("{shown} failed"))?;

    let dir = kernels.join(release);
    let modules = dir.join("modules");
    fs::create_dir_all(&modules).with_context(|| format!("creating {}", modules.display()))?;
    let copy = |from: &Path, to: &Path| {
        fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))
            .map(drop)
    };
    copy(
        &scratch.join(format!("boot/config-{release}")),
        &dir.join("config"),
    )?;
    let module_root = scratch.join("lib/modules").join(release);
    let builtin = fs::read_to_string(module_root.join("modules.builtin")).unwrap_or_default();
    let mut order = String::new();
    for module in MODULES {
        let from = module_root.join(module);
        let name = Path::new(module)
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{module} has no file name"))?;
        if from.is_file() {
            copy(&from, &modules.join(name))?;
            order.push_str(name);
            order.push('\n');
        } else if !builtin.lines().any(|l| l == module) {
            bail!("{release} has {module} neither as a module nor built in");
        }
    }
    fs::write(modules.join(MODULE_ORDER), order)
        .with_context(|| format!("writing {}", modules.join(MODULE_ORDER).display()))?;
    let staged = dir.join("vmlinuz.partial");
    copy(&scratch.join(format!("boot/vmlinuz-{release}")), &staged)?;
    fs::rename(&staged, dir.join("vmlinuz"))
        .with_context(|| format!("renaming {}", staged.display()))?;
    fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    say(&format!("kernel {release} unpacked in {}", dir.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEARCH: &str = "\
linux-image-6.1.0-47-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud
linux-image-6.1.0-50-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud
linux-image-6.1.0-57-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud
linux-image-6.1.0-9-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud
linux-image-6.1.0-57-cloud-amd64-dbg - Debug symbols for linux-image-6.1.0-57-cloud-amd64
linux-image-6.1.0-99-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.10.0-70-cloud-amd64-unsigned - not our series
";

    #[test]
    fn the_newest_cloud_image_is_picked_by_abi_number_not_by_text() {
        assert_eq!(
            newest_package(SEARCH, "6.1").as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64-unsigned")
        );
        assert_eq!(
            newest_package(SEARCH, "6.10").as_deref(),
            Some("linux-image-6.10.0-70-cloud-amd64-unsigned")
        );
        assert_eq!(newest_package(SEARCH, "5.10"), None);
        assert_eq!(newest_package("", "6.1"), None);
    }

    #[test]
    fn a_package_names_its_release() {
        assert_eq!(
            release_of("linux-image-6.1.0-57-cloud-amd64-unsigned", "6.1"),
            Some((57, "6.1.0-57-cloud-amd64".to_owned()))
        );
        assert_eq!(
            release_of("linux-image-6.1.0-57-cloud-amd64-dbg", "6.1"),
            None
        );
        assert_eq!(
            release_of("linux-image-6.1.0-x-cloud-amd64-unsigned", "6.1"),
            None
        );
        assert_eq!(
            release_of("linux-image-6.1.0--cloud-amd64-unsigned", "6.1"),
            None
        );
        assert_eq!(
            release_of("linux-image-6.12.0-1-cloud-amd64-unsigned", "6.1"),
            None
        );
    }

    #[test]
    fn the_newest_cached_kernel_is_found_by_directory_name() {
        let names = [
            "6.1.0-50-cloud-amd64",
            "6.1.0-57-cloud-amd64",
            ".unpack-6.1.0-60-cloud-amd64",
            "5.10.0-9-cloud-amd64",
        ];
        assert_eq!(
            newest_cached(names, "6.1").as_deref(),
            Some("6.1.0-57-cloud-amd64")
        );
        assert_eq!(newest_cached(names, "6.6"), None);
    }

    #[test]
    fn a_series_is_major_dot_minor() {
        assert!(check_series("6.1").is_ok());
        assert!(check_series("6.12").is_ok());
        for bad in ["6", "6.1.0", "6.x", "", ".1", "6."] {
            let err = check_series(bad).unwrap_err();
            assert_eq!(
                format!("{err:#}"),
                format!("--kernel takes a kernel series such as 6.1, not {bad:?}")
            );
        }
    }
}
