//! Tidy checks run as ordinary tests: file docs, no ignored tests, workspace lints, and the
//! architecture invariants simple enough to check by reading the source.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace root").to_path_buf()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable source dir") {
            let path = entry.expect("dir entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if path.is_dir() && !matches!(name, "target" | "node_modules" | "dist" | ".git") {
                pending.push(path);
            } else if name.ends_with(".rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn source(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The code of a file that ships: comments and the `#[cfg(test)]` module left out (tests may
/// read the clock to make up times; comments may name what the code avoids).
fn shipped_code(path: &Path) -> String {
    let text = source(path);
    let shipped = text.split("#[cfg(test)]").next().unwrap_or_default();
    shipped.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

#[test]
fn every_rust_file_opens_with_a_doc_line_saying_what_it_is_for() {
    let undocumented: Vec<_> =
        rust_files(&workspace_root()).into_iter().filter(|f| !source(f).trim_start().starts_with("//!")).collect();
    assert!(undocumented.is_empty(), "files without a leading //! line: {undocumented:?}");
}

#[test]
fn no_test_is_ignored() {
    let marker = concat!("#[", "ignore");
    let ignored: Vec<_> = rust_files(&workspace_root()).into_iter().filter(|f| source(f).contains(marker)).collect();
    assert!(ignored.is_empty(), "ignored tests hide failures: {ignored:?}");
}

#[test]
fn every_member_uses_the_workspace_lints() {
    for member in ["protocol", "server", "client", "load", "tests", "xtask"] {
        let manifest = source(&workspace_root().join(member).join("Cargo.toml"));
        assert!(manifest.contains("[lints]\nworkspace = true"), "{member}/Cargo.toml must opt into [workspace.lints]");
    }
}

/// Architecture invariant: `protocol` does no IO, so it builds for wasm32 and both ends share it.
#[test]
fn protocol_has_no_io_dependencies_or_imports() {
    let root = workspace_root();
    let manifest = source(&root.join("protocol").join("Cargo.toml"));
    for crate_name in ["tokio", "tungstenite", "quinn", "axum", "hyper", "web-sys"] {
        assert!(!manifest.contains(crate_name), "protocol must not depend on {crate_name}");
    }
    for file in rust_files(&root.join("protocol").join("src")) {
        let text = shipped_code(&file);
        for forbidden in ["std::net", "std::fs", "std::time::Instant", "SystemTime", "std::io::Read"] {
            assert!(!text.contains(forbidden), "{} uses {forbidden}: protocol has no IO and no clock", file.display());
        }
    }
}

/// Architecture invariant: the simulation and the sessions know nothing of sockets or the clock.
#[test]
fn sim_and_session_have_no_sockets_runtime_or_clock() {
    let root = workspace_root().join("server").join("src");
    for dir in ["sim", "session"] {
        for file in rust_files(&root.join(dir)) {
            let text = shipped_code(&file);
            for forbidden in ["tokio", "tungstenite", "axum", "hyper", "std::net", "Instant::now", "SystemTime"] {
                assert!(!text.contains(forbidden), "{} mentions {forbidden}", file.display());
            }
        }
    }
    for file in rust_files(&workspace_root().join("client").join("src").join("core")) {
        let text = shipped_code(&file);
        for forbidden in ["tokio", "tungstenite", "web_sys", "std::net", "Instant::now"] {
            assert!(!text.contains(forbidden), "client core file {} mentions {forbidden}", file.display());
        }
    }
}

/// Architecture invariant: a room's state is sans-IO, like the sessions: it is handed the time and
/// reads no clock, starts no timer, task or thread, waits on nothing and knows no socket. Its
/// task (`room/task.rs`) does all of that.
#[test]
fn the_room_state_reads_no_clock_waits_on_nothing_and_knows_no_socket() {
    let room = workspace_root().join("server").join("src").join("room");
    for file in ["state.rs", "board.rs", "interest/mod.rs", "interest/member.rs", "input_wait.rs", "delivery.rs"] {
        let path = room.join(file);
        let text = shipped_code(&path);
        for forbidden in [
            "Instant::now",
            "SystemTime",
            "tokio::time",
            "tokio::spawn",
            "std::thread",
            "async fn",
            ".await",
            "std::net",
            "tokio::net",
            "tungstenite",
            "hyper",
            "axum",
        ] {
            assert!(!text.contains(forbidden), "{} mentions {forbidden}", path.display());
        }
    }
}

/// Architecture invariant: the wire codec is configured in exactly one place.
#[test]
fn bincode_is_configured_only_in_the_codec_module() {
    let root = workspace_root();
    let users: Vec<_> = rust_files(&root)
        .into_iter()
        .filter(|f| !f.ends_with("tidy.rs") && source(f).contains("bincode::"))
        .map(|f| f.strip_prefix(&root).expect("inside the root").to_path_buf())
        .collect();
    assert_eq!(users, vec![PathBuf::from("protocol/src/codec.rs")]);
}
