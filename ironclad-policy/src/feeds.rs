//! Threat-intelligence feed files: six formats, each parsed with the position of every
//! bad entry (`FILE:LINE:COLUMN: message`).
//!
//! ```
//! use ironclad_policy::feeds::{parse_feed, FeedFormat, Strictness};
//!
//! let text = "; Spamhaus DROP List\n1.10.16.0/20 ; SBL256894\n2001:db8::/32 ; SBL1\n";
//! let feed = parse_feed(text, "drop.txt".as_ref(), &FeedFormat::Spamhaus, Strictness::Strict)?;
//! assert_eq!(feed.prefixes.len(), 2);
//!
//! let bad = "1.2.3.0/24\nnot-an-ip\n";
//! let err = parse_feed(bad, "list.txt".as_ref(), &FeedFormat::Plain, Strictness::Strict).unwrap_err();
//! assert_eq!(err.to_string(), "list.txt:2:1: `not-an-ip` is not an IP address or CIDR");
//! # Ok::<(), ironclad_policy::ConfigError>(())
//! ```
//!
//! | format | lines | comments |
//! |---|---|---|
//! | `plain` | one IP or CIDR per line | `#` to the end of the line |
//! | `spamhaus` | `CIDR ; SBLnnn` (DROP, EDROP, DROPv6) | `;` to the end of the line |
//! | `feodo` | one IP per line (abuse.ch Feodo Tracker) | `#` header and comments |
//! | `firehol` | one IP or CIDR per line (`.netset`, `.ipset`) | `#` |
//! | `csv` | a header row, then rows; the entry is in the named column | lines starting with `#` |
//! | `json` | an array of strings, or of objects with the entry in the named field | none |
//!
//! Strict mode (the default) refuses a whole feed when any entry is bad, and a CIDR with
//! host bits set (`10.0.0.1/8`) is an error. Lenient mode skips bad entries, counting
//! them, and masks host bits with a warning. IPv4 and IPv6 may be mixed. A feed with no
//! entries is valid (an empty set).

use std::path::Path;

use ipnetwork::IpNetwork;

use crate::error::{excerpt, ConfigError, Diagnostic};

/// How many problems a feed reports before it summarises the rest.
pub const MAX_REPORTED: usize = 50;

/// A feed file's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedFormat {
    /// One IP or CIDR per line, `#` comments.
    Plain,
    /// Spamhaus DROP/EDROP: `CIDR ; SBLnnn`, `;` comments.
    Spamhaus,
    /// abuse.ch Feodo Tracker IP blocklist: plain with a `#` header.
    Feodo,
    /// FireHOL `.netset` / `.ipset`: one IP or CIDR per line, `#` comments.
    Firehol,
    /// CSV with a header row; the entry is in column `column`.
    Csv {
        /// The header name of the column holding the IP or CIDR.
        column: String,
    },
    /// A JSON array of strings, or of objects whose `field` holds the entry.
    Json {
        /// For an array of objects: the key of the entry.
        field: Option<String>,
    },
}

impl FeedFormat {
    /// The format's name in the policy (`plain`, `spamhaus`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Spamhaus => "spamhaus",
            Self::Feodo => "feodo",
            Self::Firehol => "firehol",
            Self::Csv { .. } => "csv",
            Self::Json { .. } => "json",
        }
    }

    /// Whether every line of the format stands alone (`plain`, `spamhaus`, `feodo`,
    /// `firehol`): a changed file can then be read as the lines that changed.
    pub fn is_line_based(&self) -> bool {
        !matches!(self, Self::Csv { .. } | Self::Json { .. })
    }

    /// Every format name, as the policy accepts them.
    pub const NAMES: [&'static str; 6] = ["plain", "spamhaus", "feodo", "firehol", "csv", "json"];
}

/// What to do with a bad entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strictness {
    /// Refuse the whole feed (the default).
    #[default]
    Strict,
    /// Skip bad entries (counted) and mask host bits (with a warning).
    Lenient,
}

/// A parsed feed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ParsedFeed {
    /// The prefixes, in file order (duplicates kept; compilation merges them).
    pub prefixes: Vec<IpNetwork>,
    /// Entries skipped as bad (lenient mode).
    pub skipped: usize,
    /// Entries whose host bits were masked (lenient mode).
    pub masked: usize,
    /// What lenient mode skipped or masked, with positions (at most [`MAX_REPORTED`]).
    pub warnings: Vec<Diagnostic>,
}

/// Collects entries and problems for one file.
struct Collector<'a> {
    path: &'a Path,
    strictness: Strictness,
    feed: ParsedFeed,
    errors: Vec<Diagnostic>,
    problems: usize,
}

impl<'a> Collector<'a> {
    fn new(path: &'a Path, strictness: Strictness) -> Self {
        Self {
            path,
            strictness,
            feed: ParsedFeed::default(),
            errors: Vec::new(),
            problems: 0,
        }
    }

    fn report(&mut self, line: u64, column: u64, message: String) {
        self.problems += 1;
        let list = match self.strictness {
            Strictness::Strict => &mut self.errors,
            Strictness::Lenient => &mut self.feed.warnings,
        };
        if list.len() < MAX_REPORTED {
            list.push(Diagnostic {
                path: self.path.to_path_buf(),
                line,
                column,
                message,
            });
        }
    }

    /// A problem that makes the entry unusable.
    fn bad(&mut self, line: u64, column: u64, message: String) {
        self.feed.skipped += 1;
        self.report(line, column, message);
    }

