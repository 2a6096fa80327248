/* sleeper-c: an ordinary C program that sleeps, for understudy's tests of
 * poll_oneoff sleeps (docs/pairs.md, "Sleeps").
 *
 * For each line of stdin it sleeps 200 ms with nanosleep() (wasi-libc turns
 * that into one poll_oneoff clock subscription) and then echoes the line;
 * at end of input it exits 0. guests/sleeper/sleeper.wat does the same in
 * hand-written WebAssembly; this one checks the call shape a C library
 * really produces.
 */
#include <stdio.h>
#include <time.h>

int main(void) {
    char line[256];
    while (fgets(line, sizeof line, stdin) != NULL) {
        struct timespec nap = {.tv_sec = 0, .tv_nsec = 200 * 1000 * 1000};
        if (nanosleep(&nap, NULL) != 0) {
            perror("nanosleep");
            return 1;
        }
        fputs(line, stdout);
        fflush(stdout);
    }
    return 0;
}
