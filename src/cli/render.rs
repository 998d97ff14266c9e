//! How the command-line tools write: aligned tables, times (read and written), short rule
//! versions, and stdout. `audit` and `rules` both print through this one module, so neither
//! reaches into the other for a helper and their output reads alike.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;

use crate::audit::{Effect, Event};

/// `Ok(false)` when stdout was closed by the reader (stop quietly), errors otherwise.
pub(crate) fn ignore_closed_pipe(result: io::Result<()>) -> anyhow::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// Write a report to stdout; a closed pipe (`| head`) ends quietly.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    ignore_closed_pipe(
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush()),
    )?;
    Ok(())
}

/// A message as a sentence, ending in a full stop. Every message the command line prints as a
/// sentence (an error on stderr, a verdict on stdout) ends in one; errors are built as chains of
/// `context: cause` and get the stop once, here, at the end of the whole chain. A message that
/// already ends a sentence, or holds a multi-line excerpt (a TOML error's source lines), is left
/// as it is. Lines that end in an address printed for programs to read (`... listening on URL`)
/// are not sentences and get no stop, so the address can be cut from the line as it is.
pub(crate) fn sentence(message: &str) -> String {
    let message = message.trim_end();
    if message.contains('\n') || message.ends_with(['.', '!', '?']) {
        message.to_owned()
    } else {
        format!("{message}.")
    }
}

/// A value, or `-` when there is none.
pub(crate) fn dash(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => "-".to_owned(),
    }
}

/// Who, in one word: the UPN, else the application id, else the object id.
pub(crate) fn actor_name(event: &Event) -> String {
    let a = &event.actor;
    dash(a.upn.as_deref().or(a.appid.as_deref()).or(a.oid.as_deref()))
}

/// An effect as the log spells it (`applied`, `not_applied`, ...).
pub(crate) fn effect_name(effect: Effect) -> String {
    effect.as_str().to_owned()
}

/// The first 12 characters of a rules version: enough to tell versions apart in a report.
pub(crate) fn short_version(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

// ---------------------------------------------------------------------------------------------
// tables
// ---------------------------------------------------------------------------------------------

/// Widen `widths` so every cell of `rows` fits.
pub(crate) fn grow_widths<R: AsRef<[String]>>(widths: &mut [usize], rows: &[R]) {
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.as_ref()) {
            *w = (*w).max(cell.chars().count());
        }
    }
}

/// The columns a table may take: `None` through a pipe (every cell in full, for scripts and
/// `grep`), else the terminal's width as the shell exports it in `COLUMNS`, or 100.
pub(crate) fn terminal_columns() -> Option<usize> {
    if !io::stdout().is_terminal() {
        return None;
    }
    let exported = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok());
    Some(exported.filter(|&c: &usize| c >= 40).unwrap_or(100))
}

/// How a table is laid out: each column's width, and the gap between columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) widths: Vec<usize>,
    pub(crate) gap: usize,
}

/// A column that is never cut (a time, a kind, a status: short, and cut they mean nothing).
pub(crate) const FIXED: usize = usize::MAX;

impl Layout {
    /// Columns as wide as their widest cell (`natural`), two spaces apart, when that fits in
    /// `columns` (or there is no limit). Otherwise the gaps narrow to one space and the widest
    /// column above its floor gives up a character at a time until the line fits or every
    /// column is at its floor; cut cells end in `…`.
    pub(crate) fn fit(natural: &[usize], floors: &[usize], columns: Option<usize>) -> Layout {
        let mut widths = natural.to_vec();
        let line = |widths: &[usize], gap: usize| {
            widths.iter().sum::<usize>() + gap * widths.len().saturating_sub(1)
        };
        let Some(columns) = columns.filter(|&c| line(&widths, 2) > c) else {
            return Layout { widths, gap: 2 };
        };
        while line(&widths, 1) > columns {
            let widest = (0..widths.len())
                .filter(|&i| widths[i] > floors.get(i).copied().unwrap_or(FIXED))
                .max_by_key(|&i| (widths[i], i));
            let Some(i) = widest else { break };
            widths[i] -= 1;
        }
        Layout { widths, gap: 1 }
    }
}

