//! Bulk provisioning: streaming CSV import through the engine (never around it) and CSV export
//! from a consistent snapshot. Memory is bounded by the chunk size, whatever the file size.

pub mod columns;
pub mod export;
pub mod records;

use std::collections::VecDeque;
use std::io::BufRead;

use serde::{Deserialize, Serialize};

use self::columns::{ColumnKind, build_row, kind_from_header, parse_kind};
use self::records::{Record, RecordReader};
use crate::engine::Engine;
use crate::engine::import::{ImportMode, ImportRow, RowOutcome};
use crate::metrics as m;

/// Rows handed to the engine at once.
pub const CHUNK_ROWS: usize = 4096;
/// Chunks in flight at once (parsing the next overlaps committing the previous).
pub const CHUNKS_IN_FLIGHT: usize = 2;
/// Row errors kept in the summary; the rest are counted (and all go to the observer).
pub const MAX_REPORTED_ERRORS: usize = 1000;

/// How to read the file.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Profile of rows without a profile column (required when the file has none).
    pub profile: Option<String>,
    /// Field delimiter.
    pub delimiter: u8,
    /// The first line names the columns.
    pub header: bool,
    /// Rows naming existing devices update them.
    pub update: bool,
    /// Explicit `column=KIND` mappings (column: header name, or 1-based position without one).
    pub map: Vec<(String, String)>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            profile: None,
            delimiter: b',',
            header: true,
            update: false,
            map: Vec::new(),
        }
    }
}

/// One failed row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// Physical line the row starts on (1-based, header included).
    pub line: u64,
    /// Why it was skipped.
    pub reason: String,
}

/// The result of an import.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportSummary {
    /// New devices.
    pub created: u64,
    /// Updated devices.
    pub updated: u64,
    /// Skipped rows.
    pub failed: u64,
    /// The first [`MAX_REPORTED_ERRORS`] failures, in file order.
    pub errors: Vec<RowError>,
    /// Failures beyond those listed.
    pub errors_not_listed: u64,
}

/// Problems that stop an import before any row is written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// No header line where one was expected.
    #[error("the file is empty: expected a header line")]
    EmptyFile,
    /// The header or the mapping is unusable.
    #[error("{0}")]
    Columns(String),
    /// The target profile does not exist.
    #[error("no profile named {0:?}")]
    UnknownProfile(String),
    /// Reading the input failed.
    #[error("reading the file failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Watches an import as it runs (progress display, error file).
pub trait ImportObserver {
    /// A row was skipped.
    fn row_failed(&mut self, _error: &RowError) {}
    /// `rows` rows are done and `bytes` bytes of input consumed.
    fn progress(&mut self, _rows: u64, _bytes: u64) {}
}

/// An observer that does nothing.
#[derive(Debug, Default)]
pub struct Quiet;
impl ImportObserver for Quiet {}

enum Item {
    Row(Box<ImportRow>),
    /// A row handed to the engine; its outcome comes back in order.
    Sent(u64),
    Failed(RowError),
}

