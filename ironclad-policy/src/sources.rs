//! Where the Shield's prefix sets come from: feed files and countries. Each source is
//! one named set with its own rule id, so the counters say which feed or country
//! matched a packet.
//!
//! Sources are read while the policy is read: a feed file with a bad entry (strict
//! mode), an unreadable file or a bad GeoIP database fails the whole policy, with the
//! position of each problem, before anything reaches the kernel.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use ipnetwork::IpNetwork;
use ironclad_core::abi::Action;

use crate::aggregate::{aggregate_except_into, subtract, symmetric_difference, update_into};
use crate::compact::PrefixList;
use crate::feeds::{
    feed_text, line_delta_from, parse_feed, read_feed_bytes_keep, FeedFormat, Strictness,
};
use crate::fetch::FetchSpec;
use crate::geo::country_networks;
use crate::shield::PrefixSet;
use crate::{ConfigError, Diagnostic, Origin, PolicyError};

/// What a source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A feed file.
    Feed {
        /// The file, as resolved (relative paths are relative to the policy file).
        path: PathBuf,
        /// Its format.
        format: FeedFormat,
        /// Strict or lenient.
        strictness: Strictness,
        /// How often the daemon reads it again (`None`: on reload only); for a fetched
        /// feed, how often it is fetched.
        refresh: Option<Duration>,
        /// For a feed with `url`: how it is fetched (`path` is then its cached copy).
        fetch: Option<FetchSpec>,
    },
    /// A country of a GeoIP database.
    Country {
        /// ISO 3166-1 alpha-2 code.
        code: String,
        /// The database.
        db: PathBuf,
    },
    /// Every global address ([`everything_but_local`]): the deny set of
    /// `allow_countries`.
    Everything,
}

/// One source of a prefix set, and what reading it found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Source {
    /// The set's name (also the rule's label in counters and metrics).
    pub name: String,
    /// What it is.
    pub kind: SourceKind,
    /// Deny or allow.
    pub action: Action,
    /// Entries skipped as bad (lenient feeds).
    pub skipped: usize,
    /// Entries whose host bits were masked (lenient feeds).
    pub masked: usize,
    /// When the data was produced: a feed file's modification time (a fetched feed: when
    /// the server last confirmed it), the database's.
    pub modified: Option<SystemTime>,
    /// Where it was defined in the policy.
    pub origin: Origin,
    /// What a lenient feed skipped or masked, with positions (at most
    /// [`crate::feeds::MAX_REPORTED`], then a summary): `check` and the daemon print them.
    pub warnings: Vec<Diagnostic>,
}

/// A feed entry of the policy (`shield.deny_feeds[i]`), before reading.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FeedSpec {
    /// `name`, or the file's stem.
    pub name: String,
    /// The file (already resolved against the policy's directory).
    pub path: PathBuf,
    /// The format.
    pub format: FeedFormat,
    /// Strict unless `strict: false`.
    pub strictness: Strictness,
    /// `refresh`.
    pub refresh: Option<Duration>,
    /// Deny or allow.
    pub action: Action,
    /// Where in the policy.
    pub origin: Origin,
    /// For a feed with `url`: how it is fetched.
    pub fetch: Option<FetchSpec>,
}

/// The sets and their sources, plus problems found in the source files themselves
/// (reported with the file's own path and position).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Loaded {
    /// One set per source.
    pub sets: Vec<PrefixSet>,
    /// What each set came from, in the same order.
    pub sources: Vec<Source>,
    /// Problems in feed files and databases, at their lines.
    pub file_problems: Vec<Diagnostic>,
    /// Files that could not be used at all (missing, not a regular file, too large, not
    /// a database), reported at the policy field that names them.
    pub problems: Vec<PolicyError>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// What tells a file's content changed without reading it: its device and inode (a
/// file renamed over it is another inode), size, and modification and status-change
/// times to the nanosecond (a write changes both; `touch -d` can set the modification
/// time back, not the status-change time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self::from(&m))
    }
}

impl From<&std::fs::Metadata> for FileStamp {
    fn from(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// A feed's text kept as its open file, not as its bytes (14 MB at a million lines):
/// the inode stays readable after the next version is renamed over the path, and its
/// bytes stay in the kernel's page cache (or on disk, once reclaimed) instead of the
/// daemon's memory. Read back only when the feed changes.
#[derive(Debug)]
struct KeptText {
    file: std::fs::File,
    /// The file's stamp when it was read, on the open file: the same size and
    /// modification time later mean the same bytes, as [`FileStamp`] means for a path.
    /// (Not the status-change time: renaming the next version over the path unlinks
    /// this file, which changes it.)
    stamp: FileStamp,
}

impl KeptText {
    /// Keeps `file`, read as `stamp` (taken at the path before the read): kept only
    /// when the open file still has that stamp, so it is the very file stamped and
    /// nothing wrote to it while it was read.
    fn of(file: std::fs::File, stamp: FileStamp) -> Option<Self> {
        let now = FileStamp::from(&file.metadata().ok()?);
        (now == stamp).then_some(Self { file, stamp })
    }

    /// Whether the file still has the text it was read as (nothing wrote to it since).
    fn unchanged(&self) -> bool {
        self.file.metadata().is_ok_and(|m| {
            let now = FileStamp::from(&m);
            (now.len, now.mtime) == (self.stamp.len, self.stamp.mtime)
        })
    }

    /// The lines this text and `new` do not share, read from the file a window at a
    /// time ([`line_delta_from`]); `None` as there, or when the file no longer has the
    /// text (before or after).
    fn delta(&self, new: &[u8], limit: usize) -> Option<crate::feeds::LineDelta> {
        if !self.unchanged() {
            return None;
        }
        let len = usize::try_from(self.stamp.len).ok()?;
        let delta = line_delta_from(&self.file, len, new, limit)?;
        self.unchanged().then_some(delta)
    }

    /// The whole text, if the file still has it.
    #[cfg(test)]
    fn read(&self) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0; usize::try_from(self.stamp.len).ok()?];
        self.file.read_exact_at(&mut bytes, 0).ok()?;
        self.unchanged().then_some(bytes)
    }
}

