//! `cargo xtask dist`: builds the browser client into `dist/`, ready to be embedded into the
//! server binary (its build script reads `dist/`) or served from a directory (`--assets-dir`).
//!
//! Every file but the pages (`*.html`) gets its content's hash in its name (`style.3f2a….css`), and every
//! reference to it is rewritten, so a browser may keep those files for a year and a new build
//! is never mixed with an old one: only `index.html` is revalidated. Text and wasm files are
//! stored compressed beside themselves (`.gz`, `.br`), once, here, at the highest levels,
//! instead of by the server on every request (decision 0041).
//!
//! `dist/` is updated, not rebuilt: a file whose bytes did not change keeps its modification
//! time, so cargo does not rebuild the server for a client that did not change.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::{Profile, cargo, ensure_wasm_target, step, target_dir};

/// The one file of `dist/` that is tracked by git: it says what the directory is for, and its
/// presence lets the server's build script watch a directory that always exists.
const KEPT: &str = "README.md";

/// Pages (`index.html`, the host's `admin.html`) keep their names: they are where a browser
/// starts, and are revalidated on every load.
fn is_page(name: &str) -> bool {
    name.ends_with(".html")
}

/// Files smaller than this are sent as they are: compressing saves less than its headers.
const COMPRESS_FROM_BYTES: usize = 512;

pub fn dist(root: &Path, profile: Profile) -> Result<()> {
    ensure_wasm_target()?;
    let cargo_profile = match profile {
        Profile::Dev => "dev",
        Profile::Release => "wasm-release",
    };
    step(&format!("building the browser client ({cargo_profile})"));
    let status = cargo()
        .args([
            "build",
            "--package",
            "easel-client",
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            cargo_profile,
        ])
        .status()?;
    if !status.success() {
        bail!("building the wasm client failed");
    }
    let profile_dir = if profile == Profile::Dev { "debug" } else { cargo_profile };
    let wasm = target_dir(root).join("wasm32-unknown-unknown").join(profile_dir).join("easel_client.wasm");
    let staging = target_dir(root).join("easel-dist-staging");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).with_context(|| format!("clearing {}", staging.display()))?;
    }
    std::fs::create_dir_all(&staging)?;
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&wasm)
        .web(true)?
        .typescript(false)
        .omit_default_module_path(false)
        .generate(&staging)
        .context("generating the JavaScript glue")?;
    let mut files = BTreeMap::new();
    for directory in [staging.as_path(), &root.join("assets")] {
        for entry in std::fs::read_dir(directory)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                let name = entry.file_name().into_string().map_err(|n| anyhow::anyhow!("file name {n:?}"))?;
                files.insert(name, std::fs::read(entry.path())?);
            }
        }
    }
    let files = fingerprint(files)?;
    let out = root.join("dist");
    update(&out, &files)?;
    println!("client built into {}", out.display());
    Ok(())
}

/// Renames every file but the pages to `stem.HASH.ext`, where HASH is the first 16 hex digits of
/// the SHA-256 of its content after its own references were rewritten: a file is named only
/// once everything it names has its final name.
fn fingerprint(mut pending: BTreeMap<String, Vec<u8>>) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut done = BTreeMap::new();
    let mut renamed: Vec<(String, String)> = Vec::new();
    while !pending.is_empty() {
        // A file is ready once nothing it names is still to be renamed; pages keep their names,
        // so naming one holds nothing up, and they go last.
        let waits = |name: &str, content: &[u8]| {
            is_text(name) && pending.keys().any(|other| other != name && !is_page(other) && mentions(content, other))
        };
        let ready = pending
            .iter()
            .find(|(name, content)| !is_page(name) && !waits(name, content))
            .or_else(|| pending.iter().find(|(name, _)| is_page(name)).filter(|_| pending.keys().all(|n| is_page(n))))
            .map(|(name, _)| name.clone());
        let Some(name) = ready else {
            bail!("the client's files name each other in a cycle: {:?}", pending.keys().collect::<Vec<_>>());
        };
        let content = pending.remove(&name).unwrap_or_default();
        let content = if is_text(&name) { rewrite(content, &renamed)? } else { content };
        let final_name = if is_page(&name) { name.clone() } else { hashed_name(&name, &content) };
        renamed.push((name, final_name.clone()));
        // Longest first, so a name that contains another is replaced whole.
        renamed.sort_by_key(|(old, _)| std::cmp::Reverse(old.len()));
        done.insert(final_name, content);
    }
    Ok(done)
}

fn is_text(name: &str) -> bool {
    [".html", ".js", ".mjs", ".css", ".svg", ".json"].iter().any(|ext| name.ends_with(ext))
}

fn mentions(content: &[u8], name: &str) -> bool {
    content.windows(name.len()).any(|window| window == name.as_bytes())
}

fn rewrite(content: Vec<u8>, renamed: &[(String, String)]) -> Result<Vec<u8>> {
    let mut text = String::from_utf8(content).context("a text file of the client is not UTF-8")?;
    for (old, new) in renamed {
        text = text.replace(old.as_str(), new);
    }
    Ok(text.into_bytes())
}

