//! `rebound plugin new NAME`: a new plugin crate, ready to build for
//! `wasm32-wasip2` and to pass the conformance kit against the lab's
//! example sites. Its sources are the example plugin's (`plugins/example`,
//! embedded when this binary is built), renamed — not a second copy to
//! keep in step: a fix to the example reaches every plugin made after it.
//!
//! The rewrite: the crate becomes `rebound-plugin-NAME` outside any
//! workspace (what it inherited from Rebound's workspace is written out,
//! its license and repository dropped as Rebound's own), the SDK a path
//! dependency on this checkout's `plugins/sdk` (or `--sdk-path`), the
//! release profile the one Rebound builds plugins with; the manifest and
//! `describe()` say NAME. A README lists the next commands, and the
//! checkout's Cargo.lock pins the versions the SDK is tested with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use toml::{Table, Value};

#[derive(Args)]
pub struct NewArgs {
    /// The plugin's name, as its manifest will carry it (a-z, 0-9 and '-').
    name: String,
    /// Where to create the crate [default: ./NAME]; must not exist or be
    /// empty.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The plugin SDK crate to depend on [default: this checkout's
    /// plugins/sdk].
    #[arg(long)]
    sdk_path: Option<PathBuf>,
}

/// The example plugin, the template: (path in the new crate, text).
const TEMPLATE: &[(&str, &str)] = &[
    (
        "src/lib.rs",
        include_str!("../../../plugins/example/src/lib.rs"),
    ),
    (
        "src/api.rs",
        include_str!("../../../plugins/example/src/api.rs"),
    ),
];
const TEMPLATE_CARGO: &str = include_str!("../../../plugins/example/Cargo.toml");
const TEMPLATE_MANIFEST: &str = include_str!("../../../plugins/example/plugin.toml");
/// What the template inherits from: the workspace's package fields,
/// dependency versions, lints and plugin profile.
const WORKSPACE_CARGO: &str = include_str!("../../../Cargo.toml");
/// The line of `describe()` that names the plugin.
const NAME_IN_DESCRIBE: &str = "name: \"example\".into(),";
/// The SDK of the checkout this binary was built from.
const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../plugins/sdk");
/// What the new crate does not inherit: the Rebound project's own.
const PROJECT_FIELDS: &[&str] = &["license", "repository", "authors", "homepage"];

pub fn run(args: &NewArgs) -> Result<()> {
    let manifest = manifest(&args.name)?;
    let version = rebound_runtime::manifest::Manifest::parse(&manifest)
        .map_err(|e| anyhow!("{e}"))?
        .version
        .to_string();
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!(
            "{} exists and is not empty; give --dir a new or empty folder",
            dir.display()
        );
    }
    let sdk = args
        .sdk_path
        .clone()
        .unwrap_or_else(|| PathBuf::from(SDK_DIR));
    let sdk = sdk
        .canonicalize()
        .ok()
        .filter(|s| is_sdk(s))
        .ok_or_else(|| {
            anyhow!(
                "no plugin SDK crate (rebound-plugin-sdk) at {}; give --sdk-path the \
             plugins/sdk folder of a Rebound checkout",
                sdk.display()
            )
        })?;
    let files = files(&args.name, &manifest, &version, &sdk)?;
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("creating {}", dir.display()))?;
    for (path, text) in &files {
        std::fs::write(dir.join(path), text)
            .with_context(|| format!("writing {}", dir.join(path).display()))?;
    }
    // The versions the SDK is built and tested with, when it comes with them.
    let lock = sdk.join("../../Cargo.lock");
    if lock.is_file() {
        std::fs::copy(&lock, dir.join("Cargo.lock"))
            .with_context(|| format!("copying {}", lock.display()))?;
    }
    println!(
        "created the plugin '{}' in {} from the example plugin (SDK: {}); \
         {}/README.md lists the next commands",
        args.name,
        dir.display(),
        sdk.display(),
        dir.display()
    );
    Ok(())
}

