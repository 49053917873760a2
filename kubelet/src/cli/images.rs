//! `berth images`: pull, list, remove, import and inspect images.

use berth_runtime::image::reference::{self, Reference};
use berth_runtime::image::{Credentials, ImageRecord, ImageService, LogProgress, PullEvent, PullProgress};
use berth_runtime::Config;
use clap::Subcommand;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::sync::Mutex;

#[derive(Subcommand)]
pub enum ImagesCommand {
    /// Pull an image from a registry (per-layer progress on a terminal).
    Pull {
        /// Image reference, e.g. busybox, docker.io/library/busybox:1.36, repo@sha256:...
        image: String,
        /// Registry credentials as USER:PASSWORD.
        #[arg(long, conflicts_with_all = ["username", "password_stdin"])]
        creds: Option<String>,
        /// Registry user name (use with --password-stdin).
        #[arg(long, requires = "password_stdin")]
        username: Option<String>,
        /// Read the registry password from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Print only the image ID.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List images.
    #[command(alias = "list")]
    Ls {
        /// Only images whose name matches this reference (repository, or repository:tag).
        filter: Option<String>,
        /// Only print image IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Output format: table or json.
        #[arg(short, long, default_value = "table")]
        output: String,
    },
    /// Remove images by ID, repo:tag or repo@digest.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show an image's record and config as JSON.
    Inspect { image: String },
    /// Load images from an OCI layout directory, an OCI archive or a `docker save` archive.
    #[command(alias = "load")]
    Import {
        path: std::path::PathBuf,
        /// Name for the image (overrides the names in the archive).
        #[arg(long)]
        name: Option<String>,
    },
}

pub async fn run(cfg: Config, cmd: ImagesCommand) -> anyhow::Result<ExitCode> {
    let svc = ImageService::open(&cfg)?;
    match cmd {
        ImagesCommand::Pull { image, creds, username, password_stdin, quiet } => {
            let mut c = Credentials::default();
            if let Some(s) = creds {
                let (u, p) = s.split_once(':').ok_or_else(|| anyhow::anyhow!("--creds must be USER:PASSWORD"))?;
                c.username = u.into();
                c.password = p.into();
            } else if password_stdin {
                let mut p = String::new();
                std::io::stdin().read_to_string(&mut p)?;
                c.username = username.unwrap_or_default();
                c.password = p.trim_end_matches(['\n', '\r']).to_string();
            }
            let rec = if std::io::stderr().is_terminal() && !quiet {
                let bars = BarProgress::default();
                let r = svc.pull(&image, &c, &bars).await;
                bars.multi.clear().ok();
                r?
            } else {
                svc.pull(&image, &c, &LogLines { quiet }).await?
            };
            if quiet {
                println!("{}", rec.id);
            } else {
                println!("Image is up to date for {}", rec.id);
            }
        }
        ImagesCommand::Ls { filter, quiet, output } => {
            let mut images = svc.list()?;
            if let Some(f) = &filter {
                let want = reference::parse(f)?;
                let tagged = f.rsplit('/').next().is_some_and(|last| last.contains(':'));
                images.retain(|i| matches_filter(i, &want, tagged));
            }
            match output.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&images)?),
                "table" if quiet => images.iter().for_each(|i| println!("{}", i.id)),
                "table" => print_table(&images),
                other => anyhow::bail!("unknown output format {other:?} (table, json)"),
            }
        }
        ImagesCommand::Rm { images } => {
            let mut failed = false;
            for name in images {
                match svc.remove(&name).await {
                    Ok(rec) => println!("Deleted: {}", rec.id),
                    Err(e) => {
                        eprintln!("berth: removing {name:?}: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        ImagesCommand::Import { path, name } => {
            for rec in svc.import(&path, name.as_deref(), &LogLines { quiet: false }).await? {
                let names = if rec.repo_tags.is_empty() { "<none>".to_string() } else { rec.repo_tags.join(", ") };
                println!("Loaded image: {names} ({})", rec.id);
            }
        }
        ImagesCommand::Inspect { image } => {
            let rec = svc.status(&image)?.ok_or_else(|| anyhow::anyhow!("image {image:?} not found"))?;
            let config = svc.config_json(&rec)?;
            let out = serde_json::json!({ "image": rec, "config": config });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether an image is named by the filter: by digest, by repo:tag when a tag
/// is given, else by repository.
fn matches_filter(i: &ImageRecord, want: &Reference, tagged: bool) -> bool {
    let repo = reference::repo_name(want);
    if let Some(d) = want.digest() {
        return i.repo_digests.contains(&reference::repo_digest(want, d));
    }
    if tagged {
        return reference::repo_tag(want).is_some_and(|t| i.repo_tags.contains(&t));
    }
    let repo_of = |n: &str| n.split_once('@').map(|(r, _)| r.to_string()).or_else(|| n.rsplit_once(':').map(|(r, _)| r.to_string()));
    i.repo_tags.iter().chain(&i.repo_digests).any(|n| repo_of(n).as_deref() == Some(repo.as_str()))
}

fn print_table(images: &[ImageRecord]) {
    let mut rows = vec![["IMAGE".to_string(), "TAG".into(), "IMAGE ID".into(), "SIZE".into()]];
    for i in images {
        let id = i.id.trim_start_matches("sha256:")[..13].to_string();
        let size = human_size(i.size);
        if i.repo_tags.is_empty() {
            let repo = i.repo_digests.first().and_then(|d| d.split_once('@')).map(|(r, _)| r).unwrap_or("<none>");
            rows.push([repo.into(), "<none>".into(), id.clone(), size.clone()]);
        }
        for t in &i.repo_tags {
            let (repo, tag) = t.rsplit_once(':').unwrap_or((t, "<none>"));
            rows.push([repo.into(), tag.into(), id.clone(), size.clone()]);
        }
    }
    let widths: Vec<usize> = (0..4).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    for r in rows {
        println!("{:<w0$}   {:<w1$}   {:<w2$}   {}", r[0], r[1], r[2], r[3], w0 = widths[0], w1 = widths[1], w2 = widths[2]);
    }
}

fn human_size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else {
        format!("{v:.3}{}", UNITS[u]).replace(".000", "")
    }
}

fn short(d: &str) -> &str {
    let h = d.trim_start_matches("sha256:");
    &h[..h.len().min(12)]
}

/// Plain lines on stderr, for logs and pipes.
struct LogLines {
    quiet: bool,
}

impl PullProgress for LogLines {
    fn event(&self, ev: PullEvent<'_>) {
        if self.quiet {
            return LogProgress.event(ev);
        }
        match ev {
            PullEvent::Resolved { reference, digest } => eprintln!("{reference}: resolved to {digest}"),
            PullEvent::Exists { digest, .. } => eprintln!("{}: already exists", short(digest)),
            PullEvent::Downloading { digest, size } => eprintln!("{}: downloading {}", short(digest), human_size(size)),
            PullEvent::Downloaded { digest, .. } => eprintln!("{}: download complete", short(digest)),
            PullEvent::Unpacking { digest } => eprintln!("{}: unpacking", short(digest)),
            PullEvent::Progress { .. } | PullEvent::Done { .. } => {}
        }
    }
}

/// One progress bar per blob on a terminal.
#[derive(Default)]
struct BarProgress {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl BarProgress {
    fn bar(&self, digest: &str, len: u64) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap();
        bars.entry(digest.to_string())
            .or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(len));
                b.set_style(
                    ProgressStyle::with_template("{prefix:.bold} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_prefix(short(digest).to_string());
                b
            })
            .clone()
    }
}

impl PullProgress for BarProgress {
    fn event(&self, ev: PullEvent<'_>) {
        match ev {
            PullEvent::Resolved { reference, digest } => {
                let _ = self.multi.println(format!("{reference}: resolved to {digest}"));
            }
            PullEvent::Exists { digest, size } => self.bar(digest, size).finish_with_message("already exists"),
            PullEvent::Downloading { digest, size } => self.bar(digest, size).set_message("downloading"),
            PullEvent::Progress { digest, done, total } => self.bar(digest, total).set_position(done),
            PullEvent::Downloaded { digest, size } => self.bar(digest, size).finish_with_message("done"),
            PullEvent::Unpacking { digest } => self.bar(digest, 0).set_message("unpacking"),
            PullEvent::Done { .. } => {}
        }
    }
}

