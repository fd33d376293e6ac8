//! The Shield's planner: what a new policy means for the rule ids, counters and prefix
//! tables, decided without touching the kernel (so it is unit-tested without root).
//! [`Shield::replace`](super::Shield::replace) reads the loaded rule directory, asks
//! [`plan`] what to write, and writes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use ironclad_core::abi::{
    Action, BookRun, LpmV4Key, LpmV6Key, Rule, RuleInfo, BOOK_REMOVED, RULE_CIDR, RULE_SET,
    SHIELD_MAX_RULES,
};
use ironclad_policy::shield::{CompiledShield, Owner};

use super::book::Book;
use super::{Ipv4Path, ReplaceReport, RULE_COUNTERS};
use crate::error::{BpfError, Result};

/// The LPM key bytes of `net` (host bits cleared).
pub(crate) fn lpm_key(net: IpNetwork) -> Vec<u8> {
    match net {
        IpNetwork::V4(n) => LpmV4Key {
            prefixlen: u32::from(n.prefix()),
            addr: n.network().octets(),
        }
        .to_bytes(),
        IpNetwork::V6(n) => LpmV6Key {
            prefixlen: u32::from(n.prefix()),
            addr: n.network().octets(),
        }
        .to_bytes(),
    }
}

/// A prefix book's byte stream (`struct ic_book_run` in the ABI header): the prefixes
/// grouped into runs of one length, action and rule, each a header and the run's
/// addresses (`N` bytes each), then an empty header. A feed of one rule costs `N` bytes
/// a prefix (4 for IPv4) where a record per prefix took 8.
pub(super) fn encode_book<const N: usize>(
    prefixes: impl Iterator<Item = ([u8; N], u8, Rule)>,
) -> Vec<u8> {
    let mut out = encode_edits(prefixes.map(|(addr, len, rule)| (addr, len, Some(rule))));
    out.extend_from_slice(&BookRun::default().to_bytes());
    out
}

/// The changes of an edit in place as book runs, to append after a book's last run
/// (no end header): new or changed prefixes in runs of their rule, removed ones (`None`)
/// in runs of action [`BOOK_REMOVED`].
pub(super) fn encode_edits<const N: usize>(
    edits: impl Iterator<Item = ([u8; N], u8, Option<Rule>)>,
) -> Vec<u8> {
    // Runs by rule and action, then by length: the rule of consecutive prefixes rarely
    // changes, so each prefix costs a comparison and a push (a map of runs searched for
    // each of a million prefixes took most of the book's time).
    // (rule id, action) and its addresses by prefix length.
    type ByLength<const N: usize> = Vec<Vec<[u8; N]>>;
    let mut by_rule: Vec<((u32, u8), ByLength<N>)> = Vec::new();
    let mut index: HashMap<(u32, u8), usize> = HashMap::new();
    let mut current = usize::MAX;
    for (addr, len, rule) in edits {
        let key = rule.map_or((0, BOOK_REMOVED), |r| (r.rule_id, r.action));
        if by_rule.get(current).is_none_or(|(k, _)| *k != key) {
            current = *index.entry(key).or_insert_with(|| {
                by_rule.push((key, vec![Vec::new(); N * 8 + 1]));
                by_rule.len() - 1
            });
        }
        if let Some(run) = by_rule[current].1.get_mut(usize::from(len)) {
            run.push(addr);
        }
    }
    by_rule.sort_unstable_by_key(|(key, _)| *key);
    let runs = by_rule.into_iter().flat_map(|((id, action), lens)| {
        lens.into_iter()
            .enumerate()
            .filter(|(_, addrs)| !addrs.is_empty())
            .map(move |(len, addrs)| ((id, action, len as u8), addrs))
    });
    let mut out = Vec::new();
    for ((rule_id, action, prefixlen), addrs) in runs {
        let run = BookRun {
            count: addrs.len() as u32,
            rule_id: rule_id as u16,
            prefixlen,
            action,
        };
        out.extend_from_slice(&run.to_bytes());
        for addr in addrs {
            out.extend_from_slice(&addr);
        }
    }
    out
}