/// A feed file as it was last read.
#[derive(Debug)]
struct ReadFeed {
    stamp: FileStamp,
    format: FeedFormat,
    strictness: Strictness,
    /// Sorted and deduplicated (the very list the loaded set holds).
    prefixes: Arc<PrefixList>,
    /// How many more times than once a prefix is listed (lines repeated, or the same
    /// prefix written two ways), for the prefixes listed more than once.
    repeats: HashMap<IpNetwork, u32>,
    skipped: usize,
    masked: usize,
    warnings: Vec<Diagnostic>,
    /// The file's text (UTF-8), kept (as the open file) for a line-based feed read
    /// without a problem: a later version is then read as the lines that changed
    /// ([`ReadFeed::update`]).
    text: Option<KeptText>,
}

/// The most lines a changed feed may differ by to be read as its changes; beyond, it is
/// parsed whole (parsing 64k lines costs about what walking a million does).
const MAX_DELTA_LINES: usize = 65_536;

impl ReadFeed {
    /// Takes `text`, the file's new version, as the lines that changed since the text
    /// kept: only those are parsed (and checked to be UTF-8: the others are the kept
    /// text's), and the sorted list is the old one without the
    /// prefixes no line lists any more, with the new ones (the same shared list when
    /// no prefix came or went, e.g. a comment changed). Gives `text` back when it
    /// cannot: no text kept, too many lines changed, or a changed line with a problem
    /// (the whole file is then parsed, which reports it at its position), or the kept
    /// file no longer has the text (written to in place).
    fn update(
        &mut self,
        text: Vec<u8>,
        file: std::fs::File,
        stamp: FileStamp,
        path: &Path,
    ) -> Result<(Arc<PrefixList>, Changed), (Vec<u8>, std::fs::File)> {
        let Some(delta) = self
            .text
            .as_ref()
            .and_then(|kept| kept.delta(&text, MAX_DELTA_LINES))
        else {
            return Err((text, file));
        };
        let parse = |lines: &str| {
            parse_feed(lines, path, &self.format, self.strictness)
                .ok()
                .filter(|p| p.skipped == 0 && p.masked == 0 && p.warnings.is_empty())
        };
        let (Some(gone), Some(new)) = (parse(&delta.removed), parse(&delta.added)) else {
            return Err((text, file));
        };
        let mut change: HashMap<IpNetwork, i64> = HashMap::new();
        for net in gone.prefixes {
            *change.entry(net).or_default() -= 1;
        }
        for net in new.prefixes {
            *change.entry(net).or_default() += 1;
        }
        let mut repeats = self.repeats.clone();
        let (mut out, mut came) = (Vec::new(), Vec::new());
        for (net, d) in change {
            let listed = self.prefixes.contains(&net);
            let count = if listed {
                1 + i64::from(repeats.get(&net).copied().unwrap_or(0))
            } else {
                0
            };
            let now = count + d;
            if now < 0 {
                // A removed line the kept list does not have: not the text kept.
                return Err((text, file));
            }
            match u32::try_from(now - 1) {
                Ok(more) if more > 0 => repeats.insert(net, more),
                _ => repeats.remove(&net),
            };
            if count > 0 && now == 0 {
                out.push(net);
            } else if count == 0 && now > 0 {
                came.push(net);
            }
        }
        let from = Arc::clone(&self.prefixes);
        if !out.is_empty() || !came.is_empty() {
            out.sort_unstable();
            came.sort_unstable();
            self.prefixes = Arc::new(merge_change(&self.prefixes, &out, &came));
        }
        let list = Arc::clone(&self.prefixes);
        self.repeats = repeats;
        self.text = KeptText::of(file, stamp);
        self.stamp = stamp;
        out.append(&mut came);
        out.sort_unstable();
        Ok((list, Changed { from, delta: out }))
    }
}

/// `list` without `out` and with `came` (all three sorted; `out` is in `list`, `came`
/// is not), sorted. The runs between changes are copied whole.
fn merge_change(list: &PrefixList, out: &[IpNetwork], came: &[IpNetwork]) -> PrefixList {
    // Where each change falls in `list`, in order: (position, prefix that came).
    let mut cuts: Vec<(usize, Option<IpNetwork>)> = out
        .iter()
        .map(|net| (list.position(net), None))
        .chain(came.iter().map(|net| (list.position(net), Some(*net))))
        .collect();
    // At one position a prefix that came goes before the one that left.
    cuts.sort_unstable_by_key(|(at, net)| (*at, net.is_none(), *net));
    let count = |v4: bool, nets: &[IpNetwork]| nets.iter().filter(|n| n.is_ipv4() == v4).count();
    let mut merged = PrefixList::new();
    merged.reserve(
        (list.ipv4_len() + count(true, came)).saturating_sub(count(true, out)),
        (list.ipv6_len() + count(false, came)).saturating_sub(count(false, out)),
    );
    let mut copied = 0;
    for (at, net) in cuts {
        list.copy_into(copied, at.max(copied), &mut merged);
        copied = copied.max(at);
        match net {
            Some(net) => merged.push(net),
            None => copied = at + 1,
        }
    }
    list.copy_into(copied.min(list.len()), list.len(), &mut merged);
    merged
}

/// A set's prefixes after aggregation, with what they were made from.
#[derive(Debug)]
struct Aggregated {
    /// The set's prefixes before (sorted, deduplicated): shared with the feed's
    /// [`ReadFeed`] when the set is a feed's.
    before: Arc<PrefixList>,
    after: Arc<PrefixList>,
}

/// The last aggregation: each set's, and the single rules' prefixes it was done with.
#[derive(Debug, Default)]
struct AggregatedSets {
    sets: HashMap<String, Aggregated>,
    rules: Vec<IpNetwork>,
}

#[derive(Debug, Default)]
struct CacheInner {
    feeds: HashMap<PathBuf, ReadFeed>,
    aggregated: AggregatedSets,
    reads: FeedReads,
    /// The lists [`Loaded::feeds_cached`] handed out since the last aggregation: the
    /// aggregation then knows a set's list, and what changed in it, without comparing
    /// it.
    handed: Vec<Handed>,
}

/// A list [`Loaded::feeds_cached`] handed out.
#[derive(Debug)]
struct Handed {
    /// The list (a live `Weak` points at a list nobody else can have).
    list: Weak<PrefixList>,
    /// When the feed was read as its changed lines: what it changed.
    changed: Option<Changed>,
}

/// A feed's prefixes that came or went since its last version.
#[derive(Debug)]
struct Changed {
    /// The last version's list.
    from: Arc<PrefixList>,
    /// The prefixes one version lists and the other does not, sorted.
    delta: Vec<IpNetwork>,
}