/// `cell` in at most `width` characters, ending in `…` when cut.
pub(crate) fn cut(cell: &str, width: usize) -> String {
    if cell.chars().count() <= width {
        return cell.to_owned();
    }
    let mut kept: String = cell.chars().take(width.saturating_sub(1)).collect();
    kept.push('…');
    kept
}

/// One table line: every cell cut to its column's width and all but the last padded to it.
pub(crate) fn write_aligned(
    out: &mut impl Write,
    row: &[String],
    layout: &Layout,
) -> io::Result<()> {
    let mut line = String::new();
    for (i, (cell, &width)) in row.iter().zip(&layout.widths).enumerate() {
        let cell = cut(cell, width);
        if i + 1 == row.len() {
            line.push_str(&cell);
        } else {
            let _ = write!(line, "{cell:<width$}{:gap$}", "", gap = layout.gap);
        }
    }
    writeln!(out, "{}", line.trim_end())
}

/// A whole table, header first, its columns as wide as their widest cell, or cut to fit
/// `columns` (see [`Layout::fit`]).
pub(crate) fn fitted_table<R: AsRef<[String]>>(
    header: &[&str],
    rows: &[R],
    floors: &[usize],
    columns: Option<usize>,
) -> String {
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    grow_widths(&mut widths, rows);
    let layout = Layout::fit(&widths, floors, columns);
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_aligned(&mut out, &header, &layout);
    for row in rows {
        let _ = write_aligned(&mut out, row.as_ref(), &layout);
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

/// How `--format json` lays JSON out: indented for a person at a terminal, compact for a program
/// reading a pipe (an array then holds one element per line, so line tools still work on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonLayout {
    Indented,
    Compact,
}

impl JsonLayout {
    /// Indented when stdout is a terminal, compact otherwise.
    pub(crate) fn for_stdout() -> Self {
        if io::stdout().is_terminal() {
            JsonLayout::Indented
        } else {
            JsonLayout::Compact
        }
    }
}

/// One JSON document in `layout`, ending in a newline.
pub(crate) fn json_document<T: Serialize>(
    value: &T,
    layout: JsonLayout,
) -> serde_json::Result<String> {
    let text = match layout {
        JsonLayout::Indented => serde_json::to_string_pretty(value)?,
        JsonLayout::Compact => serde_json::to_string(value)?,
    };
    Ok(text + "\n")
}

/// Writes one JSON array element by element, so a long listing streams: indented exactly as a
/// whole array would be, or compact with one element per line.
pub(crate) struct JsonArray {
    layout: JsonLayout,
    written: usize,
}

impl JsonArray {
    pub(crate) fn new(layout: JsonLayout) -> Self {
        JsonArray { layout, written: 0 }
    }

    /// Append one element.
    pub(crate) fn item<T: Serialize>(&mut self, out: &mut impl Write, value: &T) -> io::Result<()> {
        out.write_all(if self.written == 0 { b"[\n" } else { b",\n" })?;
        self.written += 1;
        match self.layout {
            JsonLayout::Compact => serde_json::to_writer(&mut *out, value)?,
            JsonLayout::Indented => {
                // A JSON string never holds a raw newline, so indenting lines is safe.
                let text = serde_json::to_string_pretty(value)?;
                for (i, line) in text.lines().enumerate() {
                    if i > 0 {
                        out.write_all(b"\n")?;
                    }
                    write!(out, "  {line}")?;
                }
            }
        }
        Ok(())
    }

    /// Close the array (`[]` when it is empty).
    pub(crate) fn finish(&mut self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(if self.written == 0 { b"[]\n" } else { b"\n]\n" })
    }

    /// A whole array at once.
    pub(crate) fn document<T: Serialize>(items: &[T], layout: JsonLayout) -> io::Result<String> {
        let mut array = JsonArray::new(layout);
        let mut out = Vec::new();
        for item in items {
            array.item(&mut out, item)?;
        }
        array.finish(&mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

// ---------------------------------------------------------------------------------------------
// times
// ---------------------------------------------------------------------------------------------

/// A time to the second, as tables show it.
pub(crate) fn time_secs(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A time to the microsecond, as the log keeps it.
pub(crate) fn time_micros(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `850 ms`, `12.4 s`, `3 min 20 s`, `26 h 5 min`.
pub(crate) fn human_duration(d: chrono::TimeDelta) -> String {
    let ms = d.num_milliseconds();
    match ms {
        ..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// `s` as RFC 3339, a UTC date (`date_offset_days` after its midnight), or a time ago: a whole
/// number of seconds, minutes, hours, days or weeks (`90s`, `30m`, `1h`, `7d`, `2w`) before
/// `now`.
fn parse_time(s: &str, date_offset_days: u64, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Some(ago) = time_ago(s) {
        return now
            .checked_sub_signed(ago)
            .ok_or_else(|| format!("{s:?} reaches back before any time syncgate can record."));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.checked_add_days(chrono::Days::new(date_offset_days)))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!(
                "{s:?} is neither RFC 3339 (2025-06-01T08:00:00Z), a date (2025-06-01) nor a time \
                 ago (90s, 30m, 1h, 7d, 2w)."
            )
        })
}

/// `30m` → 30 minutes; `None` unless `s` is digits followed by one of s, m, h, d, w.
fn time_ago(s: &str) -> Option<chrono::TimeDelta> {
    let unit = s.chars().last()?;
    let amount: i64 = s.get(..s.len() - unit.len_utf8())?.parse().ok()?;
    if amount < 0 || s.starts_with('+') {
        return None;
    }
    let seconds: i64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    chrono::TimeDelta::try_seconds(amount.checked_mul(seconds)?)
}

/// `--since`: RFC 3339, a UTC date (from the start of that day), or a time ago (`1h`).
pub(crate) fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    parse_time(s, 0, Utc::now())
}

/// `--until`: RFC 3339, a time ago (`30m`), or a date, meaning "until the end of that day": the
/// start of the next one, exclusive.
pub(crate) fn parse_until(s: &str) -> Result<DateTime<Utc>, String> {
    parse_time(s, 1, Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_cover_whole_days_and_rfc3339_is_taken_as_is() {
        assert_eq!(
            parse_since("2025-06-01").unwrap().to_rfc3339(),
            "2025-06-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_until("2025-06-01").unwrap().to_rfc3339(),
            "2025-06-02T00:00:00+00:00"
        );
        assert_eq!(
            parse_until("2025-06-01T08:30:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2025-06-01T06:30:00+00:00"
        );
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn durations_read_in_the_largest_sensible_unit() {
        let d = chrono::TimeDelta::milliseconds;
        assert_eq!(human_duration(d(850)), "850 ms");
        assert_eq!(human_duration(d(12_400)), "12.4 s");
        assert_eq!(human_duration(d(200_000)), "3 min 20 s");
        assert_eq!(human_duration(d(3_600_000)), "1 h 0 min");
    }

    #[test]
    fn relative_times_count_back_from_now_in_whole_units() {
        let now = DateTime::parse_from_rfc3339("2025-06-10T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s: &str| parse_time(s, 1, now).map(|t| t.to_rfc3339());
        assert_eq!(at("90s").unwrap(), "2025-06-10T11:58:30+00:00");
        assert_eq!(at("30m").unwrap(), "2025-06-10T11:30:00+00:00");
        assert_eq!(at("1h").unwrap(), "2025-06-10T11:00:00+00:00");
        assert_eq!(at("7d").unwrap(), "2025-06-03T12:00:00+00:00");
        assert_eq!(at("2w").unwrap(), "2025-05-27T12:00:00+00:00");
        assert_eq!(at("0m").unwrap(), "2025-06-10T12:00:00+00:00");
        for bad in ["1y", "h", "-1h", "+1h", "1.5h", "1 h", "99999999999999999w"] {
            assert!(at(bad).is_err(), "{bad} accepted");
        }
        assert!(at("1y").unwrap_err().contains("RFC 3339"));
        assert!(parse_since("1h").unwrap() < Utc::now());
    }

    #[test]
    fn json_is_indented_for_a_terminal_and_one_element_per_line_for_a_pipe() {
        let items = vec![
            serde_json::json!({"seq": 1, "detail": "two\nlines", "rules": [{"a": 1}]}),
            serde_json::json!({"seq": 2, "nested": {"b": [1, 2]}}),
        ];
        let indented = JsonArray::document(&items, JsonLayout::Indented).unwrap();
        assert_eq!(
            indented,
            serde_json::to_string_pretty(&items).unwrap() + "\n"
        );
        assert!(indented.contains("\n  {\n    \"seq\": 1,"), "{indented}");
        let compact = JsonArray::document(&items, JsonLayout::Compact).unwrap();
        let lines: Vec<&str> = compact.lines().collect();
        assert_eq!(lines.len(), 4, "{compact}");
        assert_eq!(lines[1], format!("{},", items[0]));
        assert_eq!(lines[2], items[1].to_string());
        for text in [&indented, &compact] {
            let back: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
            assert_eq!(back, items);
        }
        let none: [u8; 0] = [];
        assert_eq!(
            JsonArray::document(&none, JsonLayout::Compact).unwrap(),
            "[]\n"
        );
        assert_eq!(
            JsonArray::document(&none, JsonLayout::Indented).unwrap(),
            "[]\n"
        );
        let doc = serde_json::json!({"summary": {"n": 1}});
        assert_eq!(
            json_document(&doc, JsonLayout::Compact).unwrap(),
            "{\"summary\":{\"n\":1}}\n"
        );
        assert_eq!(
            json_document(&doc, JsonLayout::Indented).unwrap(),
            "{\n  \"summary\": {\n    \"n\": 1\n  }\n}\n"
        );
    }

    #[test]
    fn a_table_too_wide_for_the_terminal_is_cut_to_fit_and_a_piped_one_is_not() {
        let header = ["ID", "WHEN", "NAME"];
        let rows = vec![[
            "0193a5e1-7c2d-7000-8000-000000000001".to_owned(),
            "2025-06-01T09:00:00Z".to_owned(),
            "a rather long name that goes on".to_owned(),
        ]];
        let floors = [9, FIXED, 6];
        let full = fitted_table(&header, &rows, &floors, None);
        assert_eq!(full, fitted_table(&header, &rows, &[], Some(200)));
        assert!(full.lines().nth(1).unwrap().ends_with("goes on"), "{full}");
        let roomy = fitted_table(&header, &rows, &floors, Some(200));
        assert_eq!(roomy, full, "a table that fits is left alone");
        let cut_to = fitted_table(&header, &rows, &floors, Some(50));
        let lines: Vec<&str> = cut_to.lines().collect();
        assert!(lines.iter().all(|l| l.chars().count() <= 50), "{cut_to}");
        assert!(
            lines[1].contains(" 2025-06-01T09:00:00Z "),
            "never cut: {cut_to}"
        );
        assert!(lines[1].starts_with("0193a5e1-7c2d… "), "{cut_to}");
        assert!(lines[1].ends_with('…'), "{cut_to}");
        // Floors win over the width: a line that cannot fit keeps every column readable.
        let narrow = fitted_table(&header, &rows, &floors, Some(10));
        assert_eq!(
            narrow.lines().nth(1).unwrap(),
            "0193a5e1… 2025-06-01T09:00:00Z a rat…"
        );
        assert_eq!(cut("short", 5), "short");
        assert_eq!(cut("longer", 5), "long…");
    }

    #[test]
    fn messages_end_in_one_full_stop() {
        assert_eq!(
            sentence("no operation x in /tmp/a.db"),
            "no operation x in /tmp/a.db."
        );
        assert_eq!(
            sentence("2 of 3 cases failed (--fail-on-change)"),
            "2 of 3 cases failed (--fail-on-change)."
        );
        assert_eq!(sentence("Already a sentence."), "Already a sentence.");
        assert_eq!(sentence("a question?\n"), "a question?");
        let excerpt = "invalid suite: TOML parse error at line 1\n  |\n1 | x =\n  |    ^";
        assert_eq!(sentence(excerpt), excerpt);
    }
}