    /// One entry as written at `line`:`column`.
    fn entry(&mut self, text: &str, line: u64, column: u64) {
        let Some(net) = parse_entry(text) else {
            self.bad(
                line,
                column,
                format!("`{}` is not an IP address or CIDR", excerpt(text, EXCERPT)),
            );
            return;
        };
        let network = IpNetwork::new(net.network(), net.prefix()).unwrap_or(net);
        if network.ip() == net.ip() {
            self.feed.prefixes.push(net);
            return;
        }
        match self.strictness {
            Strictness::Strict => {
                self.report(
                    line,
                    column,
                    format!("`{net}` has host bits set; did you mean `{network}`?"),
                );
            }
            Strictness::Lenient => {
                self.feed.masked += 1;
                self.report(
                    line,
                    column,
                    format!("`{net}` has host bits set; using `{network}`"),
                );
                self.feed.prefixes.push(network);
            }
        }
    }

    fn finish(mut self) -> Result<ParsedFeed, ConfigError> {
        let summary = |shown: usize| Diagnostic {
            path: self.path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!(
                "{} more problems not shown (the first {shown} are)",
                self.problems - shown
            ),
        };
        match self.strictness {
            Strictness::Strict if !self.errors.is_empty() => {
                let shown = self.errors.len();
                if self.problems > shown {
                    let s = summary(shown);
                    self.errors.push(s);
                }
                Err(ConfigError {
                    diagnostics: self.errors,
                })
            }
            _ => {
                let shown = self.feed.warnings.len();
                if self.problems > shown {
                    let s = summary(shown);
                    self.feed.warnings.push(s);
                }
                Ok(self.feed)
            }
        }
    }
}

/// How much of a bad entry a message quotes (characters).
const EXCERPT: usize = 80;

/// An IP address (a /32 or /128) or a CIDR; IPv4-mapped IPv6 prefixes become IPv4.
fn parse_entry(text: &str) -> Option<IpNetwork> {
    crate::config::parse_net(text)
}

/// 1-based column of byte offset `at` in `line`, counted in characters.
fn column_of(line: &str, at: usize) -> u64 {
    line.get(..at).map_or(at, |s| s.chars().count()) as u64 + 1
}

/// The IPv4 address or CIDR a line holds, read byte by byte, when the line is written
/// the way nearly every line of a large feed is: the entry at its start in canonical
/// form (decimal octets without leading zeros, a prefix length of 0 to 32, no host
/// bits), then nothing, or blanks and a comment (or, with `rest_allowed`, anything
/// after a blank). Anything else is `None`, and the line goes the general way
/// ([`parse_net`](crate::config::parse_net), with its messages), which reads these
/// lines the same (a unit test compares the two on random and odd lines).
///
/// Written by hand because a start reads a million such lines: the general way takes
/// about 270 ns a line (`sources/parse_1m_line_plain_feed`), a third of the daemon's
/// start with a 1M-line feed.
fn canonical_v4(line: &[u8], comment: u8, rest_allowed: bool) -> Option<ipnetwork::Ipv4Network> {
    // A decimal number at `at` of at most three digits, no leading zero, up to `max`.
    fn number(line: &[u8], at: &mut usize, max: u32) -> Option<u32> {
        let start = *at;
        let mut value: u32 = 0;
        while let Some(d) = line.get(*at).filter(|b| b.is_ascii_digit()) {
            value = value * 10 + u32::from(d - b'0');
            *at += 1;
            if *at - start > 3 {
                return None;
            }
        }
        let digits = *at - start;
        // No digits, or a leading zero ("01"): the general way decides.
        if digits == 0 || (digits > 1 && line[start] == b'0') || value > max {
            return None;
        }
        Some(value)
    }
    let mut at = 0;
    let mut address: u32 = 0;
    for index in 0..4 {
        address = address << 8 | number(line, &mut at, 255)?;
        if index < 3 {
            if line.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
    }
    let mut prefix = 32;
    if line.get(at) == Some(&b'/') {
        at += 1;
        prefix = number(line, &mut at, 32)?;
    }
    let ends_well = match line.get(at) {
        None => true,
        Some(b) if *b == comment => true,
        // Blanks, then (unless anything may follow) nothing but a comment.
        Some(b' ' | b'\t') => {
            rest_allowed
                || line[at..]
                    .iter()
                    .find(|b| !matches!(b, b' ' | b'\t'))
                    .is_none_or(|b| *b == comment)
        }
        Some(_) => false,
    };
    if !ends_well {
        return None;
    }
    let prefix = u8::try_from(prefix).ok()?;
    let net = ipnetwork::Ipv4Network::new(std::net::Ipv4Addr::from(address), prefix).ok()?;
    // Host bits set: the general way reports (strict) or masks (lenient) them.
    (net.network() == net.ip()).then_some(net)
}

/// Line-oriented formats: strip the comment, then the line holds one entry.
fn parse_lines(text: &str, c: &mut Collector<'_>, comment: char, rest_allowed: bool) {
    let comment_byte = u8::try_from(comment).ok().filter(u8::is_ascii);
    for (index, raw) in text.lines().enumerate() {
        if let Some(net) =
            comment_byte.and_then(|byte| canonical_v4(raw.as_bytes(), byte, rest_allowed))
        {
            c.feed.prefixes.push(IpNetwork::V4(net));
            continue;
        }
        let line = index as u64 + 1;
        let content = raw.split(comment).next().unwrap_or("");
        let trimmed_start = content.len() - content.trim_start().len();
        let body = content.trim();
        if body.is_empty() {
            continue;
        }
        let token_end = body.find(char::is_whitespace).unwrap_or(body.len());
        let (token, after) = body.split_at(token_end);
        if !rest_allowed && !after.trim().is_empty() {
            let after_at = trimmed_start + token_end + (after.len() - after.trim_start().len());
            c.bad(
                line,
                column_of(raw, after_at),
                format!(
                    "unexpected `{}` after the entry",
                    excerpt(after.trim(), EXCERPT)
                ),
            );
            continue;
        }
        c.entry(token, line, column_of(raw, trimmed_start));
    }
}

/// Splits one CSV line into fields with their byte offsets; `"` quotes, `""` escapes.
/// Returns `None` for an unterminated quote.
fn csv_fields(line: &str) -> Option<Vec<(usize, String)>> {
    let mut fields = Vec::new();
    let mut chars = line.char_indices().peekable();
    loop {
        let start = chars.peek().map_or(line.len(), |(i, _)| *i);
        let mut value = String::new();
        if chars.peek().is_some_and(|(_, ch)| *ch == '"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return None,
                    Some((_, '"')) => {
                        if chars.peek().is_some_and(|(_, ch)| *ch == '"') {
                            chars.next();
                            value.push('"');
                        } else {
                            break;
                        }
                    }
                    Some((_, ch)) => value.push(ch),
                }
            }
            // Anything between the closing quote and the comma is kept as written.
            while let Some((_, ch)) = chars.peek().copied() {
                if ch == ',' {
                    break;
                }
                value.push(ch);
                chars.next();
            }
            fields.push((start + 1, value));
        } else {
            while let Some((_, ch)) = chars.peek().copied() {
                if ch == ',' {
                    break;
                }
                value.push(ch);
                chars.next();
            }
            fields.push((start, value));
        }
        match chars.next() {
            Some((_, ',')) => continue,
            _ => return Some(fields),
        }
    }
}

