//! Embeds the built browser client (`dist/` at the workspace root, written by `cargo xtask dist`)
//! into the server, so one file serves the game (`net::pages`). A release build refuses to build
//! without it; a debug build (tests on a fresh clone) builds without a client and says so when a
//! page is asked for.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dist = manifest_dir.join("..").join("dist");
    // dist/README.md is tracked, so the directory always exists: a missing one would make cargo
    // run this script, and rebuild the server, on every build.
    println!("cargo::rerun-if-changed={}", dist.display());
    let files = if dist.join("index.html").is_file() { client_files(&dist) } else { Vec::new() };
    let release = std::env::var("PROFILE").is_ok_and(|profile| profile == "release");
    if files.is_empty() && release {
        eprintln!(
            "error: the browser client is not built, and a release server embeds it.\n\
             Build it first with `cargo xtask dist` (or build and run everything with `cargo xtask run`)."
        );
        std::process::exit(1);
    }
    let mut code = String::from("&[\n");
    for name in files {
        let path = |suffix: &str| dist.join(format!("{name}{suffix}"));
        let variant = |suffix: &str| {
            let file = path(suffix);
            if file.is_file() {
                format!("Some(include_bytes!({:?}))", file.display().to_string())
            } else {
                "None".into()
            }
        };
        let _ = writeln!(
            code,
            "    EmbeddedFile {{ name: {name:?}, identity: include_bytes!({:?}), gzip: {}, brotli: {} }},",
            path("").display().to_string(),
            variant(".gz"),
            variant(".br"),
        );
    }
    code.push(']');
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("embedded_client.rs");
    if let Err(e) = std::fs::write(&out, code) {
        eprintln!("error: cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
}

/// The client's files in `dist`: everything but the compressed forms (which go with their file)
/// and the directory's README.
fn client_files(dist: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dist) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !name.ends_with(".gz") && !name.ends_with(".br") && name != "README.md")
        .collect();
    names.sort();
    names
}
