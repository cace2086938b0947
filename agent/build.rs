//! Compiles the kernel programs (`agent-ebpf`) for the BPF target with the nightly
//! toolchain and bpf-linker, and leaves the object in OUT_DIR for `include_bytes_aligned!`.
//! `cargo xtask setup` installs what this needs.
//!
//! The agent does not depend on `connwatch-ebpf` as a crate (that would build
//! aya-ebpf for the host), so cargo learns when to run this again from the
//! rerun-if-changed lines: aya-build prints one for `agent-ebpf/`, this script one
//! for `common/`, whose records the programs compile in.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let root_of = |name: &str| -> anyhow::Result<String> {
        let package = metadata
            .packages
            .iter()
            .find(|p| p.name.as_str() == name)
            .ok_or_else(|| anyhow!("package {name} not found in the workspace"))?;
        let dir = package
            .manifest_path
            .parent()
            .ok_or_else(|| anyhow!("no parent for {}", package.manifest_path))?;
        Ok(dir.to_string())
    };
    println!("cargo:rerun-if-changed={}", root_of("connwatch-common")?);

    // aya-build honours AYA_BUILD_SKIP (for machines without the BPF toolchain, e.g.
    // to run the pure unit tests). Leave an empty object so the crate still compiles;
    // the probe loader refuses it at run time with a clear message.
    if std::env::var_os("AYA_BUILD_SKIP")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    {
        let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
        let object = out.join("connwatch");
        if !object.exists() {
            std::fs::write(&object, b"").context("writing the empty BPF object placeholder")?;
        }
    }
    let root_dir = root_of("connwatch-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "connwatch-ebpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("building the BPF programs failed (run `cargo xtask setup` to install nightly rust-src and bpf-linker)")
}