/// The entries of a book's byte stream ([`encode_book`], then any appended
/// [`encode_edits`]) in order, up to its end, a run of no known action or one cut short:
/// a prefix with its rule, or `None` where a later edit removed it. Read in order, a
/// later entry wins over an earlier one for the same prefix.
pub(super) fn decode_book<const N: usize>(bytes: &[u8]) -> Vec<([u8; N], u8, Option<Rule>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(run) = bytes.get(at..).and_then(BookRun::from_bytes) {
        at += BookRun::SIZE;
        if run.count == 0 {
            break;
        }
        let rule = if run.action == BOOK_REMOVED {
            None
        } else {
            match Action::from_raw(run.action).filter(|a| *a != Action::None) {
                Some(action) => Some(Rule::new(u32::from(run.rule_id), action)),
                None => break,
            }
        };
        for _ in 0..run.count {
            let Some(addr) = bytes
                .get(at..at + N)
                .and_then(|b| <[u8; N]>::try_from(b).ok())
            else {
                return out;
            };
            out.push((addr, run.prefixlen, rule));
            at += N;
        }
    }
    out
}

/// The network an LPM key (of either family, by length) stands for.
pub(super) fn net_of_key(key: &[u8]) -> Option<IpNetwork> {
    if key.len() == LpmV4Key::SIZE {
        let k = LpmV4Key::from_bytes(key)?;
        Ipv4Network::new(k.addr.into(), u8::try_from(k.prefixlen).ok()?)
            .ok()
            .map(IpNetwork::V4)
    } else {
        let k = LpmV6Key::from_bytes(key)?;
        Ipv6Network::new(k.addr.into(), u8::try_from(k.prefixlen).ok()?)
            .ok()
            .map(IpNetwork::V6)
    }
}

/// What a rule id stands for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleLabel {
    /// A single prefix.
    Cidr(IpNetwork),
    /// A named set of prefixes (a feed, a country).
    Set(String),
}

impl std::fmt::Display for RuleLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cidr(net) => write!(f, "{net}"),
            Self::Set(name) => write!(f, "set:{name}"),
        }
    }
}

impl RuleLabel {
    pub(super) fn of(info: &RuleInfo) -> Option<Self> {
        match info.kind {
            RULE_CIDR => {
                let net = if info.family == 4 {
                    let addr: [u8; 4] = info.addr[..4].try_into().ok()?;
                    IpNetwork::V4(Ipv4Network::new(addr.into(), info.prefixlen).ok()?)
                } else {
                    IpNetwork::V6(Ipv6Network::new(info.addr.into(), info.prefixlen).ok()?)
                };
                Some(Self::Cidr(net))
            }
            RULE_SET => {
                let end = info
                    .name
                    .iter()
                    .position(|b| *b == 0)
                    .unwrap_or(info.name.len());
                Some(Self::Set(
                    String::from_utf8_lossy(&info.name[..end]).into_owned(),
                ))
            }
            _ => None,
        }
    }

    pub(super) fn info(&self, action: Action, prefixes_v4: u32, prefixes_v6: u32) -> RuleInfo {
        let mut info = RuleInfo {
            prefixes_v4,
            prefixes_v6,
            action: action as u8,
            ..RuleInfo::default()
        };
        match self {
            Self::Cidr(net) => {
                info.kind = RULE_CIDR;
                info.prefixlen = net.prefix();
                match net {
                    IpNetwork::V4(n) => {
                        info.family = 4;
                        info.addr[..4].copy_from_slice(&n.network().octets());
                    }
                    IpNetwork::V6(n) => {
                        info.family = 6;
                        info.addr = n.network().octets();
                    }
                }
            }
            Self::Set(name) => {
                info.kind = RULE_SET;
                let bytes = name.as_bytes();
                let n = bytes.len().min(RuleInfo::NAME_MAX);
                info.name[..n].copy_from_slice(&bytes[..n]);
            }
        }
        info
    }
}

/// The prefixes of the active policy. Each family is shared, so an edit of one family
/// copies only that one and an unchanged family is recognised without comparing.
#[derive(Debug, Clone, Default)]
pub(super) struct RuleBook {
    pub(super) v4: Arc<Book<Ipv4Network>>,
    pub(super) v6: Arc<Book<Ipv6Network>>,
}

