//! The mover agent of the lab's appliances: where a platform has no ranged
//! read or write of a volume, a plugin boots an appliance with the volume
//! attached, and the appliance serves it with the data mover's protocol
//! (`rebound_datamover::agent`) behind a per-transfer token. The OpenStack
//! and AWS simulators run that agent here, on loopback, over the volume's
//! sparse file; a real appliance listens on its own address.

use std::path::PathBuf;

use rebound_datamover::agent::{AgentConfig, serve};

/// The image name both simulators treat as the mover appliance.
pub const IMAGE_NAME: &str = "rebound-mover";

/// A running agent; dropping it (its appliance deleted) stops it.
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

/// Serve image `path` (writable for an import): the agent's URL, its
/// token, and the agent.
pub(crate) async fn start(
    path: PathBuf,
    writable: bool,
    site: &'static str,
) -> std::io::Result<(String, String, Agent)> {
    std::fs::metadata(&path)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/disk", listener.local_addr()?);
    let token = crate::random_hex(24);
    let config = AgentConfig {
        path,
        token: token.clone(),
        writable,
    };
    let task = tokio::spawn(async move {
        if let Err(e) = serve(listener, config).await {
            tracing::warn!("{site} lab: mover appliance agent stopped: {e}");
        }
    });
    Ok((url, token, Agent(task.abort_handle())))
}
