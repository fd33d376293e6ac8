// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * connloop.c - opens COUNT TCP connections to DSTIP:PORT one after another (connect,
 * then close with a RST: SO_LINGER 0, so no TIME_WAIT uses up the local ports), and
 * prints the nanoseconds the loop took. Every connection is a new flow for a firewall
 * between the two ends: a SYN, a SYN-ACK, an ACK and a RST.
 *
 * usage: connloop DSTIP PORT COUNT
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sockaddr_in to = { .sin_family = AF_INET };
	struct linger rst = { .l_onoff = 1, .l_linger = 0 };
	struct timespec t0, t1;
	unsigned long long count;

	if (argc != 4 || inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
		fprintf(stderr, "usage: connloop DSTIP PORT COUNT\n");
		return 2;
	}
	to.sin_port = htons((unsigned short)atoi(argv[2]));
	count = strtoull(argv[3], NULL, 10);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned long long i = 0; i < count; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		if (fd < 0) {
			perror("socket");
			return 1;
		}
		if (connect(fd, (struct sockaddr *)&to, sizeof(to)) < 0) {
			fprintf(stderr, "connection %llu: ", i);
			perror("connect");
			return 1;
		}
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst));
		close(fd);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%lld\n", (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL +
				 (t1.tv_nsec - t0.tv_nsec));
	return 0;
}
