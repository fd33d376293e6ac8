//! IDS content rules: a documented subset of the Suricata/Snort rule language, parsed
//! with every problem located (`FILE:LINE:COL` and the option), and evaluated against a
//! packet's header and payload by a multi-pattern prefilter (`aho-corasick`) and an
//! exact check of each candidate rule.
//!
//! ```
//! use ironclad_policy::ids::{parse, Packet, RuleSet, Vars, Verdict};
//! let text = r#"alert tcp any any -> $HOME_NET 80 (msg:"test string"; content:"X-Ironclad-Test"; nocase; sid:1000001; rev:1;)"#;
//! let rules = parse(text, "local.rules".as_ref(), &Vars::with_defaults())?;
//! let set = RuleSet::new(rules)?;
//! let (client, server) = ("203.0.113.5:40000".parse()?, "192.168.1.10:80".parse()?);
//! let packet = Packet::tcp(client, server, b"GET / HTTP/1.1\r\nx-ironclad-test: 1\r\n");
//! let hits = set.matches(&packet);
//! assert_eq!(hits.len(), 1);
//! assert_eq!(hits[0].sid, 1000001);
//! assert_eq!(set.verdict(&hits), Verdict::Alert);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The subset (docs/ids.md lists it with examples):
//! - header: `alert|drop|pass`, `tcp|udp|icmp|ip`, addresses (`any`, an address, a
//!   CIDR, `$VAR`, `!` negation, `[...]` lists), ports (`any`, `N`, `N:M`, `N:`, `:M`,
//!   `$VAR`, `!`, lists), `->` or `<>`;
//! - options: `msg`, `sid` (required, unique), `rev`, `classtype`, `reference`,
//!   `metadata`, `priority`, `content` (with `|hex|` bytes and `!`), its modifiers
//!   `nocase`, `offset`, `depth`, `distance`, `within`, `fast_pattern`, then `pcre`
//!   (flags `i s m x`, the linear-time `regex` engine, size-bounded), `flow`
//!   (`to_server`, `to_client`, `from_client`, `from_server`, `established`,
//!   `not_established`, `stateless`) and `dsize`.
//!
//! Anything else is refused by name, never ignored: a rule that would not do what its
//! author wrote is worse than no rule.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use ipnetwork::IpNetwork;
use regex_automata::meta;
use regex_automata::util::syntax;

use crate::error::{ConfigError, Diagnostic};

/// What a matching rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum IdsAction {
    /// Report it (an event with the rule's sid and message).
    Alert,
    /// Report it and block the rest of the flow.
    Drop,
    /// Let it through: no other rule's action applies to this packet.
    Pass,
}

/// The protocol a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdsProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP and ICMPv6.
    Icmp,
    /// Any IP packet.
    Ip,
}

/// A set of addresses: the networks listed (none: every address), maybe negated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AddrSet {
    /// Included networks (empty: any).
    pub include: Vec<IpNetwork>,
    /// Excluded networks (`!`), checked after `include`.
    pub exclude: Vec<IpNetwork>,
}

impl AddrSet {
    /// Whether `addr` is in the set.
    pub fn contains(&self, addr: IpAddr) -> bool {
        (self.include.is_empty() || self.include.iter().any(|n| n.contains(addr)))
            && !self.exclude.iter().any(|n| n.contains(addr))
    }
}

/// A set of ports: the ranges listed (none: every port), maybe negated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PortSet {
    /// Included ranges, inclusive (empty: any).
    pub include: Vec<(u16, u16)>,
    /// Excluded ranges (`!`).
    pub exclude: Vec<(u16, u16)>,
}

impl PortSet {
    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        let within = |r: &(u16, u16)| (r.0..=r.1).contains(&port);
        (self.include.is_empty() || self.include.iter().any(within))
            && !self.exclude.iter().any(within)
    }
}

/// One `content` with its modifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Content {
    /// The bytes (`|..|` hex decoded).
    pub bytes: Vec<u8>,
    /// `!content`: the rule matches only where these bytes are absent.
    pub negated: bool,
    /// `nocase`: ASCII letters compare without case.
    pub nocase: bool,
    /// `offset`: the search starts this many bytes into the payload.
    pub offset: Option<u32>,
    /// `depth`: the match lies within this many bytes from `offset`.
    pub depth: Option<u32>,
    /// `distance`: relative to the previous content's match end, where the search starts.
    pub distance: Option<i32>,
    /// `within`: the match lies within this many bytes from where `distance` starts it.
    pub within: Option<u32>,
    /// `fast_pattern`: the prefilter looks for this content.
    pub fast_pattern: bool,
}

impl Content {
    fn relative(&self) -> bool {
        self.distance.is_some() || self.within.is_some()
    }
}

/// `flow:` constraints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FlowMatch {
    /// `Some(true)`: only packets from the client to the server.
    pub to_server: Option<bool>,
    /// `Some(true)`: only established flows; `Some(false)`: only new ones.
    pub established: Option<bool>,
}

/// `dsize:` (the payload's length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dsize {
    /// Exactly.
    Eq(u32),
    /// Fewer bytes.
    Lt(u32),
    /// More bytes.
    Gt(u32),
    /// Strictly between.
    Between(u32, u32),
}

impl Dsize {
    fn holds(self, len: usize) -> bool {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        match self {
            Dsize::Eq(n) => len == n,
            Dsize::Lt(n) => len < n,
            Dsize::Gt(n) => len > n,
            Dsize::Between(a, b) => a < len && len < b,
        }
    }
}

/// One rule.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IdsRule {
    /// `alert`, `drop` or `pass`.
    pub action: IdsAction,
    /// The protocol.
    pub proto: IdsProto,
    /// Source addresses.
    pub src: AddrSet,
    /// Source ports.
    pub sport: PortSet,
    /// `<>`: either direction.
    pub bidirectional: bool,
    /// Destination addresses.
    pub dst: AddrSet,
    /// Destination ports.
    pub dport: PortSet,
    /// `msg`.
    pub msg: String,
    /// `sid`.
    pub sid: u32,
    /// `rev` (1 when absent).
    pub rev: u32,
    /// `classtype`.
    pub classtype: Option<String>,
    /// `priority`.
    pub priority: Option<u32>,
    /// `reference` values, as written.
    pub references: Vec<String>,
    /// `metadata`, as written.
    pub metadata: Vec<String>,
    /// Contents, in rule order.
    pub contents: Vec<Content>,
    /// `pcre` patterns (all must match).
    pub pcre: Vec<meta::Regex>,
    /// `flow`.
    pub flow: FlowMatch,
    /// `dsize`.
    pub dsize: Option<Dsize>,
    /// Where it was written: `FILE:LINE`.
    pub origin: String,
}

/// Address and port variables (`$HOME_NET`, `$HTTP_PORTS`), by name without the `$`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Vars {
    /// Name to its text, as a rule would write it (`[10.0.0.0/8,192.168.0.0/16]`).
    pub values: HashMap<String, String>,
}

impl Vars {
    /// No variables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Suricata's defaults: `HOME_NET` the private ranges, `EXTERNAL_NET` the rest,
    /// `HTTP_PORTS` 80, and the server variables equal to `HOME_NET`.
    pub fn with_defaults() -> Self {
        let mut v = Self::new();
        let home = "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]";
        v.set("HOME_NET", home);
        v.set("EXTERNAL_NET", "!$HOME_NET");
        for server in ["HTTP_SERVERS", "SMTP_SERVERS", "SQL_SERVERS", "DNS_SERVERS"] {
            v.set(server, "$HOME_NET");
        }
        v.set("HTTP_PORTS", "80");
        v.set("SHELLCODE_PORTS", "!80");
        v.set("SSH_PORTS", "22");
        v
    }

