//! `GET /duplex.js`: the browser client of duplex.v1 (`js/duplex.js` in this
//! crate, the npm package `@duplex/client`), embedded in the binary so that every
//! server of a [`HubService`](crate::HubService), `duplex serve` or an axum app
//! mounting it, serves the client that speaks its protocol.

use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// The path the client is served at, relative to where the service is mounted.
pub(crate) const PATH: &str = "/duplex.js";

/// The module's source, `js/duplex.js`.
pub(crate) const SOURCE: &str = include_str!("../js/duplex.js");

/// A weak validator of the source: the crate's version and an FNV-1a hash (a
/// fingerprint, not a security measure).
static ETAG: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = SOURCE.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let tag = format!("W/\"{}-{hash:016x}\"", env!("CARGO_PKG_VERSION"));
    HeaderValue::try_from(tag).expect("an ASCII ETag")
});

/// The module as a JavaScript file, or 304 when the browser's copy is this
/// one. `no-cache`: a browser keeps it but revalidates on every load, so that
/// it never runs a client older than its server.
pub(crate) fn response(request: &HeaderMap) -> Response<Full<Bytes>> {
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*"
                || tag.trim_start_matches("W/")
                    == ETAG.to_str().unwrap_or("").trim_start_matches("W/")
        });
    let builder = Response::builder()
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::ETAG, ETAG.clone());
    if fresh {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Full::new(Bytes::new()))
            .expect("static response");
    }
    builder
        .header(header::CONTENT_TYPE, "text/javascript; charset=utf-8")
        .body(Full::new(Bytes::from_static(SOURCE.as_bytes())))
        .expect("static response")
}
