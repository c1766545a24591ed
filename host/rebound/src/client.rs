//! The CLI verbs that talk to a running host through the REST API:
//! `login`, `logout`, `apply -f`, `get`, `run WORKFLOW PLAN [--wait]`,
//! `approve RUN`, `cancel RUN`, `token create|list|revoke` and
//! `plugin publish|list`. The token `login` obtains — a local user's, or
//! an OIDC issuer's (`login --oidc`, oidc_login.rs) with its refresh
//! token — is kept in a credentials file only its owner can read, and
//! renewed there (`POST /api/v1/auth/renew`, or `/auth/oidc/refresh`) when
//! it is used in its last quarter hour — by a command, or during a long
//! `--wait` — so a session outlives its token; `REBOUND_TOKEN`
//! (an API token, say, in a pipeline) takes precedence. The run verbs are
//! in `runs`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use rebound_domain::PlanDocument;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::output::{self, Columns, Exit, Format, exit};

mod runs;
pub use runs::{RunArgs, decide, run};

#[derive(Args, Clone)]
pub struct ServerArgs {
    /// The host's address.
    #[arg(
        long,
        env = "REBOUND_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
}

#[derive(Args)]
pub struct LoginArgs {
    /// The local user to sign in as; the password is asked for, or read
    /// from REBOUND_PASSWORD.
    #[arg(long, default_value = "admin", conflicts_with = "oidc")]
    username: String,
    /// Sign in through an OIDC issuer the host trusts, in a browser (the
    /// authorization code flow with PKCE, the answer received on a
    /// loopback port).
    #[arg(long)]
    oidc: bool,
    /// The issuer to sign in with (its URL or its name), when the host
    /// offers several.
    #[arg(long, requires = "oidc")]
    issuer: Option<String>,
    /// Print the sign-in address only; do not open a browser.
    #[arg(long, requires = "oidc")]
    no_browser: bool,
    /// Sign in with a code entered at the issuer on any device (the device
    /// authorization grant), where no browser can reach this machine.
    #[arg(long, requires = "oidc", conflicts_with_all = ["no_browser", "callback_port"])]
    device: bool,
    /// The loopback port the issuer redirects back to (0: any free port);
    /// for issuers that match redirect addresses exactly.
    #[arg(long, default_value_t = 0, requires = "oidc")]
    callback_port: u16,
}