    /// Sets `name` (without `$`) to `value`.
    pub fn set(&mut self, name: &str, value: &str) {
        self.values.insert(name.to_string(), value.to_string());
    }
}

/// The longest rule line read (bytes).
pub const MAX_RULE_BYTES: usize = 64 * 1024;
/// The most a `pcre` may compile to (bytes): a larger one is refused, not run.
pub const PCRE_SIZE_LIMIT: usize = 1 << 20;
/// The most one `pcre`'s search cache (its lazy DFA) grows to while rules are matched.
pub const PCRE_CACHE_BYTES: usize = 64 << 10;
/// The most the regular expressions of a rule set (every file together) may hold, each
/// counted as its compiled size and its cache's [`PCRE_CACHE_BYTES`]: the rule that
/// would go past it is refused at its `pcre`, and later patterns are not compiled.
pub const PCRE_TOTAL_LIMIT: usize = 256 << 20;

/// Parses rule `text` (one rule a line; `#` comments) read from `path`. Every problem is
/// reported, at its line and column, with the option it concerns.
pub fn parse(text: &str, path: &Path, vars: &Vars) -> Result<Vec<IdsRule>, ConfigError> {
    parse_within(text, path, vars, &mut PcreBudget::default())
}

/// [`parse`], with the regular expressions' budget shared by the files of one set.
fn parse_within(
    text: &str,
    path: &Path,
    vars: &Vars,
    budget: &mut PcreBudget,
) -> Result<Vec<IdsRule>, ConfigError> {
    let mut rules = Vec::new();
    let mut problems = Vec::new();
    let mut sids: HashMap<u32, usize> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let number = n as u64 + 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let at = |column: usize, message: String| Diagnostic {
            path: path.to_path_buf(),
            line: number,
            column: column as u64 + 1,
            message,
        };
        if line.len() > MAX_RULE_BYTES {
            problems.push(at(0, format!("a rule longer than {MAX_RULE_BYTES} bytes")));
            continue;
        }
        if line.trim_end().ends_with('\\') {
            problems.push(at(
                line.trim_end().len() - 1,
                "a rule continued on the next line (`\\`) is not supported: write it on one line"
                    .to_string(),
            ));
            continue;
        }
        let origin = format!("{}:{number}", path.display());
        match parse_rule(trimmed, vars, origin, budget) {
            Ok(rule) => {
                if let Some(first) = sids.insert(rule.sid, rules.len()) {
                    let column = trimmed.find("sid").unwrap_or(0);
                    problems.push(at(
                        indent + column,
                        format!(
                            "`sid:{}` is used again (first at {})",
                            rule.sid,
                            rules_origin(&rules, first)
                        ),
                    ));
                    continue;
                }
                rules.push(rule);
            }
            Err((column, message)) => problems.push(at(indent + column, message)),
        }
    }
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(ConfigError {
            diagnostics: problems,
        })
    }
}

/// The largest rule file read (32 MiB).
pub const MAX_RULE_FILE_BYTES: u64 = 32 << 20;

/// Reads and parses rule files (regular files of at most [`MAX_RULE_FILE_BYTES`]), in
/// order; a `sid` is unique across all of them. Every problem of every file is
/// reported, and any problem gives no rules.
pub fn parse_files(paths: &[std::path::PathBuf], vars: &Vars) -> Result<Vec<IdsRule>, ConfigError> {
    let mut budget = PcreBudget::default();
    let mut rules: Vec<IdsRule> = Vec::new();
    let mut problems = Vec::new();
    let whole_file = |path: &Path, message: String| Diagnostic {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        message,
    };
    for path in paths {
        let bytes = match ironclad_core::fsutil::read_regular_file(path, MAX_RULE_FILE_BYTES) {
            Ok(bytes) => bytes,
            Err(e) => {
                problems.push(whole_file(path, e.to_string()));
                continue;
            }
        };
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() as u64 + 1;
                problems.push(Diagnostic {
                    path: path.clone(),
                    line,
                    column: 0,
                    message: "not UTF-8".to_string(),
                });
                continue;
            }
        };
        match parse_within(&text, path, vars, &mut budget) {
            Ok(parsed) => {
                for rule in parsed {
                    if let Some(first) = rules.iter().find(|r| r.sid == rule.sid) {
                        let line = rule
                            .origin
                            .rsplit(':')
                            .next()
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        problems.push(Diagnostic {
                            path: path.clone(),
                            line,
                            column: 1,
                            message: format!(
                                "`sid:{}` is used again (first at {})",
                                rule.sid, first.origin
                            ),
                        });
                    } else {
                        rules.push(rule);
                    }
                }
            }
            Err(e) => problems.extend(e.diagnostics),
        }
    }
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(ConfigError {
            diagnostics: problems,
        })
    }
}

fn rules_origin(rules: &[IdsRule], i: usize) -> &str {
    rules.get(i).map_or("?", |r| r.origin.as_str())
}

/// A problem: the column (0-based, in the rule) and the message.
type Located = (usize, String);

