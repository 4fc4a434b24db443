//! HTTPS and `wss://` on the TCP port with the host's certificate (here `easel cert dev`'s):
//! players play over TLS (the room's snapshot hand-over writes into the TLS session), pages get
//! HTTP/2 and HSTS, a certificate replaced on disk is presented to new connections while open
//! ones play on, WebTransport presents the same certificate, and `--redirect-http` sends plain
//! HTTP to HTTPS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use easel::Config;
use easel::config::{CertificateSource, Quic, TlsFiles};
use easel_client::headless::{HeadlessClient, Transport, TransportChoice, Trust};
use easel_tests::{TestServer, WAIT, still_playing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn certificate_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("easel-tls-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn dev_certificate(dir: &Path) -> TlsFiles {
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from);
    easel::net::tls::write_dev_certificate(dir, &names).expect("easel cert dev")
}

fn trusting(files: &TlsFiles) -> Trust {
    Trust::only_from_pem_file(&files.cert).expect("the certificate reads")
}

async fn start_tls(files: &TlsFiles) -> TestServer {
    TestServer::start_with(Config { tls: Some(files.clone()), ..Config::for_tests() }).await
}

async fn websocket(server: &TestServer, trust: &Trust) -> Transport {
    Transport::choose(&format!("https://{}", server.addr), TransportChoice::WebSocket, trust)
        .await
        .expect("a WebSocket transport")
}

async fn join(transport: &Transport, name: &str) -> HeadlessClient {
    HeadlessClient::join_over(transport, name, "tls", WAIT).await.unwrap_or_else(|e| panic!("{name} joins: {e}"))
}

#[tokio::test]
async fn players_who_trust_the_certificate_play_over_wss_and_others_cannot_connect() {
    let files = dev_certificate(&certificate_dir("play"));
    let server = start_tls(&files).await;
    let transport = websocket(&server, &trusting(&files)).await;
    assert!(matches!(&transport, Transport::WebSocket { url, .. } if url.starts_with("wss://")), "{transport:?}");
    let (ada, bob) = (join(&transport, "ada").await, join(&transport, "bob").await);
    // Snapshots reach both through the TLS session, by the hand-over and by the connection.
    still_playing(&ada).await;
    still_playing(&bob).await;
    let bob_id = bob.core().view().me().expect("bob has an id");
    ada.wait_for(WAIT, "bob in ada's view", |core| core.view().players().contains_key(&bob_id).then_some(()))
        .await
        .expect("each sees the other");
    let stranger = websocket(&server, &Trust::Only(vec![b"some other certificate".to_vec()])).await;
    assert!(
        HeadlessClient::join_over(&stranger, "eve", "tls", WAIT).await.is_err(),
        "an untrusted certificate is refused"
    );
    ada.close().await;
    bob.close().await;
    server.stop().await;
}

/// Opens TLS to `server` offering `alpn`, and returns the protocol it chose and the stream.
async fn tls_connect(
    server: &TestServer,
    files: &TlsFiles,
    alpn: &[&[u8]],
) -> Result<(Option<Vec<u8>>, tokio_rustls::client::TlsStream<tokio::net::TcpStream>), std::io::Error> {
    let certificate = std::fs::read(&files.cert).expect("cert");
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(&certificate).expect("a PEM certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).expect("a root");
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(server.addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a name");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    Ok((stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec), stream))
}

#[tokio::test]
async fn pages_are_offered_http2_and_every_response_says_https_only() {
    let files = dev_certificate(&certificate_dir("pages"));
    let server = start_tls(&files).await;
    let (protocol, _) = tls_connect(&server, &files, &[b"h2", b"http/1.1"]).await.expect("TLS with h2 offered");
    assert_eq!(protocol.as_deref(), Some(&b"h2"[..]), "a browser gets HTTP/2 for the page");
    let (protocol, mut stream) = tls_connect(&server, &files, &[b"http/1.1"]).await.expect("TLS with HTTP/1.1");
    assert_eq!(protocol.as_deref(), Some(&b"http/1.1"[..]));
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.expect("request");
    let mut response = String::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_string(&mut response)).await.expect("a response in time");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.to_ascii_lowercase().contains("strict-transport-security: max-age=31536000"), "{response}");
    // Plain HTTP on the TLS port is not served.
    let plain = easel_tests::raw::http_exchange(server.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(!plain.contains("200 OK"), "{plain}");
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_presented_to_new_connections_while_open_ones_play_on() {
    let dir = certificate_dir("reload");
    let first = dev_certificate(&dir);
    let first_trust = trusting(&first);
    let server = start_tls(&first).await;
    let early = join(&websocket(&server, &first_trust).await, "early").await;
    // A renewal writes new files in place (`easel cert dev` writes the same names).
    let second = dev_certificate(&dir);
    let second_trust = trusting(&second);
    assert_ne!(first_trust, second_trust);
    let deadline = tokio::time::Instant::now() + WAIT;
    let late = loop {
        if let Ok(client) =
            HeadlessClient::join_over(&websocket(&server, &second_trust).await, "late", "tls", WAIT).await
        {
            break client;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new certificate was not presented within {WAIT:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        HeadlessClient::join_over(&websocket(&server, &first_trust).await, "stale", "tls", WAIT).await.is_err(),
        "new connections no longer get the old certificate"
    );
    still_playing(&early).await;
    still_playing(&late).await;
    early.close().await;
    late.close().await;
    server.stop().await;
}

#[tokio::test]
async fn webtransport_presents_the_hosts_certificate() {
    let files = dev_certificate(&certificate_dir("quic"));
    let config = Config {
        tls: Some(files.clone()),
        quic: Some(Quic { udp_port: None, certificate: CertificateSource::Files(files.clone()) }),
        ..Config::for_tests()
    };
    let server = TestServer::start_with(config).await;
    let offered =
        Transport::choose(&format!("https://{}", server.addr), TransportChoice::WebTransport, &trusting(&files))
            .await
            .expect("/webtransport over HTTPS");
    let Transport::WebTransport { url, certificate_hashes } = offered else { panic!("WebTransport is offered") };
    assert!(certificate_hashes.is_empty(), "a host's certificate is checked the usual way, not by hash");
    // This client trusts exactly the file's certificate, by its hash.
    let chain = wtransport::tls::CertificateChain::load_pemfile(&files.cert).await.expect("the chain");
    let hash = *chain.as_slice()[0].hash().as_ref();
    let transport = Transport::WebTransport { url, certificate_hashes: vec![hash] };
    let player = join(&transport, "quic").await;
    still_playing(&player).await;
    player.close().await;
    server.stop().await;
}

#[tokio::test]
async fn plain_http_is_redirected_to_https() {
    let files = dev_certificate(&certificate_dir("redirect"));
    // A free port for the redirect listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let server =
        TestServer::start_with(Config { tls: Some(files), redirect_http: Some(port), ..Config::for_tests() }).await;
    let redirect = format!("127.0.0.1:{port}").parse().expect("an address");
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(redirect).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the redirect listener is not up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let head = easel_tests::raw::http_exchange(
        redirect,
        "GET /?room=lobby HTTP/1.1\r\nHost: play.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 308"), "{head}");
    let expected = format!("location: https://play.example.com:{}/?room=lobby", server.addr.port());
    assert!(head.to_ascii_lowercase().contains(&expected), "{head}");
    server.stop().await;
}