#[derive(Args)]
pub struct ApplyArgs {
    /// The plan document (YAML or JSON).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Show the difference from the stored plan and change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
pub struct GetArgs {
    /// What to show.
    #[command(subcommand)]
    what: GetCommand,
    /// table (lists as tables, one object as YAML), json or yaml.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
}

#[derive(Subcommand)]
pub enum GetCommand {
    Plans,
    Plan {
        name: String,
    },
    Runs {
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        status: Option<String>,
    },
    /// A run with its steps and its report.
    Run {
        id: String,
    },
    Compliance,
    Events {
        #[arg(long)]
        plan: Option<String>,
    },
    Audit,
    Plugins,
    Sites,
}

#[derive(Subcommand)]
pub enum DeleteCommand {
    /// An unprotected plan (`rebound run unprotect PLAN --wait` first): it
    /// leaves every list; its runs and audit entries stay.
    Plan { name: String },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an API token; its secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// admin, operator, viewer or plugin-publisher.
        #[arg(long)]
        role: String,
    },
    List,
    Revoke {
        id: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Credentials {
    server: String,
    token: String,
    /// When the token expires (Unix seconds); absent in files written
    /// before renewal was.
    #[serde(default)]
    expires_at: Option<u64>,
    /// An OIDC sign-in's issuer and refresh token, which renew it; absent
    /// for a local user's (renewed with the token itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    oidc: Option<OidcSession>,
}

#[derive(Clone, Serialize, Deserialize)]
struct OidcSession {
    issuer: String,
    refresh_token: String,
}

impl Credentials {
    /// The credentials of a host's token answer (`IssuedToken`). An OIDC
    /// sign-in keeps its issuer's refresh token — the answer's, or the one
    /// it had where the issuer does not rotate them; without any, it lasts
    /// as long as its access token.
    fn new(server: &str, reply: &Value, issuer: Option<(&str, Option<&str>)>) -> Result<Self> {
        let token = reply["access_token"]
            .as_str()
            .ok_or_else(|| anyhow!("the host answered no token"))?;
        let oidc = issuer.and_then(|(issuer, previous)| {
            let refresh_token = reply["refresh_token"].as_str().or(previous)?;
            Some(OidcSession {
                issuer: issuer.to_owned(),
                refresh_token: refresh_token.to_owned(),
            })
        });
        Ok(Self {
            server: server.to_owned(),
            token: token.to_owned(),
            expires_at: reply["expires_in"].as_u64().map(|s| unix_now() + s),
            oidc,
        })
    }

    fn read(server: &str) -> Option<Self> {
        std::fs::read_to_string(credentials_path().ok()?)
            .ok()
            .and_then(|text| serde_json::from_str::<Self>(&text).ok())
            .filter(|c| c.server == server)
    }

    fn write(&self) -> Result<PathBuf> {
        let path = credentials_path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_private(&path, &serde_json::to_string(self)?)?;
        Ok(path)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A stored token this close to its expiry is renewed before it is used.
const RENEW_WITHIN_SECS: u64 = 15 * 60;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn credentials_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("REBOUND_CREDENTIALS") {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").context("set HOME or REBOUND_CREDENTIALS")?;
    Ok(PathBuf::from(home).join(".config/rebound/credentials.json"))
}

struct Client {
    http: reqwest::Client,
    server: String,
    token: std::sync::Mutex<Option<String>>,
    /// When the token came from the credentials file: its expiry, for
    /// renewing it (`None` for `REBOUND_TOKEN` and older files).
    expires_at: std::sync::Mutex<Option<u64>>,
    /// The OIDC sign-in the stored token belongs to, which renews it.
    oidc: std::sync::Mutex<Option<OidcSession>>,
}

impl Client {
    /// A client with no token yet.
    fn anonymous(server: &ServerArgs) -> Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            server: server.server.trim_end_matches('/').to_owned(),
            token: std::sync::Mutex::default(),
            expires_at: std::sync::Mutex::default(),
            oidc: std::sync::Mutex::default(),
        })
    }

    /// A client with `REBOUND_TOKEN`, or the token `login` stored.
    fn new(server: &ServerArgs) -> Result<Self> {
        let client = Self::anonymous(server)?;
        if let Ok(token) = std::env::var("REBOUND_TOKEN") {
            *lock(&client.token) = Some(token);
        } else if let Some(stored) = Credentials::read(&client.server) {
            *lock(&client.token) = Some(stored.token);
            *lock(&client.expires_at) = stored.expires_at;
            *lock(&client.oidc) = stored.oidc;
        }
        Ok(client)
    }

    fn token(&self) -> Option<String> {
        lock(&self.token).clone()
    }

    /// Renew the stored token when it expires within a quarter hour —
    /// before a command, and during a long `--wait` — and keep the new one
    /// in the credentials file: a local user's with itself, an OIDC
    /// sign-in's with its refresh token (the host trades it at the issuer).
    /// A renewal the host refuses leaves the token as it was, to be used
    /// while it lasts.
    async fn renew_if_due(&self) -> Result<()> {
        let now = unix_now();
        // A local token is renewed with itself, so only while it lasts; an
        // OIDC sign-in's refresh token outlives its access token.
        let refreshable = lock(&self.oidc).is_some();
        let due = lock(&self.expires_at).is_some_and(|at| {
            (refreshable || at > now) && at.saturating_sub(now) <= RENEW_WITHIN_SECS
        });
        if !due {
            return Ok(());
        }
        // Asked once per token: a refusal is not asked again and again.
        *lock(&self.expires_at) = None;
        let oidc = lock(&self.oidc).clone();
        let renewed = match &oidc {
            Some(session) => {
                let body =
                    json!({"issuer": session.issuer, "refresh_token": session.refresh_token});
                self.send(
                    reqwest::Method::POST,
                    "/auth/oidc/refresh",
                    Some(("application/json", body.to_string())),
                    &[],
                )
                .await
            }
            None => {
                self.send(reqwest::Method::POST, "/auth/renew", None, &[])
                    .await
            }
        };
        let issuer = oidc
            .as_ref()
            .map(|s| (s.issuer.as_str(), Some(s.refresh_token.as_str())));
        match renewed.and_then(|(_, reply)| Credentials::new(&self.server, &reply, issuer)) {
            Ok(renewed) => {
                renewed.write()?;
                *lock(&self.expires_at) = renewed.expires_at;
                *lock(&self.oidc) = renewed.oidc;
                *lock(&self.token) = Some(renewed.token);
            }
            Err(e) => {
                let again = if oidc.is_some() { " --oidc" } else { "" };
                eprintln!("the session could not be renewed ({e}); run `rebound login{again}`");
            }
        }
        Ok(())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, String)>,
        headers: &[(&str, &str)],
    ) -> Result<(reqwest::StatusCode, Value)> {
        self.renew_if_due().await?;
        self.send(method, path, body, headers).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, String)>,
        headers: &[(&str, &str)],
    ) -> Result<(reqwest::StatusCode, Value)> {
        let url = format!("{}/api/v1{path}", self.server);
        let mut request = self.http.request(method, &url);
        let token = self.token();
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some((content_type, body)) = body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Exit::new(exit::HOST_ERROR, format!("reaching {url}: {e}")))?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(Exit::new(
                Exit::for_status(status.as_u16()),
                problem_text(status, &value, token.is_none()),
            )
            .into());
        }
        Ok((status, value))
    }

    async fn get(&self, path: &str) -> Result<Value> {
        Ok(self.call(reqwest::Method::GET, path, None, &[]).await?.1)
    }
}

