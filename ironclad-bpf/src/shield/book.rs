//! The Shield's memory of every prefix it enforces, with its rule: a sorted pair of
//! flat vectors rather than a `BTreeMap`.
//!
//! A handle keeps the book of the policy it applied last, so that the next feed update
//! is written as edits without reading a million prefixes back from the kernel. As a
//! `BTreeMap<Ipv4Network, Rule>` that memory was about 17 bytes a prefix (17 MB of a
//! daemon holding a 1M-line feed); here an IPv4 prefix costs 8 bytes (its 5-byte key
//! and a 3-byte rule), an IPv6 one 20. Edits in bulk are made in place, in two passes
//! over the entries after the first edit ([`Book::apply`]); a single insert or removal
//! moves the tail of the vectors (a few MB at a million prefixes, well under a
//! millisecond).

use ironclad_core::abi::{Rule, SHIELD_MAX_RULES};

// A rule id is below SHIELD_MAX_RULES, so it fits the 16 bits a packed rule keeps (the
// kernel's book runs store it in 16 bits too).
const _: () = assert!(SHIELD_MAX_RULES <= 1 << 16);

/// What a removal's place holds until [`Book::finish_removing`] drops it.
const UNUSED: Rule = Rule {
    rule_id: 0,
    action: 0,
    _pad0: [0; 3],
};

/// A rule in three bytes: its id (little endian, 16 bits) and its action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed([u8; 3]);

impl Packed {
    fn of(rule: Rule) -> Self {
        // Ids are below SHIELD_MAX_RULES (checked where rules are made); an id read
        // from a tampered table that does not fit is kept as the largest one.
        let [a, b] = u16::try_from(rule.rule_id)
            .unwrap_or(u16::MAX)
            .to_le_bytes();
        Self([a, b, rule.action])
    }

    fn rule(self) -> Rule {
        let [a, b, action] = self.0;
        Rule {
            rule_id: u32::from(u16::from_le_bytes([a, b])),
            action,
            _pad0: [0; 3],
        }
    }
}

/// Every prefix of one family with its rule, sorted by prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Book<K> {
    keys: Vec<K>,
    rules: Vec<Packed>,
}

impl<K> Default for Book<K> {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            rules: Vec::new(),
        }
    }
}

impl<K: Ord + Copy> Book<K> {
    /// The book written by `changes` in order: a prefix with a rule is set to it, one
    /// without is removed; a later change of a prefix wins over an earlier one.
    pub(crate) fn from_changes(changes: impl IntoIterator<Item = (K, Option<Rule>)>) -> Self {
        let mut book = Self::default();
        let mut removed = Vec::new();
        for (key, rule) in changes {
            if rule.is_none() {
                removed.push(book.keys.len());
            }
            book.push(key, rule.unwrap_or(UNUSED));
        }
        book.finish_removing(&removed)
    }

    /// Appends `key` with `rule`, in any order: [`Book::finish`] sorts the book then.
    pub(crate) fn push(&mut self, key: K, rule: Rule) {
        self.keys.push(key);
        self.rules.push(Packed::of(rule));
    }

    /// The book of what was pushed: sorted, one rule per prefix (the last pushed).
    pub(crate) fn finish(self) -> Self {
        self.finish_removing(&[])
    }

    /// [`Book::finish`], the entries at the (ascending) positions `removed` being
    /// removals rather than rules.
    fn finish_removing(mut self, removed: &[usize]) -> Self {
        if removed.is_empty() && self.keys.windows(2).all(|w| w[0] < w[1]) {
            // The usual case (a policy's owners come sorted): no copy.
            self.keys.shrink_to_fit();
            self.rules.shrink_to_fit();
            return self;
        }
        // A stable sort keeps the changes of one prefix in their order; the last wins.
        let mut order: Vec<usize> = (0..self.keys.len()).collect();
        order.sort_by_key(|&i| self.keys[i]);
        let mut book = Self::default();
        for (n, &i) in order.iter().enumerate() {
            let last_of_key = order
                .get(n + 1)
                .is_none_or(|&j| self.keys[j] != self.keys[i]);
            if last_of_key && removed.binary_search(&i).is_err() {
                book.keys.push(self.keys[i]);
                book.rules.push(self.rules[i]);
            }
        }
        book
    }