fn parse_csv(text: &str, column: &str, c: &mut Collector<'_>) -> Result<(), ConfigError> {
    let mut index: Option<usize> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = n as u64 + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
            continue;
        }
        let Some(fields) = csv_fields(raw) else {
            c.bad(
                line,
                column_of(raw, raw.find('"').unwrap_or(0)),
                "unterminated quote".into(),
            );
            continue;
        };
        let Some(at) = index else {
            // The first row that is not a comment is the header.
            match fields.iter().position(|(_, name)| name.trim() == column) {
                Some(i) => index = Some(i),
                None => {
                    let names: Vec<&str> = fields.iter().map(|(_, n)| n.trim()).collect();
                    return Err(ConfigError {
                        diagnostics: vec![Diagnostic {
                            path: c.path.to_path_buf(),
                            line,
                            column: 1,
                            message: format!(
                                "the header has no column `{column}` (it has: {})",
                                names.join(", ")
                            ),
                        }],
                    });
                }
            }
            continue;
        };
        match fields.get(at) {
            Some((offset, value)) => {
                let lead = value.len() - value.trim_start().len();
                c.entry(value.trim(), line, column_of(raw, offset + lead));
            }
            None => c.bad(
                line,
                column_of(raw, raw.len()),
                format!(
                    "the row has {} fields; column `{column}` is field {}",
                    fields.len(),
                    at + 1
                ),
            ),
        }
    }
    Ok(())
}

fn parse_json(text: &str, field: Option<&str>, c: &mut Collector<'_>) -> Result<(), ConfigError> {
    use serde_saphyr::Spanned;
    let fail = |line: u64, column: u64, message: String| ConfigError {
        diagnostics: vec![Diagnostic {
            path: c.path.to_path_buf(),
            line,
            column,
            message,
        }],
    };
    // Strict JSON syntax first (serde_json's errors carry line and column); positions of
    // the elements come from the YAML reader, JSON being a subset of YAML.
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(fail(
            e.line() as u64,
            e.column() as u64,
            format!("invalid JSON: {e}"),
        ));
    }
    let shape = |e: serde_saphyr::Error, expected: &str| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        fail(
            line,
            column,
            format!("a JSON feed must be an array of {expected}"),
        )
    };
    let entry = |value: &Spanned<serde_json::Value>, c: &mut Collector<'_>| {
        let (line, column) = (value.referenced.line(), value.referenced.column());
        match &value.value {
            serde_json::Value::String(s) => c.entry(s.trim(), line, column),
            other => c.bad(line, column, format!("{other} is not a string")),
        }
    };
    match field {
        None => {
            let items: Vec<Spanned<serde_json::Value>> =
                serde_saphyr::from_str(text).map_err(|e| shape(e, "strings"))?;
            for item in &items {
                entry(item, c);
            }
        }
        Some(field) => {
            type Object = std::collections::BTreeMap<String, Spanned<serde_json::Value>>;
            let items: Vec<Spanned<Object>> = serde_saphyr::from_str(text)
                .map_err(|e| shape(e, &format!("objects with a `{field}` field")))?;
            for item in &items {
                match item.value.get(field) {
                    Some(value) => entry(value, c),
                    None => c.bad(
                        item.referenced.line(),
                        item.referenced.column(),
                        format!("the object has no field `{field}`"),
                    ),
                }
            }
        }
    }
    Ok(())
}

/// Parses feed `text` read from `path` (used in messages).
///
/// Strict: every bad entry is returned as an error (at most [`MAX_REPORTED`], then a
/// summary) and nothing is loaded. Lenient: bad entries are skipped and counted, host
/// bits masked, both listed in [`ParsedFeed::warnings`]. A CSV header without the
/// column, or a file that is not a JSON array, is an error in both modes.
pub fn parse_feed(
    text: &str,
    path: &Path,
    format: &FeedFormat,
    strictness: Strictness,
) -> Result<ParsedFeed, ConfigError> {
    let mut c = Collector::new(path, strictness);
    match format {
        FeedFormat::Plain | FeedFormat::Feodo | FeedFormat::Firehol => {
            parse_lines(text, &mut c, '#', false);
        }
        FeedFormat::Spamhaus => parse_lines(text, &mut c, ';', false),
        FeedFormat::Csv { column } => parse_csv(text, column, &mut c)?,
        FeedFormat::Json { field } => parse_json(text, field.as_deref(), &mut c)?,
    }
    c.finish()
}

