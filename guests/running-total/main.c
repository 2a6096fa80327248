/* running-total: a WASI command for understudy's process pairs.
 *
 * At start it prints a random token and the wall-clock time; both are host
 * inputs (random_get, clock_time_get) that a backup must replay, so after a
 * failover the line is the same, never a second one. Then it reads one
 * integer per line from stdin and prints the running count and total; a line
 * that is not a number is reported and skipped. At end of input it prints a
 * summary and exits 0.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    uint64_t token = 0;
    if (getentropy(&token, sizeof token) != 0) {
        fprintf(stderr, "no entropy\n");
        return 2;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    printf("token %016llx started %lld.%09ld\n", (unsigned long long)token,
           (long long)now.tv_sec, now.tv_nsec);
    fflush(stdout);

    char line[256];
    long long count = 0;
    long long total = 0;
    while (fgets(line, sizeof line, stdin) != NULL) {
        char *end = NULL;
        long long value = strtoll(line, &end, 10);
        if (end == line) {
            printf("skipped a line that is not a number\n");
            fflush(stdout);
            continue;
        }
        count += 1;
        total += value;
        printf("%lld total %lld\n", count, total);
        fflush(stdout);
    }
    printf("done: %lld numbers, total %lld\n", count, total);
    return 0;
}
