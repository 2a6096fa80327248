//! running-total-zig: guests/running-total/main.c in Zig, to check that a Zig
//! command is instrumented for checkpoints too (recovery_mode: checkpoint).
//!
//! At start it prints a random token and the wall-clock time (random_get and
//! clock_time_get, replayed by a backup); then for each line of stdin holding
//! an integer it prints the running count and total, reports a line that is
//! not a number, and at end of input prints a summary and exits 0. Built with
//! Zig 0.13 (the `ziglang` package from PyPI) by guests/build.sh.
const std = @import("std");

pub fn main() !void {
    // Buffered both ways, as the C version's stdio is; each line is flushed.
    var output = std.io.bufferedWriter(std.io.getStdOut().writer());
    const stdout = output.writer();
    var input = std.io.bufferedReader(std.io.getStdIn().reader());
    const stdin = input.reader();

    var token: [8]u8 = undefined;
    std.crypto.random.bytes(&token);
    const now = std.time.nanoTimestamp();
    try stdout.print("token {s} started {d}\n", .{ std.fmt.fmtSliceHexLower(&token), now });
    try output.flush();

    var count: i64 = 0;
    var total: i64 = 0;
    var buffer: [256]u8 = undefined;
    while (try stdin.readUntilDelimiterOrEof(&buffer, '\n')) |line| {
        const trimmed = std.mem.trim(u8, line, " \t\r");
        const value = std.fmt.parseInt(i64, trimmed, 10) catch {
            try stdout.print("skipped a line that is not a number\n", .{});
            try output.flush();
            continue;
        };
        count += 1;
        total += value;
        try stdout.print("{d} total {d}\n", .{ count, total });
        try output.flush();
    }
    try stdout.print("done: {d} numbers, total {d}\n", .{ count, total });
    try output.flush();
}