/// Splits the header into its seven fields (lists in brackets stay whole), each with
/// its column.
fn header_fields(header: &str) -> Vec<(usize, &str)> {
    let mut fields = Vec::new();
    let mut depth = 0i32;
    let mut start = None;
    for (i, c) in header.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        if c.is_whitespace() && depth <= 0 {
            if let Some(s) = start.take() {
                fields.push((s, &header[s..i]));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        fields.push((s, &header[s..]));
    }
    fields
}

fn parse_rule(
    rule: &str,
    vars: &Vars,
    origin: String,
    budget: &mut PcreBudget,
) -> Result<IdsRule, Located> {
    let open = rule.find('(').ok_or((
        0,
        "no options: a rule ends with `(...; sid:N;)`".to_string(),
    ))?;
    let body_end = rule.trim_end().len();
    if !rule[..body_end].ends_with(')') {
        return Err((body_end, "the options do not end with `)`".to_string()));
    }
    let fields = header_fields(&rule[..open]);
    if fields.len() != 7 {
        return Err((
            fields.get(7).map_or(0, |f| f.0),
            format!(
                "the header has {} fields, not 7: ACTION PROTO SRC SPORT -> DST DPORT",
                fields.len()
            ),
        ));
    }
    let action = match fields[0].1 {
        "alert" => IdsAction::Alert,
        "drop" => IdsAction::Drop,
        "pass" => IdsAction::Pass,
        other => {
            return Err((
                fields[0].0,
                format!("action `{other}` is not supported (alert, drop or pass)"),
            ))
        }
    };
    let proto = match fields[1].1 {
        "tcp" => IdsProto::Tcp,
        "udp" => IdsProto::Udp,
        "icmp" => IdsProto::Icmp,
        "ip" => IdsProto::Ip,
        other => {
            return Err((
                fields[1].0,
                format!(
                    "protocol `{other}` is not supported (tcp, udp, icmp or ip; \
                     application-layer protocols are not)"
                ),
            ))
        }
    };
    let src = addresses(fields[2].1, vars).map_err(|m| (fields[2].0, m))?;
    let sport = ports(fields[3].1, vars).map_err(|m| (fields[3].0, m))?;
    let bidirectional = match fields[4].1 {
        "->" => false,
        "<>" => true,
        other => {
            return Err((
                fields[4].0,
                format!("direction `{other}`: write `->` or `<>`"),
            ))
        }
    };
    let dst = addresses(fields[5].1, vars).map_err(|m| (fields[5].0, m))?;
    let dport = ports(fields[6].1, vars).map_err(|m| (fields[6].0, m))?;
    let mut built = IdsRule {
        action,
        proto,
        src,
        sport,
        bidirectional,
        dst,
        dport,
        msg: String::new(),
        sid: 0,
        rev: 1,
        classtype: None,
        priority: None,
        references: Vec::new(),
        metadata: Vec::new(),
        contents: Vec::new(),
        pcre: Vec::new(),
        flow: FlowMatch::default(),
        dsize: None,
        origin,
    };
    let mut has_sid = false;
    let body = &rule[open + 1..body_end - 1];
    for (column, name, value) in options(body).map_err(|(c, m)| (open + 1 + c, m))? {
        let column = open + 1 + column;
        let at = |m: String| (column, format!("`{name}`: {m}"));
        let number = |v: Option<&str>| -> Result<u32, Located> {
            let v = v.ok_or_else(|| at("needs a value".to_string()))?;
            v.trim()
                .parse::<u32>()
                .map_err(|_| at(format!("`{}` is not a number", v.trim())))
        };
        let last_content = |contents: &[Content]| -> Result<usize, Located> {
            contents
                .len()
                .checked_sub(1)
                .ok_or_else(|| at("modifies a `content`, and none comes before it".to_string()))
        };
        match name {
            "msg" => built.msg = quoted(value.unwrap_or("")).map_err(at)?,
            "sid" => {
                built.sid = number(value)?;
                has_sid = true;
            }
            "rev" => built.rev = number(value)?,
            "priority" => built.priority = Some(number(value)?),
            "classtype" => built.classtype = value.map(|v| v.trim().to_string()),
            "reference" => built
                .references
                .push(value.unwrap_or("").trim().to_string()),
            "metadata" => built.metadata.push(value.unwrap_or("").trim().to_string()),
            "content" => {
                let v = value.ok_or_else(|| at("needs a value".to_string()))?.trim();
                let (negated, v) = match v.strip_prefix('!') {
                    Some(rest) => (true, rest.trim_start()),
                    None => (false, v),
                };
                let bytes = content_bytes(&quoted(v).map_err(at)?).map_err(at)?;
                if bytes.is_empty() {
                    return Err(at("is empty".to_string()));
                }
                built.contents.push(Content {
                    bytes,
                    negated,
                    nocase: false,
                    offset: None,
                    depth: None,
                    distance: None,
                    within: None,
                    fast_pattern: false,
                });
            }
            "nocase" | "fast_pattern" => {
                let i = last_content(&built.contents)?;
                if value.is_some() {
                    return Err(at("takes no value".to_string()));
                }
                if name == "nocase" {
                    built.contents[i].nocase = true;
                } else {
                    built.contents[i].fast_pattern = true;
                }
            }
            "offset" | "depth" | "within" => {
                let i = last_content(&built.contents)?;
                let n = number(value)?;
                let c = &mut built.contents[i];
                match name {
                    "offset" => c.offset = Some(n),
                    "depth" => c.depth = Some(n),
                    _ => c.within = Some(n),
                }
                if name != "offset" && (n as usize) < c.bytes.len() {
                    return Err(at(format!(
                        "{n} is shorter than its content ({} bytes): it could never match",
                        c.bytes.len()
                    )));
                }
            }
            "distance" => {
                let i = last_content(&built.contents)?;
                let v = value.ok_or_else(|| at("needs a value".to_string()))?.trim();
                let n = v
                    .parse::<i32>()
                    .map_err(|_| at(format!("`{v}` is not a number")))?;
                built.contents[i].distance = Some(n);
            }
            "pcre" => {
                let v = quoted(value.unwrap_or("")).map_err(at)?;
                built
                    .pcre
                    .push(budget.compile(&v, &built.origin).map_err(at)?);
            }
            "flow" => built.flow = flow(value.unwrap_or("")).map_err(at)?,
            "dsize" => built.dsize = Some(dsize(value.unwrap_or("")).map_err(at)?),
            other => {
                return Err((
                    column,
                    format!("option `{other}` is not supported (docs/ids.md lists the subset)"),
                ))
            }
        }
    }
    for (i, c) in built.contents.iter().enumerate() {
        if c.relative() && (c.offset.is_some() || c.depth.is_some()) {
            return Err((
                open,
                format!(
                    "content {} mixes `offset`/`depth` with `distance`/`within`",
                    i + 1
                ),
            ));
        }
        if c.relative() && i == 0 {
            return Err((
                open,
                "the first content has `distance`/`within`, relative to no content before it"
                    .to_string(),
            ));
        }
    }
    if built.contents.iter().filter(|c| c.fast_pattern).count() > 1 {
        return Err((
            open,
            "`fast_pattern` is set on more than one content".to_string(),
        ));
    }
    if !has_sid {
        return Err((open, "no `sid`: every rule needs one".to_string()));
    }
    Ok(built)
}

/// The options of a rule body: `(column, name, value)`, split at unescaped `;` outside
/// quotes.
/// An option as written: its column, name and value.
type RawOption<'a> = (usize, &'a str, Option<&'a str>);

fn options(body: &str) -> Result<Vec<RawOption<'_>>, Located> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => {
                push_option(&body[start..i], start, &mut out)?;
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_quotes {
        return Err((start, "a quoted value is not closed".to_string()));
    }
    if !body[start..].trim().is_empty() {
        return Err((
            start + (body[start..].len() - body[start..].trim_start().len()),
            "the last option does not end with `;`".to_string(),
        ));
    }
    Ok(out)
}

fn push_option<'a>(text: &'a str, at: usize, out: &mut Vec<RawOption<'a>>) -> Result<(), Located> {
    let trimmed = text.trim_start();
    let column = at + (text.len() - trimmed.len());
    let trimmed = trimmed.trim_end();
    if trimmed.is_empty() {
        return Err((column, "an empty option (`;;`)".to_string()));
    }
    let (name, value) = match trimmed.split_once(':') {
        Some((n, v)) => (n.trim(), Some(v)),
        None => (trimmed, None),
    };
    out.push((column, name, value));
    Ok(())
}

