//! `moto_server` as a child process of the lab, on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{AwsError, AwsOptions};

/// The seeding requests moto serves before it checks signatures
/// ([`AwsOptions::moto_auth`]): create the IAM user, its key, its policy.
pub(crate) const NO_AUTH_ACTIONS: u32 = 3;

pub(crate) fn server(python: Option<&Path>) -> Result<PathBuf, AwsError> {
    let python = match python {
        Some(p) => p.to_owned(),
        None => match std::env::var_os("REBOUND_PYTHON") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => return Err(AwsError::NoPython),
        },
    };
    let server = python.with_file_name("moto_server");
    if server.is_file() {
        Ok(server)
    } else {
        Err(AwsError::MotoMissing(server.display().to_string()))
    }
}

pub(crate) struct Moto {
    pub url: String,
    _child: tokio::process::Child,
}

impl Moto {
    pub async fn start(options: &AwsOptions) -> Result<Self, AwsError> {
        let server = server(options.python.as_deref())?;
        // A free port for moto: bind, note, release (moto binds it next).
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        let mut command = tokio::process::Command::new(&server);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if options.moto_auth {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", NO_AUTH_ACTIONS.to_string());
        }
        let mut child = command
            .spawn()
            .map_err(|e| AwsError::MotoFailed(format!("{}: {e}", server.display())))?;
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(AwsError::MotoFailed(format!(
                    "{} exited with {status}",
                    server.display()
                )));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(AwsError::MotoFailed(format!(
                    "{} did not listen on port {port} within 30 s",
                    server.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { url, _child: child })
    }
}