impl CacheInner {
    /// Notes that `list` was handed out (the last time only: the cache keeps a feed's
    /// list alive, so loads that are not aggregated would otherwise pile up entries).
    fn hand(&mut self, list: &Arc<PrefixList>, changed: Option<Changed>) {
        self.handed.retain(|h| {
            h.list.strong_count() > 0 && !std::ptr::eq(h.list.as_ptr(), Arc::as_ptr(list))
        });
        self.handed.push(Handed {
            list: Arc::downgrade(list),
            changed,
        });
    }
}

/// How the cache handed `list` out, if it did.
fn handed_as<'a>(handed: &'a [Handed], list: &Arc<PrefixList>) -> Option<&'a Handed> {
    handed
        .iter()
        .find(|h| h.list.upgrade().is_some_and(|l| Arc::ptr_eq(&l, list)))
}

/// How a [`SourceCache`] has read feed files since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedReads {
    /// Taken as they were (the file had not changed).
    pub unchanged: u64,
    /// Read as the lines that changed since the last read.
    pub by_changes: u64,
    /// Read and parsed whole (first read, too many lines changed, a format that is not
    /// line based, a problem in a changed line or in the file read before).
    pub whole: u64,
}

/// The policy sources read before, kept between reloads by a long-running agent
/// ([`crate::config::compile_file_cached`]): a feed file whose identity, size and
/// times have not changed is not read again, and a set whose prefixes and neighbours
/// have not changed is not aggregated again. The policy then holds the very same
/// prefix list as before ([`PrefixSet::prefixes`] is shared), so the old and new
/// policies share their memory and the Shield sees at a glance that the set did not
/// change. A feed that changed costs its own reading, whatever the others hold.
///
/// Memory: each line-based feed's file kept open (its text is read back to read the
/// next version as the lines that changed; the bytes stay in the kernel's page cache,
/// which can reclaim them, and on a tmpfs such as a ConfigMap in memory until the next
/// version replaces them), its sorted list (a [`PrefixList`]: 5 bytes an IPv4 prefix,
/// the very list the loaded set holds), and each set's aggregated list (the very list
/// the policy holds). At a million lines nothing beyond the policy's own lists but the
/// feed's list before aggregation: 5 MB. Nothing is kept for the next reload beyond
/// that (spare buffers kept ready for it held 50 MB at a million lines, for reloads a
/// few milliseconds faster).
///
/// Cloning gives another handle on the same cache. Sources the last policy did not
/// name are dropped from it.
#[derive(Debug, Clone, Default)]
pub struct SourceCache {
    inner: Arc<Mutex<CacheInner>>,
}

impl SourceCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How it has read feed files so far.
    pub fn reads(&self) -> FeedReads {
        self.lock().reads
    }

    /// How many feed files and aggregated sets it holds.
    pub fn len(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.feeds.len(), inner.aggregated.sets.len())
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

/// Sorts and deduplicates `prefixes` unless they already are.
fn sorted(prefixes: Vec<IpNetwork>) -> Vec<IpNetwork> {
    sorted_counting(prefixes).0
}

/// [`sorted`], counting how many more times than once a prefix was listed.
fn sorted_counting(mut prefixes: Vec<IpNetwork>) -> (Vec<IpNetwork>, HashMap<IpNetwork, u32>) {
    let mut repeats = HashMap::new();
    if !prefixes.windows(2).all(|w| w[0] < w[1]) {
        if let Some(done) = sorted_counting_v4_keys(&prefixes) {
            return done;
        }
        prefixes.sort_unstable();
        for w in prefixes.windows(2) {
            if w[0] == w[1] {
                *repeats.entry(w[0]).or_insert(0) += 1;
            }
        }
        prefixes.dedup();
    }
    (prefixes, repeats)
}

/// [`sorted_counting`] with the IPv4 prefixes sorted as packed `u64` keys (address, then
/// length: the order `IpNetwork` derives, which puts every IPv4 prefix before every
/// IPv6 one); the IPv6 prefixes, few in feeds, are sorted as they are. Comparing the
/// `IpNetwork` enum took a quarter of the compile of a 1M-line feed; in the profile the
/// keys' sort takes a fifth of that. `None` only if a key does not make a prefix again,
/// which cannot happen (the caller then sorts the general way).
fn sorted_counting_v4_keys(
    prefixes: &[IpNetwork],
) -> Option<(Vec<IpNetwork>, HashMap<IpNetwork, u32>)> {
    let mut keys = Vec::with_capacity(prefixes.len());
    let mut v6 = Vec::new();
    for p in prefixes {
        match p {
            IpNetwork::V4(n) => {
                keys.push(u64::from(u32::from(n.ip())) << 8 | u64::from(n.prefix()))
            }
            IpNetwork::V6(_) => v6.push(*p),
        }
    }
    keys.sort_unstable();
    v6.sort_unstable();
    let mut list = Vec::with_capacity(keys.len() + v6.len());
    let mut repeats = HashMap::new();
    let mut keep = |net: IpNetwork, listed: usize| {
        if let Ok(extra @ 1..) = u32::try_from(listed - 1) {
            repeats.insert(net, extra);
        }
        list.push(net);
    };
    for run in keys.chunk_by(|a, b| a == b) {
        let key = run[0];
        let address = std::net::Ipv4Addr::from((key >> 8) as u32);
        // The length came from a valid prefix (at most 32): this cannot fail.
        let net = ipnetwork::Ipv4Network::new(address, (key & 0xff) as u8).ok()?;
        keep(IpNetwork::V4(net), run.len());
    }
    for run in v6.chunk_by(|a, b| a == b) {
        keep(run[0], run.len());
    }
    Some((list, repeats))
}

impl Loaded {
    /// Keeps a source file's problems: line problems under the file's own name; a file
    /// that could not be used at all at `origin`, the policy entry that names it.
    fn failed(&mut self, error: ConfigError, origin: &Origin) {
        match error.diagnostics.as_slice() {
            [d] if d.is_whole_file() => self.problems.push(PolicyError::Invalid {
                origin: origin.clone(),
                message: format!("`{}`: {}", d.path.display(), d.message),
            }),
            _ => self.file_problems.extend(error.diagnostics),
        }
    }

    fn push(&mut self, source: Source, prefixes: Arc<PrefixList>) {
        self.sets.push(PrefixSet {
            name: source.name.clone(),
            action: source.action,
            prefixes,
            origin: source.origin.clone(),
        });
        self.sources.push(source);
    }

