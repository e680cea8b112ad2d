//! Splits a CSV byte stream into records, one at a time and in bounded memory.
//! Quoted fields may span lines; a record whose quotes never balance within
//! [`MAX_RECORD_LINES`] lines or [`MAX_RECORD_BYTES`] bytes is reported as one bad row, and the
//! lines it swallowed are read again, so one stray quote cannot eat the rest of the file.

use std::collections::VecDeque;
use std::io::BufRead;

/// Longest record, in bytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Most physical lines one quoted record may span.
pub const MAX_RECORD_LINES: usize = 64;

/// One record of the file.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// Its fields, as bytes (UTF-8 is checked by the caller, per row).
    Fields {
        /// The physical line it starts on (1-based).
        line: u64,
        /// The fields.
        fields: Vec<Vec<u8>>,
    },
    /// A record that cannot be split.
    Bad {
        /// The physical line it starts on.
        line: u64,
        /// Why.
        reason: String,
    },
}

/// Reads records from a `BufRead`.
pub struct RecordReader<R> {
    input: R,
    /// Built once: building csv-core's DFA costs far more than splitting one record.
    splitter: csv_core::Reader,
    next_line: u64,
    replay: VecDeque<(u64, Vec<u8>)>,
    first: bool,
    bytes_read: u64,
}

impl<R> std::fmt::Debug for RecordReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordReader")
            .field("next_line", &self.next_line)
            .finish()
    }
}

enum Line {
    Text(u64, Vec<u8>),
    TooLong(u64),
}

impl<R: BufRead> RecordReader<R> {
    /// A reader splitting on `delimiter`.
    pub fn new(input: R, delimiter: u8) -> RecordReader<R> {
        RecordReader {
            input,
            splitter: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            next_line: 1,
            replay: VecDeque::new(),
            first: true,
            bytes_read: 0,
        }
    }

    /// Bytes consumed from the input so far (for progress and ETA).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next record, `None` at the end, or an IO error.
    pub fn next_record(&mut self) -> std::io::Result<Option<Record>> {
        loop {
            let Some(line) = self.physical_line()? else {
                return Ok(None);
            };
            let (start, mut text) = match line {
                Line::TooLong(n) => {
                    return Ok(Some(Record::Bad {
                        line: n,
                        reason: format!("line is longer than {MAX_RECORD_BYTES} bytes"),
                    }));
                }
                Line::Text(n, text) => (n, text),
            };
            if is_blank(&text) {
                continue;
            }
            let mut swallowed = Vec::new();
            while quotes(&text) % 2 == 1 {
                let over = swallowed.len() + 1 >= MAX_RECORD_LINES || text.len() > MAX_RECORD_BYTES;
                let next = if over { None } else { self.physical_line()? };
                match next {
                    Some(Line::Text(n, more)) => {
                        text.extend_from_slice(&more);
                        swallowed.push((n, more));
                    }
                    other => {
                        // Give back what the open quote swallowed, and the line that broke it.
                        if let Some(Line::TooLong(n)) = other {
                            self.replay.push_front((n, Vec::new()));
                        }
                        for item in swallowed.into_iter().rev() {
                            self.replay.push_front(item);
                        }
                        return Ok(Some(Record::Bad {
                            line: start,
                            reason: "unbalanced quotes".into(),
                        }));
                    }
                }
            }
            return Ok(Some(match split(&mut self.splitter, &text) {
                Ok(fields) => Record::Fields {
                    line: start,
                    fields,
                },
                Err(reason) => Record::Bad {
                    line: start,
                    reason,
                },
            }));
        }
    }

    /// One physical line with its terminator, at most `MAX_RECORD_BYTES` long.
    fn physical_line(&mut self) -> std::io::Result<Option<Line>> {
        if let Some((n, text)) = self.replay.pop_front() {
            return Ok(Some(if text.is_empty() {
                Line::TooLong(n)
            } else {
                Line::Text(n, text)
            }));
        }
        let number = self.next_line;
        let mut text = Vec::new();
        let mut too_long = false;
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if !too_long {
                if text.len() + take > MAX_RECORD_BYTES {
                    too_long = true;
                    text.clear();
                } else {
                    text.extend_from_slice(&buf[..take]);
                }
            }
            self.input.consume(take);
            self.bytes_read += take as u64;
            if done {
                break;
            }
        }
        if text.is_empty() && !too_long {
            return Ok(None);
        }
        self.next_line += 1;
        if self.first {
            self.first = false;
            if text.starts_with(&[0xEF, 0xBB, 0xBF]) {
                text.drain(..3);
            }
        }
        Ok(Some(if too_long {
            Line::TooLong(number)
        } else {
            Line::Text(number, text)
        }))
    }
}