fn is_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .ok()
        .and_then(|text| toml::from_str::<Table>(&text).ok())
        .is_some_and(|t| {
            t.get("package")
                .and_then(|p| p.get("name"))
                .and_then(Value::as_str)
                == Some("rebound-plugin-sdk")
        })
}

/// The example's manifest template, renamed; checked as the host checks a
/// manifest, which is what validates NAME.
fn manifest(name: &str) -> Result<String> {
    let mut renamed = 0;
    let text: Vec<String> = TEMPLATE_MANIFEST
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("name") && line.contains('=') {
                renamed += 1;
                format!("name = {}", Value::String(name.to_owned()))
            } else {
                line.to_owned()
            }
        })
        .collect();
    if renamed != 1 {
        bail!("the example plugin's plugin.toml has no single `name = …` line to rename");
    }
    let text = text.join("\n") + "\n";
    rebound_runtime::manifest::Manifest::parse(&text)
        .map_err(|e| anyhow!("cannot name a plugin '{name}': {e}"))?;
    Ok(text)
}

/// Every file of the new crate: (path, text).
fn files(name: &str, manifest: &str, version: &str, sdk: &Path) -> Result<Vec<(String, String)>> {
    let crate_name = format!("rebound-plugin-{name}");
    let mut files = vec![
        ("Cargo.toml".to_owned(), cargo_toml(name, version, sdk)?),
        ("plugin.toml".to_owned(), manifest.to_owned()),
        ("README.md".to_owned(), readme(name, &crate_name)),
        (
            ".gitignore".to_owned(),
            "/target\n/pkg\n/lab\n*.key\n".to_owned(),
        ),
    ];
    for (path, text) in TEMPLATE {
        let text = if *path == "src/lib.rs" {
            lib_rs(name, text)?
        } else {
            (*text).to_owned()
        };
        files.push(((*path).to_owned(), text));
    }
    Ok(files)
}

fn lib_rs(name: &str, text: &str) -> Result<String> {
    if text.matches(NAME_IN_DESCRIBE).count() != 1 {
        bail!("the example plugin's describe() has no single `{NAME_IN_DESCRIBE}` to rename");
    }
    let text = text.replace(NAME_IN_DESCRIBE, &format!("name: {:?}.into(),", name));
    Ok(format!(
        "//! The `{name}` provider plugin, made by `rebound plugin new` from Rebound's\n\
         //! example plugin: it still speaks the lab's example platform, as\n\
         //! described below. Make it speak yours; README.md lists the commands to\n\
         //! build, package and test it.\n\
         //!\n{text}"
    ))
}