    /// Reads each feed.
    pub fn feeds(&mut self, feeds: &[FeedSpec]) {
        self.feeds_cached(feeds, None);
    }

    /// Reads each feed, or takes it from `cache` when its file has not changed since it
    /// was read into it. Feeds `feeds` does not name leave the cache.
    pub fn feeds_cached(&mut self, feeds: &[FeedSpec], cache: Option<&SourceCache>) {
        if let Some(cache) = cache {
            let named: HashSet<&Path> = feeds.iter().map(|f| f.path.as_path()).collect();
            cache
                .lock()
                .feeds
                .retain(|path, _| named.contains(path.as_path()));
        }
        for feed in feeds {
            let source = |skipped, masked, modified, warnings| Source {
                name: feed.name.clone(),
                kind: SourceKind::Feed {
                    path: feed.path.clone(),
                    format: feed.format.clone(),
                    strictness: feed.strictness,
                    refresh: feed.refresh,
                    fetch: feed.fetch.clone(),
                },
                action: feed.action,
                skipped,
                masked,
                modified,
                origin: feed.origin.clone(),
                warnings,
            };
            if feed.fetch.is_some() && !feed.path.exists() {
                // Not fetched yet: an empty set until the first download succeeds.
                self.push(source(0, 0, None, Vec::new()), Arc::default());
                continue;
            }
            let fetched_at = feed
                .fetch
                .as_ref()
                .and_then(FetchSpec::meta)
                .map(|m| m.checked());
            let when = || fetched_at.or_else(|| modified(&feed.path));
            // The stamp is taken before reading: a file that changes while it is read
            // has another stamp at the next reload and is read again then.
            let stamp = cache.and(FileStamp::of(&feed.path));
            if let (Some(cache), Some(stamp)) = (cache, stamp) {
                let hit = cache.lock().feeds.get(&feed.path).and_then(|r| {
                    (r.stamp == stamp && r.format == feed.format && r.strictness == feed.strictness)
                        .then(|| {
                            (
                                Arc::clone(&r.prefixes),
                                r.skipped,
                                r.masked,
                                r.warnings.clone(),
                            )
                        })
                });
                if let Some((prefixes, skipped, masked, warnings)) = hit {
                    let mut inner = cache.lock();
                    inner.reads.unchanged += 1;
                    inner.hand(&prefixes, None);
                    drop(inner);
                    self.push(source(skipped, masked, when(), warnings), prefixes);
                    continue;
                }
            }
            let mut text = Vec::new();
            let file = match read_feed_bytes_keep(&feed.path, &mut text) {
                Ok(file) => file,
                Err(e) => {
                    if let Some(cache) = cache {
                        cache.lock().feeds.remove(&feed.path);
                    }
                    self.failed(e, &feed.origin);
                    continue;
                }
            };
            // A feed read before: parse only the lines that changed.
            let (text, file) = match (cache, stamp) {
                (Some(cache), Some(stamp)) => {
                    let mut inner = cache.lock();
                    let kept = inner
                        .feeds
                        .get_mut(&feed.path)
                        .filter(|r| r.format == feed.format && r.strictness == feed.strictness);
                    match kept {
                        Some(r) => match r.update(text, file, stamp, &feed.path) {
                            Ok((prefixes, changed)) => {
                                inner.reads.by_changes += 1;
                                inner.hand(&prefixes, Some(changed));
                                drop(inner);
                                self.push(source(0, 0, when(), Vec::new()), prefixes);
                                continue;
                            }
                            Err(back) => back,
                        },
                        None => (text, file),
                    }
                }
                _ => (text, file),
            };
            let parsed = feed_text(text, &feed.path)
                .and_then(|text| parse_feed(&text, &feed.path, &feed.format, feed.strictness));
            match parsed {
                Ok(parsed) => {
                    let (list, repeats) = sorted_counting(parsed.prefixes);
                    let prefixes = Arc::new(PrefixList::of(&list));
                    drop(list);
                    if let (Some(cache), Some(stamp)) = (cache, stamp) {
                        let mut inner = cache.lock();
                        inner.reads.whole += 1;
                        let clean = parsed.skipped == 0
                            && parsed.masked == 0
                            && parsed.warnings.is_empty()
                            && feed.format.is_line_based();
                        inner.hand(&prefixes, None);
                        inner.feeds.insert(
                            feed.path.clone(),
                            ReadFeed {
                                stamp,
                                format: feed.format.clone(),
                                strictness: feed.strictness,
                                prefixes: Arc::clone(&prefixes),
                                repeats,
                                skipped: parsed.skipped,
                                masked: parsed.masked,
                                warnings: parsed.warnings.clone(),
                                text: clean.then(|| KeptText::of(file, stamp)).flatten(),
                            },
                        );
                    }
                    self.push(
                        source(parsed.skipped, parsed.masked, when(), parsed.warnings),
                        prefixes,
                    );
                }
                Err(e) => {
                    if let Some(cache) = cache {
                        cache.lock().feeds.remove(&feed.path);
                    }
                    self.failed(e, &feed.origin)
                }
            }
        }
    }

    /// Reads the countries' networks from `db`: `deny` lists countries to deny;
    /// `allow` (allow-list mode) denies every global address and allows the listed
    /// countries; [`LOCAL_SPACE`] is left alone.
    pub fn countries(
        &mut self,
        db: &Path,
        codes: &[(String, Origin)],
        allow_list: bool,
        db_origin: &Origin,
    ) {
        let wanted: Vec<&str> = codes.iter().map(|(c, _)| c.as_str()).collect();
        let found = match country_networks(db, &wanted) {
            Ok(found) => found,
            Err(e) => {
                self.failed(e, db_origin);
                return;
            }
        };
        let when = modified(db);
        if allow_list {
            self.push(
                Source {
                    name: "geo:other-countries".to_string(),
                    kind: SourceKind::Everything,
                    action: Action::Deny,
                    skipped: 0,
                    masked: 0,
                    modified: when,
                    origin: db_origin.clone(),
                    warnings: Vec::new(),
                },
                Arc::new(PrefixList::from(everything_but_local())),
            );
        }
        for (code, origin) in codes {
            let prefixes = Arc::new(
                found
                    .get(code)
                    .map(|nets| PrefixList::from(nets.as_slice()))
                    .unwrap_or_default(),
            );
            self.push(
                Source {
                    name: format!("country:{code}"),
                    kind: SourceKind::Country {
                        code: code.clone(),
                        db: db.to_path_buf(),
                    },
                    action: if allow_list {
                        Action::Allow
                    } else {
                        Action::Deny
                    },
                    skipped: 0,
                    masked: 0,
                    modified: when,
                    origin: origin.clone(),
                    warnings: Vec::new(),
                },
                prefixes,
            );
        }
    }
}

