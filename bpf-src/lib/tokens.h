/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * tokens.h - the token bucket of every rate limit: the Shield's per-source limit, the
 * identity firewall's connect rate per executable, and the stateful firewall's rule,
 * source, subnet, port and interface limits. A bucket holds tokens in billionths (one
 * event takes IC_TOKEN) and is refilled at `per_sec` events a second up to `cap`.
 * Where a bucket lives, how a new one starts and what a refusal counts stay with each
 * program.
 */
#ifndef IRONCLAD_TOKENS_H
#define IRONCLAD_TOKENS_H

#include "ironclad.h"

/* One event's worth of tokens. */
#define IC_TOKEN ((__s64)1000000000)

/* A bucket idle this long is simply full (and the refill's product cannot overflow). */
#define IC_TOKENS_IDLE_NS (10ULL * 1000000000ULL)

/* Takes one token from the bucket (*tokens, *last_ns) at `now`, after refilling it; 0
 * when none is left. Lock-free: concurrent CPUs may refill or take at once and let a
 * few more through than the budget, never fewer. */
static __always_inline int ic_tokens_take(__s64 *tokens, __u64 *last_ns, __u64 per_sec,
					  __s64 cap, __u64 now)
{
	if (now > *last_ns) {
		__u64 elapsed = now - *last_ns;
		__s64 t = *tokens;

		if (elapsed >= IC_TOKENS_IDLE_NS)
			t = cap;
		else
			t += (__s64)(elapsed * per_sec);
		if (t > cap)
			t = cap;
		*tokens = t;
		*last_ns = now;
	}
	if (*tokens < IC_TOKEN)
		return 0;
	__sync_fetch_and_add(tokens, -IC_TOKEN);
	return 1;
}

#endif /* IRONCLAD_TOKENS_H */