/// The text of a quoted value, with `\"`, `\;` and `\\` unescaped.
fn quoted(value: &str) -> Result<String, String> {
    let v = value.trim();
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| format!("`{v}` is not in double quotes"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('"' | ';' | '\\' | ':')) => out.push(e),
                // Left as written: a pcre's own escapes (`\d`, `\.`).
                Some(e) => {
                    out.push('\\');
                    out.push(e);
                }
                None => return Err("ends with a lone `\\`".to_string()),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Content text to bytes: `|41 42|` segments are hex.
fn content_bytes(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut parts = text.split('|');
    let mut hex = false;
    for (i, part) in parts.by_ref().enumerate() {
        hex = i % 2 == 1;
        if hex {
            let digits: String = part.chars().filter(|c| !c.is_whitespace()).collect();
            if digits.len() % 2 == 1 {
                return Err(format!("`|{part}|` has an odd number of hex digits"));
            }
            for pair in digits.as_bytes().chunks(2) {
                let s = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
                out.push(
                    u8::from_str_radix(s, 16)
                        .map_err(|_| format!("`{s}` in `|{part}|` is not hex"))?,
                );
            }
        } else {
            out.extend_from_slice(part.as_bytes());
        }
    }
    if hex {
        return Err("a `|` hex segment is not closed".to_string());
    }
    Ok(out)
}

/// `/pattern/flags`, compiled by the linear-time engine with a size bound.
fn pcre(text: &str) -> Result<meta::Regex, String> {
    let (pattern, flags) = text
        .strip_prefix('/')
        .and_then(|s| s.rsplit_once('/'))
        .ok_or_else(|| format!("`{text}` is not `/pattern/flags`"))?;
    let mut syntax = syntax::Config::new().unicode(false).utf8(false);
    for flag in flags.chars() {
        syntax = match flag {
            'i' => syntax.case_insensitive(true),
            's' => syntax.dot_matches_new_line(true),
            'm' => syntax.multi_line(true),
            'x' => syntax.ignore_whitespace(true),
            other => {
                return Err(format!(
                "flag `{other}` is not supported (i, s, m, x; relative and buffer flags are not)"
            ))
            }
        };
    }
    meta::Builder::new()
        .configure(
            meta::Config::new()
                .nfa_size_limit(Some(PCRE_SIZE_LIMIT))
                .dfa_size_limit(Some(PCRE_SIZE_LIMIT))
                .hybrid_cache_capacity(PCRE_CACHE_BYTES),
        )
        .syntax(syntax)
        .build(pattern)
        .map_err(|e| match e.size_limit() {
            Some(limit) => format!("`{pattern}` compiles to more than {limit} bytes: refused"),
            None => format!(
                "`{pattern}` is not supported by the linear-time engine (no backreferences or \
                 look-around): {e}"
            ),
        })
}

/// The memory a compiled `pcre` holds while rules are matched: the regex itself and
/// the most its search cache may grow to.
fn pcre_bytes(re: &meta::Regex) -> usize {
    re.memory_usage() + PCRE_CACHE_BYTES
}

/// The regular expressions' memory so far, across every file of a rule set, against
/// [`PCRE_TOTAL_LIMIT`].
#[derive(Debug, Default)]
struct PcreBudget {
    used: usize,
    /// Where the budget ran out (`FILE:LINE`): later patterns are not compiled.
    exhausted_at: Option<String>,
}

impl PcreBudget {
    /// Compiles `text` within the budget.
    fn compile(&mut self, text: &str, origin: &str) -> Result<meta::Regex, String> {
        if let Some(at) = &self.exhausted_at {
            return Err(format!(
                "not compiled: the rules' regular expressions reached their {} MiB budget at {at}",
                PCRE_TOTAL_LIMIT >> 20
            ));
        }
        let re = pcre(text)?;
        let used = self.used + pcre_bytes(&re);
        if used > PCRE_TOTAL_LIMIT {
            self.exhausted_at = Some(origin.to_string());
            return Err(format!(
                "the rules' regular expressions need more than {} MiB together ({} KiB with this one): \
                 refused (fewer or simpler `pcre` patterns; a `content` before one narrows what it is run on, not its size)",
                PCRE_TOTAL_LIMIT >> 20,
                used >> 10
            ));
        }
        self.used = used;
        Ok(re)
    }
}

fn flow(value: &str) -> Result<FlowMatch, String> {
    let mut f = FlowMatch::default();
    for word in value.split(',').map(str::trim) {
        match word {
            "to_server" | "from_client" => f.to_server = Some(true),
            "to_client" | "from_server" => f.to_server = Some(false),
            "established" => f.established = Some(true),
            "not_established" => f.established = Some(false),
            "stateless" => {}
            other => return Err(format!("`{other}` is not supported")),
        }
    }
    Ok(f)
}

fn dsize(value: &str) -> Result<Dsize, String> {
    let v = value.trim();
    let n = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| format!("`{v}`: write N, <N, >N or N<>M"))
    };
    if let Some((a, b)) = v.split_once("<>") {
        return Ok(Dsize::Between(n(a)?, n(b)?));
    }
    if let Some(rest) = v.strip_prefix('<') {
        return Ok(Dsize::Lt(n(rest)?));
    }
    if let Some(rest) = v.strip_prefix('>') {
        return Ok(Dsize::Gt(n(rest)?));
    }
    Ok(Dsize::Eq(n(v)?))
}

/// The deepest `$VAR` expansion (a variable naming itself would not end).
const MAX_VAR_DEPTH: usize = 8;

/// Splits a `[a, b, [c]]` list's items (nested lists stay whole).
fn list_items(inner: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                items.push(inner[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(inner[start..].trim());
    items
}

fn variable<'a>(text: &str, vars: &'a Vars, depth: usize) -> Result<&'a str, String> {
    if depth >= MAX_VAR_DEPTH {
        return Err(format!(
            "`{text}`: variables nest deeper than {MAX_VAR_DEPTH}"
        ));
    }
    let name = &text[1..];
    vars.values
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("variable `{text}` is not defined"))
}

fn addresses(text: &str, vars: &Vars) -> Result<AddrSet, String> {
    let mut set = AddrSet::default();
    let leaf = |item: &str| {
        item.parse::<IpNetwork>()
            .map_err(|_| format!("`{item}` is not an address, CIDR, list, variable or `any`"))
    };
    add_items(
        text,
        vars,
        0,
        false,
        (&mut set.include, &mut set.exclude),
        &leaf,
    )?;
    Ok(set)
}

fn ports(text: &str, vars: &Vars) -> Result<PortSet, String> {
    let mut set = PortSet::default();
    add_items(
        text,
        vars,
        0,
        false,
        (&mut set.include, &mut set.exclude),
        &port_range,
    )?;
    Ok(set)
}

/// Adds `text` to a set's included and excluded items: `any` (nothing to add), `!x`,
/// `$VAR`, a `[a, b]` list, or one item `leaf` parses.
fn add_items<T>(
    text: &str,
    vars: &Vars,
    depth: usize,
    negated: bool,
    set: (&mut Vec<T>, &mut Vec<T>),
    leaf: &dyn Fn(&str) -> Result<T, String>,
) -> Result<(), String> {
    let text = text.trim();
    let (include, exclude) = set;
    if let Some(rest) = text.strip_prefix('!') {
        return add_items(rest, vars, depth, !negated, (include, exclude), leaf);
    }
    if text == "any" {
        if negated {
            return Err("`!any` matches nothing".to_string());
        }
        return Ok(());
    }
    if text.starts_with('$') {
        let value = variable(text, vars, depth)?;
        return add_items(value, vars, depth + 1, negated, (include, exclude), leaf);
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        for item in list_items(inner) {
            add_items(
                item,
                vars,
                depth,
                negated,
                (&mut *include, &mut *exclude),
                leaf,
            )?;
        }
        return Ok(());
    }
    let item = leaf(text)?;
    if negated {
        exclude.push(item);
    } else {
        include.push(item);
    }
    Ok(())
}

/// A port (`80`) or range (`N:M`, `N:`, `:M`).
fn port_range(text: &str) -> Result<(u16, u16), String> {
    let port = |s: &str, default: u16| -> Result<u16, String> {
        if s.is_empty() {
            return Ok(default);
        }
        s.parse::<u16>()
            .map_err(|_| format!("`{text}` is not a port, range (N:M), list, variable or `any`"))
    };
    let range = match text.split_once(':') {
        Some((lo, hi)) => (port(lo, 0)?, port(hi, u16::MAX)?),
        None => {
            let p = port(text, 0)?;
            (p, p)
        }
    };
    if range.0 > range.1 {
        return Err(format!("`{text}`: the range ends before it starts"));
    }
    Ok(range)
}

/// A packet as the rules see it: its protocol, endpoints, flow state and payload.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// IP protocol number (6 TCP, 17 UDP, 1/58 ICMP).
    pub protocol: u8,
    /// Source.
    pub src: SocketAddr,
    /// Destination.
    pub dst: SocketAddr,
    /// Whether it goes from the flow's client (the side that opened it) to its server.
    pub to_server: bool,
    /// Whether the flow is established (a TCP handshake completed, or answered UDP).
    pub established: bool,
    /// The transport payload.
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// A TCP packet of an established flow from `src` (the client) to `dst`.
    pub fn tcp(src: SocketAddr, dst: SocketAddr, payload: &'a [u8]) -> Self {
        Self {
            protocol: 6,
            src,
            dst,
            to_server: true,
            established: true,
            payload,
        }
    }
}

/// The longest content [`RuleSet::kernel_prefixes`] hands to the kernel.
pub const KERNEL_PREFIX_MAX: usize = 16;

