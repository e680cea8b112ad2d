//! `provisiond import` and `provisiond export`, locally or against a server.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Remote, Target, local_engine, percent_encode};
use provisiond::bulk::{self, ImportObserver, ImportOptions, ImportSummary, RowError};

/// `provisiond import`
#[derive(Args)]
pub struct ImportArgs {
    /// The CSV file.
    file: PathBuf,
    /// Profile of the imported devices (unless the file has a profile column).
    #[arg(long)]
    profile: Option<String>,
    /// Field delimiter: one character, or "tab".
    #[arg(long, default_value = ",")]
    delimiter: String,
    /// The first line is a row, not column names (then map every column with --map 1=NAME,…).
    #[arg(long)]
    no_header: bool,
    /// Rows naming existing devices update them instead of failing.
    #[arg(long)]
    update: bool,
    /// Column kinds: COLUMN=KIND,… (KIND: NAME, TYPE, LABEL, DESCRIPTION, SERVER_ATTRIBUTE,
    /// SHARED_ATTRIBUTE, TIMESERIES, ACCESS_TOKEN, X509, MQTT_CLIENT_ID, MQTT_USER_NAME,
    /// MQTT_PASSWORD, IS_GATEWAY, PROFILE; attribute kinds may name a key: SERVER_ATTRIBUTE:sn).
    #[arg(long, value_name = "COLUMN=KIND,...")]
    map: Option<String>,
    /// Write every failed row (line, reason) to this CSV file.
    #[arg(long, value_name = "FILE")]
    errors: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
}

/// `provisiond export`
#[derive(Args)]
pub struct ExportArgs {
    /// Only this profile's devices (default: all, with a profile column).
    #[arg(long)]
    profile: Option<String>,
    /// Output file (default: standard output).
    file: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
}

/// Runs an import; fails (non-zero exit) if any row failed.
pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let delimiter = match args.delimiter.as_str() {
        "tab" | "\\t" | "\t" => "\t".to_string(),
        d if d.len() == 1 && d.is_ascii() && d != "\"" => d.to_string(),
        d => bail!("--delimiter must be one ASCII character or \"tab\", not {d:?}"),
    };
    let map =
        bulk::parse_map(args.map.as_deref().unwrap_or_default()).map_err(anyhow::Error::msg)?;
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut error_file = match &args.errors {
        Some(path) => {
            let mut w = csv::Writer::from_path(path)
                .with_context(|| format!("cannot write the error report {}", path.display()))?;
            w.write_record(["line", "reason"])?;
            Some(w)
        }
        None => None,
    };
    let summary = match &args.target.server {
        Some(url) => {
            let remote = Remote::new(url, &args.target)?;
            let query = [
                ("profile", args.profile.clone().unwrap_or_default()),
                ("delimiter", delimiter.clone()),
                ("header", (!args.no_header).to_string()),
                ("update", args.update.to_string()),
                ("map", args.map.clone().unwrap_or_default()),
            ]
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
            let summary = upload(&remote, &query, file, size)?;
            if let Some(w) = &mut error_file {
                for e in &summary.errors {
                    w.write_record([e.line.to_string(), e.reason.clone()])?;
                }
            }
            summary
        }
        None => {
            let engine = local_engine(&args.target.settings)?;
            let options = ImportOptions {
                profile: args.profile.clone(),
                delimiter: delimiter.as_bytes()[0],
                header: !args.no_header,
                update: args.update,
                map,
            };
            let mut observer = Observer {
                progress: Progress::new(size, "rows"),
                errors: error_file.as_mut(),
                write_failed: None,
            };
            let input = BufReader::with_capacity(256 * 1024, file);
            let result = bulk::run_import(&engine, input, &options, &mut observer);
            observer.progress.finish();
            engine.shutdown();
            if let Some(e) = observer.write_failed {
                return Err(e).context("writing the error report");
            }
            result?
        }
    };
    if let Some(w) = &mut error_file {
        w.flush()?;
    }
    report(&args.file, &summary, args.errors.as_deref())
}

fn report(file: &Path, summary: &ImportSummary, errors: Option<&Path>) -> anyhow::Result<()> {
    println!(
        "imported {}: created {}, updated {}, failed {}",
        file.display(),
        summary.created,
        summary.updated,
        summary.failed
    );
    for e in summary.errors.iter().take(10) {
        eprintln!("line {}: {}", e.line, e.reason);
    }
    if summary.failed > 10 {
        match errors {
            Some(path) => eprintln!("… all failed rows are in {}", path.display()),
            None => eprintln!(
                "… {} more; write them all with --errors FILE",
                summary.failed - 10
            ),
        }
    }
    if summary.failed > 0 {
        bail!("{} of the file's rows failed", summary.failed);
    }
    Ok(())
}