    /// How many prefixes.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The rule of exactly `key`.
    pub(crate) fn get(&self, key: &K) -> Option<Rule> {
        let i = self.keys.binary_search(key).ok()?;
        self.rules.get(i).map(|r| r.rule())
    }

    /// Whether the book has no prefix.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether the book has exactly `key`.
    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.keys.binary_search(key).is_ok()
    }

    /// Sets the rule of `key`; gives the one it had.
    pub(crate) fn insert(&mut self, key: K, rule: Rule) -> Option<Rule> {
        match self.keys.binary_search(&key) {
            Ok(i) => {
                let old = self.rules[i].rule();
                self.rules[i] = Packed::of(rule);
                Some(old)
            }
            Err(i) => {
                self.keys.insert(i, key);
                self.rules.insert(i, Packed::of(rule));
                None
            }
        }
    }

    /// Removes `key`; gives the rule it had.
    pub(crate) fn remove(&mut self, key: &K) -> Option<Rule> {
        let i = self.keys.binary_search(key).ok()?;
        self.keys.remove(i);
        Some(self.rules.remove(i).rule())
    }

    /// Applies `changes` (a prefix with a rule set to it, one without removed; a later
    /// change of a prefix wins): a handful one by one, more in one merged pass.
    pub(crate) fn apply(&mut self, changes: &[(K, Option<Rule>)]) {
        if changes.len() <= 8 {
            for (key, rule) in changes {
                match rule {
                    Some(rule) => self.insert(*key, *rule),
                    None => self.remove(key),
                };
            }
            return;
        }
        // In place, without a second book beside the first (8 MB at a million
        // prefixes, and the time to fault it in): rules changed where they are, then
        // one pass moving the entries left over the removed ones, then one moving them
        // right to open the gaps for the new ones.
        let changes = Self::from_changes_keeping_removals(changes);
        let mut removed = Vec::new();
        let mut added = Vec::new();
        for (key, rule) in changes {
            match (self.keys.binary_search(&key), rule) {
                (Ok(i), Some(rule)) => self.rules[i] = rule,
                (Ok(i), None) => removed.push(i),
                (Err(_), Some(rule)) => added.push((key, rule)),
                (Err(_), None) => {}
            }
        }
        if !removed.is_empty() {
            let mut write = removed[0];
            for (n, &gone) in removed.iter().enumerate() {
                let next = removed.get(n + 1).copied().unwrap_or(self.keys.len());
                self.keys.copy_within(gone + 1..next, write);
                self.rules.copy_within(gone + 1..next, write);
                write += next - gone - 1;
            }
            self.keys.truncate(write);
            self.rules.truncate(write);
        }
        if let Some(&(key, rule)) = added.first() {
            let end = self.keys.len();
            self.keys.resize(end + added.len(), key);
            self.rules.resize(end + added.len(), rule);
            // From the last new entry back: the entries after it move right by the new
            // ones not yet placed, then it goes just before them.
            let mut tail = end;
            for (n, &(key, rule)) in added.iter().enumerate().rev() {
                let at = self.keys[..tail].partition_point(|k| *k < key);
                self.keys.copy_within(at..tail, at + n + 1);
                self.rules.copy_within(at..tail, at + n + 1);
                self.keys[at + n] = key;
                self.rules[at + n] = rule;
                tail = at;
            }
        }
    }

    /// `changes` sorted by prefix, one (the last) per prefix, removals kept.
    fn from_changes_keeping_removals(changes: &[(K, Option<Rule>)]) -> Vec<(K, Option<Packed>)> {
        let mut order: Vec<usize> = (0..changes.len()).collect();
        order.sort_by_key(|&i| changes[i].0);
        order
            .iter()
            .enumerate()
            .filter(|(n, &i)| {
                order
                    .get(n + 1)
                    .is_none_or(|&j| changes[j].0 != changes[i].0)
            })
            .map(|(_, &i)| (changes[i].0, changes[i].1.map(Packed::of)))
            .collect()
    }

    /// Every prefix and its rule, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (K, Rule)> + '_ {
        self.keys
            .iter()
            .zip(&self.rules)
            .map(|(k, r)| (*k, r.rule()))
    }

    /// The prefixes from `low` to `high` (both included) and their rules, in order.
    pub(crate) fn range(&self, low: K, high: K) -> impl Iterator<Item = (K, Rule)> + '_ {
        let start = self.keys.partition_point(|k| *k < low);
        let end = self.keys.partition_point(|k| *k <= high).max(start);
        self.keys[start..end]
            .iter()
            .zip(&self.rules[start..end])
            .map(|(k, r)| (*k, r.rule()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ipnetwork::Ipv4Network;
    use ironclad_core::abi::Action;

    use super::*;

    fn net(i: u32, len: u8) -> Ipv4Network {
        Ipv4Network::new((i << 8).into(), len).unwrap()
    }

    /// Random changes (sets and removals, repeated prefixes, in no order) leave the book
    /// as they leave a `BTreeMap`, whether built from them, applied in bulk or one by one.
    #[test]
    fn a_book_matches_a_btreemap_under_random_changes() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        let change = |n: &mut dyn FnMut(u64) -> u64| {
            let key = net(n(500) as u32, 24 + n(9) as u8);
            let rule = (n(4) != 0).then(|| {
                Rule::new(
                    n(u64::from(SHIELD_MAX_RULES)) as u32,
                    if n(2) == 0 {
                        Action::Deny
                    } else {
                        Action::Allow
                    },
                )
            });
            (key, rule)
        };
        let first: Vec<_> = (0..2_000).map(|_| change(&mut next)).collect();
        let mut want = BTreeMap::new();
        for (key, rule) in &first {
            match rule {
                Some(rule) => want.insert(*key, *rule),
                None => want.remove(key),
            };
        }
        let mut book = Book::from_changes(first.iter().copied());
        let got = |b: &Book<Ipv4Network>| b.iter().collect::<Vec<_>>();
        let of =
            |m: &BTreeMap<Ipv4Network, Rule>| m.iter().map(|(k, r)| (*k, *r)).collect::<Vec<_>>();
        assert_eq!(got(&book), of(&want));
        for round in 0..20 {
            let changes: Vec<_> = (0..(round * 7 % 40)).map(|_| change(&mut next)).collect();
            let before = want.clone();
            for (key, rule) in &changes {
                let old = before.get(key).copied();
                assert_eq!(book.get(key), old);
                assert_eq!(book.contains_key(key), old.is_some());
                match rule {
                    Some(rule) => want.insert(*key, *rule),
                    None => want.remove(key),
                };
            }
            book.apply(&changes);
            assert_eq!(got(&book), of(&want), "round {round}");
            assert_eq!(book.len(), want.len());
            let (low, high) = (net(100, 24), net(300, 32));
            assert_eq!(
                book.range(low, high).collect::<Vec<_>>(),
                want.range(low..=high)
                    .map(|(k, r)| (*k, *r))
                    .collect::<Vec<_>>()
            );
        }
        let sorted = Book::from_changes(want.iter().map(|(k, r)| (*k, Some(*r))));
        assert_eq!(sorted, book);
        assert_eq!(book.range(net(9, 32), net(1, 24)).count(), 0);
    }

    /// A rule keeps its id and action through packing, up to the largest id.
    #[test]
    fn packed_rules_keep_their_id_and_action() {
        for id in [1, 2, 255, 256, SHIELD_MAX_RULES - 1] {
            let rule = Rule::new(id, Action::Allow);
            assert_eq!(Packed::of(rule).rule(), rule);
        }
    }
}