/// The largest feed file read (64 MiB: several million entries).
pub const MAX_FEED_BYTES: u64 = 64 << 20;

/// Reads a regular file of at most `limit` bytes without ever blocking (a device, a
/// FIFO or a bigger file is refused at once, with a message).
pub(crate) fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    ironclad_core::fsutil::read_regular_file(path, limit).map_err(|e| e.to_string())
}

/// Reads the feed file at `path` (a regular file of at most [`MAX_FEED_BYTES`]): an
/// unreadable file is an error at line 0.
pub(crate) fn read_feed_bytes(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let mut bytes = Vec::new();
    read_feed_bytes_into(path, &mut bytes)?;
    Ok(bytes)
}

/// [`read_feed_bytes`] into a buffer kept from an earlier read (cleared first).
pub(crate) fn read_feed_bytes_into(path: &Path, bytes: &mut Vec<u8>) -> Result<(), ConfigError> {
    read_feed_bytes_keep(path, bytes).map(drop)
}

/// [`read_feed_bytes_into`], giving back the open file (to read this version again).
pub(crate) fn read_feed_bytes_keep(
    path: &Path,
    bytes: &mut Vec<u8>,
) -> Result<std::fs::File, ConfigError> {
    ironclad_core::fsutil::read_regular_file_keep(path, MAX_FEED_BYTES, bytes).map_err(|e| {
        ConfigError {
            diagnostics: vec![Diagnostic {
                path: path.to_path_buf(),
                line: 0,
                column: 0,
                message: e.to_string(),
            }],
        }
    })
}

/// A feed file's bytes as text: bytes that are not UTF-8 are an error at their line and
/// column.
pub(crate) fn feed_text(bytes: Vec<u8>, path: &Path) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        let column = valid.iter().rev().take_while(|b| **b != b'\n').count() as u64 + 1;
        ConfigError {
            diagnostics: vec![Diagnostic {
                path: path.to_path_buf(),
                line,
                column,
                message: "the feed is not UTF-8 text".to_string(),
            }],
        }
    })
}

/// Reads and parses the feed file at `path` (a regular file of at most
/// [`MAX_FEED_BYTES`]).
pub fn read_feed(
    path: &Path,
    format: &FeedFormat,
    strictness: Strictness,
) -> Result<ParsedFeed, ConfigError> {
    parse_feed(
        &feed_text(read_feed_bytes(path)?, path)?,
        path,
        format,
        strictness,
    )
}

/// The lines one version of a line-based feed has and the other lacks: what a re-read
/// of a changed file has to parse ([`line_delta`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct LineDelta {
    /// The old version's lines the new one lacks, each ending with a newline.
    pub removed: String,
    /// The new version's lines the old one lacks, each ending with a newline.
    pub added: String,
}

/// How many lines ahead [`line_delta`] looks for a line again after the two versions
/// part: an insertion or removal of up to this many lines in a row is found as such;
/// a longer one costs the lines of both versions up to where they meet again.
const RESYNC_LINES: usize = 64;

/// The line at byte `at` of `text` (without its newline) and where the next one starts.
fn line_at(text: &[u8], at: usize) -> (&[u8], usize) {
    match text[at..].iter().position(|b| *b == b'\n') {
        Some(n) => (&text[at..at + n], at + n + 1),
        None => (&text[at..], text.len()),
    }
}

/// How many leading bytes `a` and `b` share. Compares 64-byte blocks first (a memcmp
/// each): the two versions of a big feed are mostly equal, and this walk is most of
/// what reading a changed one costs.
fn common_len(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 64;
    let max = a.len().min(b.len());
    let mut n = 0;
    while n + BLOCK <= max && a[n..n + BLOCK] == b[n..n + BLOCK] {
        n += BLOCK;
    }
    n + a[n..max]
        .iter()
        .zip(&b[n..max])
        .take_while(|(x, y)| x == y)
        .count()
}

/// Where [`line_delta_from`] reads the old version: a file (read back from the kernel's
/// page cache or the disk, a piece at a time) or bytes in memory.
pub(crate) trait ReadAt {
    /// Reads into `buf` from byte `offset`: how many bytes it read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let from = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - from);
        buf[..n].copy_from_slice(&self[from..from + n]);
        Ok(n)
    }
}

/// The old version as [`line_delta_from`] walks it: only a window of it in memory (a
/// few hundred KiB, or the longest line), read as the walk moves on. Holding the whole
/// old version beside the new one doubled a reload's peak memory (14 MB more at a
/// million lines).
struct Window<'a, R: ReadAt + ?Sized> {
    source: &'a R,
    len: usize,
    /// `buf` holds the bytes from `base` on.
    base: usize,
    buf: Vec<u8>,
}

