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

/// What a request gets: status, content type, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Arc<[u8]>,
}

fn text(status: u16, body: &str) -> Answer {
    Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body: Arc::from(body.as_bytes()),
    }
}

/// Whether the scraper accepts OpenMetrics (Prometheus says so in `Accept`).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Route one request. Pure over `shared`, so tests call it without sockets.
pub fn answer(shared: &Shared, method: &Method, url: &str, accept: Option<&str>) -> Answer {
    if !matches!(method, Method::Get | Method::Head) {
        return text(405, "only GET and HEAD\n");
    }
    let path = url.split(['?', '#']).next().unwrap_or("");
    match path {
        "/metrics" => {
            let e = shared.exposition();
            if wants_openmetrics(accept) {
                Answer {
                    status: 200,
                    content_type: OPENMETRICS_CONTENT_TYPE,
                    body: e.openmetrics,
                }
            } else {
                Answer {
                    status: 200,
                    content_type: TEXT_CONTENT_TYPE,
                    body: e.text,
                }
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
        },
        _ => text(404, "not found: try /metrics, /healthz or /\n"),
    }
}

fn respond(req: Request, shared: &Shared) {
    let accept = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Accept"))
        .map(|h| h.value.as_str().to_string());
    let a = answer(shared, req.method(), req.url(), accept.as_deref());
    let len = a.body.len();
    let mut headers = Vec::with_capacity(1);
    if let Ok(h) = Header::from_bytes("Content-Type", a.content_type) {
        headers.push(h);
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
