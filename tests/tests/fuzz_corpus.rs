//! Replays every input the fuzzers kept (`fuzz/corpus/TARGET/`) and every crasher they found
//! (`fuzz/artifacts/TARGET/`) through the fuzz targets' bodies, on stable: a bug a fuzzer found
//! stays fixed, and the corpus stays valid input for the targets.

use std::path::{Path, PathBuf};

use easel_tests::fuzz::TARGETS;

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_kept_input_and_crasher_runs_through_its_target_without_a_panic() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace root").join("fuzz");
    for (name, target) in TARGETS {
        let corpus = inputs(&fuzz.join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty: run `cargo xtask fuzz` and commit its corpus");
        for file in corpus.iter().chain(&inputs(&fuzz.join("artifacts").join(name))) {
            let data = std::fs::read(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{} panics in target {name}", file.display());
        }
    }
}