impl<R: ReadAt + ?Sized> Window<'_, R> {
    /// How much is read at a time, and how much may be dropped at a time (tiny in
    /// tests, so that their versions span many windows).
    const CHUNK: usize = if cfg!(test) { 64 } else { 256 * 1024 };

    /// Has the bytes up to `upto` (or the end) in memory; `None` when the source fails
    /// or ends early.
    fn fill(&mut self, upto: usize) -> Option<()> {
        let upto = upto.min(self.len);
        while self.base + self.buf.len() < upto {
            let have = self.buf.len();
            let want = (upto - self.base - have)
                .max(Self::CHUNK)
                .min(self.len - self.base - have);
            self.buf.resize(have + want, 0);
            let n = self
                .source
                .read_at(&mut self.buf[have..], (self.base + have) as u64)
                .ok()?;
            self.buf.truncate(have + n);
            if n == 0 {
                return None;
            }
        }
        Some(())
    }

    /// Drops the bytes before `before` (a chunk at a time at least: each drop moves
    /// what follows).
    fn release(&mut self, before: usize) {
        let n = before.saturating_sub(self.base).min(self.buf.len());
        if n >= Self::CHUNK {
            self.buf.drain(..n);
            self.base += n;
        }
    }

    /// The line at byte `at` (at or after the window's start; without its newline)
    /// and where the next one starts.
    fn line_at(&mut self, at: usize) -> Option<(&[u8], usize)> {
        let mut from = at;
        loop {
            let end = self.base + self.buf.len();
            if let Some(n) = self.buf[from - self.base..]
                .iter()
                .position(|b| *b == b'\n')
            {
                let (a, b) = (at - self.base, from - self.base + n);
                return Some((&self.buf[a..b], self.base + b + 1));
            }
            if end == self.len {
                return Some((&self.buf[at - self.base..], self.len));
            }
            from = end;
            self.fill(end + Self::CHUNK)?;
        }
    }

    /// How many bytes from `at` on equal `other`'s first ones. What it walks past is
    /// dropped up to the start of the last line it reached (the caller goes on from
    /// there).
    fn common_len(&mut self, at: usize, other: &[u8]) -> Option<usize> {
        let mut n = 0;
        loop {
            self.fill(at + n + Self::CHUNK)?;
            let have = &self.buf[at + n - self.base..];
            let rest = &other[n..];
            let m = common_len(have, rest);
            let line_start = have[..m]
                .iter()
                .rposition(|b| *b == b'\n')
                .map(|p| at + n + p + 1);
            n += m;
            if m < have.len().min(rest.len()) || m == rest.len() || at + n == self.len {
                return Some(n);
            }
            if let Some(line_start) = line_start {
                self.release(line_start);
            }
        }
    }
}

/// [`line_delta_from`] of two versions in memory.
#[cfg(test)]
pub(crate) fn line_delta(old: &[u8], new: &[u8], limit: usize) -> Option<LineDelta> {
    line_delta_from(old, old.len(), new, limit)
}

