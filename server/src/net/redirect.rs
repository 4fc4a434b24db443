//! `--redirect-http PORT`: a plain-HTTP listener that answers every request with a permanent
//! redirect to the same path over HTTPS on the server's TLS port, so `http://` links and typed
//! addresses reach the game. It serves nothing else, and reads no body.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// Accepts connections until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, https_port: u16, header_timeout: Duration) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Usually out of file descriptors: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let service = hyper::service::service_fn(move |request: Request<Incoming>| async move {
            Ok::<_, Infallible>(redirect(&request, https_port))
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(super::MAX_REQUEST_HEAD)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `308` to `https://host[:port]/path?query`, or 400 without a plain host to send it to.
fn redirect<B>(request: &Request<B>, https_port: u16) -> Response<Body> {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(super::origin::without_port);
    let Some(host) = host.filter(|h| super::origin::plain_host(h)) else {
        return status(StatusCode::BAD_REQUEST, "a Host header is needed to redirect to HTTPS\n");
    };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = match https_port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    };
    Response::builder()
        .status(StatusCode::PERMANENT_REDIRECT)
        .header(header::LOCATION, location)
        .header(header::CONTENT_LENGTH, "0")
        .body(Body::empty())
        .unwrap_or_else(|_| status(StatusCode::BAD_REQUEST, "cannot redirect this request\n"))
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = code;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(host: Option<&str>, target: &str, port: u16) -> (StatusCode, Option<String>) {
        let mut request = Request::builder().uri(target);
        if let Some(host) = host {
            request = request.header(header::HOST, host);
        }
        let response = redirect(&request.body(()).unwrap(), port);
        let location = response.headers().get(header::LOCATION).map(|l| l.to_str().unwrap().to_owned());
        (response.status(), location)
    }

    #[test]
    fn every_request_goes_to_the_same_place_over_https() {
        assert_eq!(
            location(Some("play.example.com"), "/?room=lobby", 443),
            (StatusCode::PERMANENT_REDIRECT, Some("https://play.example.com/?room=lobby".into()))
        );
        assert_eq!(
            location(Some("play.example.com:80"), "/a/b", 8443),
            (StatusCode::PERMANENT_REDIRECT, Some("https://play.example.com:8443/a/b".into()))
        );
        assert_eq!(location(None, "/", 443).0, StatusCode::BAD_REQUEST);
        assert_eq!(location(Some("evil.com/x?"), "/", 443).0, StatusCode::BAD_REQUEST, "not a plain host");
    }
}
