/* reactor-total: a WASI *reactor* for understudy's process pairs (no _start:
 * the host calls exported functions, and checkpoints between calls).
 *
 * The host delivers each stdin record as one call: it asks for a buffer with
 * `input_buffer(len)`, copies the record's bytes into it and calls
 * `handle_input(len)`. The record holds integers separated by newlines; for
 * each one the reactor prints the running count and total to stdout. The first
 * call also prints a random token and the wall-clock time (host inputs a
 * backup must replay unchanged). State lives in linear memory and globals
 * between calls, which is exactly what a checkpoint must capture.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define INPUT_BYTES_MAX (64 * 1024)

static unsigned char input[INPUT_BYTES_MAX + 1];
static long long count = 0;
static long long total = 0;
static int greeted = 0;

static void greet(void) {
    uint64_t token = 0;
    if (getentropy(&token, sizeof token) != 0) {
        abort();
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    printf("token %016llx started %lld.%09ld\n", (unsigned long long)token,
           (long long)now.tv_sec, now.tv_nsec);
    greeted = 1;
}

/* A buffer for the next record of `length` bytes (at most 64 KiB), or 0. */
__attribute__((export_name("input_buffer"))) unsigned char *input_buffer(uint32_t length) {
    return length <= INPUT_BYTES_MAX ? input : 0;
}

/* Handles the `length` bytes the host wrote into the input buffer. */
__attribute__((export_name("handle_input"))) void handle_input(uint32_t length) {
    if (!greeted) {
        greet();
    }
    if (length > INPUT_BYTES_MAX) {
        length = INPUT_BYTES_MAX;
    }
    input[length] = 0;
    char *cursor = (char *)input;
    while (*cursor != 0) {
        char *end = NULL;
        long long value = strtoll(cursor, &end, 10);
        if (end == cursor) {
            /* Not a number: skip to the next line. */
            char *newline = strchr(cursor, '\n');
            if (newline == NULL) {
                break;
            }
            printf("skipped a line that is not a number\n");
            cursor = newline + 1;
            continue;
        }
        count += 1;
        total += value;
        printf("%lld total %lld\n", count, total);
        cursor = end;
        while (*cursor == '\n' || *cursor == '\r' || *cursor == ' ') {
            cursor += 1;
        }
    }
    fflush(stdout);
}