fn is_blank(text: &[u8]) -> bool {
    text.iter().all(|b| *b == b'\r' || *b == b'\n')
}

fn quotes(text: &[u8]) -> usize {
    text.iter().filter(|b| **b == b'"').count()
}

/// Splits one complete record (terminator included) into fields with csv-core.
fn split(reader: &mut csv_core::Reader, record: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    reader.reset();
    let mut fields = Vec::new();
    let mut input = record;
    let mut field = Vec::new();
    let mut out = [0u8; 4096];
    loop {
        let (result, read, written) = reader.read_field(input, &mut out);
        input = &input[read..];
        field.extend_from_slice(&out[..written]);
        match result {
            csv_core::ReadFieldResult::InputEmpty => {
                if input.is_empty() {
                    // End of this record's bytes: flush the last field.
                    let (result, _, written) = reader.read_field(&[], &mut out);
                    field.extend_from_slice(&out[..written]);
                    if matches!(result, csv_core::ReadFieldResult::Field { .. }) {
                        fields.push(std::mem::take(&mut field));
                    }
                    return Ok(fields);
                }
            }
            csv_core::ReadFieldResult::OutputFull => {}
            csv_core::ReadFieldResult::Field { record_end } => {
                fields.push(std::mem::take(&mut field));
                if record_end {
                    if input.iter().any(|b| *b != b'\r' && *b != b'\n') {
                        return Err("unexpected text after the end of the record".into());
                    }
                    return Ok(fields);
                }
            }
            csv_core::ReadFieldResult::End => return Ok(fields),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &[u8]) -> Vec<Record> {
        let mut reader = RecordReader::new(text, b',');
        let mut out = Vec::new();
        while let Some(r) = reader.next_record().unwrap() {
            out.push(r);
        }
        out
    }

    fn fields(line: u64, cells: &[&str]) -> Record {
        Record::Fields {
            line,
            fields: cells.iter().map(|c| c.as_bytes().to_vec()).collect(),
        }
    }

    #[test]
    fn plain_crlf_bom_and_blank_lines() {
        let text = b"\xEF\xBB\xBFname,type\r\na,b\r\n\r\nc,\n";
        assert_eq!(
            records(text),
            [
                fields(1, &["name", "type"]),
                fields(2, &["a", "b"]),
                fields(4, &["c", ""])
            ]
        );
    }

    #[test]
    fn quoted_delimiters_quotes_and_newlines() {
        let text = b"\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\"\nnext,row\n";
        assert_eq!(
            records(text),
            [
                fields(1, &["a,b", "say \"hi\"", "two\nlines"]),
                fields(3, &["next", "row"])
            ]
        );
    }

    #[test]
    fn last_line_without_terminator_is_read() {
        assert_eq!(
            records(b"a,b\nc,d"),
            [fields(1, &["a", "b"]), fields(2, &["c", "d"])]
        );
    }

    #[test]
    fn an_unbalanced_quote_costs_one_row_not_the_rest_of_the_file() {
        let mut text = b"ok,1\n\"broken,2\n".to_vec();
        for i in 0..100 {
            text.extend_from_slice(format!("row{i},x\n").as_bytes());
        }
        let all = records(&text);
        assert_eq!(all[0], fields(1, &["ok", "1"]));
        assert_eq!(
            all[1],
            Record::Bad {
                line: 2,
                reason: "unbalanced quotes".into()
            }
        );
        assert_eq!(all[2], fields(3, &["row0", "x"]));
        assert_eq!(all.len(), 102);
    }

    #[test]
    fn overlong_lines_are_bad_rows_and_reading_goes_on() {
        let mut text = vec![b'x'; MAX_RECORD_BYTES + 10];
        text.extend_from_slice(b"\nafter,1\n");
        let all = records(&text);
        assert!(matches!(all[0], Record::Bad { line: 1, .. }));
        assert_eq!(all[1], fields(2, &["after", "1"]));
    }

    #[test]
    fn other_delimiters() {
        let mut reader = RecordReader::new(&b"a;b;\"c;d\"\n"[..], b';');
        assert_eq!(
            reader.next_record().unwrap(),
            Some(fields(1, &["a", "b", "c;d"]))
        );
    }
}
