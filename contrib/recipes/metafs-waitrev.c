/* metafs-waitrev FILE [TIMEOUT_S [SINCE]]: block until the metafs `revision` file FILE
 * changes (or differs from SINCE, a value read before: no change between that read and
 * this call is missed), print the new revision, exit 0; exit 124 after TIMEOUT_S seconds
 * (default, or a negative value: forever).
 * It waits in poll(POLLPRI), which the metafs daemon wakes on every change of the view;
 * no polling loop, no network. Build it static so that any container can carry it:
 *     gcc -O2 -static -o metafs-waitrev metafs-waitrev.c                                  */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static ssize_t read_all(int fd, char *buf, size_t size) {
    if (lseek(fd, 0, SEEK_SET) < 0) return -1;
    ssize_t n = read(fd, buf, size - 1);
    if (n >= 0) buf[n] = '\0';
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s /meta/revision [TIMEOUT_S [SINCE]]\n", argv[0]);
        return 2;
    }
    double timeout = argc >= 3 ? atof(argv[2]) : -1;
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { fprintf(stderr, "%s: %s: %s\n", argv[0], argv[1], strerror(errno)); return 1; }
    char first[64], now[64];
    if (read_all(fd, first, sizeof first) < 0) { perror(argv[1]); return 1; }
    if (argc == 4 && strtoll(first, NULL, 10) != strtoll(argv[3], NULL, 10)) { fputs(first, stdout); return 0; }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int wait_ms = -1;
        if (timeout >= 0) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            double left = timeout - ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9);
            if (left <= 0) return 124;
            wait_ms = (int)(left * 1000) + 1;
        }
        struct pollfd p = {.fd = fd, .events = POLLPRI};
        int r = poll(&p, 1, wait_ms);
        if (r < 0 && errno != EINTR) { perror("poll"); return 1; }
        if (r > 0 && (p.revents & (POLLERR | POLLNVAL))) { fprintf(stderr, "%s: poll error\n", argv[1]); return 1; }
        if (read_all(fd, now, sizeof now) < 0) { perror(argv[1]); return 1; }
        if (strcmp(now, first) != 0) { fputs(now, stdout); return 0; }
    }
}
