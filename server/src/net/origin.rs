//! Which pages may open a connection. Browsers always send `Origin` on a WebSocket upgrade and a
//! WebTransport session, so checking it stops other sites' pages from joining on a visitor's
//! behalf; native clients (bots, tests) send none and pass.

/// Whether `origin` may connect to `host` (`host[:port]`, as the page's own address would name
/// it): the same origin by default, or one of `allowed` when the host lists them; and in a
/// cluster, the pages of its nodes (`peers`, their public URLs).
pub fn check(origin: Option<&str>, host: &str, allowed: &[String], peers: &[String]) -> Result<(), String> {
    let Some(origin) = origin else { return Ok(()) };
    let permitted = peers.iter().any(|peer| peer.eq_ignore_ascii_case(origin))
        || if allowed.is_empty() {
            let origin_host = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
            origin_host.is_some_and(|o| o.eq_ignore_ascii_case(host))
        } else {
            allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
        };
    if permitted { Ok(()) } else { Err(format!("origin {origin} is not allowed")) }
}

/// `authority` (`host:port` of a WebTransport request, whose port is the UDP one) as the page
/// that opened it names its own address: the same host on the HTTP port.
pub fn page_host(authority: &str, http_port: u16) -> String {
    format!("{}:{http_port}", without_port(authority))
}

/// `host[:port]` without the port (an IPv6 literal keeps its brackets).
pub fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether `host` (a `Host` header, the client's word) is a plain `host[:port]`: letters,
/// digits, `.`, `-`, `:` and an IPv6 literal's brackets, nothing that could end a header's
/// value or a URL's authority.
pub fn plain_host(host: &str) -> bool {
    !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_is_allowed_by_default_and_others_are_not() {
        assert!(check(Some("http://127.0.0.1:8080"), "127.0.0.1:8080", &[], &[]).is_ok());
        assert!(check(Some("http://evil.example"), "127.0.0.1:8080", &[], &[]).is_err());
    }

    #[test]
    fn an_allowlist_replaces_the_same_origin_rule() {
        let allowed = vec!["https://play.example.com".to_owned()];
        assert!(check(Some("https://play.example.com"), "10.0.0.1:8080", &allowed, &[]).is_ok());
        assert!(check(Some("http://127.0.0.1:8080"), "127.0.0.1:8080", &allowed, &[]).is_err());
    }

    #[test]
    fn a_clusters_nodes_pages_may_connect_to_any_of_its_nodes() {
        let peers = vec!["https://node-1.example.com".to_owned(), "https://node-2.example.com".to_owned()];
        assert!(check(Some("https://node-1.example.com"), "node-2.example.com", &[], &peers).is_ok());
        assert!(check(Some("https://node-2.example.com"), "node-2.example.com", &[], &peers).is_ok());
        assert!(check(Some("https://node-9.example.com"), "node-2.example.com", &[], &peers).is_err());
    }

    #[test]
    fn clients_without_origin_are_not_browsers_and_pass() {
        assert!(check(None, "127.0.0.1:8080", &[], &[]).is_ok());
    }

    #[test]
    fn a_webtransport_authority_names_the_page_by_its_http_port() {
        assert_eq!(page_host("127.0.0.1:4433", 8080), "127.0.0.1:8080");
        assert_eq!(page_host("[::1]:4433", 8080), "[::1]:8080");
        assert_eq!(page_host("play.example.com", 443), "play.example.com:443");
    }
}