/// A `drop` rule's content the kernel matches itself ([`RuleSet::kernel_prefixes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KernelPrefix {
    /// The connection's server port; 0: any.
    pub port: u16,
    /// Sent by the side that opened the connection (else by the other side).
    pub to_server: bool,
    /// The content.
    pub bytes: Vec<u8>,
    /// The rule's sid.
    pub sid: u32,
}

/// The ports of one protocol whose connections the kernel hands over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSelection {
    /// Every port.
    pub all: bool,
    /// Else these inclusive ranges.
    pub ranges: Vec<(u16, u16)>,
}

impl PortSelection {
    /// Whether a connection with `port` as its server or client port is selected.
    pub fn contains(&self, port: u16) -> bool {
        self.all || self.ranges.iter().any(|r| (r.0..=r.1).contains(&port))
    }
}

/// Which connections a [`RuleSet`] needs to see ([`RuleSet::selection`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// TCP connections.
    pub tcp: PortSelection,
    /// UDP connections.
    pub udp: PortSelection,
}

/// What the matched rules decide for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// No rule matched.
    None,
    /// A `pass` rule matched: nothing else applies.
    Pass,
    /// A `drop` rule matched (and no `pass`).
    Drop,
    /// Only `alert` rules matched.
    Alert,
}

/// Errors building a [`RuleSet`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdsError {
    /// The prefilter's automaton could not be built.
    #[error("building the content prefilter: {0}")]
    Prefilter(#[from] aho_corasick::BuildError),
}

/// Rules ready to match: each rule's fast pattern in one of two automata (case kept,
/// case folded), the rules with no positive content beside them.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<IdsRule>,
    exact: Option<AhoCorasick>,
    exact_rules: Vec<usize>,
    folded: Option<AhoCorasick>,
    folded_rules: Vec<usize>,
    always: Vec<usize>,
}

