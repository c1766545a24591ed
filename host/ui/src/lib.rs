//! The admin web UI, served by the host: the files `cargo xtask build-ui`
//! builds into `web-ui/dist` (a Vite build of the React app), embedded in
//! the binary at compile time by `build.rs`, and an axum [`router`] that
//! serves them at `/` beside the REST API. A binary built without them
//! still serves `/`: a page that says the UI is not built and how to
//! build it.
//!
//! This crate owns only the static files and their HTTP headers; every
//! piece of data the UI shows comes from the REST API (`rebound-api`).
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::compression::CompressionLayer;

/// One embedded file of the build.
#[derive(Debug)]
pub struct Asset {
    /// Path under `dist/`, e.g. `index.html` or `assets/index-3f2a.js`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Whether this binary carries a UI build.
pub fn built() -> bool {
    index(ASSETS).is_some()
}

/// The UI's routes: `/` (and `/index.html`), the build's top-level files
/// such as `/favicon.svg`, and `/assets/*`.
pub fn router() -> Router {
    router_for(ASSETS)
}

// The page: scripts and styles only from this host, API calls to it alone.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

fn index(assets: &'static [Asset]) -> Option<&'static Asset> {
    assets.iter().find(|a| a.path == "index.html")
}

fn router_for(assets: &'static [Asset]) -> Router {
    let Some(index) = index(assets) else {
        return Router::new().route("/", get(not_built));
    };
    let page = move || async move { serve(index, "no-cache") };
    let mut router = Router::new()
        .route("/", get(page))
        .route("/index.html", get(page))
        .route(
            "/assets/{*file}",
            get(
                move |axum::extract::Path(file): axum::extract::Path<String>| async move {
                    match assets
                        .iter()
                        .find(|a| a.path.strip_prefix("assets/") == Some(&file))
                    {
                        // Vite names them by content hash: never stale.
                        Some(asset) => serve(asset, "public, max-age=31536000, immutable"),
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                },
            ),
        );
    for asset in assets
        .iter()
        .filter(|a| a.path != "index.html" && !a.path.contains('/'))
    {
        router = router.route(
            &format!("/{}", asset.path),
            get(move || async move { serve(asset, "public, max-age=3600") }),
        );
    }
    router.layer(CompressionLayer::new())
}

fn serve(asset: &'static Asset, cache: &'static str) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, cache),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        asset.body,
    )
        .into_response();
    if asset.path.ends_with(".html") {
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

async fn not_built() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        NOT_BUILT,
    )
        .into_response()
}

const NOT_BUILT: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Rebound: web UI not built</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 42rem; margin: 4rem auto; line-height: 1.5">
<h1>The web UI is not built into this binary</h1>
<p>This Rebound host serves its REST API under <a href="/api/v1/docs">/api/v1</a>, but it was
compiled without the admin web UI.</p>
<p>Build the UI and then the host, from the repository:</p>
<pre>cargo xtask build-ui      # npm ci and npm run build in web-ui/
cargo build -p rebound    # embeds web-ui/dist</pre>
<p><code>cargo xtask demo</code> and <code>cargo xtask test</code> do both.</p>
</body></html>
"#;

#[cfg(test)]
mod tests;