/// Aggregates each set's prefixes (adjacent and overlapping prefixes of one source
/// merge, covered ones go) without changing which rule any address matches: `rules` are
/// the policy's single-prefix rules, and every other set counts too.
pub fn aggregate_sets(sets: &mut [PrefixSet], rules: &[IpNetwork]) {
    aggregate_sets_cached(sets, rules, None);
}

/// A set's aggregated prefixes: `before` itself (shared) when aggregation merged and
/// dropped nothing (it only merges and drops, so as many prefixes means the same ones).
fn shared_unless_merged(before: &Arc<PrefixList>, mut merged: PrefixList) -> Arc<PrefixList> {
    if merged.len() == before.len() {
        Arc::clone(before)
    } else {
        merged.shrink_to_fit();
        Arc::new(merged)
    }
}

/// [`aggregate_except`] of a list, as a list.
fn aggregated(list: &PrefixList, reserved: impl Fn(&IpNetwork) -> bool) -> PrefixList {
    let mut out = PrefixList::new();
    aggregate_except_into(list.iter(), reserved, &mut out);
    out
}

/// [`aggregate_sets`], taking from `cache` the result of a set whose prefixes are the
/// same shared list as last time, when nothing that changed elsewhere (in another set
/// or the single rules) is one of its prefixes or covers one: its aggregation would ask
/// the same questions and get the same answers. The unchanged set then keeps the very
/// list it had. (Aggregating a list asks whether a prefix is listed elsewhere only of
/// its own prefixes and of prefixes covering them: the covers of covered prefixes and
/// what lies between, the parents of merges. So a prefix that newly appears or
/// disappears elsewhere and covers none of its prefixes does not change how it
/// aggregates.)
pub fn aggregate_sets_cached(
    sets: &mut [PrefixSet],
    rules: &[IpNetwork],
    cache: Option<&SourceCache>,
) {
    // The lists the cache handed out (feeds as read: sorted).
    let handed = cache
        .map(|c| std::mem::take(&mut c.lock().handed))
        .unwrap_or_default();
    for set in sets.iter_mut() {
        if handed_as(&handed, &set.prefixes).is_none() && !set.prefixes.is_sorted() {
            Arc::make_mut(&mut set.prefixes).sort_dedup();
        }
    }
    let rule_list = sorted(rules.to_vec());
    let all: Vec<Arc<PrefixList>> = sets.iter().map(|s| Arc::clone(&s.prefixes)).collect();
    let mut previous = cache.map(|c| std::mem::take(&mut c.lock().aggregated));
    // What changed since the cached aggregation, set by set (a new set: all of it), and
    // in the rules and the sets gone.
    let changed: Vec<Vec<IpNetwork>> = match &previous {
        None => Vec::new(),
        Some(p) => sets
            .iter()
            .map(|s| match p.sets.get(&s.name) {
                // The very list it aggregated before.
                Some(a) if Arc::ptr_eq(&s.prefixes, &a.before) => Vec::new(),
                Some(a) => match handed_as(&handed, &s.prefixes) {
                    // The next version of it, read as its changes.
                    Some(Handed {
                        changed: Some(c), ..
                    }) if Arc::ptr_eq(&c.from, &a.before) => c.delta.clone(),
                    _ => a
                        .before
                        .symmetric_difference(&s.prefixes, usize::MAX)
                        .unwrap_or_default(),
                },
                None => s.prefixes.to_vec(),
            })
            .collect(),
    };
    let everywhere: Vec<IpNetwork> = match &previous {
        None => Vec::new(),
        Some(p) => {
            let names: HashSet<&str> = sets.iter().map(|s| s.name.as_str()).collect();
            p.sets
                .iter()
                .filter(|(name, _)| !names.contains(name.as_str()))
                .flat_map(|(_, a)| a.before.iter())
                .chain(symmetric_difference(&p.rules, &rule_list, usize::MAX).unwrap_or_default())
                .collect()
        }
    };
    let rule_set: HashSet<IpNetwork> = rule_list.iter().copied().collect();
    let mut kept = AggregatedSets {
        sets: HashMap::new(),
        rules: rule_list.clone(),
    };
    for (i, set) in sets.iter_mut().enumerate() {
        let others: Vec<&PrefixList> = all
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| &**p)
            .collect();
        let before = Arc::clone(&set.prefixes);
        // Listed by a single rule or another set (not by this one alone).
        let elsewhere =
            |net: &IpNetwork| rule_set.contains(net) || others.iter().any(|o| o.contains(net));
        let last = previous.as_mut().and_then(|p| p.sets.remove(&set.name));
        let after = match last {
            Some(last) => {
                // What changed in this set, and what changed elsewhere that is one of
                // its prefixes or covers one (then or now).
                let mut points = changed.get(i).cloned().unwrap_or_default();
                points.extend(
                    changed
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .flat_map(|(_, c)| c)
                        .chain(&everywhere)
                        .filter(|net| before.reaches_into(net) || last.before.reaches_into(net)),
                );
                if points.is_empty() {
                    last.after
                } else if points.len() <= before.len() / 8 + 1_024 {
                    let mut merged = PrefixList::new();
                    update_into(
                        |net| last.before.contains(net),
                        &*last.after,
                        &*before,
                        &points,
                        elsewhere,
                        &mut merged,
                    );
                    shared_unless_merged(&before, merged)
                } else {
                    shared_unless_merged(&before, aggregated(&before, elsewhere))
                }
            }
            None => shared_unless_merged(&before, aggregated(&before, elsewhere)),
        };
        set.prefixes = Arc::clone(&after);
        if cache.is_some() {
            kept.sets
                .insert(set.name.clone(), Aggregated { before, after });
        }
    }
    if let Some(cache) = cache {
        cache.lock().aggregated = kept;
    }
}

