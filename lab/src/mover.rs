//! The mover agent of the lab's appliances: where a platform has no ranged
//! read or write of a volume, a plugin boots an appliance with the volume
//! attached, and the appliance serves it with the data mover's protocol
//! (`rebound_datamover::agent`) behind a per-transfer token. The AWS and
//! OpenStack appliances take their token from their user data
//! ([`token_in`]), where the plugin put it, so it is in no tag or metadata
//! whoever may list servers reads; the example site's exports and imports
//! have tokens of their own. All run the agent here, on loopback, over the
//! volume's sparse file; a real appliance listens on its own address.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use rebound_datamover::agent::{AgentConfig, router, serve_router};

/// The image name both simulators treat as the mover appliance.
pub const IMAGE_NAME: &str = "rebound-mover";

/// A running agent; dropping it (its appliance deleted) stops it, and
/// closes its open connections with it.
pub(crate) struct Agent(tokio::task::AbortHandle);

impl Drop for Agent {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Agent")
    }
}

/// The user data line that carries the appliance's token.
pub const TOKEN_VARIABLE: &str = "REBOUND_MOVER_TOKEN";

/// The token in an appliance's user data (base64, as EC2 and Nova take
/// it): the value of its `REBOUND_MOVER_TOKEN=` line.
pub(crate) fn token_in(user_data: Option<&str>) -> Result<String, String> {
    use base64::Engine;
    let missing = || format!("its user data sets no {TOKEN_VARIABLE}");
    let data = user_data.ok_or_else(missing)?;
    let text = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| format!("its user data is not base64: {e}"))?;
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{TOKEN_VARIABLE}=")))
        .map(|t| t.trim().to_owned())
        .filter(|t| t.len() >= 32)
        .ok_or_else(|| format!("{} (of at least 32 characters)", missing()))
}

/// Serve image `path` (writable for an import) behind `token` on a free
/// port of loopback address `address`: the agent's URL and the agent.
pub(crate) async fn start(
    path: PathBuf,
    writable: bool,
    token: String,
    address: Ipv4Addr,
    site: &'static str,
) -> std::io::Result<(String, Agent)> {
    std::fs::metadata(&path)?;
    if !address.is_loopback() {
        return Err(std::io::Error::other(format!(
            "the lab serves on loopback only, not on {address}"
        )));
    }
    let listener = tokio::net::TcpListener::bind((address, 0)).await?;
    let url = format!("http://{}/disk", listener.local_addr()?);
    let config = AgentConfig {
        path,
        token,
        writable,
    };
    let app = router(config)?;
    tracing::debug!("{site} lab: mover appliance agent at {url}");
    let task = tokio::spawn(serve_router(listener, app, None, std::future::pending()));
    Ok((url, Agent(task.abort_handle())))
}