/// What a new policy means, before anything is written.
#[derive(Debug)]
pub(super) struct Planned {
    /// The counts and ids of the change (its IPv4 path and in-place edits are filled in
    /// by the writer).
    pub(super) report: ReplaceReport,
    /// Every prefix of the new policy with its rule.
    pub(super) book: RuleBook,
    /// The whole rule directory after the change.
    pub(super) directory: BTreeMap<u32, RuleInfo>,
    /// Ids whose counters start again from zero.
    pub(super) fresh: BTreeSet<u32>,
}

/// Plans the replacement of the rules in `old` (the loaded directory: id → rule) by
/// `policy`. A rule or set that stays (same prefix or set name) keeps its id, so its
/// counters continue, whether its action changed or not; a new one takes an id no
/// loaded rule uses, and only when none is left one a removed rule frees. More rules
/// than the directory holds is an error.
pub(super) fn plan(old: &BTreeMap<u32, RuleInfo>, policy: &CompiledShield) -> Result<Planned> {
    let by_label: HashMap<RuleLabel, (u32, u8)> = old
        .iter()
        .filter_map(|(id, info)| RuleLabel::of(info).map(|l| (l, (*id, info.action))))
        .collect();
    let labels: Vec<(RuleLabel, Action)> = policy
        .rules
        .iter()
        .map(|r| (RuleLabel::Cidr(r.cidr), r.action))
        .chain(
            policy
                .sets
                .iter()
                .map(|s| (RuleLabel::Set(s.name.clone()), s.action)),
        )
        .collect();
    if labels.len() >= SHIELD_MAX_RULES as usize {
        return Err(BpfError::BadSize {
            map: RULE_COUNTERS.to_string(),
            what: "rule count",
            got: labels.len(),
            expected: SHIELD_MAX_RULES as usize - 1,
        });
    }
    let kept: BTreeSet<u32> = labels
        .iter()
        .filter_map(|(l, _)| by_label.get(l).map(|(id, _)| *id))
        .collect();
    // New rules take ids no current rule uses; ids of rules being removed only when
    // nothing else is left.
    let mut unused = (1..SHIELD_MAX_RULES).filter(|id| !old.contains_key(id));
    let mut retired = old.keys().copied().filter(|id| !kept.contains(id));
    let mut report = ReplaceReport {
        added: 0,
        changed: 0,
        removed: 0,
        kept: 0,
        ids: BTreeMap::new(),
        set_ids: BTreeMap::new(),
        ipv4_path: Ipv4Path::Fast,
        ipv6_path: Ipv4Path::Fast,
        v6_records: 0,
        fast_groups: 0,
        fast_spans: 0,
        prefixes: (0, 0),
        in_place: 0,
    };
    let mut ids = Vec::with_capacity(labels.len());
    let mut fresh = BTreeSet::new();
    for (label, action) in &labels {
        let id =
            match by_label.get(label) {
                Some((id, old_action)) => {
                    if *old_action == *action as u8 {
                        report.kept += 1;
                    } else {
                        report.changed += 1;
                    }
                    *id
                }
                None => {
                    let id = unused.next().or_else(|| retired.next()).ok_or_else(|| {
                        BpfError::BadSize {
                            map: RULE_COUNTERS.to_string(),
                            what: "rule count",
                            got: labels.len(),
                            expected: SHIELD_MAX_RULES as usize - 1,
                        }
                    })?;
                    fresh.insert(id);
                    report.added += 1;
                    id
                }
            };
        match label {
            RuleLabel::Cidr(net) => report.ids.insert(*net, id),
            RuleLabel::Set(name) => report.set_ids.insert(name.clone(), id),
        };
        ids.push(id);
    }
    report.removed = old.len() - kept.len();

    // The owners come sorted, so the books are built in bulk rather than by a million
    // searching inserts.
    let (mut v4, mut v6) = (Book::default(), Book::default());
    let mut counts = vec![(0u32, 0u32); labels.len()];
    policy.visit_owners(|net, owner| {
        let index = match owner {
            Owner::Rule(i) => i,
            Owner::Set(i) => policy.rules.len() + i,
        };
        let rule = Rule::new(ids[index], policy.action_of(owner));
        match net {
            IpNetwork::V4(n) => {
                v4.push(n, rule);
                counts[index].0 += 1;
            }
            IpNetwork::V6(n) => {
                v6.push(n, rule);
                counts[index].1 += 1;
            }
        }
    });
    let (v4, v6) = (v4.finish(), v6.finish());
    let directory = labels
        .iter()
        .zip(&ids)
        .zip(&counts)
        .map(|(((label, action), id), (v4, v6))| (*id, label.info(*action, *v4, *v6)))
        .collect();
    let book = RuleBook {
        v4: Arc::new(v4),
        v6: Arc::new(v6),
    };
    report.prefixes = (book.v4.len(), book.v6.len());
    Ok(Planned {
        report,
        book,
        directory,
        fresh,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpm_keys_clear_host_bits_and_read_back() {
        let net: IpNetwork = "10.1.2.3/16".parse().expect("cidr");
        let key = lpm_key(net);
        assert_eq!(key, vec![16, 0, 0, 0, 10, 1, 0, 0]);
        assert_eq!(net_of_key(&key), Some("10.1.0.0/16".parse().expect("cidr")));
        let net6: IpNetwork = "fd00::1/8".parse().expect("cidr");
        let key = lpm_key(net6);
        assert_eq!(key.len(), LpmV6Key::SIZE);
        assert_eq!(&key[..5], &[8, 0, 0, 0, 0xfd]);
        assert!(key[5..].iter().all(|b| *b == 0));
        assert_eq!(net_of_key(&key), Some("fd00::/8".parse().expect("cidr")));
        assert_eq!(net_of_key(&[1, 2]), None);
    }

    #[test]
    fn a_book_reads_back_what_was_written_in_runs_of_one_rule() {
        let deny = Rule::new(7, Action::Deny);
        let allow = Rule::new(9, Action::Allow);
        let v4: Vec<([u8; 4], u8, Rule)> = (0..1000u32)
            .map(|i| ((0x0a00_0000 + i * 256).to_be_bytes(), 32, deny))
            .chain([([192, 0, 2, 0], 24, allow), ([198, 51, 100, 0], 24, deny)])
            .collect();
        let bytes = encode_book(v4.iter().copied());
        // Three runs (/32 deny, /24 deny, /24 allow), their headers and the end.
        assert_eq!(bytes.len(), 1002 * 4 + 4 * BookRun::SIZE);
        let mut back = decode_book::<4>(&bytes);
        let mut want: Vec<([u8; 4], u8, Option<Rule>)> =
            v4.iter().map(|(a, l, r)| (*a, *l, Some(*r))).collect();
        back.sort_by_key(|(a, l, _)| (*a, *l));
        want.sort_by_key(|(a, l, _)| (*a, *l));
        assert_eq!(back, want);
        // Page padding (zeros) after the end, and a stream cut short, read what is whole.
        let mut padded = bytes.clone();
        padded.resize(8192, 0);
        assert_eq!(decode_book::<4>(&padded).len(), 1002);
        // Runs go by rule, action and length: 198.51.100.0/24 (one address), then the /32s.
        assert_eq!(
            decode_book::<4>(&bytes[..2 * BookRun::SIZE + 4 + 10]).len(),
            3
        );
        let v6 = [([0x20u8; 16], 48u8, deny)];
        assert_eq!(
            decode_book::<16>(&encode_book(v6.iter().copied())),
            [([0x20u8; 16], 48u8, Some(deny))]
        );
        assert!(
            decode_book::<16>(&encode_book(std::iter::empty::<([u8; 16], u8, Rule)>())).is_empty()
        );
    }

    #[test]
    fn edits_appended_to_a_book_win_over_what_it_held() {
        let deny = Rule::new(7, Action::Deny);
        let allow = Rule::new(9, Action::Allow);
        let base: Vec<([u8; 4], u8, Rule)> =
            (0..100u8).map(|i| ([10, 0, i, 0], 24, deny)).collect();
        let mut stream = encode_book(base.iter().copied());
        // The end header goes; two edits follow, then a new end.
        stream.truncate(stream.len() - BookRun::SIZE);
        let first =
            encode_edits([([10, 0, 1, 0], 24, None), ([10, 0, 2, 0], 24, Some(allow))].into_iter());
        let second = encode_edits(
            [
                ([10, 0, 1, 0], 24, Some(deny)),
                ([192, 0, 2, 1], 32, Some(allow)),
            ]
            .into_iter(),
        );
        assert_eq!(
            first.len(),
            2 * BookRun::SIZE + 8,
            "a removal run and a rule run"
        );
        stream.extend_from_slice(&first);
        stream.extend_from_slice(&second);
        stream.extend_from_slice(&BookRun::default().to_bytes());
        let mut book = BTreeMap::new();
        for (addr, len, rule) in decode_book::<4>(&stream) {
            match rule {
                Some(rule) => book.insert((addr, len), rule),
                None => book.remove(&(addr, len)),
            };
        }
        assert_eq!(book.len(), 101);
        assert_eq!(
            book.get(&([10, 0, 1, 0], 24)),
            Some(&deny),
            "removed, then back"
        );
        assert_eq!(book.get(&([10, 0, 2, 0], 24)), Some(&allow), "changed");
        assert_eq!(book.get(&([192, 0, 2, 1], 32)), Some(&allow), "new");
        // Without the second edit, the removal stands.
        let mut cut = stream[..stream.len() - second.len() - BookRun::SIZE].to_vec();
        cut.extend_from_slice(&BookRun::default().to_bytes());
        let removed = decode_book::<4>(&cut)
            .into_iter()
            .filter(|(a, _, r)| *a == [10, 0, 1, 0] && r.is_none())
            .count();
        assert_eq!(removed, 1);
    }

    #[test]
    fn rule_labels_round_trip_through_the_directory() {
        for label in [
            RuleLabel::Cidr("10.1.0.0/16".parse().expect("cidr")),
            RuleLabel::Cidr("2001:db8::/32".parse().expect("cidr")),
            RuleLabel::Set("spamhaus-drop".to_string()),
        ] {
            let info = label.info(Action::Deny, 1, 2);
            let back = RuleInfo::from_bytes(&info.to_bytes()).expect("decodes");
            assert_eq!(RuleLabel::of(&back), Some(label));
            assert_eq!((back.prefixes_v4, back.prefixes_v6), (1, 2));
        }
        assert_eq!(RuleLabel::of(&RuleInfo::default()), None);
    }

    fn shield(yaml: &str) -> CompiledShield {
        ironclad_policy::config::compile_str(yaml, std::path::Path::new("p.yaml"))
            .expect("policy")
            .shield
            .expect("a shield section")
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().expect("cidr")
    }

    #[test]
    fn a_first_policy_takes_fresh_ids_and_books_every_prefix() {
        let policy = shield(
            "shield:\n  deny: [10.0.0.0/8, 192.0.2.0/24, 2001:db8::/32]\n  allow: [10.1.0.0/16]\n",
        );
        let planned = plan(&BTreeMap::new(), &policy).expect("plan");
        let r = &planned.report;
        assert_eq!((r.added, r.changed, r.removed, r.kept), (4, 0, 0, 0));
        let ids: BTreeSet<u32> = r.ids.values().copied().collect();
        assert_eq!(ids, (1..=4).collect(), "ids from 1, one per rule");
        assert_eq!(planned.fresh, ids, "every counter starts from zero");
        assert_eq!(r.prefixes, (3, 1));
        assert_eq!(planned.book.v4.len(), 3);
        assert_eq!(planned.book.v6.len(), 1);
        let allow = planned
            .book
            .v4
            .get(&"10.1.0.0/16".parse().expect("cidr"))
            .expect("booked");
        assert_eq!(allow.rule_id, r.ids[&net("10.1.0.0/16")]);
        assert_eq!(allow.action, Action::Allow as u8);
        let info = &planned.directory[&r.ids[&net("2001:db8::/32")]];
        assert_eq!(
            RuleLabel::of(info),
            Some(RuleLabel::Cidr(net("2001:db8::/32")))
        );
        assert_eq!((info.prefixes_v4, info.prefixes_v6), (0, 1));
        assert_eq!(info.action, Action::Deny as u8);
    }

    #[test]
    fn a_rule_that_stays_keeps_its_id_and_counters() {
        let first = plan(
            &BTreeMap::new(),
            &shield("shield:\n  deny: [10.0.0.0/8, 192.0.2.0/24]\n  allow: [10.1.0.0/16]\n"),
        )
        .expect("plan");
        let old = first.directory.clone();
        let id = |p: &Planned, n: &str| p.report.ids[&net(n)];
        // 10/8 stays, 10.1/16 turns from allow to deny, 192.0.2/24 goes, 198.51.100/24 comes.
        let second = plan(
            &old,
            &shield("shield:\n  deny: [10.0.0.0/8, 10.1.0.0/16, 198.51.100.0/24]\n"),
        )
        .expect("plan");
        let r = &second.report;
        assert_eq!((r.added, r.changed, r.removed, r.kept), (1, 1, 1, 1));
        assert_eq!(id(&second, "10.0.0.0/8"), id(&first, "10.0.0.0/8"));
        assert_eq!(id(&second, "10.1.0.0/16"), id(&first, "10.1.0.0/16"));
        let new = id(&second, "198.51.100.0/24");
        assert!(
            !old.contains_key(&new),
            "a new rule does not take the id of one just removed while others are free"
        );
        assert_eq!(
            second.fresh,
            BTreeSet::from([new]),
            "only the new rule restarts"
        );
        assert_eq!(second.directory.len(), 3);
        assert_eq!(
            second.directory[&id(&second, "10.1.0.0/16")].action,
            Action::Deny as u8
        );

        // The same policy again: nothing added, changed or removed.
        let again = plan(
            &second.directory,
            &shield("shield:\n  deny: [10.0.0.0/8, 10.1.0.0/16, 198.51.100.0/24]\n"),
        )
        .expect("plan");
        let r = &again.report;
        assert_eq!((r.added, r.changed, r.removed, r.kept), (0, 0, 0, 3));
        assert!(again.fresh.is_empty());
        assert_eq!(again.directory, second.directory);
    }

    #[test]
    fn a_full_directory_reuses_a_removed_id_and_refuses_one_rule_too_many() {
        // Every id in use by a /32 that the new policy drops.
        let old: BTreeMap<u32, RuleInfo> = (1..SHIELD_MAX_RULES)
            .map(|id| {
                let addr = std::net::Ipv4Addr::from(0x0a00_0000 + id);
                let label =
                    RuleLabel::Cidr(IpNetwork::V4(Ipv4Network::new(addr, 32).expect("cidr")));
                (id, label.info(Action::Deny, 1, 0))
            })
            .collect();
        let planned = plan(&old, &shield("shield:\n  deny: [192.0.2.0/24]\n")).expect("plan");
        let r = &planned.report;
        assert_eq!((r.added, r.removed), (1, SHIELD_MAX_RULES as usize - 1));
        assert_eq!(r.ids[&net("192.0.2.0/24")], 1, "the first freed id");
        assert_eq!(planned.directory.len(), 1);

        // The compiler stops at the directory's size; a policy built another way (or a
        // compiler bug) must still not overrun it.
        let most: Vec<String> = (1..SHIELD_MAX_RULES)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let mut policy = shield(&format!("shield:\n  deny: [{}]\n", most.join(", ")));
        assert_eq!(
            plan(&BTreeMap::new(), &policy)
                .expect("the most rules fit")
                .report
                .added,
            SHIELD_MAX_RULES as usize - 1
        );
        let mut extra = policy.rules[0].clone();
        extra.cidr = net("192.0.2.0/24");
        policy.rules.push(extra);
        let err = plan(&BTreeMap::new(), &policy).expect_err("one rule too many");
        assert!(
            matches!(
                err,
                BpfError::BadSize {
                    what: "rule count",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_set_is_one_rule_with_its_prefix_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let feed = dir.path().join("drop.txt");
        std::fs::write(&feed, "192.0.2.0/24\n198.51.100.0/24\n2001:db8:bad::/48\n").expect("feed");
        let policy = shield(&format!(
            "shield:\n  deny: [203.0.113.0/24]\n  deny_feeds:\n    - path: {}\n      format: plain\n",
            feed.display()
        ));
        let planned = plan(&BTreeMap::new(), &policy).expect("plan");
        let r = &planned.report;
        assert_eq!(r.added, 2, "the CIDR rule and the set");
        let set = r.set_ids["drop"];
        let info = &planned.directory[&set];
        assert_eq!(
            RuleLabel::of(info),
            Some(RuleLabel::Set("drop".to_string()))
        );
        assert_eq!((info.prefixes_v4, info.prefixes_v6), (2, 1));
        let booked = planned
            .book
            .v4
            .get(&"198.51.100.0/24".parse().expect("cidr"))
            .expect("booked");
        assert_eq!(booked.rule_id, set);
        assert_eq!(r.prefixes, (3, 1));
    }
}
