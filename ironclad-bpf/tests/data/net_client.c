/* A tiny network client for the identity-firewall tests.
 *
 *   net_client MODE ADDR PORT [COUNT] [COMM]
 *   net_client batch [COMM]
 *
 * MODE: tcp4 | tcp6 (connect) | udp4 | udp6 (unconnected sendto) | wait-tcp4 (read a
 * line from stdin first). ADDR may be an IPv4-mapped IPv6 address with tcp6/udp6.
 * COUNT attempts are made (default 1); COMM, if given, renames the task first.
 * Prints "ok=N eperm=M other=K" and exits 0.
 *
 * batch: one attempt per line of stdin, "MODE ADDR PORT" with MODE tcp4 | tcp6 (a
 * non-blocking connect) | uconn4 | uconn6 (a UDP connect, which sends nothing); prints
 * one line per attempt: ok, eperm or other (any other error: without a route, as in a
 * network namespace of its own, every attempt the firewall lets through is "other").
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef VARIANT
#define VARIANT 0
#endif

/* One attempt of batch mode: 0 connected (or in progress), else errno. */
static int attempt(const char *mode, const char *addr, int port)
{
	int v6 = mode[strlen(mode) - 1] == '6', udp = mode[0] == 'u', fd, rc;
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	struct sockaddr *sa;
	socklen_t len;

	if (v6 ? inet_pton(AF_INET6, addr, &a6.sin6_addr) != 1 : inet_pton(AF_INET, addr, &a4.sin_addr) != 1)
		return EINVAL;
	sa = v6 ? (struct sockaddr *)&a6 : (struct sockaddr *)&a4;
	len = v6 ? sizeof(a6) : sizeof(a4);
	fd = socket(v6 ? AF_INET6 : AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return errno;
	rc = connect(fd, sa, len) == 0 || errno == EINPROGRESS ? 0 : errno;
	close(fd);
	return rc;
}

static int batch(void)
{
	char line[256], mode[16], addr[64];
	int port;

	while (fgets(line, sizeof(line), stdin)) {
		int rc;

		if (sscanf(line, "%15s %63s %d", mode, addr, &port) != 3)
			return 5;
		rc = attempt(mode, addr, port);
		puts(rc == 0 ? "ok" : rc == EPERM ? "eperm" : "other");
	}
	return 0;
}

int main(int argc, char **argv)
{
	int ok = 0, eperm = 0, other = 0, count = 1;
	const char *mode;
	int port;

	if (argc >= 2 && strcmp(argv[1], "batch") == 0) {
		if (argc > 2)
			prctl(PR_SET_NAME, argv[2], 0, 0, 0);
		return batch();
	}
	if (argc < 4)
		return 2;
	mode = argv[1];
	port = atoi(argv[3]);
	if (argc > 4)
		count = atoi(argv[4]);
	if (argc > 5)
		prctl(PR_SET_NAME, argv[5], 0, 0, 0);
	if (strncmp(mode, "wait-", 5) == 0) {
		char line[16];

		if (!fgets(line, sizeof(line), stdin))
			return 3;
		mode += 5;
	}
	for (int i = 0; i < count; i++) {
		int v6 = mode[3] == '6', udp = mode[0] == 'u', fd, rc;
		struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(port) };
		struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
		struct sockaddr *sa;
		socklen_t len;

		if (v6) {
			inet_pton(AF_INET6, argv[2], &a6.sin6_addr);
			sa = (struct sockaddr *)&a6;
			len = sizeof(a6);
		} else {
			inet_pton(AF_INET, argv[2], &a4.sin_addr);
			sa = (struct sockaddr *)&a4;
			len = sizeof(a4);
		}
		fd = socket(v6 ? AF_INET6 : AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
		if (fd < 0)
			return 4;
		if (udp)
			rc = sendto(fd, "x", 1, 0, sa, len) == 1 ? 0 : -1;
		else
			rc = connect(fd, sa, len);
		if (rc == 0)
			ok++;
		else if (errno == EPERM)
			eperm++;
		else
			other++;
		close(fd);
	}
	printf("ok=%d eperm=%d other=%d variant=%d\n", ok, eperm, other, VARIANT);
	return 0;
}
