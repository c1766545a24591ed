//! `rebound login --oidc`: signing in through an OIDC issuer from the
//! command line, as a native app does (RFC 8252): the authorization code
//! flow with PKCE, the issuer's redirect received on a loopback port.
//!
//! The CLI asks the host which issuers it offers (`GET /api/v1/auth/
//! providers`, the list the web UI's buttons come from), listens on
//! `127.0.0.1`, sends the browser to the issuer with
//! `redirect_uri=http://127.0.0.1:PORT/callback`, a PKCE challenge and a
//! `state` it checks on the way back, and hands the code and its verifier
//! to the host (`POST /api/v1/auth/oidc`), which redeems them, checks the
//! token as it checks every bearer token and audits the sign-in — as for
//! the web UI. The issuer must accept that redirect for the client id the
//! host names; the port is chosen at random unless `--callback-port` fixes
//! it, for issuers that match redirects exactly.
//!
//! Where no browser can reach the CLI's loopback port (a shell on a jump
//! host), `--device` uses the device authorization grant (RFC 8628)
//! instead: the CLI asks the issuer for a user code, the user enters it at
//! the issuer's address on any device, and the CLI asks the host to redeem
//! the device code (`POST /api/v1/auth/oidc/device`) at the interval the
//! issuer gave until the user has approved it.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Result, anyhow};
use axum::extract::{Query, State};
use axum::response::Html;
use base64::Engine;
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::output::{Exit, exit};

/// How long the CLI waits for the browser to come back.
const WAIT: Duration = Duration::from_secs(300);

/// An issuer the host offers sign-in with, as `GET /auth/providers` lists it.
pub struct Provider {
    pub issuer: String,
    pub name: String,
    authorization_endpoint: String,
    client_id: String,
    scope: String,
    device_authorization_endpoint: Option<String>,
}

/// The issuer to sign in with: the one `wanted` names (its issuer URL or
/// its name), or the only one the host offers.
pub fn pick(providers: &Value, wanted: Option<&str>) -> Result<Provider> {
    let all: Vec<Provider> = providers["providers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let text = |k: &str| p[k].as_str().map(str::to_owned);
            Some(Provider {
                issuer: text("issuer")?,
                name: text("name")?,
                authorization_endpoint: text("authorization_endpoint")?,
                client_id: text("client_id")?,
                scope: text("scope")?,
                device_authorization_endpoint: text("device_authorization_endpoint"),
            })
        })
        .collect();
    let names = || {
        all.iter()
            .map(|p| format!("{} ({})", p.issuer, p.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if all.is_empty() {
        return Err(Exit::new(
            exit::REFUSED,
            "the host offers no OIDC sign-in: give an issuer in its config a `client_id` \
             ([[api.auth.oidc]], docs/api.md), or log in as a local user",
        )
        .into());
    }
    let matches = |p: &Provider| {
        wanted.is_none_or(|w| {
            p.issuer.trim_end_matches('/') == w.trim_end_matches('/') || p.name == w
        })
    };
    let found = all.iter().filter(|p| matches(p)).count();
    match (found, wanted) {
        (1, _) => Ok(all.into_iter().find(matches).expect("one matches")),
        (_, Some(w)) => Err(Exit::new(
            exit::NOT_FOUND,
            format!("the host offers no issuer {w}; it offers {}", names()),
        )
        .into()),
        (_, None) => Err(Exit::new(
            exit::REFUSED,
            format!(
                "the host offers several issuers: name one with --issuer ({})",
                names()
            ),
        )
        .into()),
    }
}

/// What the browser brought back: the code, or the issuer's refusal.
type Outcome = std::result::Result<String, String>;

#[derive(Clone)]
struct Callback {
    state: String,
    done: mpsc::Sender<Outcome>,
}

/// The page the browser shows at the end.
fn page(text: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><title>Rebound</title><body><p>{text}</p></body></html>"
    ))
}

async fn callback(
    State(cb): State<Callback>,
    Query(query): Query<HashMap<String, String>>,
) -> (axum::http::StatusCode, Html<String>) {
    // A request without this sign-in's state is not the issuer's answer to
    // it (a stale tab, another program): refused, and the wait goes on.
    if query.get("state") != Some(&cb.state) {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            page(
                "This is not the sign-in the command line started. Run rebound login --oidc again.",
            ),
        );
    }
    let outcome = match (query.get("code"), query.get("error")) {
        (Some(code), None) if !code.is_empty() => Ok(code.clone()),
        (_, error) => Err(format!(
            "{}{}",
            error.map_or("no code", String::as_str),
            query
                .get("error_description")
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        )),
    };
    let shown = match &outcome {
        Ok(_) => page(
            "The issuer has answered: go back to the command line, which finishes the sign-in. You may close this tab.",
        ),
        Err(_) => page("The sign-in was refused: the command line says why."),
    };
    let _ = cb.done.try_send(outcome);
    (axum::http::StatusCode::OK, shown)
}

