//! The binary with the host's certificate: it says it listens on `https://`, and SIGHUP makes it
//! read the certificate again (what `systemctl reload` or a certbot hook sends).

mod common;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::mpsc;

use common::WAIT;

#[test]
fn sighup_reloads_the_certificate() {
    let dir = std::env::temp_dir().join(format!("easel-sighup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let files = easel::net::tls::write_dev_certificate(&dir, &["localhost".to_owned()]).expect("a certificate");
    let (cert, key) = (files.cert.display().to_string(), files.key.display().to_string());
    let data = dir.join("data").display().to_string();
    let (server, logs) =
        common::start_logging(&data, &["--port", "0", "--quic", "off", "--tls-cert", &cert, "--tls-key", &key]);
    assert!(server.url.starts_with("wss://127.0.0.1:"), "it says it listens on https://: {}", server.url);
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(logs).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // The listening line comes before the server has started its certificate's watcher: a
    // SIGHUP then must not stop the server, and one sent again once it watches reloads.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let hangup = Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().expect("kill");
        assert!(hangup.success(), "the server is still there to signal");
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match received.recv_timeout(left.min(std::time::Duration::from_millis(500))) {
            Ok(line) if line.contains("certificate reloaded") => break,
            _ if left.is_zero() => panic!("no reload logged within {WAIT:?} of SIGHUP"),
            _ => {}
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