fn hashed_name(name: &str, content: &[u8]) -> String {
    let digest = Sha256::digest(content);
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
        None => format!("{name}.{hash}"),
    }
}

/// Makes `out` hold exactly `files` plus their compressed forms (and `KEPT`), writing only what
/// changed.
fn update(out: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let mut wanted = vec![KEPT.to_owned()];
    for (name, content) in files {
        let unchanged = !write_if_changed(&out.join(name), content)?;
        wanted.push(name.clone());
        if content.len() < COMPRESS_FROM_BYTES || !(is_text(name) || name.ends_with(".wasm")) {
            continue;
        }
        for (suffix, compress) in [("gz", gzip as fn(&[u8]) -> Result<Vec<u8>>), ("br", brotli)] {
            let path = out.join(format!("{name}.{suffix}"));
            // The same bytes compress to the same bytes: skip the slow part when nothing changed.
            if !(unchanged && path.exists()) {
                let compressed = compress(content)?;
                if compressed.len() >= content.len() {
                    continue;
                }
                write_if_changed(&path, &compressed)?;
            }
            wanted.push(format!("{name}.{suffix}"));
        }
    }
    for entry in std::fs::read_dir(out)? {
        let entry = entry?;
        if !wanted.iter().any(|name| entry.file_name() == name.as_str()) {
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

/// Writes `content` unless `path` holds it already; returns whether it wrote.
fn write_if_changed(path: &Path, content: &[u8]) -> Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

fn gzip(content: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(content)?;
    Ok(encoder.finish()?)
}

fn brotli(content: &[u8]) -> Result<Vec<u8>> {
    let mut compressed = Vec::new();
    let params = brotli::enc::BrotliEncoderParams { quality: 11, lgwin: 22, ..Default::default() };
    brotli::BrotliCompress(&mut &content[..], &mut compressed, &params)?;
    Ok(compressed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        list.iter().map(|(name, content)| ((*name).to_owned(), content.as_bytes().to_vec())).collect()
    }

    #[test]
    fn references_follow_the_files_they_name_to_their_hashed_names() {
        let out = fingerprint(files(&[
            ("index.html", "<script src=\"boot.js\"></script><link href=\"style.css\">"),
            ("boot.js", "import init from './easel_client.js';"),
            ("easel_client.js", "new URL('easel_client_bg.wasm', import.meta.url) // run from index.html"),
            ("easel_client_bg.wasm", "\0asm"),
            ("style.css", "body {}"),
        ]))
        .unwrap();
        let name_of = |stem: &str| out.keys().find(|n| n.starts_with(stem)).unwrap().clone();
        let (boot, glue, wasm, css) =
            (name_of("boot."), name_of("easel_client."), name_of("easel_client_bg."), name_of("style."));
        assert!(wasm.len() == "easel_client_bg..wasm".len() + 16, "{wasm}");
        let text = |name: &str| String::from_utf8(out[name].clone()).unwrap();
        assert_eq!(text(&glue), format!("new URL('{wasm}', import.meta.url) // run from index.html"));
        assert_eq!(text(&boot), format!("import init from './{glue}';"));
        assert_eq!(text("index.html"), format!("<script src=\"{boot}\"></script><link href=\"{css}\">"));
    }

    #[test]
    fn a_changed_file_changes_the_names_of_everything_that_leads_to_it() {
        let build = |wasm: &str| {
            fingerprint(files(&[("index.html", "glue.js"), ("glue.js", "m.wasm"), ("m.wasm", wasm)])).unwrap()
        };
        let (before, after) = (build("one"), build("two"));
        let glue = |out: &BTreeMap<String, Vec<u8>>| out.keys().find(|n| n.starts_with("glue.")).unwrap().clone();
        assert_ne!(glue(&before), glue(&after));
        assert_ne!(before["index.html"], after["index.html"]);
    }

    #[test]
    fn every_page_keeps_its_name_and_names_the_hashed_files() {
        let out = fingerprint(files(&[
            ("index.html", "boot.js style.css"),
            ("admin.html", "admin.js style.css"),
            ("admin.js", "fetch('/admin/api/status')"),
            ("boot.js", "x"),
            ("style.css", "y"),
        ]))
        .unwrap();
        let admin = String::from_utf8(out["admin.html"].clone()).unwrap();
        assert!(admin.starts_with("admin.") && admin.contains(".js style."), "{admin}");
        assert!(out.contains_key("index.html"));
    }

    #[test]
    fn files_that_name_each_other_are_refused() {
        assert!(fingerprint(files(&[("a.js", "b.js"), ("b.js", "a.js")])).is_err());
    }

    #[test]
    fn the_compressed_forms_hold_the_same_bytes() {
        let content = "let x = 1;\n".repeat(200);
        let mut unzipped = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&gzip(content.as_bytes()).unwrap()[..]),
            &mut unzipped,
        )
        .unwrap();
        assert_eq!(unzipped, content);
        let mut unbrotlied = Vec::new();
        brotli::BrotliDecompress(&mut &brotli(content.as_bytes()).unwrap()[..], &mut unbrotlied).unwrap();
        assert_eq!(unbrotlied, content.as_bytes());
    }
}