/// A problem+json refusal as lines a person reads.
fn problem_text(status: reqwest::StatusCode, problem: &Value, anonymous: bool) -> String {
    let mut out = format!(
        "{} ({}): {}",
        problem["title"].as_str().unwrap_or("refused"),
        status.as_u16(),
        problem["detail"].as_str().unwrap_or("no detail")
    );
    for e in problem["errors"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  {}: {}",
            e["field"].as_str().unwrap_or_default(),
            e["reason"].as_str().unwrap_or_default()
        ));
    }
    if status == reqwest::StatusCode::UNAUTHORIZED && anonymous {
        out.push_str("\n  run `rebound login` or set REBOUND_TOKEN");
    }
    out
}

pub async fn login(server: &ServerArgs, args: &LoginArgs) -> Result<()> {
    if args.oidc {
        return login_oidc(server, args).await;
    }
    let password = match std::env::var("REBOUND_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            use std::io::IsTerminal;
            eprint!("password for {}: ", args.username);
            std::io::stderr().flush()?;
            if std::io::stdin().is_terminal() {
                // Not echoed.
                rpassword::read_password()?
            } else {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim_end_matches(['\r', '\n']).to_owned()
            }
        }
    };
    let client = Client::anonymous(server)?;
    let (_, reply) = client
        .call(
            reqwest::Method::POST,
            "/auth/login",
            Some((
                "application/json",
                json!({"username": args.username, "password": password}).to_string(),
            )),
            &[],
        )
        .await?;
    let path = Credentials::new(&client.server, &reply, None)?.write()?;
    eprintln!(
        "logged in to {} as {} (token in {}, valid {} s)",
        client.server,
        args.username,
        path.display(),
        reply["expires_in"]
    );
    Ok(())
}

/// `logout`: forget the session `login` kept for this host — the
/// credentials file goes, with the OIDC refresh token in it. The token
/// itself stays good at the host until it expires (a local user's within
/// the hour; an issuer's when the issuer says), as a JWT does.
pub fn logout(server: &ServerArgs) -> Result<()> {
    let server = server.server.trim_end_matches('/');
    let path = credentials_path()?;
    if Credentials::read(server).is_some() {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        eprintln!("logged out of {server} (removed {})", path.display());
    } else {
        eprintln!("no session kept for {server}; nothing to do");
    }
    Ok(())
}

/// `login --oidc`: the browser signs in at the issuer, the host redeems
/// the code it returns (oidc_login.rs), and the token with its refresh
/// token is kept for the other verbs.
async fn login_oidc(server: &ServerArgs, args: &LoginArgs) -> Result<()> {
    let client = Client::anonymous(server)?;
    let providers = client.get("/auth/providers").await?;
    let provider = crate::oidc_login::pick(&providers, args.issuer.as_deref())?;
    let reply = if args.device {
        let device = crate::oidc_login::device_authorize(&provider).await?;
        redeem_device_code(&client, &provider, device).await?
    } else {
        let code =
            crate::oidc_login::authorize(&provider, args.callback_port, !args.no_browser).await?;
        let body = json!({
            "issuer": provider.issuer,
            "code": code.code,
            "code_verifier": code.code_verifier,
            "redirect_uri": code.redirect_uri,
        });
        client
            .call(
                reqwest::Method::POST,
                "/auth/oidc",
                Some(("application/json", body.to_string())),
                &[],
            )
            .await?
            .1
    };
    let credentials = Credentials::new(&client.server, &reply, Some((&provider.issuer, None)))?;
    let renewable = credentials.oidc.is_some();
    let path = credentials.write()?;
    *lock(&client.token) = Some(credentials.token);
    let me = client.get("/auth/whoami").await?;
    eprintln!(
        "logged in to {} as {} ({}) through {} (token in {}, valid {} s{})",
        client.server,
        me["name"].as_str().unwrap_or("?"),
        me["role"].as_str().unwrap_or("?"),
        provider.name,
        path.display(),
        reply["expires_in"],
        if renewable {
            ", renewed with the issuer's refresh token"
        } else {
            "; the issuer gave no refresh token: log in again when it expires"
        }
    );
    Ok(())
}

