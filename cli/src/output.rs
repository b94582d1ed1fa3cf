//! Writing results: json (exactly one document on stdout) or aligned tables.
//! Notes for people go to stderr so stdout carries only the result.

use crate::args::OutputFormat;
use serde::Serialize;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A result that can be shown as json (its `Serialize` form) or as text.
pub trait Render: Serialize {
    fn table(&self, w: &mut dyn Write) -> io::Result<()>;
}

/// Where results and notes go.
pub struct Output<'a> {
    pub format: OutputFormat,
    out: &'a mut dyn Write,
    diag: &'a mut dyn Write,
}

impl<'a> Output<'a> {
    pub fn new(format: OutputFormat, out: &'a mut dyn Write, diag: &'a mut dyn Write) -> Self {
        Self { format, out, diag }
    }

    /// Writes the result in the chosen format.
    pub fn emit<T: Render>(&mut self, value: &T) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Json => write_json(&mut *self.out, value)?,
            OutputFormat::Table => value.table(&mut *self.out)?,
        }
        self.out.flush()?;
        Ok(())
    }

    /// A note for people on stderr; never part of the result.
    pub fn note(&mut self, text: &str) -> anyhow::Result<()> {
        writeln!(self.diag, "{text}")?;
        Ok(())
    }
}

/// One pretty-printed json document and a newline.
pub fn write_json<T: Serialize + ?Sized>(w: &mut dyn Write, value: &T) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *w, value)?;
    writeln!(w)?;
    Ok(())
}

/// Writes rows under upper-case headers, columns padded to the widest cell.
pub fn table(w: &mut dyn Write, headers: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let headers: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
    write_row(w, &widths, &headers)?;
    for row in rows {
        write_row(w, &widths, row)?;
    }
    Ok(())
}

fn write_row(w: &mut dyn Write, widths: &[usize], cells: &[String]) -> io::Result<()> {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str("   ");
        }
        line.push_str(cell);
        let pad = width.saturating_sub(cell.chars().count());
        line.extend(std::iter::repeat_n(' ', pad));
    }
    writeln!(w, "{}", line.trim_end())
}

/// `label: value` lines with the values aligned.
pub fn fields(w: &mut dyn Write, pairs: &[(&str, String)]) -> io::Result<()> {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in pairs {
        writeln!(
            w,
            "{:<width$}  {value}",
            format!("{key}:"),
            width = width + 1
        )?;
    }
    Ok(())
}

/// `yes` or `no`, for table cells.
pub fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// The last second humantime can format (9999-12-31T23:59:59Z).
const MAX_RFC3339_SECONDS: u64 = 253_402_300_799;

/// RFC 3339 (UTC, whole seconds), or `None` when unset or out of range.
pub fn rfc3339(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    let ts = ts?;
    let seconds = u64::try_from(ts.seconds)
        .ok()
        .filter(|s| *s <= MAX_RFC3339_SECONDS)?;
    let time: SystemTime = UNIX_EPOCH.checked_add(Duration::from_secs(seconds))?;
    Some(humantime::format_rfc3339_seconds(time).to_string())
}

/// A timestamp for a table cell: the time, or `fallback` when unset.
pub fn cell(ts: &Option<String>, fallback: &str) -> String {
    ts.clone().unwrap_or_else(|| fallback.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    #[test]
    fn timestamps_are_rfc3339_or_none() {
        let ts = Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_000_000,
        };
        assert_eq!(rfc3339(Some(&ts)).as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(rfc3339(None), None);
        let before_epoch = Timestamp {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(rfc3339(Some(&before_epoch)), None);
        let far = Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(rfc3339(Some(&far)), None);
    }

    #[test]
    fn tables_align_columns() {
        let mut buf = Vec::new();
        let rows = vec![
            vec!["org_1".to_owned(), "acme".to_owned()],
            vec!["org_22".to_owned(), "b".to_owned()],
        ];
        table(&mut buf, &["id", "name"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "ID       NAME\norg_1    acme\norg_22   b\n"
        );
    }

    #[test]
    fn fields_align_values() {
        let mut buf = Vec::new();
        fields(&mut buf, &[("id", "a".into()), ("database", "b".into())]).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "id:        a\ndatabase:  b\n"
        );
    }
}