fn upload(remote: &Remote, query: &str, file: File, size: u64) -> anyhow::Result<ImportSummary> {
    let url = format!("{}/api/admin/import?{query}", remote.base);
    let progress = Progress::new(size, "bytes");
    let mut reader = Counting {
        inner: BufReader::with_capacity(256 * 1024, file),
        progress: &progress,
        read: 0,
    };
    let response = remote
        .agent
        .post(&url)
        .header("Authorization", &remote.auth)
        .header("Content-Type", "text/csv")
        .send(ureq::SendBody::from_reader(&mut reader));
    progress.finish();
    let mut response = response.with_context(|| format!("cannot reach {}", remote.base))?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response
        .body_mut()
        .read_json()
        .with_context(|| format!("{} answered {status} without a JSON body", remote.base))?;
    if status != 200 {
        bail!(
            "{}",
            body["error"].as_str().unwrap_or("the import was refused")
        );
    }
    serde_json::from_value(body).context("the server's import summary is not readable")
}

/// Runs an export to a file or standard output.
pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let out: Box<dyn Write> = match &args.file {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let written = match &args.target.server {
        Some(url) => {
            let remote = Remote::new(url, &args.target)?;
            let mut url = format!("{}/api/admin/export", remote.base);
            if let Some(p) = &args.profile {
                url.push_str(&format!("?profile={}", percent_encode(p)));
            }
            let mut response = remote
                .agent
                .get(&url)
                .header("Authorization", &remote.auth)
                .call()
                .with_context(|| format!("cannot reach {}", remote.base))?;
            if response.status().as_u16() != 200 {
                let body: serde_json::Value = response.body_mut().read_json().unwrap_or_default();
                bail!(
                    "{}",
                    body["error"].as_str().unwrap_or("the export was refused")
                );
            }
            let mut out = out;
            let mut body = response.body_mut().as_reader();
            std::io::copy(&mut body, &mut out).context("writing the export")?;
            out.flush()?;
            None
        }
        None => {
            let engine = local_engine(&args.target.settings)?;
            if let Some(p) = &args.profile
                && engine.profiles().by_name(p).is_none()
            {
                engine.shutdown();
                bail!("no profile named {p:?}");
            }
            let result = bulk::export::export(engine.store(), args.profile.as_deref(), out);
            engine.shutdown();
            Some(result?)
        }
    };
    if let (Some(n), Some(path)) = (written, &args.file) {
        eprintln!("exported {n} devices to {}", path.display());
    }
    Ok(())
}

/// A progress bar on a terminal, a plain line every few seconds otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    unit: &'static str,
    size: u64,
    started: Instant,
    last_line: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(size: u64, unit: &'static str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(size.max(1));
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {percent:>3}% {msg} ETA {eta}")
                    .expect("the template is valid"),
            );
            bar
        });
        Progress {
            bar,
            unit,
            size,
            started: Instant::now(),
            last_line: std::cell::Cell::new(Instant::now()),
        }
    }

    fn update(&self, done: u64, bytes: u64) {
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let message = format!("{done} {} ({rate:.0} {}/s)", self.unit, self.unit);
        match &self.bar {
            Some(bar) => {
                bar.set_position(bytes);
                bar.set_message(message);
            }
            None if self.last_line.get().elapsed() >= Duration::from_secs(2) => {
                self.last_line.set(Instant::now());
                let percent = (bytes * 100).checked_div(self.size).unwrap_or(100);
                eprintln!("import: {message}, {percent}% of the input read");
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

struct Observer<'a> {
    progress: Progress,
    errors: Option<&'a mut csv::Writer<File>>,
    write_failed: Option<csv::Error>,
}

impl ImportObserver for Observer<'_> {
    fn row_failed(&mut self, error: &RowError) {
        if let Some(w) = self.errors.as_mut()
            && self.write_failed.is_none()
            && let Err(e) = w.write_record([error.line.to_string(), error.reason.clone()])
        {
            self.write_failed = Some(e);
        }
    }

    fn progress(&mut self, rows: u64, bytes: u64) {
        self.progress.update(rows, bytes);
    }
}

struct Counting<'a, R> {
    inner: R,
    progress: &'a Progress,
    read: u64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        self.progress.update(self.read, self.read);
        Ok(n)
    }
}