/// Imports a CSV stream. Each chunk of rows goes through the shards that own their names, and
/// is durable before the next results are reported.
pub fn run_import<R: BufRead>(
    engine: &Engine,
    input: R,
    options: &ImportOptions,
    observer: &mut dyn ImportObserver,
) -> Result<ImportSummary, ImportError> {
    if let Some(profile) = &options.profile
        && engine.profiles().by_name(profile).is_none()
    {
        return Err(ImportError::UnknownProfile(profile.clone()));
    }
    let mut reader = RecordReader::new(input, options.delimiter);
    let mut pending_first = None;
    let columns = if options.header {
        let header = match reader.next_record()? {
            None => return Err(ImportError::EmptyFile),
            Some(Record::Fields { fields, .. }) => fields,
            Some(Record::Bad { reason, .. }) => {
                return Err(ImportError::Columns(format!(
                    "the header line is unreadable: {reason}"
                )));
            }
        };
        header_columns(&header, &options.map)?
    } else {
        let columns = positional_columns(&options.map)?;
        pending_first = reader.next_record()?;
        columns
    };
    if !columns.contains(&ColumnKind::Name) {
        return Err(ImportError::Columns(
            "no column holds the device name".into(),
        ));
    }
    if options.profile.is_none() && !columns.contains(&ColumnKind::Profile) {
        return Err(ImportError::Columns(
            "no profile: give --profile or a profile column".into(),
        ));
    }
    let mode = ImportMode {
        update: options.update,
        import_id: rand::random(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .thread_name("import")
        .build()?;
    let mut summary = ImportSummary::default();
    let mut in_flight: VecDeque<(Vec<Item>, tokio::task::JoinHandle<Vec<RowOutcome>>)> =
        VecDeque::new();
    let mut rows_done = 0u64;
    let mut next = pending_first;
    loop {
        let mut chunk = Vec::with_capacity(CHUNK_ROWS);
        while chunk.len() < CHUNK_ROWS {
            let record = match next.take() {
                Some(record) => record,
                None => match reader.next_record()? {
                    Some(record) => record,
                    None => break,
                },
            };
            chunk.push(to_item(record, &columns, options.profile.as_deref()));
        }
        let finished = chunk.is_empty();
        if !finished {
            let mut rows = Vec::with_capacity(chunk.len());
            for item in chunk.iter_mut() {
                if let Item::Row(row) = item {
                    let line = row.line;
                    if let Item::Row(row) = std::mem::replace(item, Item::Sent(line)) {
                        rows.push(*row);
                    }
                }
            }
            let engine = engine.clone();
            let handle = runtime.spawn(async move { engine.import(rows, mode).await });
            in_flight.push_back((chunk, handle));
        }
        while in_flight.len() >= CHUNKS_IN_FLIGHT || (finished && !in_flight.is_empty()) {
            let (items, handle) = in_flight.pop_front().expect("checked non-empty");
            let outcomes = runtime.block_on(handle).unwrap_or_else(|_| Vec::new());
            rows_done += items.len() as u64;
            tally(&mut summary, items, outcomes, observer);
            observer.progress(rows_done, reader.bytes_read());
        }
        if finished {
            break;
        }
    }
    Ok(summary)
}

fn to_item(record: Record, columns: &[ColumnKind], profile: Option<&str>) -> Item {
    let (line, fields) = match record {
        Record::Bad { line, reason } => return Item::Failed(RowError { line, reason }),
        Record::Fields { line, fields } => (line, fields),
    };
    if fields.len() != columns.len() {
        return Item::Failed(RowError {
            line,
            reason: format!("expected {} columns, found {}", columns.len(), fields.len()),
        });
    }
    let mut cells = Vec::with_capacity(fields.len());
    for field in &fields {
        match std::str::from_utf8(field) {
            Ok(text) => cells.push(text),
            Err(_) => {
                return Item::Failed(RowError {
                    line,
                    reason: "the row is not valid UTF-8".into(),
                });
            }
        }
    }
    match build_row(columns, &cells, line, profile) {
        Ok(row) => Item::Row(Box::new(row)),
        Err(reason) => Item::Failed(RowError { line, reason }),
    }
}

fn tally(
    summary: &mut ImportSummary,
    items: Vec<Item>,
    outcomes: Vec<RowOutcome>,
    observer: &mut dyn ImportObserver,
) {
    let before = (summary.created, summary.updated, summary.failed);
    tally_rows(summary, items, outcomes, observer);
    m::import_rows("created", summary.created - before.0);
    m::import_rows("updated", summary.updated - before.1);
    m::import_rows("failed", summary.failed - before.2);
}

fn tally_rows(
    summary: &mut ImportSummary,
    items: Vec<Item>,
    outcomes: Vec<RowOutcome>,
    observer: &mut dyn ImportObserver,
) {
    let mut outcomes = outcomes.into_iter();
    for item in items {
        let error = match item {
            Item::Failed(error) => error,
            Item::Row(row) => RowError {
                line: row.line,
                reason: "the row was never sent; this is a bug".into(),
            },
            Item::Sent(line) => match outcomes.next() {
                Some(RowOutcome::Created) => {
                    summary.created += 1;
                    continue;
                }
                Some(RowOutcome::Updated) => {
                    summary.updated += 1;
                    continue;
                }
                Some(RowOutcome::Failed(reason)) => RowError { line, reason },
                None => RowError {
                    line,
                    reason: "the import was interrupted; the row was not written".into(),
                },
            },
        };
        summary.failed += 1;
        observer.row_failed(&error);
        if summary.errors.len() < MAX_REPORTED_ERRORS {
            summary.errors.push(error);
        } else {
            summary.errors_not_listed += 1;
        }
    }
}

/// Columns from a header line: `--map` first, then the names provisiond knows.
fn header_columns(
    header: &[Vec<u8>],
    map: &[(String, String)],
) -> Result<Vec<ColumnKind>, ImportError> {
    let names: Vec<String> = header
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_string())
        .collect();
    for (column, _) in map {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(column)) {
            return Err(ImportError::Columns(format!(
                "--map names column {column:?}, which the header does not have"
            )));
        }
    }
    let mut columns = Vec::with_capacity(names.len());
    for name in &names {
        let mapped = map.iter().find(|(c, _)| c.eq_ignore_ascii_case(name));
        let kind = match mapped {
            Some((_, kind)) => parse_kind(kind, name).ok_or_else(|| {
                ImportError::Columns(format!("--map {name}={kind}: unknown column kind {kind:?}"))
            })?,
            None => kind_from_header(name).ok_or_else(|| {
                ImportError::Columns(format!(
                    "column {name:?} is not a known column; map it, e.g. --map {name}=SERVER_ATTRIBUTE (or SHARED_ATTRIBUTE, TIMESERIES)"
                ))
            })?,
        };
        if !is_keyed(&kind) && columns.contains(&kind) {
            return Err(ImportError::Columns(format!("two columns map to {kind:?}")));
        }
        columns.push(kind);
    }
    Ok(columns)
}

