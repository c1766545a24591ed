use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::{ASSETS, Asset, router_for};

static FAKE: &[Asset] = &[
    Asset {
        path: "assets/index-abc123.js",
        content_type: "text/javascript; charset=utf-8",
        body: b"console.log('rebound')",
    },
    Asset {
        path: "favicon.svg",
        content_type: "image/svg+xml",
        body: b"<svg/>",
    },
    Asset {
        path: "index.html",
        content_type: "text/html; charset=utf-8",
        body: b"<!doctype html><script src=\"/assets/index-abc123.js\"></script>",
    },
];

async fn get(router: axum::Router, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = router
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy_and_never_cached() {
    let (status, headers, body) = get(router_for(FAKE), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("/assets/index-abc123.js"), "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    let csp = headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("csp");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let (status, _, _) = get(router_for(FAKE), "/index.html").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn hashed_assets_are_cached_for_good_and_unknown_ones_are_404() {
    let (status, headers, body) = get(router_for(FAKE), "/assets/index-abc123.js").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "console.log('rebound')");
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert!(
        headers[header::CACHE_CONTROL]
            .to_str()
            .expect("cache")
            .contains("immutable")
    );
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let (status, _, _) = get(router_for(FAKE), "/assets/gone-000.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, headers, _) = get(router_for(FAKE), "/favicon.svg").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "image/svg+xml");
}

#[tokio::test]
async fn without_a_build_the_host_says_how_to_make_one() {
    let (status, headers, body) = get(router_for(&[]), "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(body.contains("web UI is not built"), "{body}");
    assert!(body.contains("cargo xtask build-ui"), "{body}");
}

/// The embedded build is whole: every script and stylesheet its page
/// names is served.
#[tokio::test]
async fn every_file_the_embedded_page_names_is_served() {
    let Some(index) = ASSETS.iter().find(|a| a.path == "index.html") else {
        eprintln!("no UI build embedded (cargo xtask build-ui); nothing to check");
        return;
    };
    let page = String::from_utf8_lossy(index.body);
    let referenced: Vec<&str> = page
        .split(['"', '\''])
        .filter(|s| s.starts_with('/') && s.len() > 1)
        .collect();
    assert!(
        referenced.iter().any(|r| r.starts_with("/assets/")),
        "{page}"
    );
    for path in referenced {
        let (status, _, _) = get(super::router(), path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}
