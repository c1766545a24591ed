//! `rebound lab up|down|status|run`: the lab's simulated sites on loopback
//! from one command, so a plugin author or a new user has sites to point
//! plugins, the conformance kit and a host at without a cloud.
//!
//! `up` starts `rebound lab run` in the background (its own session, its
//! output in `DIR/lab.log`), waits until it has written `DIR/lab.json`, and
//! prints every site's endpoint and credentials; `DIR/sites.toml` binds the
//! sites to their plugins. `down` stops it (SIGTERM, then SIGKILL if it
//! lingers) and removes what it wrote. One lab runs per folder; `up` on a
//! folder whose lab runs shows it instead of starting another.

mod run;
mod state;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};

use crate::output::{Exit, Format, exit};
use state::{Kind, LabState};

#[derive(Subcommand)]
pub enum LabCommand {
    /// Start the simulated sites in the background and print their
    /// endpoints and credentials; write DIR/sites.toml.
    Up(UpArgs),
    /// Stop the lab and remove its state (its log stays).
    Down {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Show the running lab's sites.
    Status {
        #[command(flatten)]
        dir: DirArg,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Run the lab in the foreground until SIGTERM or Ctrl-C (what `up`
    /// starts in the background).
    Run(RunArgs),
}

/// The lab's folder.
#[derive(Args, Clone)]
pub struct DirArg {
    /// The lab's folder: its state, sites file, credentials, disks and log
    /// [default: $XDG_STATE_HOME/rebound/lab, or ~/.local/state/rebound/lab].
    #[arg(long, env = "REBOUND_LAB_DIR")]
    dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    dir: DirArg,
    #[command(flatten)]
    sites: SitesArgs,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    dir: DirArg,
    #[command(flatten)]
    sites: SitesArgs,
    /// Start a new session first (what `up` asks for): the lab then
    /// outlives the terminal it was started from.
    #[arg(long, hide = true)]
    detach: bool,
}

#[derive(Args)]
pub struct SitesArgs {
    /// Which simulated platforms to run, each as a pair of sites.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "example,openstack,kubevirt,ovirt,aws"
    )]
    sites: Vec<Kind>,
    /// Serve the sites on consecutive ports from this one (a KubeVirt site
    /// takes two: its API and its data plane); 0 picks free ports.
    #[arg(long, default_value_t = 0)]
    port: u16,
}

impl SitesArgs {
    fn kinds(&self) -> Vec<Kind> {
        let mut kinds = self.sites.clone();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

impl DirArg {
    fn path(&self) -> Result<PathBuf> {
        if let Some(dir) = &self.dir {
            return Ok(dir.clone());
        }
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .ok_or_else(|| anyhow!("neither XDG_STATE_HOME nor HOME is set: give --dir"))?;
        Ok(state.join("rebound").join("lab"))
    }

    /// The folder, created if missing, as an absolute path (the sites file
    /// names files in it).
    fn create(&self) -> Result<PathBuf> {
        let dir = self.path()?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the lab folder {}", dir.display()))?;
        dir.canonicalize()
            .with_context(|| format!("cannot open the lab folder {}", dir.display()))
    }

    /// The folder if it exists, as an absolute path.
    fn existing(&self) -> Result<Option<PathBuf>> {
        let dir = self.path()?;
        match dir.canonicalize() {
            Ok(dir) => Ok(Some(dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("cannot open the lab folder {}", dir.display()))
            }
        }
    }
}

/// The guest-writes URL of site `site`, when `sites_file` is the sites
/// file of a lab (the `lab.json` beside it wrote it and names the site).
pub fn guest_writes_url(sites_file: &Path, site: &str) -> Option<String> {
    let dir = sites_file.parent()?;
    let state = LabState::read(dir).ok()??;
    let same = |a: &Path, b: &Path| matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b);
    if !same(&state.sites_file, sites_file) {
        return None;
    }
    state
        .sites
        .into_iter()
        .find(|s| s.name == site)
        .map(|s| s.guest_writes)
        .filter(|url| !url.is_empty())
}

pub async fn run(command: LabCommand) -> Result<()> {
    match command {
        LabCommand::Up(args) => up(&args).await,
        LabCommand::Down { dir } => down(&dir).await,
        LabCommand::Status { dir, output } => status(&dir, output),
        LabCommand::Run(args) => {
            if args.detach {
                rustix::process::setsid().context("starting a new session for the lab")?;
            }
            let dir = args.dir.create()?;
            run::run(&dir, &args.sites.kinds(), args.sites.port).await
        }
    }
}

/// Whether `pid` is a running lab process. Pids are reused, so it must
/// also be `rebound … lab run`.
pub(crate) fn running(pid: u32) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.windows(2).any(|w| w == [b"lab".as_slice(), b"run"]) && !gone(pid)
        }
        // Without /proc, trust the pid.
        Err(_) if !Path::new("/proc/self").exists() => !gone(pid),
        Err(_) => false,
    }
}

