//! Compiles the kernel programs (`agent-ebpf`) for the BPF target with the nightly
//! toolchain and bpf-linker, and leaves the object in OUT_DIR for `include_bytes_aligned!`.
//! `cargo xtask setup` installs what this needs.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
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
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "connwatch-ebpf")
        .ok_or_else(|| anyhow!("package connwatch-ebpf not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("building the BPF programs failed (run `cargo xtask setup` to install nightly rust-src and bpf-linker)")
}