/// Ask the host to redeem a device code until the user has approved it at
/// the issuer (`authorization-pending` until then; `slow-down` adds 5 s to
/// the interval, RFC 8628 §3.5), or the code expires.
async fn redeem_device_code(
    client: &Client,
    provider: &crate::oidc_login::Provider,
    device: crate::oidc_login::DeviceCode,
) -> Result<Value> {
    let body = json!({"issuer": provider.issuer, "device_code": device.device_code}).to_string();
    let url = format!("{}/api/v1/auth/oidc/device", client.server);
    let mut interval = device.interval;
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        let response = client
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .map_err(|e| Exit::new(exit::HOST_ERROR, format!("reaching {url}: {e}")))?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let kind = value["type"].as_str().unwrap_or_default();
        if kind.ends_with("/slow-down") {
            interval += 5;
        } else if !kind.ends_with("/authorization-pending") {
            return Err(Exit::new(
                Exit::for_status(status.as_u16()),
                problem_text(status, &value, false),
            )
            .into());
        }
        if std::time::Instant::now() >= device.deadline {
            return Err(Exit::new(
                exit::ERROR,
                "the code expired before it was entered; run rebound login --oidc --device again",
            )
            .into());
        }
    }
}

/// Write a file only its owner may read.
fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

pub async fn apply(server: &ServerArgs, args: &ApplyArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let is_json = args.file.extension().is_some_and(|e| e == "json");
    // Parsed here for the name; the host validates it again.
    let document = if is_json {
        PlanDocument::from_json(&text)
    } else {
        PlanDocument::from_yaml(&text)
    }
    .map_err(|e| Exit::new(exit::REFUSED, format!("{}: {e}", args.file.display())))?;
    let content_type = if is_json {
        "application/json"
    } else {
        "application/yaml"
    };
    let client = Client::new(server)?;
    let path = format!("/plans/{}", document.name);
    // The stored plan, to show what changes (none: it is created).
    let stored = match client.get(&path).await {
        Ok(plan) => Some(plan),
        Err(e)
            if e.downcast_ref::<Exit>()
                .is_some_and(|x| x.code == exit::NOT_FOUND) =>
        {
            None
        }
        Err(e) => return Err(e),
    };
    let before = stored
        .as_ref()
        .and_then(|p| PlanDocument::from_json(&p["document"].to_string()).ok())
        .map(|d| d.to_yaml())
        .unwrap_or_default();
    let after = document.to_yaml();
    // Applied again, an unprotected plan is protected again.
    let unprotected = stored
        .as_ref()
        .is_some_and(|p| p["lifecycle"]["state"] == "unprotected");
    if unprotected {
        println!(
            "plan '{}' is unprotected: applying it protects it again",
            document.name
        );
    }
    if before == after && !unprotected {
        println!(
            "plan '{}' unchanged (revision {})",
            document.name,
            stored
                .as_ref()
                .map_or(Value::Null, |p| p["revision"].clone())
        );
        return Ok(());
    }
    let diff = similar::TextDiff::from_lines(&before, &after);
    print!(
        "{}",
        diff.unified_diff()
            .context_radius(2)
            .header("stored", args.file.to_string_lossy().as_ref())
    );
    if args.dry_run {
        println!("(dry run: nothing changed)");
        return Ok(());
    }
    let (status, plan) = client
        .call(reqwest::Method::PUT, &path, Some((content_type, text)), &[])
        .await?;
    let verb = if status == reqwest::StatusCode::CREATED {
        "created"
    } else {
        "updated"
    };
    println!(
        "plan '{}' {verb} (revision {}, {})",
        document.name, plan["revision"], plan["lifecycle"]["state"]
    );
    Ok(())
}