/// Whether process `pid` has ended: no such process, or a zombie (which
/// has closed its files and ports; its parent has yet to reap it). An
/// exiting process loses its command line before it closes its sockets,
/// so this, not [`running`], says when a stopped lab's ports are free.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S …`: the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_none_or(|state| state == 'Z' || state == 'X'),
        Err(_) if !Path::new("/proc/self").exists() => i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .is_none_or(|p| rustix::process::test_kill_process(p).is_err()),
        Err(_) => true,
    }
}

/// The state of the lab running in `dir`; a state left by a lab that is
/// gone is cleared (and said so).
fn live(dir: &Path) -> Result<Option<LabState>> {
    match LabState::read(dir)? {
        Some(state) if running(state.pid) => Ok(Some(state)),
        Some(state) => {
            eprintln!(
                "the lab in {} (pid {}) is gone; clearing what it left",
                dir.display(),
                state.pid
            );
            state::clear(dir)?;
            Ok(None)
        }
        None => Ok(None),
    }
}

fn nothing_running(dir: &Path) -> anyhow::Error {
    Exit::new(
        exit::NOT_FOUND,
        format!(
            "no lab is running in {}; start one with `rebound lab up --dir {}`",
            dir.display(),
            dir.display()
        ),
    )
    .into()
}

/// How long `up` waits for the sites to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

async fn up(args: &UpArgs) -> Result<()> {
    let dir = args.dir.create()?;
    let mut kinds = args.sites.kinds();
    // The AWS site runs moto from the Python environment; without it the
    // lab comes up without that site and says why.
    if kinds.contains(&Kind::Aws)
        && let Err(e) = rebound_lab::aws::moto_server(None)
    {
        eprintln!("rebound lab: no AWS site: {e}");
        kinds.retain(|k| *k != Kind::Aws);
    }
    if let Some(state) = live(&dir)? {
        eprintln!(
            "the lab in {} is already up (pid {}){}",
            dir.display(),
            state.pid,
            if state.kinds == kinds {
                String::new()
            } else {
                "; its sites differ from --sites: `rebound lab down` first to change them"
                    .to_owned()
            }
        );
        println!("{}", state.render(args.output));
        return Ok(());
    }
    let log_path = dir.join(state::LOG_FILE);
    let log = std::fs::File::create(&log_path).with_context(|| {
        format!(
            "cannot write in the lab folder {}; give --dir a folder you can write",
            dir.display()
        )
    })?;
    let names: Vec<String> = kinds
        .iter()
        .filter_map(|k| clap::ValueEnum::to_possible_value(k).map(|v| v.get_name().to_owned()))
        .collect();
    let exe = std::env::current_exe().context("finding the rebound binary")?;
    let mut child = std::process::Command::new(exe)
        .args(["lab", "run", "--detach", "--dir"])
        .arg(&dir)
        .args(["--sites", &names.join(",")])
        .args(["--port", &args.sites.port.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting `rebound lab run`")?;
    let started = Instant::now();
    let state = loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(anyhow!(
                "the lab did not start ({status}):\n{}\n(log: {})",
                tail.join("\n"),
                log_path.display()
            ));
        }
        if let Some(state) = LabState::read(&dir)?
            && state.pid == child.id()
        {
            break state;
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            state::clear(&dir)?;
            return Err(anyhow!(
                "the lab did not answer within {START_TIMEOUT:?}; see {}",
                log_path.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("{}", state.render(args.output));
    Ok(())
}

/// How long `down` waits after SIGTERM, then after SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

async fn down(args: &DirArg) -> Result<()> {
    let Some(dir) = args.existing()? else {
        return Err(nothing_running(&args.path()?));
    };
    let Some(state) = LabState::read(&dir)? else {
        return Err(nothing_running(&dir));
    };
    let sites: Vec<&str> = state.sites.iter().map(|s| s.name.as_str()).collect();
    if !running(state.pid) {
        state::clear(&dir)?;
        println!(
            "the lab in {} (pid {}) had already stopped; removed its state",
            dir.display(),
            state.pid
        );
        return Ok(());
    }
    let pid = i32::try_from(state.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| anyhow!("{}: pid {} is not a process id", dir.display(), state.pid))?;
    let mut stopped = false;
    for signal in [rustix::process::Signal::TERM, rustix::process::Signal::KILL] {
        // It may have stopped in between: then there is nothing to signal.
        let _ = rustix::process::kill_process(pid, signal);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !gone(state.pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if gone(state.pid) {
            stopped = true;
            break;
        }
    }
    if !stopped {
        return Err(anyhow!(
            "the lab in {} (pid {}) did not stop, even on SIGKILL",
            dir.display(),
            state.pid
        ));
    }
    state::clear(&dir)?;
    println!(
        "stopped the lab in {} (pid {}): {}",
        dir.display(),
        state.pid,
        sites.join(", ")
    );
    Ok(())
}

fn status(args: &DirArg, output: Format) -> Result<()> {
    let Some(dir) = args.existing()? else {
        return Err(nothing_running(&args.path()?));
    };
    match live(&dir)? {
        Some(state) => {
            println!("{}", state.render(output));
            Ok(())
        }
        None => Err(nothing_running(&dir)),
    }
}
