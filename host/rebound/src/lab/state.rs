//! What a running lab leaves in its folder for the CLI and for people: the
//! state file `lab.json` (the lab's pid and every site's endpoint, config
//! and throwaway credentials), the credential files `secrets/<site>.<key>`,
//! and the sites file `sites.toml` binding each lab site to its plugin for
//! `rebound serve --sites` and `rebound plugin test --sites`. Also how the
//! CLI shows a lab: a table, or the state as JSON or YAML.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde::{Deserialize, Serialize};

use crate::output::Format;

pub const STATE_FILE: &str = "lab.json";
pub const SITES_FILE: &str = "sites.toml";
pub const LOG_FILE: &str = "lab.log";
/// Locked (an OS file lock) by the lab's process while it runs.
pub const LOCK_FILE: &str = "lab.lock";
/// One folder per site: its disks, its CA.
pub const SITES_DIR: &str = "sites";
pub const SECRETS_DIR: &str = "secrets";

/// The kinds of simulated site the lab runs; each brings up a pair of
/// sites, so a plan has a source and a target.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Two sites of the example platform (`example-a` with three VMs,
    /// `example-b` empty), keeping real disk data.
    Example,
    /// One OpenStack cloud, its two regions as two sites (`openstack-east`
    /// with two servers, `openstack-west`).
    Openstack,
    /// Two KubeVirt clusters over HTTPS (`kubevirt-a` with three VMs in the
    /// namespace `prod`, `kubevirt-b` with the namespace ready).
    Kubevirt,
    /// Two oVirt engines over HTTP (`ovirt-a` with two running VMs,
    /// `ovirt-b` with none).
    Ovirt,
    /// moto behind the lab's AWS front, two regions as two sites
    /// (`aws-east` us-east-1 with two instances, `aws-west` us-west-2);
    /// needs moto in `REBOUND_PYTHON`'s environment.
    Aws,
}

/// The lab as `lab run` wrote it once every site answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub pid: u32,
    pub dir: PathBuf,
    pub kinds: Vec<Kind>,
    pub sites_file: PathBuf,
    pub log_file: PathBuf,
    pub sites: Vec<LabSite>,
}

/// One simulated site and how a plugin reaches it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabSite {
    pub name: String,
    /// The plugin that speaks the site's platform.
    pub plugin: String,
    /// Where a client starts: the API's base URL (Keystone's for OpenStack).
    pub endpoint: String,
    /// The site config the plugin reads.
    pub config: BTreeMap<String, String>,
    /// The credentials, in the clear: they are the lab's, made up at start.
    pub secrets: BTreeMap<String, String>,
    /// The same credentials as files (mode 0600), which the sites file
    /// refers to.
    pub secret_files: BTreeMap<String, PathBuf>,
    /// What the sites file grants the plugin to reach.
    pub egress: Vec<String>,
    /// The site's own CA, when it serves HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Where a test writes into a workload's disk as its guest would
    /// (`POST {"disk","offset","length"}`; `rebound plugin test
    /// --guest-writes`).
    #[serde(default)]
    pub guest_writes: String,
    /// The data plane the host's data mover reads and writes, when the
    /// platform has one apart from its API.
    pub data_url: Option<String>,
    /// The seeded workloads, by name.
    pub workloads: Vec<String>,
    pub state_dir: PathBuf,
}

impl LabState {
    /// The state file of `dir`, if there is one.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("reading {} (remove it if no lab runs)", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Write the credential files, the sites file and, last, the state file:
    /// its appearance tells `lab up` that the lab is ready.
    pub fn write(&self) -> Result<()> {
        for site in &self.sites {
            for (key, path) in &site.secret_files {
                if let Some(value) = site.secrets.get(key) {
                    write_private(path, value.as_bytes())?;
                }
            }
        }
        std::fs::write(&self.sites_file, self.sites_toml())
            .with_context(|| format!("writing {}", self.sites_file.display()))?;
        let json = serde_json::to_vec_pretty(self)?;
        let temp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        write_private(&temp, &json)?;
        std::fs::rename(&temp, self.dir.join(STATE_FILE))
            .with_context(|| format!("writing {}", self.dir.join(STATE_FILE).display()))?;
        Ok(())
    }

