//! The browser client's files: built into the binary (the build script embeds `dist/`) or read
//! from a directory (`--assets-dir`), each served with its type, an `ETag`, the cache rule its
//! name allows (names holding their content's hash are kept a year; the page is revalidated),
//! the precompressed form the browser accepts (`cargo xtask dist` stores gzip and brotli
//! forms), and, on the page, a Content-Security-Policy.

use std::path::{Component, Path};
use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::config::Pages;

/// One file of the client as the build script embedded it.
struct EmbeddedFile {
    name: &'static str,
    identity: &'static [u8],
    gzip: Option<&'static [u8]>,
    brotli: Option<&'static [u8]>,
}

/// The client built into this binary; empty in a debug build made before `cargo xtask dist`.
static EMBEDDED: &[EmbeddedFile] = include!(concat!(env!("OUT_DIR"), "/embedded_client.rs"));

/// The embedded files as served, their tags computed once.
static EMBEDDED_FILES: LazyLock<Vec<File>> = LazyLock::new(|| {
    EMBEDDED
        .iter()
        .map(|file| File {
            name: file.name.to_owned(),
            tag: content_tag(file.identity),
            identity: Bytes::from_static(file.identity),
            gzip: file.gzip.map(Bytes::from_static),
            brotli: file.brotli.map(Bytes::from_static),
        })
        .collect()
});

/// The page every other file is reached from.
pub(super) const PAGE: &str = "index.html";

/// What a browser may keep without asking again: a file whose name holds its content's hash
/// never changes under that name.
const KEPT_A_YEAR: &str = "public, max-age=31536000, immutable";
/// What it must revalidate (cheap: the `ETag` answers 304 when nothing changed).
const REVALIDATED: &str = "no-cache";

/// One file and its stored forms.
struct File {
    name: String,
    /// The `ETag` of the identity form (quoted); compressed forms add a suffix.
    tag: String,
    identity: Bytes,
    gzip: Option<Bytes>,
    brotli: Option<Bytes>,
}

/// A content coding the server has a stored form for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Brotli,
}

/// Whether this build carries a client (for the start-up log).
pub fn embedded_client() -> bool {
    !EMBEDDED.is_empty()
}

/// The response for the client file `name`: the file, 304 when the browser's copy is current,
/// or 404. A page gets its Content-Security-Policy, which names where it may connect.
/// Where a page may connect, besides its own server's pages.
pub(super) struct Connect {
    /// WebTransport's UDP port, when it is on.
    pub webtransport_port: Option<u16>,
    /// In a cluster, the public URLs of its nodes: a redirect may send the page to any.
    pub peers: Vec<String>,
}