/// Columns of a file without a header: every column is given by position in `--map`.
fn positional_columns(map: &[(String, String)]) -> Result<Vec<ColumnKind>, ImportError> {
    if map.is_empty() {
        return Err(ImportError::Columns(
            "without a header line, map every column by position, e.g. --map 1=NAME,2=TYPE,3=ACCESS_TOKEN".into(),
        ));
    }
    let mut by_position = Vec::new();
    for (column, kind) in map {
        let position: usize = column.parse().ok().filter(|p| *p >= 1).ok_or_else(|| {
            ImportError::Columns(format!(
                "without a header line, --map columns are positions (1, 2, …), not {column:?}"
            ))
        })?;
        let parsed = parse_kind(kind, column).ok_or_else(|| {
            ImportError::Columns(format!(
                "--map {column}={kind}: unknown column kind {kind:?}"
            ))
        })?;
        by_position.push((position, parsed));
    }
    by_position.sort_by_key(|(p, _)| *p);
    let mut columns = Vec::new();
    for (expected, (position, kind)) in (1..).zip(by_position) {
        if position != expected {
            return Err(ImportError::Columns(format!(
                "column {expected} is not mapped (every column needs a --map entry)"
            )));
        }
        columns.push(kind);
    }
    Ok(columns)
}

fn is_keyed(kind: &ColumnKind) -> bool {
    matches!(
        kind,
        ColumnKind::ServerAttribute(_) | ColumnKind::SharedAttribute(_) | ColumnKind::Timeseries(_)
    )
}

/// Parses `COLUMN=KIND,COLUMN=KIND`.
pub fn parse_map(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| {
            item.split_once('=')
                .map(|(c, k)| (c.trim().to_string(), k.trim().to_string()))
                .ok_or_else(|| format!("--map entry {item:?} is not COLUMN=KIND"))
        })
        .collect()
}
