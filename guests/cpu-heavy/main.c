/* cpu-heavy: a compute-bound WASI command for understudy's overhead benchmark.
 *
 * Arguments: [MEMORY_MIB] (default 1): it allocates and touches that much
 * memory first, so checkpoints of different sizes can be measured. Then for
 * each line of stdin holding a number N it runs N rounds of a 64-bit mixing
 * function over its memory (a few host calls per line, lots of computation)
 * and prints the line number and a checksum. Deterministic: the same input
 * gives the same output.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t mix(uint64_t value) {
    value ^= value >> 33;
    value *= 0xff51afd7ed558ccdULL;
    value ^= value >> 33;
    value *= 0xc4ceb9fe1a85ec53ULL;
    value ^= value >> 33;
    return value;
}

int main(int argc, char **argv) {
    long memory_mib = argc > 1 ? strtol(argv[1], NULL, 10) : 1;
    if (memory_mib < 1 || memory_mib > 1024) {
        fprintf(stderr, "MEMORY_MIB must be in 1..=1024\n");
        return 2;
    }
    size_t words = (size_t)memory_mib * 1024 * 1024 / sizeof(uint64_t);
    uint64_t *memory = malloc(words * sizeof(uint64_t));
    if (memory == NULL) {
        fprintf(stderr, "cannot allocate %ld MiB\n", memory_mib);
        return 2;
    }
    for (size_t index = 0; index < words; index++) {
        memory[index] = mix(index);
    }
    printf("ready with %ld MiB\n", memory_mib);
    fflush(stdout);

    char line[64];
    long long number = 0;
    while (fgets(line, sizeof line, stdin) != NULL) {
        long long rounds = strtoll(line, NULL, 10);
        uint64_t checksum = 0;
        for (long long round = 0; round < rounds; round++) {
            size_t index = (size_t)(mix((uint64_t)round + checksum) % words);
            memory[index] = mix(memory[index] ^ checksum);
            checksum += memory[index];
        }
        number += 1;
        printf("%lld checksum %016llx\n", number, (unsigned long long)checksum);
        fflush(stdout);
    }
    return 0;
}
