// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * blast.c - sends COUNT prebuilt IPv4/UDP frames out of IFNAME with sendmmsg on an
 * AF_PACKET socket, cycling through the source addresses in SRCFILE (one per line), and
 * prints the nanoseconds the sending loop took. On a veth pair the receiving side's
 * processing (XDP or the netdev ingress hook) runs in this thread's softirq, so the time
 * covers the whole path.
 *
 * usage: blast IFNAME COUNT DSTMAC SRCFILE [DSTIP SPORT DPORT]
 * (the destination defaults to 10.231.0.1, the ports to 40000 -> 9)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRAME 60
#define BATCH 64
#define MAX_SOURCES 65536

static uint16_t csum(const void *data, size_t len)
{
	const uint16_t *p = data;
	uint32_t sum = 0;

	for (; len > 1; len -= 2)
		sum += *p++;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

int main(int argc, char **argv)
{
	static unsigned char frames[MAX_SOURCES][FRAME];
	unsigned char dst[6], src[6];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	struct sockaddr_ll sll = { 0 };
	struct timespec t0, t1;
	struct ifreq ifr = { 0 };
	unsigned long long count, sent = 0;
	char line[64];
	size_t n = 0;
	FILE *f;
	int fd;

	struct in_addr daddr = { .s_addr = htonl(0x0ae70001) }; /* 10.231.0.1 */
	unsigned int sport = 40000, dport = 9;

	if ((argc != 5 && argc != 8) ||
	    (argc == 8 && (inet_pton(AF_INET, argv[5], &daddr) != 1 ||
			   sscanf(argv[6], "%u", &sport) != 1 || sscanf(argv[7], "%u", &dport) != 1)) ||
	    sscanf(argv[3], "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &dst[0], &dst[1], &dst[2], &dst[3],
		   &dst[4], &dst[5]) != 6) {
		fprintf(stderr, "usage: blast IFNAME COUNT DSTMAC SRCFILE [DSTIP SPORT DPORT]\n");
		return 2;
	}
	count = strtoull(argv[2], NULL, 10);
	fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", argv[1]);
	if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
		perror("SIOCGIFHWADDR");
		return 1;
	}
	memcpy(src, ifr.ifr_hwaddr.sa_data, 6);
	f = fopen(argv[4], "r");
	if (!f) {
		perror(argv[4]);
		return 1;
	}
	while (n < MAX_SOURCES && fgets(line, sizeof(line), f)) {
		unsigned char *fr = frames[n];
		struct iphdr *ip = (struct iphdr *)(fr + 14);
		struct udphdr *udp = (struct udphdr *)(fr + 34);
		struct in_addr a;

		line[strcspn(line, "\r\n")] = 0;
		if (inet_pton(AF_INET, line, &a) != 1)
			continue;
		memset(fr, 0, FRAME);
		memcpy(fr, dst, 6);
		memcpy(fr + 6, src, 6);
		fr[12] = 0x08;
		ip->version = 4;
		ip->ihl = 5;
		ip->ttl = 64;
		ip->protocol = IPPROTO_UDP;
		ip->tot_len = htons(FRAME - 14);
		ip->saddr = a.s_addr;
		ip->daddr = daddr.s_addr;
		ip->check = csum(ip, sizeof(*ip));
		udp->source = htons((uint16_t)sport);
		udp->dest = htons((uint16_t)dport);
		udp->len = htons(FRAME - 34);
		n++;
	}
	fclose(f);
	if (!n) {
		fprintf(stderr, "no sources in %s\n", argv[4]);
		return 1;
	}
	sll.sll_family = AF_PACKET;
	sll.sll_ifindex = if_nametoindex(argv[1]);
	sll.sll_halen = 6;
	memcpy(sll.sll_addr, dst, 6);
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_len = FRAME;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &sll;
		msgs[i].msg_hdr.msg_namelen = sizeof(sll);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (sent < count) {
		unsigned int batch = count - sent < BATCH ? (unsigned int)(count - sent) : BATCH;
		int r;

		for (unsigned int i = 0; i < batch; i++)
			iov[i].iov_base = frames[(sent + i) % n];
		r = sendmmsg(fd, msgs, batch, 0);
		if (r < 0) {
			perror("sendmmsg");
			return 1;
		}
		sent += (unsigned int)r;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%lld\n", (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL +
				 (t1.tv_nsec - t0.tv_nsec));
	return 0;
}
