/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * bitvec.h - the bit-vector classifier both firewalls evaluate (the stateful firewall's
 * rules per direction and protocol, the identity firewall's rules per identity key and
 * protocol), compiled by ironclad_policy::firewall::Classifier.
 *
 * Each dimension of a bucket maps a packet's value to a class: addresses through an LPM
 * trie keyed by struct ic_fw_addr_key, ports through one keyed by struct
 * ic_fw_port_key (the tag's four bytes name the bucket and dimension). A class is a
 * bitmap of the bucket's rules in policy order: its 64-rule words in a hash keyed by
 * struct ic_fw_word_key (absent words are zero), its summary (bit w: word w is not zero)
 * in a hash keyed by slot << 32 | class. The rule is the lowest bit of the AND of the
 * classes: the summaries are ANDed first, so only words that can hold a match are read.
 * The maps are the caller's (each program has its own); the functions are inlined, so
 * every map argument is a constant the verifier sees.
 */
#ifndef IRONCLAD_BITVEC_H
#define IRONCLAD_BITVEC_H

#include "ironclad.h"

/* The index of the lowest set bit of a word, 0 for 0 (BPF has no ctz instruction).
 * Without a branch: the bits below the lowest set one are counted SWAR-style. Six tests
 * of the word, one per bit of the index, made 64 paths with 64 different constants,
 * and Debian 12's 6.1 verifier walked each of them through everything after it: some
 * 430,000 instructions for each identity key search, where 6.12 and 6.18 needed about
 * 50,000 for the whole hook (the stateful firewall's program: 916,000 on 6.1). */
static __always_inline __u32 ic_lowest_bit(__u64 w)
{
	__u64 x = (w & -w) - 1;

	x = x - ((x >> 1) & 0x5555555555555555ULL);
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (__u32)((x * 0x0101010101010101ULL) >> 56) & 63;
}

/* The class of `addr` (16 bytes, IPv4 as IPv4-mapped) under `tag`; -1 when none. The
 * address is taken as two 8-byte words: from a byte array the compiler cannot prove
 * aligned, the BPF backend (which has no unaligned loads) copies it a byte at a time,
 * some 50 instructions per lookup. */
static __always_inline int ic_bv_addr_class(void *trie, const __u8 tag[4], const __u64 addr[2],
					    __u32 *class_id)
{
	struct ic_fw_addr_key key __attribute__((aligned(8))) = { .prefixlen = 32 + 128 };
	__u32 *c;

	__builtin_memcpy(key.tag, tag, 4);
	__builtin_memcpy(key.addr, addr, 16);
	c = bpf_map_lookup_elem(trie, &key);
	if (!c)
		return -1;
	*class_id = *c;
	return 0;
}

/* The class of the port (or ICMP type) `value` under `tag`; -1 when none. */
static __always_inline int ic_bv_port_class(void *trie, const __u8 tag[4], __u16 value,
					    __u32 *class_id)
{
	struct ic_fw_port_key key = { .prefixlen = 32 + 16 };
	__u32 *c;

	__builtin_memcpy(key.tag, tag, 4);
	key.port[0] = value >> 8;
	key.port[1] = value & 0xff;
	c = bpf_map_lookup_elem(trie, &key);
	if (!c)
		return -1;
	*class_id = *c;
	return 0;
}

/* ANDs the summary of `class_id` into summary; -1 when the class has none or the AND
 * leaves no candidate word (nothing can match: the caller looks no further). */
static __always_inline int ic_bv_and_summary(void *summaries, __u32 slot, __u32 class_id,
					     __u64 summary[IC_FW_SUMMARY_WORDS])
{
	__u64 skey = ((__u64)slot << 32) | class_id, any = 0;
	struct ic_fw_summary *sum = bpf_map_lookup_elem(summaries, &skey);

	if (!sum)
		return -1;
#pragma unroll
	for (int s = 0; s < IC_FW_SUMMARY_WORDS; s++) {
		summary[s] &= sum->words[s];
		any |= summary[s];
	}
	return any ? 0 : -1;
}

/* ANDs the summaries of `n` classes into summary (all ones first); -1 when a class has
 * none or the AND is empty (it cannot match). */
static __always_inline int ic_bv_summaries(void *summaries, __u32 slot, const __u32 *classes,
					   int n, __u64 summary[IC_FW_SUMMARY_WORDS])
{
#pragma unroll
	for (int s = 0; s < IC_FW_SUMMARY_WORDS; s++)
		summary[s] = ~0ULL;
#pragma unroll
	for (int d = 0; d < n; d++) {
		if (ic_bv_and_summary(summaries, slot, classes[d], summary))
			return -1;
	}
	return 0;
}

/* Takes the lowest candidate word out of summary into *w; 0 when none is left. */
static __always_inline int ic_bv_next_word(__u64 summary[IC_FW_SUMMARY_WORDS], __u32 *w)
{
	__u32 s;
	__u64 sum;

	for (s = 0; s < IC_FW_SUMMARY_WORDS; s++) {
		if (summary[s & 3])
			break;
	}
	if (s >= IC_FW_SUMMARY_WORDS)
		return 0;
	sum = summary[s & 3];
	*w = s * 64 + ic_lowest_bit(sum);
	summary[s & 3] = sum & (sum - 1);
	return 1;
}

/* Bitmap word w of the AND of `n` classes. */
static __always_inline __u64 ic_bv_word(void *words, __u32 slot, const __u32 *classes, int n,
					__u32 w)
{
	__u64 acc = ~0ULL;

#pragma unroll
	for (int d = 0; d < n; d++) {
		struct ic_fw_word_key key = {
			.class_id = classes[d],
			.word = w,
			.slot = slot,
		};
		__u64 *word = bpf_map_lookup_elem(words, &key);

		if (!word)
			return 0;
		acc &= *word;
	}
	return acc;
}

#endif /* IRONCLAD_BITVEC_H */