/// `plugin list`: the plugins as `get plugins` shows them.
pub async fn list_plugins(server: &ServerArgs) -> Result<()> {
    get(
        server,
        &GetArgs {
            what: GetCommand::Plugins,
            output: Format::Table,
        },
    )
    .await
}

pub async fn get(server: &ServerArgs, args: &GetArgs) -> Result<()> {
    let client = Client::new(server)?;
    let query = |pairs: &[(&str, &Option<String>)]| {
        let parts: Vec<String> = pairs
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    };
    let (path, columns): (String, Option<Columns>) = match &args.what {
        GetCommand::Plans => ("/plans".to_owned(), Some(output::PLANS)),
        GetCommand::Plan { name } => (format!("/plans/{name}"), None),
        GetCommand::Runs { plan, status } => (
            format!("/runs{}", query(&[("plan", plan), ("status", status)])),
            Some(output::RUNS),
        ),
        GetCommand::Run { id } => (format!("/runs/{id}"), None),
        GetCommand::Compliance => ("/compliance".to_owned(), Some(output::COMPLIANCE)),
        GetCommand::Events { plan } => (
            format!("/events{}", query(&[("plan", plan)])),
            Some(output::EVENTS),
        ),
        GetCommand::Audit => ("/audit".to_owned(), Some(output::AUDIT)),
        GetCommand::Plugins => ("/plugins".to_owned(), Some(output::PLUGINS)),
        GetCommand::Sites => ("/sites".to_owned(), Some(output::SITES)),
    };
    let value = client.get(&path).await?;
    println!("{}", output::render(&value, args.output, columns));
    Ok(())
}

/// Print the runbook of `plan`, as the host writes it.
pub async fn runbook(server: &ServerArgs, plan: &str) -> Result<()> {
    let client = Client::new(server)?;
    let book = client.get(&format!("/plans/{plan}/runbook")).await?;
    print!("{}", book["markdown"].as_str().unwrap_or_default());
    Ok(())
}

/// Delete a plan (an unprotected one: the host refuses any other).
pub async fn delete(server: &ServerArgs, command: &DeleteCommand) -> Result<()> {
    let client = Client::new(server)?;
    match command {
        DeleteCommand::Plan { name } => {
            client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/plans/{name}"),
                    None,
                    &[],
                )
                .await?;
            println!("plan '{name}' deleted");
        }
    }
    Ok(())
}

pub async fn token(server: &ServerArgs, command: &TokenCommand) -> Result<()> {
    let client = Client::new(server)?;
    match command {
        TokenCommand::Create { name, role } => {
            let (_, created) = client
                .call(
                    reqwest::Method::POST,
                    "/tokens",
                    Some((
                        "application/json",
                        json!({"name": name, "role": role}).to_string(),
                    )),
                    &[],
                )
                .await?;
            eprintln!(
                "token {} ({}) created; its secret, shown this once:",
                created["id"], created["role"]
            );
            println!("{}", created["token"].as_str().unwrap_or_default());
        }
        TokenCommand::List => println!(
            "{}",
            output::render(
                &client.get("/tokens").await?,
                Format::Table,
                Some(output::TOKENS)
            )
        ),
        TokenCommand::Revoke { id } => {
            client
                .call(reqwest::Method::DELETE, &format!("/tokens/{id}"), None, &[])
                .await?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}

/// Publish a package folder; the host verifies it before installing it.
pub async fn publish_plugin(server: &ServerArgs, dir: &std::path::Path) -> Result<()> {
    use base64::Engine;
    let package = rebound_runtime::PluginPackage::read_dir(dir)
        .map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    let body = json!({
        "manifest": package.manifest,
        "wasm": base64::engine::general_purpose::STANDARD.encode(&package.wasm),
        "signature": package.signature,
    });
    let client = Client::new(server)?;
    let (_, plugin) = client
        .call(
            reqwest::Method::POST,
            "/plugins",
            Some(("application/json", body.to_string())),
            &[],
        )
        .await?;
    println!(
        "plugin {} {} published (sha256 {})",
        plugin["name"].as_str().unwrap_or_default(),
        plugin["version"].as_str().unwrap_or_default(),
        plugin["sha256"].as_str().unwrap_or_default()
    );
    Ok(())
}