/// The lines of `old` (its first `old_len` bytes) that `new` lacks and the lines of
/// `new` that `old` lacks, by walking both versions in order: equal runs are skipped a
/// block at a time, and where they part, the next [`RESYNC_LINES`] lines of each are
/// searched for the other's line (a line inserted, removed, or replaced). As multisets
/// of lines, `old` minus `removed` plus `added` is `new` whatever the alignment found; a
/// poor alignment only costs more lines. `None` when more than `limit` lines differ (a
/// rewritten or reordered file: parse it whole), or `old` cannot be read. Only a window
/// of `old` is in memory at a time.
pub(crate) fn line_delta_from<R: ReadAt + ?Sized>(
    old: &R,
    old_len: usize,
    new: &[u8],
    limit: usize,
) -> Option<LineDelta> {
    let mut old = Window {
        source: old,
        len: old_len,
        base: 0,
        buf: Vec::new(),
    };
    let mut removed = Vec::new();
    let mut added = Vec::new();
    let mut lines = 0usize;
    let take = |out: &mut Vec<u8>, line: &[u8], lines: &mut usize| -> bool {
        out.extend_from_slice(line);
        out.push(b'\n');
        *lines += 1;
        *lines <= limit
    };
    let (mut i, mut j) = (0, 0);
    loop {
        old.release(i);
        // The shared run, back to the start of the line where the versions part (the
        // run is the same bytes in both: looked for in the new version).
        let n = old.common_len(i, &new[j..])?;
        let back = new[j..j + n]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1);
        let at_end = i + n == old_len && j + n == new.len();
        if at_end {
            break;
        }
        i += back;
        j += back;
        if i == old_len || j == new.len() {
            // One version ends: the rest of the other is all new (or all gone).
            if i == old_len {
                let mut at = j;
                while at < new.len() {
                    let (line, next) = line_at(new, at);
                    if !take(&mut added, line, &mut lines) {
                        return None;
                    }
                    at = next;
                }
            } else {
                while i < old_len {
                    let (line, next) = old.line_at(i)?;
                    if !take(&mut removed, line, &mut lines) {
                        return None;
                    }
                    i = next;
                    old.release(i);
                }
            }
            break;
        }
        let (lo, next_i) = old.line_at(i)?;
        let lo = lo.to_vec();
        let (ln, next_j) = line_at(new, j);
        if lo == ln {
            // Equal lines that differ only by a final newline.
            (i, j) = (next_i, next_j);
            continue;
        }
        // Where does the new line come back in the old version, and the old line in
        // the new one?
        let find_new = |mut at: usize, wanted: &[u8]| -> Option<(usize, usize)> {
            for ahead in 1..=RESYNC_LINES {
                at = line_at(new, at).1;
                if at >= new.len() {
                    return None;
                }
                if line_at(new, at).0 == wanted {
                    return Some((ahead, at));
                }
            }
            None
        };
        let mut in_old = None;
        let mut at = i;
        for ahead in 1..=RESYNC_LINES {
            at = old.line_at(at)?.1;
            if at >= old_len {
                break;
            }
            if old.line_at(at)?.0 == ln {
                in_old = Some((ahead, at));
                break;
            }
        }
        match (in_old, find_new(j, &lo)) {
            (Some((a, to)), b) if b.is_none_or(|(b, _)| a <= b) => {
                // Old lines removed up to the new line.
                while i < to {
                    let (line, next) = old.line_at(i)?;
                    if !take(&mut removed, line, &mut lines) {
                        return None;
                    }
                    i = next;
                }
            }
            (_, Some((_, to))) => {
                // New lines inserted before the old line.
                while j < to {
                    let (line, next) = line_at(new, j);
                    if !take(&mut added, line, &mut lines) {
                        return None;
                    }
                    j = next;
                }
            }
            _ => {
                // A line replaced.
                if !take(&mut removed, &lo, &mut lines) || !take(&mut added, ln, &mut lines) {
                    return None;
                }
                (i, j) = (next_i, next_j);
            }
        }
    }
    Some(LineDelta {
        removed: String::from_utf8(removed).ok()?,
        added: String::from_utf8(added).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the general way reads from one line: the comment stripped, the one token
    /// parsed, nothing else allowed after it, no host bits.
    fn general(raw: &str, comment: char, rest_allowed: bool) -> Option<IpNetwork> {
        let body = raw.split(comment).next().unwrap_or("").trim();
        let end = body.find(char::is_whitespace).unwrap_or(body.len());
        let (token, after) = body.split_at(end);
        if !rest_allowed && !after.trim().is_empty() {
            return None;
        }
        let net = parse_entry(token)?;
        (net.network() == net.ip()).then_some(net)
    }

    #[test]
    fn the_canonical_line_reader_agrees_with_the_general_way() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut fast = 0;
        for _ in 0..200_000 {
            let mut line = String::new();
            if next(2) == 0 {
                // As feeds write them: a network and its length, no host bits.
                let len = next(33) as u32;
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                let address = std::net::Ipv4Addr::from(next(1 << 32) as u32 & mask);
                line = if len == 32 && next(2) == 0 {
                    address.to_string()
                } else {
                    format!("{address}/{len}")
                };
            }
            let octets = if !line.is_empty() {
                0
            } else if next(20) == 0 {
                3 + next(3)
            } else {
                4
            };
            for i in 0..octets {
                if i > 0 {
                    line.push('.');
                }
                match next(12) {
                    0 => line.push_str(&format!("0{}", next(100))),
                    1 => line.push_str(&format!("{}", 250 + next(10))),
                    2 => {}
                    _ => line.push_str(&format!("{}", next(256))),
                }
            }
            match if octets == 0 { 0 } else { next(6) } {
                0 => {}
                1 => line.push_str(&format!("/0{}", next(40))),
                _ => {
                    // Mostly a prefix length without host bits, as feeds write them.
                    let len = next(36);
                    line.push_str(&format!("/{len}"));
                }
            }
            line.push_str(
                [
                    "",
                    "",
                    "",
                    "  # entry",
                    "\t#",
                    "#x",
                    ";x",
                    " x",
                    " ",
                    "\r",
                    "/",
                    " ; a",
                    "\u{a0}",
                    "x",
                ][next(14) as usize],
            );
            for (comment, rest_allowed) in [('#', false), (';', false), ('#', true)] {
                let general = general(&line, comment, rest_allowed);
                // None: the general way reads it (and says what is wrong, if anything).
                if let Some(net) = canonical_v4(line.as_bytes(), comment as u8, rest_allowed) {
                    fast += 1;
                    assert_eq!(general, Some(IpNetwork::V4(net)), "{line:?}");
                }
            }
        }
        // Most lines are canonical: the fast reader is what runs.
        assert!(fast > 100_000, "{fast}");
        // A whole feed reads the same either way, odd lines and their messages too.
        let text =
            "10.0.0.0/8\n010.1.2.3\n192.0.2.1 # x\n192.0.2.0/24\n198.51.100.7/24\n1.2.3.4 junk\n";
        let err = strict(text, FeedFormat::Plain).expect_err("odd lines");
        assert_eq!(err.len(), 3, "{err:?}");
        assert!(
            err[0].contains(":2:") && err[0].contains("010.1.2.3"),
            "{err:?}"
        );
        assert!(
            err[1].contains(":5:") && err[1].contains("host bits"),
            "{err:?}"
        );
        assert!(err[2].contains(":6:") && err[2].contains("junk"), "{err:?}");
        let lenient = parse_feed(
            text,
            Path::new("feed.txt"),
            &FeedFormat::Plain,
            Strictness::Lenient,
        )
        .expect("lenient");
        assert_eq!(
            lenient.prefixes,
            nets(&[
                "10.0.0.0/8",
                "192.0.2.1/32",
                "192.0.2.0/24",
                "198.51.100.0/24"
            ])
        );
    }

    fn nets(list: &[&str]) -> Vec<IpNetwork> {
        list.iter()
            .map(|s| parse_entry(s).unwrap_or_else(|| panic!("{s}")))
            .collect()
    }

    fn strict(text: &str, format: FeedFormat) -> Result<ParsedFeed, Vec<String>> {
        parse_feed(text, Path::new("feed.txt"), &format, Strictness::Strict)
            .map_err(|e| e.diagnostics.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn plain_feeds_parse_both_families_and_comments() {
        let text = "# a list\n192.0.2.1\n  198.51.100.0/24   # trailing comment\n\n2001:db8::/32\n";
        let feed = strict(text, FeedFormat::Plain).expect("valid");
        assert_eq!(
            feed.prefixes,
            nets(&["192.0.2.1/32", "198.51.100.0/24", "2001:db8::/32"])
        );
        assert_eq!((feed.skipped, feed.masked), (0, 0));
    }

    #[test]
    fn plain_bad_lines_have_exact_positions() {
        let text = "192.0.2.0/24\n  10.0.0.300\n10.0.0.1/8\n192.0.2.9 extra\n";
        let errors = strict(text, FeedFormat::Plain).expect_err("invalid");
        assert_eq!(
            errors,
            [
                "feed.txt:2:3: `10.0.0.300` is not an IP address or CIDR",
                "feed.txt:3:1: `10.0.0.1/8` has host bits set; did you mean `10.0.0.0/8`?",
                "feed.txt:4:11: unexpected `extra` after the entry",
            ]
        );
    }

    #[test]
    fn lenient_mode_skips_counts_and_masks() {
        let text = "192.0.2.0/24\nbogus\n10.0.0.1/8\n";
        let feed = parse_feed(
            text,
            Path::new("f"),
            &FeedFormat::Plain,
            Strictness::Lenient,
        )
        .expect("lenient");
        assert_eq!(feed.prefixes, nets(&["192.0.2.0/24", "10.0.0.0/8"]));
        assert_eq!((feed.skipped, feed.masked), (1, 1));
        assert_eq!(feed.warnings.len(), 2);
        assert_eq!(
            feed.warnings[0].to_string(),
            "f:2:1: `bogus` is not an IP address or CIDR"
        );
        assert_eq!(feed.warnings[1].line, 3);
    }

    #[test]
    fn spamhaus_drop_with_sbl_references() {
        let text = "; Spamhaus DROP List 2026/11/22 - (c) 2026 The Spamhaus Project\n\
                    ; Last-Modified: Sun, 22 Nov 2026 10:00:00 GMT\n\
                    1.10.16.0/20 ; SBL256894\n\
                    1.19.0.0/16 ; SBL434604\n\
                    2001:db8:100::/40 ; SBL1\n";
        let feed = strict(text, FeedFormat::Spamhaus).expect("valid");
        assert_eq!(
            feed.prefixes,
            nets(&["1.10.16.0/20", "1.19.0.0/16", "2001:db8:100::/40"])
        );
        let errors = strict(
            "1.10.16.0/20 ; SBL1\n1.10.16.0/33 ; SBL2\n",
            FeedFormat::Spamhaus,
        )
        .expect_err("invalid");
        assert_eq!(
            errors,
            ["feed.txt:2:1: `1.10.16.0/33` is not an IP address or CIDR"]
        );
    }

    #[test]
    fn feodo_and_firehol() {
        let feodo = "################################################################\n\
                     # abuse.ch Feodo Tracker Botnet C2 IP Blocklist                #\n\
                     ################################################################\n\
                     #\n# DstIP\n50.16.16.211\n162.243.103.246\n";
        let feed = strict(feodo, FeedFormat::Feodo).expect("valid");
        assert_eq!(
            feed.prefixes,
            nets(&["50.16.16.211/32", "162.243.103.246/32"])
        );
        let firehol = "#\n# firehol_level1\n#\n0.0.0.0/8\n1.10.16.0/20\n223.254.0.0/16\n";
        let feed = strict(firehol, FeedFormat::Firehol).expect("valid");
        assert_eq!(feed.prefixes.len(), 3);
    }

    #[test]
    fn csv_by_named_column_with_quotes() {
        let text = "# exported\nfirst_seen,\"ip address\",port\n\
                    2026-01-01,192.0.2.1,443\n\
                    \"2026-01-02, noon\",\"198.51.100.0/24\",80\n";
        let format = FeedFormat::Csv {
            column: "ip address".into(),
        };
        let feed = strict(text, format.clone()).expect("valid");
        assert_eq!(feed.prefixes, nets(&["192.0.2.1/32", "198.51.100.0/24"]));
        let errors = strict(
            "ip,port\n192.0.2.1,1\nnope,2\n3\n",
            FeedFormat::Csv {
                column: "port".into(),
            },
        );
        assert!(errors.is_err());
        let errors = strict(
            "port,ip\n1,192.0.2.1\n2,nope\n3\n",
            FeedFormat::Csv {
                column: "ip".into(),
            },
        )
        .expect_err("invalid");
        assert_eq!(
            errors,
            [
                "feed.txt:3:3: `nope` is not an IP address or CIDR",
                "feed.txt:4:2: the row has 1 fields; column `ip` is field 2",
            ]
        );
        let errors = strict(
            "a,b\n1,2\n",
            FeedFormat::Csv {
                column: "ip".into(),
            },
        )
        .expect_err("no column");
        assert_eq!(
            errors,
            ["feed.txt:1:1: the header has no column `ip` (it has: a, b)"]
        );
    }

    #[test]
    fn json_arrays_of_strings_and_objects() {
        let feed = strict(
            "[\"192.0.2.1\", \"2001:db8::/48\"]",
            FeedFormat::Json { field: None },
        )
        .expect("valid");
        assert_eq!(feed.prefixes, nets(&["192.0.2.1/32", "2001:db8::/48"]));
        let text =
            "[\n  {\"ip\": \"192.0.2.0/24\", \"n\": 1},\n  {\"ip\": \"bad\"},\n  {\"x\": 1}\n]";
        let errors = strict(
            text,
            FeedFormat::Json {
                field: Some("ip".into()),
            },
        )
        .expect_err("bad");
        assert_eq!(
            errors,
            [
                "feed.txt:3:10: `bad` is not an IP address or CIDR",
                "feed.txt:4:3: the object has no field `ip`",
            ]
        );
        let errors =
            strict("[\"192.0.2.1\",]", FeedFormat::Json { field: None }).expect_err("syntax");
        assert!(
            errors[0].starts_with("feed.txt:1:14: invalid JSON"),
            "{errors:?}"
        );
        let errors = strict("{\"a\": 1}", FeedFormat::Json { field: None }).expect_err("not array");
        assert!(
            errors[0].contains("must be an array of strings"),
            "{errors:?}"
        );
        let errors = strict(
            "[\"192.0.2.1\"]",
            FeedFormat::Json {
                field: Some("ip".into()),
            },
        )
        .expect_err("strings, not objects");
        assert!(
            errors[0].contains("array of objects with a `ip` field"),
            "{errors:?}"
        );
        let errors = strict("[1]", FeedFormat::Json { field: None }).expect_err("number");
        assert_eq!(errors, ["feed.txt:1:2: 1 is not a string"]);
    }

    #[test]
    fn devices_and_directories_are_not_feeds() {
        for (path, kind) in [("/dev/zero", "a character device"), ("/", "a directory")] {
            let err = read_feed(Path::new(path), &FeedFormat::Plain, Strictness::Strict)
                .expect_err("not a file");
            assert_eq!(
                err.to_string(),
                format!("{path}: not a regular file ({kind})")
            );
        }
    }

    #[test]
    fn many_problems_are_summarised() {
        let text: String = (0..200).map(|i| format!("bad{i}\n")).collect();
        let errors = strict(&text, FeedFormat::Plain).expect_err("invalid");
        assert_eq!(errors.len(), MAX_REPORTED + 1);
        assert_eq!(
            errors[MAX_REPORTED],
            "feed.txt: 150 more problems not shown (the first 50 are)"
        );
    }

    /// The lines of `text` as a multiset.
    fn multiset(text: &[u8]) -> std::collections::BTreeMap<Vec<u8>, i64> {
        let mut out = std::collections::BTreeMap::new();
        let mut at = 0;
        while at < text.len() {
            let (line, next) = line_at(text, at);
            *out.entry(line.to_vec()).or_default() += 1;
            at = next;
        }
        out
    }

    /// Read a window at a time (64 bytes in tests, so lines cross windows all the
    /// time), from memory and from a file, the delta of two versions is what tells
    /// them apart: the old lines without the removed ones and with the added ones are
    /// the new lines. Small edits cost about their own lines; versions of different
    /// lengths, an emptied file, a final newline gone and long lines are among them.
    #[test]
    fn a_line_delta_read_a_window_at_a_time_turns_the_old_version_into_the_new() {
        let mut rng = ironclad_testing::rules::Rng::new(41);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // Lines seldom repeated, as in a feed (a repeated line can align the versions
        // wrongly, which costs lines, not correctness), some longer than a window.
        let line = |rng: &mut ironclad_testing::rules::Rng| -> String {
            match rng.below(10) {
                0 => format!(
                    "{}{}",
                    "x".repeat(100 + rng.below(300) as usize),
                    rng.below(1 << 30)
                ),
                1 => format!("# {}", rng.below(1 << 30)),
                _ => format!(
                    "10.{}.{}.{}",
                    rng.below(256),
                    rng.below(256),
                    rng.below(256)
                ),
            }
        };
        let mut lines: Vec<String> = (0..400).map(|_| line(&mut rng)).collect();
        for round in 0..200 {
            let old = lines.join("\n") + if round % 5 == 0 { "" } else { "\n" };
            let edits = 1 + rng.below(6) as usize;
            for _ in 0..edits {
                let at = rng.below(lines.len() as u64 + 1) as usize;
                match rng.below(3) {
                    0 => lines.insert(at, line(&mut rng)),
                    1 if at < lines.len() => {
                        lines.remove(at);
                    }
                    _ if at < lines.len() => lines[at] = line(&mut rng),
                    _ => lines.push(line(&mut rng)),
                }
            }
            if round == 150 {
                lines.clear();
            }
            if round == 151 {
                lines = (0..300).map(|_| line(&mut rng)).collect();
            }
            let new = lines.join("\n") + if round % 7 == 0 { "" } else { "\n" };
            let path = dir.path().join("old");
            std::fs::write(&path, &old).unwrap_or_else(|e| panic!("{e}"));
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}"));
            let from_file = line_delta_from(&file, old.len(), new.as_bytes(), usize::MAX);
            let delta = line_delta(old.as_bytes(), new.as_bytes(), usize::MAX)
                .unwrap_or_else(|| panic!("round {round}: a delta"));
            assert_eq!(
                from_file.as_ref(),
                Some(&delta),
                "round {round}: file and memory"
            );
            let mut lines_now = multiset(old.as_bytes());
            for (l, n) in multiset(delta.removed.as_bytes()) {
                *lines_now.entry(l).or_default() -= n;
            }
            for (l, n) in multiset(delta.added.as_bytes()) {
                *lines_now.entry(l).or_default() += n;
            }
            lines_now.retain(|_, n| *n != 0);
            assert_eq!(lines_now, multiset(new.as_bytes()), "round {round}");
            if !(150..=151).contains(&round) {
                let changed = multiset(delta.removed.as_bytes()).values().sum::<i64>()
                    + multiset(delta.added.as_bytes()).values().sum::<i64>();
                assert!(
                    changed <= 4 * edits as i64 + 2,
                    "round {round}: {changed} lines for {edits} edits"
                );
            }
        }
        // A file shorter than it was said to be: no delta (the whole file is read).
        let path = dir.path().join("short");
        std::fs::write(&path, "10.0.0.1\n").unwrap_or_else(|e| panic!("{e}"));
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            line_delta_from(&file, 100_000, b"10.0.0.2\n", usize::MAX),
            None
        );
    }
}