fn readme(name: &str, crate_name: &str) -> String {
    let wasm = crate_name.replace('-', "_");
    format!(
        r#"# {name}: a Rebound provider plugin

Made by `rebound plugin new` from Rebound's example plugin: it speaks the
lab's example platform (`src/api.rs` holds the platform's JSON shapes,
`src/lib.rs` the contract's functions) and passes the conformance kit as it
is. Change it to speak your platform; Rebound's docs/plugin-authoring.md
explains the contract. `plugin.toml` is the manifest: its `version` and
`capabilities` must equal what `describe()` reports, and `egress` lists
the URLs (templates over the site's config) the plugin may reach.

## Build, package, test against the lab

```sh
cargo build --target wasm32-wasip2 --release
rebound plugin keygen --out publisher
rebound plugin package --wasm "${{CARGO_TARGET_DIR:-target}}/wasm32-wasip2/release/{wasm}.wasm" --manifest plugin.toml --key publisher.key --out pkg
rebound lab up --dir lab
rebound plugin test pkg --sites lab/sites.toml --site example-a --trusted-key publisher.pub
rebound lab down --dir lab
```

- `rebound plugin keygen` makes your publisher key once: keep
  `publisher.key` secret; hosts trust `publisher.pub`.
- `rebound lab up` starts simulated sites on loopback and writes
  `lab/sites.toml`; `rebound plugin test` runs the standard scenarios and
  the fault scenarios on the site `example-a` and prints a pass/fail table.
  Point it at your platform's sites with a sites file of your own.
- `rebound plugin publish pkg` installs the package on a running host (as
  a user with the plugin-publisher role).
"#
    )
}

/// The example's Cargo.toml as the crate `rebound-plugin-NAME`, a crate of
/// its own.
fn cargo_toml(name: &str, version: &str, sdk: &Path) -> Result<String> {
    let crate_name = format!("rebound-plugin-{name}");
    let template: Table = toml::from_str(TEMPLATE_CARGO).context("plugins/example/Cargo.toml")?;
    let root: Table = toml::from_str(WORKSPACE_CARGO).context("the workspace Cargo.toml")?;
    let workspace = table(&root, "workspace")?;
    let inherited = table(workspace, "package")?;
    let versions = table(workspace, "dependencies")?;

    let mut package = BTreeMap::new();
    for (key, value) in table(&template, "package")? {
        let value = match key.as_str() {
            "name" | "version" | "description" => continue,
            k if PROJECT_FIELDS.contains(&k) => continue,
            k if is_inherited(value) => inherited
                .get(k)
                .cloned()
                .ok_or_else(|| anyhow!("the workspace has no package.{k} to inherit"))?,
            _ => value.clone(),
        };
        package.insert(key.clone(), value);
    }
    let mut out =
        String::from("# Made by `rebound plugin new` from Rebound's example plugin.\n[package]\n");
    for (key, value) in [
        ("name", Value::String(crate_name.clone())),
        ("version", Value::String(version.to_owned())),
        (
            "description",
            Value::String(format!("The {name} provider plugin for Rebound")),
        ),
    ] {
        out.push_str(&format!("{key} = {}\n", inline(&value)));
    }
    for (key, value) in &package {
        out.push_str(&format!("{} = {}\n", bare(key), inline(value)));
    }
    for (section, value) in &template {
        match section.as_str() {
            "package" | "lints" => {}
            "dependencies" | "dev-dependencies" | "build-dependencies" => {
                let deps = value
                    .as_table()
                    .ok_or_else(|| anyhow!("[{section}] is not a table"))?;
                out.push_str(&format!("\n[{section}]\n"));
                for (dep, spec) in deps {
                    let spec = dependency(dep, spec, versions, sdk)?;
                    out.push_str(&format!("{} = {}\n", bare(dep), inline(&spec)));
                }
            }
            _ => {
                out.push_str(&format!("\n[{section}]\n"));
                for (key, value) in value.as_table().into_iter().flatten() {
                    out.push_str(&format!("{} = {}\n", bare(key), inline(value)));
                }
            }
        }
    }
    let lints = match template.get("lints") {
        Some(lints) if is_inherited(lints) => table(workspace, "lints").ok(),
        Some(lints) => lints.as_table(),
        None => None,
    };
    for (tool, levels) in lints.into_iter().flatten() {
        out.push_str(&format!("\n[lints.{}]\n", bare(tool)));
        for (lint, level) in levels.as_table().into_iter().flatten() {
            out.push_str(&format!("{} = {}\n", bare(lint), inline(level)));
        }
    }
    // The profile Rebound builds its plugins with, as this crate's release.
    if let Some(plugin) = root
        .get("profile")
        .and_then(|p| p.get("plugin"))
        .and_then(Value::as_table)
    {
        out.push_str("\n[profile.release]\n");
        for (key, value) in plugin.iter().filter(|(k, _)| *k != "inherits") {
            out.push_str(&format!("{} = {}\n", bare(key), inline(value)));
        }
    }
    out.push_str("\n# A crate of its own, not a member of an enclosing workspace.\n[workspace]\n");
    Ok(out)
}

fn table<'a>(parent: &'a Table, key: &str) -> Result<&'a Table> {
    parent
        .get(key)
        .and_then(Value::as_table)
        .ok_or_else(|| anyhow!("no [{key}] table"))
}

/// `x.workspace = true`.
fn is_inherited(value: &Value) -> bool {
    value.get("workspace").and_then(Value::as_bool) == Some(true)
}

