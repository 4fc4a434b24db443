//! The browser client's files over real HTTP: cache rules, stored compressed forms, `ETag`
//! revalidation, the page's security headers, and requests that try to leave the client's
//! directory or overflow the request head.

use std::net::SocketAddr;
use std::path::PathBuf;

use easel::Config;
use easel::config::Pages;
use easel_tests::{TestServer, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HASHED_CSS: &str = "style.0123456789abcdef.css";

/// A built client in a temporary directory: a page, a hashed stylesheet with "stored" gzip and
/// brotli forms (marker bytes: the server sends what is stored, it does not compress), and a
/// secret beside the directory that no request may reach.
fn client_directory(test: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("easel-pages-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("dist");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>Easel</title>").unwrap();
    std::fs::write(dir.join(HASHED_CSS), "body { margin: 0 }").unwrap();
    std::fs::write(dir.join(format!("{HASHED_CSS}.gz")), "GZIP FORM").unwrap();
    std::fs::write(dir.join(format!("{HASHED_CSS}.br")), "BROTLI FORM").unwrap();
    std::fs::write(root.join("secret.txt"), "SECRET").unwrap();
    dir
}

async fn serve_directory(test: &str) -> TestServer {
    TestServer::start_with(Config { pages: Pages::Directory(client_directory(test)), ..Config::for_tests() }).await
}

/// A response: status code, header lines (lower-cased names), body bytes.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `GET target` with `extra` header lines on a new connection and reads the whole response.
async fn get(addr: SocketAddr, target: &str, extra: &[&str]) -> Response {
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    exchange(addr, request.as_bytes()).await
}

async fn exchange(addr: SocketAddr, request: &[u8]) -> Response {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it read everything (an oversize head).
    let _ = stream.write_all(request).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut raw)).await.expect("a response in time");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("a status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response { status, headers, body: raw[split + 4..].to_vec() }
}

#[tokio::test]
async fn the_page_is_revalidated_and_carries_its_security_headers() {
    let server = serve_directory("page").await;
    let page = get(server.addr, "/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    let policy = page.header("content-security-policy").expect("a Content-Security-Policy");
    assert!(policy.contains("script-src 'self' 'wasm-unsafe-eval'"), "{policy}");
    assert!(policy.contains(&format!("ws://{0} wss://{0}", server.addr)), "the WebSocket is allowed: {policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    let tag = page.header("etag").expect("an ETag").to_owned();
    let again = get(server.addr, "/index.html", &[&format!("If-None-Match: {tag}")]).await;
    assert_eq!(again.status, 304, "an unchanged page is not sent again");
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(tag.as_str()));
    server.stop().await;
}

#[tokio::test]
async fn hashed_files_are_kept_a_year_in_the_form_the_browser_accepts() {
    let server = serve_directory("forms").await;
    let target = format!("/{HASHED_CSS}");
    let brotli = get(server.addr, &target, &["Accept-Encoding: gzip, deflate, br"]).await;
    assert_eq!(brotli.status, 200);
    assert_eq!(brotli.body, b"BROTLI FORM");
    assert_eq!(brotli.header("content-encoding"), Some("br"));
    assert_eq!(brotli.header("cache-control"), Some("public, max-age=31536000, immutable"));
    assert_eq!(brotli.header("vary"), Some("accept-encoding"));
    assert_eq!(brotli.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(brotli.header("content-security-policy").is_none(), "only the page has a policy");
    let gzip = get(server.addr, &target, &["Accept-Encoding: gzip"]).await;
    assert_eq!((gzip.body.as_slice(), gzip.header("content-encoding")), (&b"GZIP FORM"[..], Some("gzip")));
    let identity = get(server.addr, &target, &[]).await;
    assert_eq!((identity.body.as_slice(), identity.header("content-encoding")), (&b"body { margin: 0 }"[..], None));
    let tags = [&brotli, &gzip, &identity].map(|r| r.header("etag").expect("an ETag").to_owned());
    assert!(tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2], "each form has its own tag: {tags:?}");
    server.stop().await;
}

#[tokio::test]
async fn no_path_leaves_the_client_directory() {
    let server = serve_directory("escape").await;
    for target in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/..%2fsecret.txt",
        "/dist/../../secret.txt",
        "//secret.txt",
        "/%2f..%2fsecret.txt",
        "/index.html%00",
        "/index.html%00.css",
        "/..%5csecret.txt",
    ] {
        let response = get(server.addr, target, &[]).await;
        assert!(matches!(response.status, 400 | 404), "{target}: {}", response.status);
        assert!(!String::from_utf8_lossy(&response.body).contains("SECRET"), "{target} reached the secret");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_oversize_request_head_is_refused_and_a_body_is_never_read() {
    let server = serve_directory("limits").await;
    let huge_header = format!("X-Padding: {}", "a".repeat(64 * 1024));
    let refused = get(server.addr, "/", &[&huge_header]).await;
    assert_eq!(refused.status, 431, "a 64 KiB head is refused");
    let many_headers: Vec<String> = (0..200).map(|i| format!("X-H{i}: 1")).collect();
    let many: Vec<&str> = many_headers.iter().map(String::as_str).collect();
    assert_eq!(get(server.addr, "/", &many).await.status, 431, "200 header lines are refused");
    let body = format!(
        "POST /index.html HTTP/1.1\r\nHost: {}\r\nContent-Length: 104857600\r\nConnection: close\r\n\r\n{}",
        server.addr,
        "x".repeat(1024)
    );
    let response = exchange(server.addr, body.as_bytes()).await;
    assert_eq!(response.status, 405, "files are only read: a 100 MB upload is answered at once");
    // The server still serves others.
    assert_eq!(get(server.addr, "/", &[]).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn the_built_in_client_is_served_or_its_absence_explained() {
    let server = TestServer::start().await;
    let page = get(server.addr, "/", &["Accept-Encoding: gzip, br"]).await;
    if easel::net::embedded_client() {
        // This build embedded `dist/` (after `cargo xtask dist`).
        assert_eq!(page.status, 200);
        assert!(page.header("content-security-policy").is_some());
    } else {
        assert_eq!(page.status, 404);
        let text = String::from_utf8_lossy(&page.body);
        assert!(text.contains("cargo xtask dist"), "the page says how to build the client: {text}");
    }
    assert_eq!(get(server.addr, "/../Cargo.toml", &[]).await.status, 404);
    server.stop().await;
}