/// The code the issuer returned, with the PKCE verifier and the redirect
/// address to redeem it with.
pub struct Code {
    pub code: String,
    pub code_verifier: String,
    pub redirect_uri: String,
}

fn random(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Send the browser to the issuer and wait for its redirect back.
pub async fn authorize(provider: &Provider, port: u16, open_browser: bool) -> Result<Code> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| anyhow!("listening on 127.0.0.1:{port} for the issuer's redirect: {e}"))?;
    let redirect_uri = format!(
        "http://127.0.0.1:{}/callback",
        listener.local_addr()?.port()
    );
    // 32 random bytes: a 43-character verifier (RFC 7636 §4.1).
    let code_verifier = random(32);
    let state = random(16);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(code_verifier.as_bytes()));
    let mut url = reqwest::Url::parse(&provider.authorization_endpoint).map_err(|e| {
        anyhow!(
            "the host lists {} as the issuer's authorization endpoint: {e}",
            provider.authorization_endpoint
        )
    })?;
    url.query_pairs_mut().extend_pairs([
        ("response_type", "code"),
        ("client_id", provider.client_id.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("scope", provider.scope.as_str()),
        ("state", state.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]);
    let (done, mut outcome) = mpsc::channel(1);
    let app = axum::Router::new()
        .route("/callback", axum::routing::get(callback))
        .with_state(Callback { state, done });
    // Stopped once the answer is in, after the browser has its page.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    eprintln!(
        "sign in with {} in a browser at:\n\n  {url}\n",
        provider.name
    );
    if open_browser && let Err(e) = webbrowser::open(url.as_str()) {
        eprintln!("(no browser could be opened here: {e}; open the address above)");
    }
    let outcome = tokio::time::timeout(WAIT, outcome.recv()).await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    match outcome {
        Ok(Some(Ok(code))) => Ok(Code {
            code,
            code_verifier,
            redirect_uri,
        }),
        Ok(Some(Err(refusal))) => Err(Exit::new(
            exit::DENIED,
            format!("{} refused the sign-in: {refusal}", provider.name),
        )
        .into()),
        Ok(None) | Err(_) => Err(Exit::new(
            exit::ERROR,
            format!(
                "no answer from the browser within {} s; run rebound login --oidc again",
                WAIT.as_secs()
            ),
        )
        .into()),
    }
}

/// A device authorization the user is to approve at the issuer.
pub struct DeviceCode {
    pub device_code: String,
    /// Seconds between attempts to redeem it.
    pub interval: u64,
    /// When the code expires.
    pub deadline: std::time::Instant,
}

/// Ask the issuer for a device authorization (RFC 8628 §3.1) and tell the
/// user where to approve it.
pub async fn device_authorize(provider: &Provider) -> Result<DeviceCode> {
    let endpoint = provider
        .device_authorization_endpoint
        .as_deref()
        .ok_or_else(|| {
            Exit::new(
                exit::REFUSED,
                format!(
                    "{} offers no device authorization (no `device_authorization_endpoint` in its \
                 discovery document): sign in with the browser (leave out --device)",
                    provider.name
                ),
            )
        })?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let response = http
        .post(endpoint)
        .header("accept", "application/json")
        .form(&[
            ("client_id", provider.client_id.as_str()),
            ("scope", provider.scope.as_str()),
        ])
        .send()
        .await
        .map_err(|e| Exit::new(exit::HOST_ERROR, format!("reaching {endpoint}: {e}")))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    let text = |k: &str| answer[k].as_str().map(str::to_owned);
    let (Some(device_code), Some(user_code), Some(verification_uri)) = (
        text("device_code"),
        text("user_code"),
        text("verification_uri"),
    ) else {
        return Err(Exit::new(
            exit::DENIED,
            format!(
                "{} refused the device authorization ({status}): {} {}",
                provider.name,
                answer["error"].as_str().unwrap_or("no device code"),
                answer["error_description"].as_str().unwrap_or_default()
            ),
        )
        .into());
    };
    let expires_in = answer["expires_in"].as_u64().unwrap_or(600);
    eprintln!(
        "sign in with {}: open {verification_uri} on any device and enter the code\n\n  {user_code}\n",
        provider.name
    );
    if let Some(complete) = text("verification_uri_complete") {
        eprintln!("(or open {complete}, which carries the code)\n");
    }
    Ok(DeviceCode {
        device_code,
        // RFC 8628 §3.2: 5 s when the issuer names none.
        interval: answer["interval"].as_u64().unwrap_or(5).max(1),
        deadline: std::time::Instant::now() + Duration::from_secs(expires_in),
    })
}