/// A dependency of the template as the new crate declares it.
fn dependency(name: &str, spec: &Value, versions: &Table, sdk: &Path) -> Result<Value> {
    if name == "rebound-plugin-sdk" {
        let mut sdk_spec = Table::new();
        sdk_spec.insert("path".into(), Value::String(sdk.display().to_string()));
        return Ok(Value::Table(sdk_spec));
    }
    if !is_inherited(spec) {
        return Ok(spec.clone());
    }
    let mut resolved = match versions.get(name) {
        Some(Value::String(version)) => {
            let mut t = Table::new();
            t.insert("version".into(), Value::String(version.clone()));
            t
        }
        Some(Value::Table(t)) => t.clone(),
        _ => bail!("the workspace has no version of the dependency '{name}'"),
    };
    // What the member adds to the workspace's entry (features, optional).
    for (key, value) in spec.as_table().into_iter().flatten() {
        match (key.as_str(), resolved.get_mut(key)) {
            ("workspace", _) => {}
            ("features", Some(Value::Array(features))) => {
                features.extend(value.as_array().into_iter().flatten().cloned());
            }
            _ => {
                resolved.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(Value::Table(resolved))
}

/// A key, quoted unless bare.
fn bare(key: &str) -> String {
    let is_bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if is_bare {
        key.to_owned()
    } else {
        Value::String(key.to_owned()).to_string()
    }
}

/// A value on one line (tables inline).
fn inline(value: &Value) -> String {
    match value {
        Value::Table(t) => {
            let items: Vec<String> = t
                .iter()
                .map(|(k, v)| format!("{} = {}", bare(k), inline(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(inline).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{TEMPLATE, files, manifest};

    /// Every source file of the example plugin is part of the template: a
    /// file added to the example is one the scaffold must carry.
    #[test]
    fn the_template_is_the_whole_example_plugin() {
        let src =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/example/src");
        let mut on_disk: Vec<String> = std::fs::read_dir(&src)
            .expect("plugins/example/src")
            .map(|e| format!("src/{}", e.expect("entry").file_name().to_string_lossy()))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = TEMPLATE.iter().map(|(p, _)| (*p).to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn names_follow_the_manifest_rule() {
        assert!(manifest("acme-2").is_ok());
        for bad in ["Acme", "acme_cloud", "", "a/b", &"x".repeat(65)] {
            let err = manifest(bad).expect_err(bad);
            assert!(err.to_string().contains("a-z, 0-9 and '-'"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_crate_is_renamed_and_stands_alone() {
        let sdk = std::path::Path::new("/opt/rebound/plugins/sdk");
        let files = files("acme", &manifest("acme").expect("name"), "0.1.0", sdk).expect("files");
        let file = |name: &str| {
            files
                .iter()
                .find(|(p, _)| p == name)
                .map(|(_, t)| t.clone())
                .unwrap_or_else(|| panic!("no {name}"))
        };
        let cargo: toml::Table = toml::from_str(&file("Cargo.toml")).expect("Cargo.toml parses");
        assert_eq!(
            cargo["package"]["name"].as_str(),
            Some("rebound-plugin-acme")
        );
        assert_eq!(cargo["package"]["version"].as_str(), Some("0.1.0"));
        assert!(cargo["package"].get("license").is_none());
        assert_eq!(
            cargo["dependencies"]["rebound-plugin-sdk"]["path"].as_str(),
            Some("/opt/rebound/plugins/sdk")
        );
        assert!(cargo["dependencies"]["serde"]["version"].is_str());
        assert!(
            cargo["workspace"]
                .as_table()
                .is_some_and(toml::Table::is_empty)
        );
        assert!(cargo["lints"]["rust"].get("unsafe_code").is_some());
        assert_eq!(cargo["profile"]["release"]["lto"].as_bool(), Some(true));
        let text = file("Cargo.toml");
        assert!(!text.contains("workspace = true"), "{text}");

        let manifest = file("plugin.toml");
        assert!(manifest.contains("name = \"acme\""), "{manifest}");
        let lib = file("src/lib.rs");
        assert!(lib.contains("name: \"acme\".into(),"), "{lib}");
        assert!(lib.starts_with("//! The `acme` provider plugin"), "{lib}");
        assert!(file("README.md").contains("release/rebound_plugin_acme.wasm"));
    }
}
