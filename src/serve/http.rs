//! The HTTP side: `/metrics`, `/healthz`, `/`. A request only reads what the scan loop
//! published, so answering costs a pointer copy and a socket write.

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use super::metrics::{OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use super::{Shared, POLL};

const INDEX: &str = "<!DOCTYPE html>
<html><head><meta charset=\"utf-8\"><title>dismount_iso_qemu exporter</title></head>
<body><h1>dismount_iso_qemu exporter</h1>
<p>VMs of this libvirt host, their guest OS, agent state and ISO media, for Prometheus.</p>
<ul><li><a href=\"/metrics\">/metrics</a></li><li><a href=\"/healthz\">/healthz</a></li></ul>
</body></html>
";

/// Shared bytes as a response body, without copying them per request.
struct Body(Arc<[u8]>);

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// What a request gets: status, content type, body (gzipped when `gzip`).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Arc<[u8]>,
    pub gzip: bool,
}

fn text(status: u16, body: &str) -> Answer {
    Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body: Arc::from(body.as_bytes()),
        gzip: false,
    }
}

/// Whether the scraper accepts OpenMetrics (Prometheus says so in `Accept`).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Whether the scraper accepts a gzipped body (`Accept-Encoding: gzip`, not `gzip;q=0`).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut it = part.split(';').map(str::trim);
            let coding = it.next().unwrap_or("");
            let q = it
                .find_map(|p| p.strip_prefix("q="))
                .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        })
    })
}

/// The request headers `answer` looks at.
#[derive(Debug, Default, Clone, Copy)]
pub struct Negotiation<'a> {
    pub accept: Option<&'a str>,
    pub accept_encoding: Option<&'a str>,
}

/// Route one request. Pure over `shared`, so tests call it without sockets.
pub fn answer(shared: &Shared, method: &Method, url: &str, n: Negotiation) -> Answer {
    if !matches!(method, Method::Get | Method::Head) {
        return text(405, "only GET and HEAD\n");
    }
    let path = url.split(['?', '#']).next().unwrap_or("");
    match path {
        "/metrics" => {
            let e = shared.exposition();
            let gzip = accepts_gzip(n.accept_encoding);
            let (content_type, body) = match (wants_openmetrics(n.accept), gzip) {
                (true, false) => (OPENMETRICS_CONTENT_TYPE, e.openmetrics),
                (true, true) => (OPENMETRICS_CONTENT_TYPE, e.openmetrics_gzip),
                (false, false) => (TEXT_CONTENT_TYPE, e.text),
                (false, true) => (TEXT_CONTENT_TYPE, e.text_gzip),
            };
            Answer {
                status: 200,
                content_type,
                body,
                gzip,
            }
        }
        "/healthz" => match shared.health() {
            Ok(()) => text(200, "ok\n"),
            Err(reason) => text(503, &format!("{reason}\n")),
        },
        "/" => Answer {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: Arc::from(INDEX.as_bytes()),
            gzip: false,
        },
        _ => text(404, "not found: try /metrics, /healthz or /\n"),
    }
}

fn respond(req: Request, shared: &Shared) {
    let header = |name: &'static str| {
        req.headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str())
    };
    let n = Negotiation {
        accept: header("Accept"),
        accept_encoding: header("Accept-Encoding"),
    };
    let a = answer(shared, req.method(), req.url(), n);
    let len = a.body.len();
    let mut headers = Vec::with_capacity(3);
    headers.extend(Header::from_bytes("Content-Type", a.content_type));
    if a.gzip {
        headers.extend(Header::from_bytes("Content-Encoding", "gzip"));
        headers.extend(Header::from_bytes("Vary", "Accept, Accept-Encoding"));
    }
    let response = Response::new(
        StatusCode(a.status),
        headers,
        Cursor::new(Body(a.body)),
        Some(len),
        None,
    );
    // A scraper that hung up early is its own problem.
    let _ = req.respond(response);
}

/// One HTTP worker: answer requests until the stop flag is set.
pub fn worker(server: &Server, shared: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match server.recv_timeout(POLL) {
            Ok(Some(req)) => respond(req, shared),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("HTTP accept failed: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_gzip() {
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("identity, GZIP;q=0.5")));
        assert!(accepts_gzip(Some("*")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
    }
}
