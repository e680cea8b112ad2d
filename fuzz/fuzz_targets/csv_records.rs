//! The CSV record reader of bulk import: quoted fields over several lines, unbalanced quotes,
//! overlong records and lines, replayed lines. The first byte picks the delimiter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provisiond::bulk::records::{Record, RecordReader};

fuzz_target!(|data: &[u8]| {
    let Some((&delimiter, body)) = data.split_first() else {
        return;
    };
    let delimiter = if delimiter == b'"' { b',' } else { delimiter };
    let mut reader = RecordReader::new(body, delimiter);
    let mut last_line = 0;
    while let Ok(Some(record)) = reader.next_record() {
        let line = match record {
            Record::Fields { line, .. } | Record::Bad { line, .. } => line,
        };
        // Records come in file order and are never reported twice.
        assert!(line > last_line, "line {line} after {last_line}");
        last_line = line;
    }
    assert!(reader.bytes_read() <= body.len() as u64);
});