    /// The sites file: every lab site bound to its plugin, its secrets as
    /// `file:` references to the credential files.
    pub fn sites_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let path = |p: &Path| q(&format!("file:{}", p.display()));
        let mut out = format!(
            "# The sites of the lab in {dir}, written by `rebound lab up`: for\n\
             # `rebound serve --sites` and `rebound plugin test --sites`. The\n\
             # credentials are the lab's throwaway ones; `rebound lab down` removes\n\
             # this file with them.\n",
            dir = self.dir.display()
        );
        for site in &self.sites {
            let inline = |pairs: Vec<(String, String)>| {
                let items: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", items.join(", "))
            };
            out.push_str(&format!("\n[sites.{}]\n", site.name));
            out.push_str(&format!("plugin = {}\n", q(&site.plugin)));
            let config = site.config.iter().map(|(k, v)| (k.clone(), q(v))).collect();
            out.push_str(&format!("config = {}\n", inline(config)));
            let secrets = site
                .secret_files
                .iter()
                .map(|(k, p)| (k.clone(), path(p)))
                .collect();
            out.push_str(&format!("secrets = {}\n", inline(secrets)));
            let egress: Vec<String> = site.egress.iter().map(|e| q(e)).collect();
            out.push_str(&format!("egress = [{}]\n", egress.join(", ")));
            if let Some(ca) = &site.ca_file {
                out.push_str(&format!("ca_file = {}\n", q(&ca.display().to_string())));
            }
        }
        out
    }

    /// The lab as a person or a script reads it.
    pub fn render(&self, format: Format) -> String {
        if format != Format::Table {
            let value = serde_json::to_value(self).unwrap_or_default();
            return crate::output::render(&value, format, None);
        }
        let mut table = Table::new();
        table
            .load_preset(UTF8_BORDERS_ONLY)
            // Endpoints and tokens stay whole, to be copied.
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(["SITE", "PLUGIN", "ENDPOINT", "CREDENTIALS", "DETAILS"]);
        for site in &self.sites {
            let mut credentials: Vec<String> = Vec::new();
            if let Some(user) = site.config.get("user") {
                let project = site.config.get("project").map(String::as_str);
                credentials.push(format!("user {user}, project {}", project.unwrap_or("-")));
            }
            credentials.extend(site.secrets.iter().map(|(k, v)| format!("{k} {v}")));
            // The rest of the config is in the sites file.
            let mut details: Vec<String> = ["region", "namespace"]
                .iter()
                .filter_map(|k| site.config.get(*k).map(|v| format!("{k} {v}")))
                .collect();
            if let Some(ca) = &site.ca_file {
                details.push(format!("CA {}", ca.display()));
            }
            if let Some(data) = &site.data_url {
                details.push(format!("data plane {data}"));
            }
            if !site.guest_writes.is_empty() {
                details.push(format!("guest writes {}", site.guest_writes));
            }
            details.push(if site.workloads.is_empty() {
                "no workloads: a target".to_owned()
            } else {
                format!("workloads {}", site.workloads.join(", "))
            });
            table.add_row([
                site.name.clone(),
                site.plugin.clone(),
                site.endpoint.clone(),
                credentials.join("\n"),
                details.join("\n"),
            ]);
        }
        format!(
            "{table}\n\
             sites file: {sites} (for `rebound serve --sites` and `rebound plugin test --sites`)\n\
             credentials: throwaway, made up for this lab; also in {secrets}\n\
             log: {log}\n\
             stop it with: rebound lab down --dir {dir}",
            sites = self.sites_file.display(),
            secrets = self.dir.join(SECRETS_DIR).display(),
            log = self.log_file.display(),
            dir = self.dir.display(),
        )
    }
}

/// Remove what a lab left in `dir` (its log stays, for a post-mortem).
pub fn clear(dir: &Path) -> Result<()> {
    for file in [STATE_FILE, SITES_FILE] {
        match std::fs::remove_file(dir.join(file)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", dir.join(file).display()));
            }
            _ => {}
        }
    }
    for folder in [SITES_DIR, SECRETS_DIR] {
        match std::fs::remove_dir_all(dir.join(folder)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", dir.join(folder).display()));
            }
            _ => {}
        }
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{Kind, LabSite, LabState};
    use crate::output::Format;

    fn state(dir: &std::path::Path) -> LabState {
        let site = |name: &str, plugin: &str, ca: bool| LabSite {
            name: name.to_owned(),
            plugin: plugin.to_owned(),
            endpoint: "https://127.0.0.1:7443".to_owned(),
            config: BTreeMap::from([
                ("endpoint".to_owned(), "https://127.0.0.1:7443".to_owned()),
                ("namespace".to_owned(), "prod \"quoted\"".to_owned()),
            ]),
            secrets: BTreeMap::from([("token".to_owned(), format!("{name}-secret"))]),
            secret_files: BTreeMap::from([(
                "token".to_owned(),
                dir.join("secrets").join(format!("{name}.token")),
            )]),
            egress: vec!["https://127.0.0.1:7443".to_owned()],
            ca_file: ca.then(|| dir.join("ca.pem")),
            guest_writes: "https://127.0.0.1:7443/_lab/guest-writes".to_owned(),
            data_url: None,
            workloads: vec!["web-1".to_owned()],
            state_dir: dir.join("sites").join(name),
        };
        LabState {
            pid: 42,
            dir: dir.to_owned(),
            kinds: vec![Kind::Example, Kind::Kubevirt],
            sites_file: dir.join("sites.toml"),
            log_file: dir.join("lab.log"),
            sites: vec![
                site("example-a", "example", false),
                site("kubevirt-a", "kubevirt", true),
            ],
        }
    }

    /// The sites file the lab writes reads back through the sites-file
    /// reader `rebound serve` uses, credentials included.
    #[test]
    fn the_sites_file_reads_back_with_its_credentials() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = state(dir.path());
        std::fs::write(
            dir.path().join("ca.pem"),
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )
        .expect("ca");
        state.write().expect("write");
        let sites = crate::sites::definitions(&state.sites_file, None).expect("sites file");
        assert_eq!(sites.len(), 2);
        let kv = &sites["kubevirt-a"];
        assert_eq!(kv.plugin, "kubevirt");
        assert_eq!(kv.secrets["token"], "kubevirt-a-secret");
        assert_eq!(kv.config["namespace"], "prod \"quoted\"");
        assert!(kv.ca_pem.is_some());
        assert!(sites["example-a"].ca_pem.is_none());
        let back = LabState::read(dir.path()).expect("read").expect("a state");
        assert_eq!(back.pid, 42);
        let table = state.render(Format::Table);
        assert!(table.contains("kubevirt-a-secret"), "{table}");
        assert!(table.contains("throwaway"), "{table}");
    }
}