/// Address space no GeoIP database places in a country and a host must keep reaching:
/// private, shared (CGNAT), loopback, link-local, multicast, ULA. `allow_countries`
/// leaves it alone; deny it explicitly if wanted.
pub const LOCAL_SPACE: [&str; 12] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Both families' whole address space without [`LOCAL_SPACE`].
pub fn everything_but_local() -> Vec<IpNetwork> {
    let local: Vec<IpNetwork> = LOCAL_SPACE.iter().filter_map(|s| s.parse().ok()).collect();
    ["0.0.0.0/0", "::/0"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .flat_map(|whole| subtract(whole, &local))
        .collect()
}

/// A feed's default name: its file stem (`drop` for `/x/drop.txt`).
pub fn default_name(path: &Path) -> Option<String> {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shield::{compile, Owner, ShieldPolicy};
    use ipnetwork::Ipv4Network;
    use ironclad_testing::rules::Rng;
    use std::net::Ipv4Addr;

    /// The owner's label of the longest matching prefix of `addr`: the rule the kernel's
    /// longest-prefix match would pick, computed here in user space from the compiled
    /// policy (owners settle ties). The kernel's own lookups are not consulted.
    fn winner(
        owners: &[(IpNetwork, Owner)],
        policy: &crate::shield::CompiledShield,
        addr: Ipv4Addr,
    ) -> Option<String> {
        owners
            .iter()
            .filter(|(net, _)| net.contains(std::net::IpAddr::V4(addr)))
            .max_by_key(|(net, _)| net.prefix())
            .map(|(_, owner)| match owner {
                Owner::Rule(i) => format!("rule {}", policy.rules[*i].cidr),
                Owner::Set(i) => format!("set {}", policy.sets[*i].name),
            })
    }

    /// The packed-key sort of IPv4 lists against sorting the `IpNetwork`s themselves:
    /// the same order, the same duplicates dropped and counted, for lists with repeats
    /// (a prefix listed up to four times, the same address at several lengths, the
    /// ends of the address space), then with IPv6 prefixes among them.
    #[test]
    fn the_packed_ipv4_sort_is_the_general_sort() {
        fn general(mut list: Vec<IpNetwork>) -> (Vec<IpNetwork>, HashMap<IpNetwork, u32>) {
            list.sort_unstable();
            let mut repeats = HashMap::new();
            for w in list.windows(2) {
                if w[0] == w[1] {
                    *repeats.entry(w[0]).or_insert(0) += 1;
                }
            }
            list.dedup();
            (list, repeats)
        }
        let mut rng = Rng::new(0x5eed_50f7);
        for round in 0..50u64 {
            let len = 1 + rng.below(5_000) as usize;
            let mut list: Vec<IpNetwork> = Vec::with_capacity(len);
            while list.len() < len {
                let prefix = rng.below(33) as u8;
                let raw = match rng.below(4) {
                    0 => 0,
                    1 => u32::MAX,
                    // Few distinct addresses: repeats and one address at many lengths.
                    2 => (rng.below(64) as u32) << 24,
                    _ => rng.next_u64() as u32,
                };
                let net = Ipv4Network::new(Ipv4Addr::from(raw), prefix).expect("prefix");
                let net = IpNetwork::V4(Ipv4Network::new(net.network(), prefix).expect("prefix"));
                for _ in 0..=rng.below(4) {
                    list.push(net);
                }
            }
            let expected = general(list.clone());
            assert_eq!(
                sorted_counting_v4_keys(&list),
                Some(expected.clone()),
                "round {round}"
            );
            assert_eq!(sorted_counting(list.clone()), expected, "round {round}");
            // Both families: the IPv6 prefixes (repeated too) come after every IPv4 one.
            for net in ["2001:db8::/32", "::/0", "2001:db8::/32", "fd00::/8"] {
                list.push(net.parse().expect("v6"));
            }
            let expected = general(list.clone());
            assert_eq!(
                sorted_counting_v4_keys(&list),
                Some(expected.clone()),
                "round {round}"
            );
            assert_eq!(sorted_counting(list), expected, "round {round}");
        }
    }

    /// A feed file edited as operators and fetchers edit them, read by a cache round
    /// after round against reading it afresh: lines inserted, removed (together and
    /// scattered), duplicated, replaced, a block moved far, comments changed, the
    /// final newline toggled, CRLF lines, the same prefix written two ways, the whole
    /// file shuffled, a bad line in strict mode and a lenient feed with a masked one,
    /// and versions written in place (over the file the cache keeps open).
    /// Each round the set and every problem are the fresh read's; the small edits are
    /// read as their changes.
    #[test]
    fn a_changed_feed_read_by_its_changes_is_read_as_a_fresh_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("feed.txt");
        let mut rng = Rng::new(23);
        let entry = |rng: &mut Rng| -> String {
            match rng.below(12) {
                0 => format!("# comment {}", rng.below(1000)),
                1 => String::new(),
                2 => format!("2001:db8:{:x}::/48", rng.below(4096)),
                3 => format!("10.{}.{}.0/24 # a note", rng.below(4), rng.below(256)),
                4 => format!("10.1.{}.{}/32", rng.below(4), rng.below(256)),
                5 => format!("  10.2.{}.{}\r", rng.below(4), rng.below(256)),
                _ => format!("10.{}.{}.{}", rng.below(4), rng.below(4), rng.below(256)),
            }
        };
        let mut lines: Vec<String> = (0..3_000).map(|_| entry(&mut rng)).collect();
        let mut final_newline = true;
        let spec = |strictness| FeedSpec {
            name: "feed".to_string(),
            path: path.clone(),
            format: crate::feeds::FeedFormat::Plain,
            strictness,
            refresh: None,
            action: Action::Deny,
            origin: Origin::field("shield.deny_feeds[0]"),
            fetch: None,
        };
        let cache = SourceCache::new();
        let mut version = 0;
        for round in 0..300 {
            let at =
                |rng: &mut Rng, lines: &Vec<String>| rng.below(lines.len() as u64 + 1) as usize;
            let mut strictness = Strictness::Strict;
            match round % 13 {
                0 | 1 => {
                    let i = at(&mut rng, &lines);
                    for _ in 0..=rng.below(5) {
                        lines.insert(i, entry(&mut rng));
                    }
                }
                2 => {
                    let i = at(&mut rng, &lines).min(lines.len() - 5);
                    lines.drain(i..i + 1 + rng.below(4) as usize);
                }
                3 => {
                    for _ in 0..10 {
                        let i = rng.below(lines.len() as u64) as usize;
                        lines.remove(i);
                    }
                }
                4 => {
                    let line = lines[rng.below(lines.len() as u64) as usize].clone();
                    let i = at(&mut rng, &lines);
                    lines.insert(i, line);
                }
                5 => {
                    let i = rng.below(lines.len() as u64) as usize;
                    lines[i] = entry(&mut rng);
                }
                6 => {
                    let i = rng.below(lines.len() as u64 - 200) as usize;
                    let block: Vec<String> = lines.drain(i..i + 150).collect();
                    let to = at(&mut rng, &lines);
                    lines.splice(to..to, block);
                }
                7 => final_newline = !final_newline,
                8 => {
                    // The same prefix written another way, then a line of it gone.
                    let i = at(&mut rng, &lines);
                    lines.insert(i, "10.3.3.3/32".to_string());
                    let j = at(&mut rng, &lines);
                    lines.insert(j, "10.3.3.3".to_string());
                    if let Some(k) = lines.iter().position(|l| l == "10.3.3.3/32") {
                        lines.remove(k);
                    }
                }
                9 if round % 2 == 0 => {
                    for k in (1..lines.len()).rev() {
                        lines.swap(k, rng.below(k as u64 + 1) as usize);
                    }
                }
                10 => {
                    let i = at(&mut rng, &lines);
                    lines.insert(i, "not-an-ip".to_string());
                }
                11 => {
                    lines.retain(|l| l != "not-an-ip");
                    let i = at(&mut rng, &lines);
                    lines.insert(i, "10.9.9.9/8".to_string());
                    strictness = Strictness::Lenient;
                }
                _ => lines.retain(|l| l != "10.9.9.9/8"),
            }
            let mut text = lines.join("\n");
            if final_newline {
                text.push('\n');
            }
            if round % 7 == 3 {
                // Written in place: the file the cache keeps open (the text it read)
                // now holds the new version, which is then read whole.
                std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            } else {
                // A new file renamed over the old, as a fetcher writes it.
                version += 1;
                let next = dir.path().join(format!("feed.{version}"));
                std::fs::write(&next, &text).unwrap_or_else(|e| panic!("{e}"));
                std::fs::rename(&next, &path).unwrap_or_else(|e| panic!("{e}"));
            }
            let mut cached = Loaded::default();
            cached.feeds_cached(&[spec(strictness)], Some(&cache));
            let mut fresh = Loaded::default();
            fresh.feeds(&[spec(strictness)]);
            assert_eq!(cached.sets, fresh.sets, "round {round}");
            assert_eq!(cached.sources, fresh.sources, "round {round}");
            assert_eq!(cached.file_problems, fresh.file_problems, "round {round}");
            assert_eq!(cached.problems.len(), fresh.problems.len(), "round {round}");
            // Aggregated as a reload does (a feed read as its changes hands them to
            // the aggregation instead of a comparison of the lists): the plain result.
            aggregate_sets_cached(&mut cached.sets, &[], Some(&cache));
            aggregate_sets(&mut fresh.sets, &[]);
            assert_eq!(cached.sets, fresh.sets, "round {round}: aggregated");
            if round % 13 == 10 {
                assert!(
                    !cached.file_problems.is_empty(),
                    "round {round}: the bad line"
                );
            }
        }
        let reads = cache.reads();
        assert!(
            reads.by_changes > 180 && reads.whole > 40,
            "small edits read as their changes, the rest whole: {reads:?}"
        );
    }

    /// A feed rewritten version after version is read by its changes each time, and
    /// the cache holds only the current version.
    #[test]
    fn a_changed_feed_is_read_by_its_changes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("feed.txt");
        let spec = FeedSpec {
            name: "feed".to_string(),
            path: path.clone(),
            format: crate::feeds::FeedFormat::Plain,
            strictness: Strictness::Strict,
            refresh: None,
            action: Action::Deny,
            origin: Origin::field("shield.deny_feeds[0]"),
            fetch: None,
        };
        let cache = SourceCache::new();
        for version in 0..4u32 {
            let text: String = (0..5_000u32)
                .map(|i| format!("10.{}.{}.{}\n", version, i >> 8, i & 0xff))
                .collect();
            let next = dir.path().join(format!("feed.{version}"));
            std::fs::write(&next, &text).unwrap_or_else(|e| panic!("{e}"));
            std::fs::rename(&next, &path).unwrap_or_else(|e| panic!("{e}"));
            let mut loaded = Loaded::default();
            loaded.feeds_cached(std::slice::from_ref(&spec), Some(&cache));
            let list = &loaded.sets[0].prefixes;
            assert_eq!(list.len(), 5_000);
            assert!(list
                .iter()
                .all(|n| n.to_string().starts_with(&format!("10.{version}."))));
            let inner = cache.lock();
            let read = inner.feeds.get(&path).unwrap_or_else(|| panic!("cached"));
            // The cache holds this version's text (as its open file) and list
            // (compact), and nothing of the one before (no spare buffers: 50 MB at a
            // million lines).
            let kept = read.text.as_ref().and_then(KeptText::read);
            assert_eq!(kept.as_deref(), Some(text.as_bytes()));
            assert!(
                Arc::ptr_eq(&read.prefixes, list),
                "the list handed out is the one kept"
            );
        }
        assert_eq!(cache.reads().by_changes, 3);
        assert_eq!(cache.reads().whole, 1);
        // Loads never aggregated (a `check` loop) hand the same kept list out again:
        // the cache remembers it once, not once a load.
        for _ in 0..5 {
            let mut loaded = Loaded::default();
            loaded.feeds_cached(std::slice::from_ref(&spec), Some(&cache));
        }
        assert_eq!(cache.reads().unchanged, 5);
        assert_eq!(cache.lock().handed.len(), 1);
    }

    /// The cached aggregation against the plain one, round after round of random
    /// changes to some of the sets and rules (new prefixes covering others', prefixes
    /// taken from another set, sets gone and back): always the same result, and a set
    /// whose neighbours changed nowhere near it keeps its list.
    #[test]
    fn cached_aggregation_is_always_the_plain_one() {
        let mut rng = Rng::new(5);
        let base =
            Ipv4Network::new(Ipv4Addr::new(10, 0, 0, 0), 16).unwrap_or_else(|e| panic!("{e}"));
        let random = |rng: &mut Rng, count: u64, lo: u8| -> Vec<IpNetwork> {
            (0..count)
                .map(|_| IpNetwork::V4(ironclad_testing::rules::prefix_in_v4(rng, base, lo, 32)))
                .collect()
        };
        let mut sets: Vec<PrefixSet> = (0..4)
            .map(|i| PrefixSet {
                name: format!("s{i}"),
                action: if i == 1 { Action::Allow } else { Action::Deny },
                prefixes: Arc::new(random(&mut rng, 400, 20).into()),
                origin: Origin::field(format!("s{i}")),
            })
            .collect();
        let mut rules = random(&mut rng, 6, 18);
        let cache = SourceCache::new();
        let mut reused = 0;
        let mut last: Vec<Arc<PrefixList>> = Vec::new();
        for round in 0..60 {
            let mut cached = sets.clone();
            aggregate_sets_cached(&mut cached, &rules, Some(&cache));
            let mut plain: Vec<PrefixSet> = sets
                .iter()
                .map(|s| PrefixSet {
                    prefixes: Arc::new(PrefixList::clone(&s.prefixes)),
                    ..s.clone()
                })
                .collect();
            aggregate_sets(&mut plain, &rules);
            assert_eq!(cached, plain, "round {round}");
            reused += cached
                .iter()
                .filter(|s| last.iter().any(|l| Arc::ptr_eq(l, &s.prefixes)))
                .count();
            last = cached.iter().map(|s| Arc::clone(&s.prefixes)).collect();
            // The next round's change: one set, sometimes a rule, sometimes a set gone.
            let i = rng.below(4) as usize;
            let mut list = sets[i].prefixes.to_vec();
            match rng.below(5) {
                0 => list.extend(random(&mut rng, 3, 17)),
                1 => {
                    let j = (i + 1) % 4;
                    let k = rng.below(sets[j].prefixes.len() as u64) as usize;
                    list.extend(sets[j].prefixes.get(k));
                }
                2 => {
                    list.truncate(list.len().saturating_sub(5));
                }
                3 => rules.push(random(&mut rng, 1, 16)[0]),
                _ => list = random(&mut rng, 2, 28),
            }
            sets[i].prefixes = Arc::new(list.into());
            if round % 17 == 16 {
                let gone = sets.remove(0);
                aggregate_sets_cached(&mut sets.clone(), &rules, Some(&cache));
                sets.insert(0, gone);
            }
        }
        assert!(
            reused > 40,
            "unchanged sets kept their lists ({reused} times)"
        );
    }

    /// A set that aggregates to a list of its own is updated from the cached
    /// aggregation, version after version, to what aggregating it afresh gives.
    #[test]
    fn an_updated_aggregation_is_the_fresh_one() {
        let cache = SourceCache::new();
        let halves = |skip: u32| -> Arc<PrefixList> {
            // Pairs of /25s in every other /24 (each pair merges to its /24, no
            // further), one pair left out.
            let mut list: Vec<IpNetwork> = (0..2_000u32)
                .filter(|i| *i != skip)
                .flat_map(|i| {
                    [0u32, 128].map(|h| {
                        IpNetwork::V4(
                            Ipv4Network::new(Ipv4Addr::from((10 << 24) | (i << 9) | h), 25)
                                .unwrap_or_else(|e| panic!("{e}")),
                        )
                    })
                })
                .collect();
            list.sort_unstable();
            Arc::new(list.into())
        };
        for version in 0..4u32 {
            let set = |prefixes| {
                vec![PrefixSet {
                    name: "halves".to_string(),
                    action: Action::Deny,
                    prefixes,
                    origin: Origin::field("sets[0]"),
                }]
            };
            let mut cached = set(halves(version * 100));
            aggregate_sets_cached(&mut cached, &[], Some(&cache));
            let mut fresh = set(halves(version * 100));
            aggregate_sets_cached(&mut fresh, &[], None);
            assert_eq!(cached[0].prefixes.len(), 1_999, "one /24 per pair");
            assert_eq!(cached[0].prefixes, fresh[0].prefixes, "version {version}");
        }
    }

    #[test]
    fn aggregation_never_changes_which_rule_an_address_matches() {
        let mut rng = Rng::new(11);
        let base =
            Ipv4Network::new(Ipv4Addr::new(10, 0, 0, 0), 20).unwrap_or_else(|e| panic!("{e}"));
        let mut merged = 0;
        for round in 0..40 {
            let mut random = |count: u64| -> Vec<IpNetwork> {
                (0..count)
                    .map(|_| {
                        IpNetwork::V4(ironclad_testing::rules::prefix_in_v4(
                            &mut rng, base, 23, 32,
                        ))
                    })
                    .collect()
            };
            let deny_rules = random(5);
            let allow_rules: Vec<IpNetwork> = random(3)
                .into_iter()
                .filter(|n| !deny_rules.contains(n))
                .collect();
            let sets: Vec<PrefixSet> = (0..4)
                .map(|i| PrefixSet {
                    name: format!("s{i}"),
                    action: if i == 1 { Action::Allow } else { Action::Deny },
                    prefixes: Arc::new(random(150).into()),
                    origin: Origin::field(format!("s{i}")),
                })
                .collect();
            let mut policy = ShieldPolicy::from_lists(&deny_rules, &allow_rules, &[]);
            policy.sets = sets.clone();
            let before = compile(&policy).unwrap_or_else(|e| panic!("{e:?}"));
            let mut aggregated = sets;
            let inline: Vec<IpNetwork> = deny_rules.iter().chain(&allow_rules).copied().collect();
            aggregate_sets(&mut aggregated, &inline);
            policy.sets = aggregated;
            let after = compile(&policy).unwrap_or_else(|e| panic!("{e:?}"));
            assert!(after.ipv4_prefixes() <= before.ipv4_prefixes());
            merged += before.ipv4_prefixes() - after.ipv4_prefixes();
            let (owners_before, owners_after) = (before.owners(), after.owners());
            // Every address of the /20 the prefixes were drawn from.
            for offset in 0..(1u32 << 12) {
                let addr = Ipv4Addr::from(u32::from(base.network()) + offset);
                assert_eq!(
                    winner(&owners_before, &before, addr),
                    winner(&owners_after, &after, addr),
                    "round {round}, {addr}: before {:?} after {:?}",
                    owners_before
                        .iter()
                        .filter(|(n, _)| n.contains(std::net::IpAddr::V4(addr)))
                        .collect::<Vec<_>>(),
                    owners_after
                        .iter()
                        .filter(|(n, _)| n.contains(std::net::IpAddr::V4(addr)))
                        .collect::<Vec<_>>(),
                );
            }
        }
        assert!(
            merged > 100,
            "the sets did aggregate ({merged} prefixes fewer)"
        );
    }
}
