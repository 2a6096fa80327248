;; sleeper: a command that echoes each chunk of stdin back on stdout after
;; sleeping for 200 ms in poll_oneoff (a relative timeout on the monotonic
;; clock), until end of input. Written in the WebAssembly text format, so it
;; needs no C toolchain: tests assemble it with the `wat` crate.
;;
;; Memory: iovec for reads at 0 (buffer 1024, 256 bytes); nread at 16; iovec
;; for writes at 32; nwritten at 40; the subscription at 64 (48 bytes); the
;; event at 128; nevents at 192.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 256))
    (block $done
      (loop $next
        (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
        (br_if $done (i32.eqz (i32.load (i32.const 16))))
        ;; userdata 1; tag 0 (clock); clock 1 (monotonic); 200 ms; relative
        (i64.store (i32.const 64) (i64.const 1))
        (i32.store8 (i32.const 72) (i32.const 0))
        (i32.store (i32.const 80) (i32.const 1))
        (i64.store (i32.const 88) (i64.const 200000000))
        (i32.store16 (i32.const 104) (i32.const 0))
        (drop (call $poll (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 192)))
        (i32.store (i32.const 32) (i32.const 1024))
        (i32.store (i32.const 36) (i32.load (i32.const 16)))
        (drop (call $write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40)))
        (br $next)))))