pub(super) async fn serve(pages: &Pages, name: &str, request: &HeaderMap, connect: &Connect) -> Response {
    let read;
    let file = match pages {
        Pages::Embedded if EMBEDDED.is_empty() => {
            return (
                StatusCode::NOT_FOUND,
                "This server was built without its browser client: run `cargo xtask dist`, then build \
                 the server again (or serve a built client with --assets-dir).\n",
            )
                .into_response();
        }
        Pages::Embedded => EMBEDDED_FILES.iter().find(|file| file.name == name),
        Pages::Directory(dir) => {
            read = read_from(dir, name).await;
            read.as_ref()
        }
    };
    match file {
        Some(file) => respond(file, request, connect),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// Reads `name` and its stored compressed forms from `dir`, refusing any name that could leave it.
async fn read_from(dir: &Path, name: &str) -> Option<File> {
    let relative = Path::new(name);
    if name.contains('\0') || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let path = dir.join(relative);
    let identity = Bytes::from(tokio::fs::read(&path).await.ok()?);
    let variant = |suffix: &str| {
        let mut variant = path.clone().into_os_string();
        variant.push(suffix);
        async move { tokio::fs::read(variant).await.ok().map(Bytes::from) }
    };
    Some(File {
        name: name.to_owned(),
        tag: content_tag(&identity),
        gzip: variant(".gz").await,
        brotli: variant(".br").await,
        identity,
    })
}

fn respond(file: &File, request: &HeaderMap, connect: &Connect) -> Response {
    let accepted = request.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("");
    let encoding = negotiate(accepted, file.gzip.is_some(), file.brotli.is_some());
    let (body, tag) = match encoding {
        Encoding::Identity => (&file.identity, file.tag.clone()),
        Encoding::Gzip => (file.gzip.as_ref().unwrap_or(&file.identity), with_suffix(&file.tag, "gzip")),
        Encoding::Brotli => (file.brotli.as_ref().unwrap_or(&file.identity), with_suffix(&file.tag, "br")),
    };
    let mut headers = HeaderMap::new();
    let cache = if holds_its_hash(&file.name) { KEPT_A_YEAR } else { REVALIDATED };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(value) = HeaderValue::from_str(&tag) {
        headers.insert(header::ETAG, value);
    }
    if file.gzip.is_some() || file.brotli.is_some() {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    let not_modified = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|wanted| wanted.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == tag));
    if not_modified {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let content_type = content_type(&file.name);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    match encoding {
        Encoding::Identity => {}
        Encoding::Gzip => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Encoding::Brotli => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        }
    }
    if content_type.starts_with("text/html") {
        let host = request.get(header::HOST).and_then(|h| h.to_str().ok());
        if let Ok(policy) = HeaderValue::from_str(&page_policy(host, connect)) {
            headers.insert(header::CONTENT_SECURITY_POLICY, policy);
        }
    }
    (headers, body.clone()).into_response()
}

/// The stored form to send for an `Accept-Encoding` header: the accepted one with the highest
/// weight (brotli before gzip when equal: it is smaller), else the file as it is.
fn negotiate(accepted: &str, has_gzip: bool, has_brotli: bool) -> Encoding {
    let weight = |coding: &str| {
        let mut star = None;
        for item in accepted.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if name.eq_ignore_ascii_case(coding) {
                return q;
            }
            if name == "*" {
                star = Some(q);
            }
        }
        star.unwrap_or(0.0)
    };
    let brotli = if has_brotli { weight("br") } else { 0.0 };
    let gzip = if has_gzip { weight("gzip") } else { 0.0 };
    if brotli > 0.0 && brotli >= gzip {
        Encoding::Brotli
    } else if gzip > 0.0 {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

/// `"tag"` → `"tag-suffix"`: each stored form is its own representation, with its own tag.
fn with_suffix(tag: &str, suffix: &str) -> String {
    format!("{}-{suffix}\"", tag.trim_end_matches('"'))
}

/// Whether `name` is `stem.HASH.ext` with HASH 16 hex digits, as `cargo xtask dist` names every
/// file but the page.
fn holds_its_hash(name: &str) -> bool {
    let mut parts = name.rsplit('.');
    let (_ext, hash, stem) = (parts.next(), parts.next(), parts.next());
    stem.is_some() && hash.is_some_and(|h| h.len() == 16 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// A strong `ETag` for `content`: FNV-1a, 64 bits (a cache key, not a defence: anyone may
/// read the files).
fn content_tag(content: &[u8]) -> String {
    let hash = content
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("\"{hash:016x}\"")
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        // Required by WebAssembly.instantiateStreaming.
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// The page's Content-Security-Policy: only its own scripts (and compiling its wasm), its own
/// styles and images, and connections to this server: the page itself, the WebSocket on `host`
/// (the request's `Host`, as the browser reached the server) and WebTransport on
/// the WebTransport port, and in a cluster every node (its page, WebSocket and WebTransport,
/// the same port numbers). No frames, no plugins, no base or form elsewhere.
fn page_policy(host: Option<&str>, allowed: &Connect) -> String {
    let mut connect = String::from("'self'");
    // The Host header is the client's word: only a plain host[:port] goes into the header.
    if let Some(host) = host.filter(|h| super::origin::plain_host(h)) {
        connect.push_str(&format!(" ws://{host} wss://{host}"));
        if let Some(port) = allowed.webtransport_port {
            connect.push_str(&format!(" https://{}:{port}", super::origin::without_port(host)));
        }
    }
    let mut sources = Vec::new();
    for peer in &allowed.peers {
        for source in cluster_sources(peer) {
            if !sources.contains(&source) {
                sources.push(source);
            }
        }
    }
    for source in sources {
        connect.push(' ');
        connect.push_str(&source);
    }
    format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data: blob:; connect-src {connect}; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    )
}

/// Where a page may connect for a cluster node at `peer` (`http(s)://host[:port]`): the node's
/// page, WebSocket and WebTransport on any port of its host, and, for a host that is a
/// subdomain (`node-3.example.com`), on every sibling (`*.example.com`). A page lives longer than
/// the list of nodes it was served with: nodes started later on the same host or under the
/// same domain (an autoscaled fleet) are reachable too.
fn cluster_sources(peer: &str) -> Vec<String> {
    let Some((scheme, authority)) = peer.split_once("://") else { return Vec::new() };
    if !super::origin::plain_host(authority) || !matches!(scheme, "http" | "https") {
        return Vec::new();
    }
    let host = super::origin::without_port(authority);
    let mut hosts = vec![host.to_owned()];
    let is_name = host.chars().any(|c| c.is_ascii_alphabetic()) && !host.starts_with('[');
    if is_name
        && host.matches('.').count() >= 2
        && let Some((_, parent)) = host.split_once('.')
    {
        hosts.push(format!("*.{parent}"));
    }
    let websocket = if scheme == "https" { "wss" } else { "ws" };
    hosts
        .iter()
        .flat_map(|host| {
            let mut sources = vec![format!("{scheme}://{host}:*"), format!("{websocket}://{host}:*")];
            if scheme == "http" {
                // WebTransport is always https://, on the node's UDP port.
                sources.push(format!("https://{host}:*"));
            }
            sources
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browser_gets_the_smallest_form_it_accepts() {
        assert_eq!(negotiate("gzip, deflate, br, zstd", true, true), Encoding::Brotli);
        assert_eq!(negotiate("gzip, deflate", true, true), Encoding::Gzip);
        assert_eq!(negotiate("gzip, br", true, false), Encoding::Gzip, "no brotli form stored");
        assert_eq!(negotiate("br;q=0, gzip;q=0.5", true, true), Encoding::Gzip, "q=0 refuses");
        assert_eq!(negotiate("gzip;q=1, br;q=0.2", true, true), Encoding::Gzip, "the higher weight wins");
        assert_eq!(negotiate("*", true, true), Encoding::Brotli);
        assert_eq!(negotiate("", true, true), Encoding::Identity);
        assert_eq!(negotiate("identity", true, true), Encoding::Identity);
    }

    #[test]
    fn only_names_holding_a_hash_are_kept_a_year() {
        assert!(holds_its_hash("style.0123456789abcdef.css"));
        assert!(holds_its_hash("easel_client_bg.0123456789abcdef.wasm"));
        assert!(!holds_its_hash("index.html"));
        assert!(!holds_its_hash("style.css"));
        assert!(!holds_its_hash("0123456789abcdef.css"), "a hash needs a name before it");
        assert!(!holds_its_hash("style.0123456789ABCDEF.css"));
        assert!(!holds_its_hash("style.0123456789abcde.css"));
    }

    #[test]
    fn compressed_forms_have_tags_of_their_own() {
        let tag = content_tag(b"body {}");
        assert_ne!(tag, content_tag(b"body { }"));
        assert_eq!(with_suffix(&tag, "br"), format!("{}-br\"", &tag[..tag.len() - 1]));
    }

    #[test]
    fn a_clusters_page_may_connect_to_every_node() {
        let peers = vec!["https://node-1.example.com".to_owned(), "http://10.0.0.2:8080".to_owned()];
        let policy = page_policy(Some("node-1.example.com"), &Connect { webtransport_port: None, peers });
        assert!(policy.contains(" https://node-1.example.com:* wss://node-1.example.com:* "), "{policy}");
        assert!(policy.contains(" https://*.example.com:* wss://*.example.com:* "), "siblings: {policy}");
        assert!(policy.contains(" http://10.0.0.2:* ws://10.0.0.2:* https://10.0.0.2:*;"), "{policy}");
        assert!(!policy.contains("*.0.2"), "no sibling pattern for an address: {policy}");
        assert!(cluster_sources("https://example.com").iter().all(|s| !s.contains("*.")), "no sibling of a domain");
        assert!(cluster_sources("javascript://x").is_empty());
    }

    #[test]
    fn the_page_may_connect_only_to_this_server() {
        let policy =
            page_policy(Some("play.example.com:8080"), &Connect { webtransport_port: Some(8080), peers: Vec::new() });
        assert!(policy.contains("connect-src 'self' ws://play.example.com:8080 wss://play.example.com:8080 https://play.example.com:8080;"), "{policy}");
        assert!(policy.contains("script-src 'self' 'wasm-unsafe-eval';"), "{policy}");
        let forged =
            page_policy(Some("evil.com; script-src *"), &Connect { webtransport_port: Some(8080), peers: Vec::new() });
        assert!(forged.contains("connect-src 'self';") && !forged.contains("evil"), "{forged}");
        assert!(
            page_policy(Some("[::1]:8080"), &Connect { webtransport_port: None, peers: Vec::new() })
                .contains("ws://[::1]:8080 wss://[::1]:8080;")
        );
    }

    #[test]
    fn wasm_is_served_with_its_streaming_type() {
        assert_eq!(content_type("easel_client_bg.0123456789abcdef.wasm"), "application/wasm");
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
    }
}
