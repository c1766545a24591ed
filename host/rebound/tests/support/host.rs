//! A real `rebound serve` for the tests and benches that drive one end to
//! end: the example plugin's package signed by the test publisher, lab
//! sites of the example platform bound by a sites file, and the host's
//! address read from its log (with what it printed before it).

// Shared by several tests and a bench; each uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rebound_lab::ExampleSite;

/// A running host, killed when dropped.
pub struct Host {
    child: Child,
    /// `http://ADDR`.
    pub url: String,
    /// The lines it logged before its address (the bootstrap admin's
    /// generated password among them).
    pub preamble: Vec<String>,
}

impl Host {
    /// The bootstrap admin's password, printed once before the address.
    #[allow(dead_code)] // not every test binary signs in
    pub fn password(&self) -> String {
        self.preamble
            .iter()
            .find_map(|l| l.split("with password ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .expect("password printed")
            .to_owned()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `ADDR`, without the scheme.
    pub fn addr(&self) -> &str {
        self.url.strip_prefix("http://").unwrap_or(&self.url)
    }
}

/// The environment variable a site's token is read from (`lab-a` →
/// `LAB_A_TOKEN`).
fn token_var(site: &str) -> String {
    format!("{}_TOKEN", site.to_uppercase().replace('-', "_"))
}

/// Start `rebound serve` in `dir`: the example plugin package and the
/// publisher's key written there, `sites` bound to the example plugin by a
/// sites file (each token passed in the environment), its compilation
/// cache in `dir/cache`, on a free loopback port unless `args` names
/// `--listen`; `args` and `env` go on top. The caller's
/// `REBOUND_ADMIN_PASSWORD` is not inherited. With `echo`, what the host
/// logs after its address is printed as `host: …`; otherwise drained.
pub async fn serve(
    dir: &Path,
    sites: &[(&str, &ExampleSite)],
    args: &[&str],
    env: &[(&str, &str)],
    echo: bool,
) -> Host {
    rebound_runtime::testing::install(
        "example",
        &dir.join("plugins/example"),
        dir.join("publisher.pub"),
    );
    let file: String = sites
        .iter()
        .map(|(name, site)| {
            format!(
                "[sites.{name}]\nplugin = \"example\"\nconfig = {{ endpoint = \"{e}\" }}\n\
                 secrets = {{ token = \"env:{var}\" }}\negress = [\"{e}\"]\n",
                e = site.endpoint(),
                var = token_var(name),
            )
        })
        .collect();
    std::fs::write(dir.join("sites.toml"), file).expect("sites");
    let mut command = Command::new(env!("CARGO_BIN_EXE_rebound"));
    command.arg("serve");
    if !args.contains(&"--listen") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    command
        .args(["--plugins", "plugins", "--trusted-key", "publisher.pub"])
        .args(["--sites", "sites.toml"])
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .current_dir(dir)
        .env_remove("REBOUND_ADMIN_PASSWORD");
    for (name, site) in sites {
        command.env(token_var(name), &site.token);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    spawn(command, echo).await
}

/// Start `command` (a `rebound serve`) and wait for it to log its address.
pub async fn spawn(mut command: Command, echo: bool) -> Host {
    command.stderr(Stdio::piped());
    let mut child = command.spawn().expect("rebound serve");
    let stderr = child.stderr.take().expect("stderr");
    let read = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        let mut preamble = Vec::new();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("rebound serving on ") {
                let url = url.to_owned();
                // Keep draining, so the host never blocks on a full pipe.
                std::thread::spawn(move || {
                    for line in lines.map_while(Result::ok) {
                        if echo {
                            eprintln!("host: {line}");
                        }
                    }
                });
                return Ok((url, preamble));
            }
            preamble.push(line);
        }
        Err(preamble)
    });
    match read.await.expect("join") {
        Ok((url, preamble)) => Host {
            child,
            url,
            preamble,
        },
        Err(preamble) => {
            let _ = child.kill();
            panic!(
                "rebound serve did not print its address:\n{}",
                preamble.join("\n")
            );
        }
    }
}