impl RuleSet {
    /// Builds the prefilter for `rules`.
    pub fn new(rules: Vec<IdsRule>) -> Result<Self, IdsError> {
        let (mut exact, mut exact_rules) = (Vec::new(), Vec::new());
        let (mut folded, mut folded_rules) = (Vec::new(), Vec::new());
        let mut always = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            // The content the prefilter looks for: the one marked, else the longest
            // positive one.
            let fast = rule
                .contents
                .iter()
                .find(|c| c.fast_pattern && !c.negated)
                .or_else(|| {
                    rule.contents
                        .iter()
                        .filter(|c| !c.negated)
                        .max_by_key(|c| c.bytes.len())
                });
            match fast {
                Some(c) if c.nocase => {
                    folded.push(c.bytes.clone());
                    folded_rules.push(i);
                }
                Some(c) => {
                    exact.push(c.bytes.clone());
                    exact_rules.push(i);
                }
                None => always.push(i),
            }
        }
        let build = |patterns: &[Vec<u8>], fold: bool| -> Result<Option<AhoCorasick>, IdsError> {
            if patterns.is_empty() {
                return Ok(None);
            }
            Ok(Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(fold)
                    .match_kind(MatchKind::Standard)
                    .build(patterns)?,
            ))
        };
        Ok(Self {
            exact: build(&exact, false)?,
            folded: build(&folded, true)?,
            rules,
            exact_rules,
            folded_rules,
            always,
        })
    }

    /// Heap bytes of the prefilter's automata.
    pub fn prefilter_bytes(&self) -> usize {
        [&self.exact, &self.folded]
            .iter()
            .filter_map(|a| a.as_ref())
            .map(AhoCorasick::memory_usage)
            .sum()
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[IdsRule] {
        &self.rules
    }

    /// The `drop` rules simple enough for the kernel to match on the packet's path: one
    /// content of 1 to [`KERNEL_PREFIX_MAX`] bytes anchored at the start of the payload
    /// (`depth` equal to its length, no `offset` past 0), case kept, not negated; TCP
    /// or UDP; any addresses and source port; one destination port or any; no `pcre`,
    /// `dsize`, `<>` or `flow:not_established`. The kernel drops the first payload
    /// packet of a direction that starts with it, before it reaches the other side;
    /// every other rule is matched in user space, after the packet went through.
    pub fn kernel_prefixes(&self) -> Vec<KernelPrefix> {
        let mut out = Vec::new();
        for rule in &self.rules {
            let [content] = rule.contents.as_slice() else {
                continue;
            };
            let len = content.bytes.len();
            let anchored = matches!(content.offset, None | Some(0))
                && content.depth == u32::try_from(len).ok()
                && content.distance.is_none()
                && content.within.is_none();
            let any_addr = |a: &AddrSet| a.include.is_empty() && a.exclude.is_empty();
            let port = match (rule.dport.include.as_slice(), rule.dport.exclude.is_empty()) {
                ([], true) => Some(0),
                ([(a, b)], true) if a == b && *a != 0 => Some(*a),
                _ => None,
            };
            let eligible = rule.action == IdsAction::Drop
                && matches!(rule.proto, IdsProto::Tcp | IdsProto::Udp)
                && (1..=KERNEL_PREFIX_MAX).contains(&len)
                && anchored
                && !content.negated
                && !content.nocase
                && rule.pcre.is_empty()
                && rule.dsize.is_none()
                && !rule.bidirectional
                && rule.flow.established != Some(false)
                && !(rule.proto == IdsProto::Udp && rule.flow.established == Some(true))
                && any_addr(&rule.src)
                && any_addr(&rule.dst)
                && rule.sport.include.is_empty()
                && rule.sport.exclude.is_empty();
            let Some(port) = port.filter(|_| eligible) else {
                continue;
            };
            let directions: &[bool] = match rule.flow.to_server {
                Some(true) => &[true],
                Some(false) => &[false],
                None => &[true, false],
            };
            for &to_server in directions {
                out.push(KernelPrefix {
                    port,
                    to_server,
                    bytes: content.bytes.clone(),
                    sid: rule.sid,
                });
            }
        }
        out
    }

    /// The connections the kernel must hand over for these rules to see every packet
    /// they could match: a connection is selected by its server or its client port.
    /// A rule's destination ports select, else its source ports; a rule with neither
    /// (`any`, or only `!` exclusions) selects every port of its protocol. `ip` rules
    /// select TCP and UDP; ICMP is never handed over (`icmp` rules match nothing the
    /// kernel selects).
    pub fn selection(&self) -> Selection {
        let mut selection = Selection::default();
        for rule in &self.rules {
            let ports = if !rule.dport.include.is_empty() {
                Some(&rule.dport.include)
            } else if !rule.sport.include.is_empty() {
                Some(&rule.sport.include)
            } else {
                None
            };
            let targets: &[bool] = match rule.proto {
                IdsProto::Tcp => &[true],
                IdsProto::Udp => &[false],
                IdsProto::Ip => &[true, false],
                IdsProto::Icmp => &[],
            };
            for &tcp in targets {
                let side = if tcp {
                    &mut selection.tcp
                } else {
                    &mut selection.udp
                };
                match ports {
                    None => side.all = true,
                    Some(ranges) => side.ranges.extend(ranges.iter().copied()),
                }
            }
        }
        for side in [&mut selection.tcp, &mut selection.udp] {
            side.ranges.sort_unstable();
            side.ranges.dedup();
        }
        selection
    }

    /// The rules `packet` matches, in file order.
    pub fn matches(&self, packet: &Packet<'_>) -> Vec<&IdsRule> {
        let mut candidates: Vec<usize> = self.always.clone();
        for (automaton, owners) in [
            (&self.exact, &self.exact_rules),
            (&self.folded, &self.folded_rules),
        ] {
            if let Some(ac) = automaton {
                for m in ac.find_overlapping_iter(packet.payload) {
                    if let Some(rule) = owners.get(m.pattern().as_usize()) {
                        candidates.push(*rule);
                    }
                }
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let hits: Vec<usize> = candidates
            .into_iter()
            .filter(|i| self.rules.get(*i).is_some_and(|r| rule_matches(r, packet)))
            .collect();
        hits.into_iter().filter_map(|i| self.rules.get(i)).collect()
    }

    /// The decision of matched rules (as Suricata orders actions: pass, drop, alert).
    pub fn verdict(&self, hits: &[&IdsRule]) -> Verdict {
        if hits.iter().any(|r| r.action == IdsAction::Pass) {
            Verdict::Pass
        } else if hits.iter().any(|r| r.action == IdsAction::Drop) {
            Verdict::Drop
        } else if hits.is_empty() {
            Verdict::None
        } else {
            Verdict::Alert
        }
    }
}

/// Whether `rule` matches `packet`: header, flow, size, then contents and patterns.
pub fn rule_matches(rule: &IdsRule, packet: &Packet<'_>) -> bool {
    let proto_ok = match rule.proto {
        IdsProto::Ip => true,
        IdsProto::Tcp => packet.protocol == 6,
        IdsProto::Udp => packet.protocol == 17,
        IdsProto::Icmp => packet.protocol == 1 || packet.protocol == 58,
    };
    if !proto_ok {
        return false;
    }
    let ends = |s: &SocketAddr, d: &SocketAddr| {
        rule.src.contains(s.ip())
            && rule.dst.contains(d.ip())
            && (packet.protocol == 1
                || packet.protocol == 58
                || (rule.sport.contains(s.port()) && rule.dport.contains(d.port())))
    };
    if !(ends(&packet.src, &packet.dst) || (rule.bidirectional && ends(&packet.dst, &packet.src))) {
        return false;
    }
    if rule.flow.to_server.is_some_and(|t| t != packet.to_server)
        || rule
            .flow
            .established
            .is_some_and(|e| e != packet.established)
    {
        return false;
    }
    if rule.dsize.is_some_and(|d| !d.holds(packet.payload.len())) {
        return false;
    }
    contents_match(&rule.contents, packet.payload, 0, 0)
        && rule.pcre.iter().all(|re| re.is_match(packet.payload))
}

/// Whether `contents[i..]` match `payload` with the previous match ending at `prev_end`:
/// each positive content tried at every place its window allows, so a later relative
/// content can still find its match after an earlier place failed it.
fn contents_match(contents: &[Content], payload: &[u8], i: usize, prev_end: usize) -> bool {
    let Some(c) = contents.get(i) else {
        return true;
    };
    let (start, limit) = window(c, payload.len(), prev_end);
    let found = |at: usize| {
        payload.get(at..at + c.bytes.len()).is_some_and(|w| {
            if c.nocase {
                w.eq_ignore_ascii_case(&c.bytes)
            } else {
                w == c.bytes.as_slice()
            }
        })
    };
    let last_start = limit.saturating_sub(c.bytes.len());
    let places = || (start..=last_start).filter(|at| *at + c.bytes.len() <= limit);
    if c.negated {
        // Absent from its window; the next content is relative to the same place.
        return places().all(|at| !found(at)) && contents_match(contents, payload, i + 1, prev_end);
    }
    if start > last_start {
        return false;
    }
    places().any(|at| found(at) && contents_match(contents, payload, i + 1, at + c.bytes.len()))
}

/// Where content `c` may lie: `(first start, end limit)`, as Suricata counts them
/// (`depth` from `offset`, `within` from where `distance` starts the search).
fn window(c: &Content, len: usize, prev_end: usize) -> (usize, usize) {
    if c.relative() {
        let distance = i64::from(c.distance.unwrap_or(0));
        let start = (prev_end as i64 + distance).clamp(0, len as i64) as usize;
        let limit = c.within.map_or(len, |w| (start + w as usize).min(len));
        (start, limit)
    } else {
        let start = (c.offset.unwrap_or(0) as usize).min(len);
        let limit = c.depth.map_or(len, |d| (start + d as usize).min(len));
        (start, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn one(rule: &str) -> IdsRule {
        let mut rules = parse(rule, Path::new("t.rules"), &Vars::with_defaults())
            .unwrap_or_else(|e| panic!("{rule}: {e}"));
        assert_eq!(rules.len(), 1);
        rules.remove(0)
    }

    fn error(text: &str) -> String {
        match parse(text, Path::new("t.rules"), &Vars::with_defaults()) {
            Ok(_) => panic!("{text}: parsed"),
            Err(e) => e.to_string(),
        }
    }

    fn hit(rule: &str, payload: &[u8]) -> bool {
        let r = one(rule);
        rule_matches(
            &r,
            &Packet::tcp(addr("203.0.113.5:40000"), addr("192.168.1.10:80"), payload),
        )
    }

    const HEAD: &str = "alert tcp any any -> any any";

    #[test]
    fn only_anchored_short_exact_drop_contents_go_to_the_kernel() {
        let set = RuleSet::new(
            parse(
                concat!(
                    "drop tcp any any -> any 80 (content:\"GET /evil\"; depth:9; flow:to_server; sid:1;)\n",
                    "drop udp any any -> any any (content:\"|de ad|\"; depth:2; sid:2;)\n",
                    "alert tcp any any -> any 80 (content:\"GET /evil\"; depth:9; sid:3;)\n",
                    "drop tcp any any -> any 80 (content:\"GET /evil\"; sid:4;)\n",
                    "drop tcp any any -> any 80 (content:\"GET /evil\"; depth:9; nocase; sid:5;)\n",
                    "drop tcp any any -> any 80 (content:\"0123456789abcdefg\"; depth:17; sid:6;)\n",
                    "drop tcp 10.0.0.0/8 any -> any 80 (content:\"GET\"; depth:3; sid:7;)\n",
                    "drop tcp any any -> any [80,81] (content:\"GET\"; depth:3; sid:8;)\n",
                    "drop tcp any any -> any 80 (content:\"GET\"; depth:3; pcre:\"/x/\"; sid:9;)\n",
                ),
                Path::new("t.rules"),
                &Vars::with_defaults(),
            )
            .unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let kernel = set.kernel_prefixes();
        let sids: Vec<(u32, u16, bool)> = kernel
            .iter()
            .map(|k| (k.sid, k.port, k.to_server))
            .collect();
        assert_eq!(sids, vec![(1, 80, true), (2, 0, true), (2, 0, false)]);
        assert_eq!(kernel[1].bytes, vec![0xde, 0xad]);
    }

    #[test]
    fn the_selection_covers_every_port_a_rule_could_match() {
        let rules = |text: &str| {
            RuleSet::new(
                parse(text, Path::new("t.rules"), &Vars::with_defaults())
                    .unwrap_or_else(|e| panic!("{text}: {e}")),
            )
            .unwrap_or_else(|e| panic!("{text}: {e}"))
        };
        let set = rules(concat!(
            "alert tcp any any -> any [80,8000:8080] (content:\"a\"; sid:1;)\n",
            "alert tcp any 443 -> any any (content:\"b\"; sid:2;)\n",
            "alert udp any any -> any 53 (content:\"c\"; sid:3;)\n",
            "alert icmp any any -> any any (content:\"d\"; sid:4;)\n",
        ));
        let selection = set.selection();
        assert!(!selection.tcp.all && !selection.udp.all);
        assert_eq!(
            selection.tcp.ranges,
            vec![(80, 80), (443, 443), (8000, 8080)]
        );
        assert_eq!(selection.udp.ranges, vec![(53, 53)]);
        assert!(selection.tcp.contains(8042) && !selection.tcp.contains(22));
        // No port of its own, or only exclusions: every port of its protocol.
        let any = rules("alert ip any any -> any !80 (content:\"e\"; sid:5;)");
        assert!(any.selection().tcp.all && any.selection().udp.all);
    }

    #[test]
    fn content_with_hex_and_nocase() {
        let r = format!(r#"{HEAD} (content:"GET|20|/"; nocase; sid:1;)"#);
        assert!(hit(&r, b"get /index"));
        assert!(!hit(&r, b"GET/index"));
        let exact = format!(r#"{HEAD} (content:"GET|20|/"; sid:1;)"#);
        assert!(!hit(&exact, b"get /index"));
        assert!(hit(&exact, b"xxGET /"));
    }

    #[test]
    fn offset_and_depth_bound_the_window() {
        let r = format!(r#"{HEAD} (content:"abc"; offset:2; depth:4; sid:1;)"#);
        assert!(hit(&r, b"xxabc"));
        assert!(hit(&r, b"xxxabc"));
        assert!(!hit(&r, b"xxxxabc"), "depth 4 from offset 2 ends at byte 6");
        assert!(!hit(&r, b"xabc"), "offset 2 skips byte 1");
    }

    #[test]
    fn distance_and_within_are_relative_and_backtrack() {
        let r = format!(r#"{HEAD} (content:"ab"; content:"cd"; distance:1; within:3; sid:1;)"#);
        assert!(hit(&r, b"ab_cd"));
        assert!(!hit(&r, b"abcd"), "distance 1 skips the byte right after");
        assert!(!hit(&r, b"ab___cd"), "within 3 of where distance starts");
        // The first "ab" fails the second content; the later one succeeds.
        assert!(hit(&r, b"ab____ab_cd"));
        // A negative distance starts the search inside the previous match.
        let negative =
            format!(r#"{HEAD} (content:"ab"; content:"bc"; distance:-1; within:2; sid:1;)"#);
        assert!(hit(&negative, b"abc"));
        assert!(!hit(&negative, b"ab_bc"));
    }

    #[test]
    fn negated_content_and_multiple_contents() {
        let r = format!(r#"{HEAD} (content:"user"; content:!"admin"; sid:1;)"#);
        assert!(hit(&r, b"user=bob"));
        assert!(!hit(&r, b"user=admin"));
        let both = format!(r#"{HEAD} (content:"one"; content:"two"; sid:1;)"#);
        assert!(hit(&both, b"two one two"));
        assert!(!hit(&both, b"one"));
    }

    /// Regression (red team, round 3): 2,000 `pcre` rules took `check` to 1.16 GB.
    /// The patterns of a set, across its files, hold at most PCRE_TOTAL_LIMIT: the rule
    /// that goes past it is refused at its `pcre`, and no pattern after it is compiled.
    #[test]
    fn the_regular_expressions_of_a_set_have_one_memory_budget_across_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = |from: u32, n: u32| -> String {
            (from..from + n)
                .map(|sid| {
                    format!("alert tcp any any -> any any (pcre:\"/\\w{{8000}}/\"; sid:{sid};)\n")
                })
                .collect()
        };
        // ~0.9 MiB compiled and 64 KiB of cache each: 150 per file fit alone, but two
        // files' 300 do not fit together.
        let first = dir.path().join("a.rules");
        let second = dir.path().join("b.rules");
        std::fs::write(&first, big(1, 150)).expect("a");
        std::fs::write(&second, big(1001, 150)).expect("b");
        assert!(parse_files(std::slice::from_ref(&first), &Vars::with_defaults()).is_ok());
        let e = parse_files(&[first.clone(), second.clone()], &Vars::with_defaults())
            .expect_err("over the budget");
        let first_problem = &e.diagnostics[0];
        assert_eq!(first_problem.path, second);
        assert!(
            (100..=150).contains(&first_problem.line),
            "the rule that went past it: {first_problem}"
        );
        assert_eq!(first_problem.column, 31, "at its pcre: {first_problem}");
        assert!(
            first_problem
                .message
                .contains("the rules' regular expressions need more than 256 MiB together"),
            "{first_problem}"
        );
        let later = &e.diagnostics[1];
        assert_eq!(later.line, first_problem.line + 1, "{later}");
        assert!(
            later.message.contains(&format!(
                "not compiled: the rules' regular expressions reached their 256 MiB budget at {}:{}",
                second.display(),
                first_problem.line
            )),
            "{later}"
        );
        // Thousands of patterns of a usual size fit.
        let usual: String = (1..=3000)
            .map(|sid| format!("alert tcp any any -> any any (content:\"id=\"; pcre:\"/id=\\d{{3}}\\b/i\"; sid:{sid};)\n"))
            .collect();
        assert_eq!(
            parse(&usual, Path::new("u.rules"), &Vars::with_defaults())
                .expect("fits")
                .len(),
            3000
        );
    }

    #[test]
    fn pcre_flow_and_dsize() {
        let r = format!(r#"{HEAD} (pcre:"/id=\d{{3}}\b/i"; sid:1;)"#);
        assert!(hit(&r, b"ID=123 "));
        assert!(!hit(&r, b"id=12 "));
        let to_client = format!(r#"{HEAD} (content:"x"; flow:to_client,established; sid:1;)"#);
        assert!(!hit(&to_client, b"x"), "the packet goes to the server");
        let small = format!(r#"{HEAD} (content:"x"; dsize:<4; sid:1;)"#);
        assert!(hit(&small, b"xyz"));
        assert!(!hit(&small, b"xyzw"));
        let between = format!(r#"{HEAD} (dsize:2<>5; sid:1;)"#);
        assert!(hit(&between, b"abc"));
        assert!(!hit(&between, b"ab"));
    }

    #[test]
    fn header_addresses_ports_variables_and_direction() {
        let home = r#"alert tcp $EXTERNAL_NET any -> $HOME_NET $HTTP_PORTS (content:"x"; sid:1;)"#;
        assert!(hit(home, b"x"));
        let wrong_port = r#"alert tcp any any -> any [443,8000:8100] (content:"x"; sid:1;)"#;
        assert!(!hit(wrong_port, b"x"));
        let negated = r#"alert tcp !203.0.113.0/24 any -> any any (content:"x"; sid:1;)"#;
        assert!(!hit(negated, b"x"));
        let reversed = r#"alert tcp 192.168.1.10 80 -> any any (content:"x"; sid:1;)"#;
        assert!(!hit(reversed, b"x"));
        let both_ways = r#"alert tcp 192.168.1.10 80 <> any any (content:"x"; sid:1;)"#;
        assert!(hit(both_ways, b"x"));
        let udp = r#"alert udp any any -> any any (content:"x"; sid:1;)"#;
        assert!(!hit(udp, b"x"));
        let ip = r#"alert ip any any -> any any (content:"x"; sid:1;)"#;
        assert!(hit(ip, b"x"));
        let open_range = r#"alert tcp any 1024: -> any :100 (content:"x"; sid:1;)"#;
        assert!(hit(open_range, b"x"));
    }

    #[test]
    fn metadata_options_are_kept() {
        let r = one(
            r#"drop tcp any any -> any 80 (msg:"a \"quoted\"\; msg"; content:"x"; classtype:trojan-activity; reference:url,example.org; metadata:created_at 2026_11_27; priority:2; sid:7; rev:3;)"#,
        );
        assert_eq!(r.msg, r#"a "quoted"; msg"#);
        assert_eq!((r.sid, r.rev, r.priority), (7, 3, Some(2)));
        assert_eq!(r.classtype.as_deref(), Some("trojan-activity"));
        assert_eq!(r.references, ["url,example.org"]);
        assert_eq!(r.action, IdsAction::Drop);
    }

    #[test]
    fn errors_are_located_and_name_the_option() {
        let e = error("alert tcp any any -> any any (content:\"x\"; sid:1; flowbits:set,a;)");
        assert!(
            e.contains("t.rules:1:51: option `flowbits` is not supported"),
            "{e}"
        );
        let e = error(
            "\n  alert tcp any any -> any any (content:\"x\"; nocase; sid:1; byte_test:1,>,2,0;)",
        );
        assert!(e.starts_with("t.rules:2:"), "{e}");
        assert!(e.contains("`byte_test`"), "{e}");
        let e = error("alert http any any -> any any (content:\"x\"; sid:1;)");
        assert!(
            e.contains("t.rules:1:7: protocol `http` is not supported"),
            "{e}"
        );
        let e = error("alert tcp any any -> any any (nocase; sid:1;)");
        assert!(e.contains("`nocase`: modifies a `content`"), "{e}");
        let e = error("alert tcp any any -> any any (content:\"x\";)");
        assert!(e.contains("no `sid`"), "{e}");
        let e = error("alert tcp any any -> $NOPE any (content:\"x\"; sid:1;)");
        assert!(
            e.contains("t.rules:1:22: variable `$NOPE` is not defined"),
            "{e}"
        );
        let e = error("alert tcp any any -> any any (content:\"|4g|\"; sid:1;)");
        assert!(e.contains("is not hex"), "{e}");
        let e = error("alert tcp any any -> any any (content:\"x\"; sid:1;)\nalert tcp any any -> any any (content:\"y\"; sid:1;)");
        assert!(
            e.contains("t.rules:2:") && e.contains("`sid:1` is used again (first at t.rules:1)"),
            "{e}"
        );
        let e = error("alert tcp any any -> any any (content:\"abc\"; depth:2; sid:1;)");
        assert!(e.contains("could never match"), "{e}");
        let e = error("alert tcp any any -> any any (content:\"x\"; sid:1)");
        assert!(e.contains("does not end with `;`"), "{e}");
        let e = error("alert tcp any any -> any any (msg:\"open; sid:1;)");
        assert!(e.contains("not closed"), "{e}");
        // Two problems, both reported.
        let e = error(
            "alert tcp any any -> any any (sid:1; foo;)\nalert tcp any any => any any (sid:2;)",
        );
        assert!(e.contains("`foo`") && e.contains("direction `=>`"), "{e}");
    }

    #[test]
    fn rule_files_share_their_sids_and_report_every_problem() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = dir.path().join("a.rules");
        let b = dir.path().join("b.rules");
        let c = dir.path().join("c.rules");
        std::fs::write(&a, "alert tcp any any -> any any (content:\"x\"; sid:1;)\n")
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            &b,
            "# b\nalert tcp any any -> any any (content:\"y\"; sid:2;)\nalert tcp any any -> any any (content:\"z\"; sid:1;)\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            &c,
            b"alert tcp any any -> any any (content:\"\xff\"; sid:3;)\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let ok =
            parse_files(std::slice::from_ref(&a), &Vars::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.len(), 1);
        let missing = dir.path().join("missing.rules");
        let e = parse_files(
            &[a.clone(), b.clone(), c.clone(), missing.clone()],
            &Vars::new(),
        )
        .err()
        .unwrap_or_else(|| panic!("duplicate sid accepted"))
        .to_string();
        let first = format!("{}:1", a.display());
        assert!(
            e.contains(&format!(
                "{}:3:1: `sid:1` is used again (first at {first})",
                b.display()
            )),
            "{e}"
        );
        assert!(
            e.contains(&format!("{}:1:0: not UTF-8", c.display())),
            "{e}"
        );
        assert!(e.contains(&missing.display().to_string()), "{e}");
    }

    #[test]
    fn catastrophic_and_unsupported_patterns_are_refused() {
        let e = error(r#"alert tcp any any -> any any (pcre:"/(a+)+\1/"; sid:1;)"#);
        assert!(e.contains("not supported by the linear-time engine"), "{e}");
        let e = error(r#"alert tcp any any -> any any (pcre:"/(?=x)/"; sid:1;)"#);
        assert!(e.contains("linear-time engine"), "{e}");
        let e = error(r#"alert tcp any any -> any any (pcre:"/x{1000}{1000}/"; sid:1;)"#);
        assert!(e.contains("compiles to more than"), "{e}");
        let e = error(r#"alert tcp any any -> any any (pcre:"/x/R"; sid:1;)"#);
        assert!(e.contains("flag `R` is not supported"), "{e}");
        // A pattern that backtracks exponentially in a backtracking engine runs in
        // linear time here.
        let r = format!(r#"{HEAD} (pcre:"/^(a|aa)+$/"; sid:1;)"#);
        let mut payload = vec![b'a'; 5000];
        payload.push(b'b');
        assert!(!hit(&r, &payload));
    }

    #[test]
    fn the_rule_set_prefilters_and_decides() {
        let text = r#"
# a comment
alert tcp any any -> any any (msg:"one"; content:"needle"; sid:1;)
alert tcp any any -> any any (msg:"two"; content:"NEEDLE"; nocase; content:"tail"; distance:0; sid:2;)
drop tcp any any -> any any (msg:"three"; content:!"absent"; sid:3;)
pass tcp any any -> any any (msg:"four"; content:"allowme"; sid:4;)
"#;
        let set = RuleSet::new(
            parse(text, Path::new("t.rules"), &Vars::with_defaults())
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let p = |payload: &'static [u8]| {
            Packet::tcp(addr("10.0.0.1:1000"), addr("10.0.0.2:80"), payload)
        };
        let sids = |payload: &'static [u8]| -> Vec<u32> {
            set.matches(&p(payload)).iter().map(|r| r.sid).collect()
        };
        assert_eq!(sids(b"a needle and a tail"), [1, 2, 3]);
        assert_eq!(sids(b"absent"), Vec::<u32>::new());
        assert_eq!(set.verdict(&set.matches(&p(b"needle"))), Verdict::Drop);
        assert_eq!(set.verdict(&set.matches(&p(b"allowme"))), Verdict::Pass);
        assert_eq!(set.verdict(&set.matches(&p(b"absent"))), Verdict::None);
    }

    /// The prefilter never loses a match: over random rules and payloads, the set's
    /// answer equals checking every rule.
    #[test]
    fn the_prefilter_equals_checking_every_rule() {
        let mut seed = 0x1d5_5eed_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let alphabet = b"abAB";
        let word = |len: u64, next: &mut dyn FnMut(u64) -> u64| -> String {
            (0..len.max(1))
                .map(|_| alphabet[next(4) as usize] as char)
                .collect()
        };
        let mut text = String::new();
        for sid in 1..=200 {
            let a = word(1 + next(3), &mut next);
            let b = word(1 + next(3), &mut next);
            let nocase = if next(2) == 0 { " nocase;" } else { "" };
            let second = match next(3) {
                0 => String::new(),
                1 => format!(
                    " content:\"{b}\"; distance:{}; within:{};",
                    next(3),
                    3 + next(4)
                ),
                _ => format!(" content:!\"{b}\";"),
            };
            text.push_str(&format!(
                "alert tcp any any -> any any (content:\"{a}\";{nocase}{second} sid:{sid};)\n"
            ));
        }
        let rules =
            parse(&text, Path::new("t.rules"), &Vars::new()).unwrap_or_else(|e| panic!("{e}"));
        let set = RuleSet::new(rules).unwrap_or_else(|e| panic!("{e}"));
        let mut matched = 0;
        for _ in 0..300 {
            let payload = word(next(24), &mut next).into_bytes();
            let packet = Packet::tcp(addr("10.0.0.1:1"), addr("10.0.0.2:2"), &payload);
            let fast: Vec<u32> = set.matches(&packet).iter().map(|r| r.sid).collect();
            let slow: Vec<u32> = set
                .rules()
                .iter()
                .filter(|r| rule_matches(r, &packet))
                .map(|r| r.sid)
                .collect();
            assert_eq!(fast, slow, "{:?}", String::from_utf8_lossy(&payload));
            matched += fast.len();
        }
        assert!(matched > 300, "matches over all payloads: {matched}");
    }
}
