/*
 * fuzz_common.h — what every libFuzzer harness in tests/fuzz/ shares.
 *
 * A harness is a body `int pkv_fuzz_<name>_run(const uint8_t *, size_t)`
 * that checks its own model and aborts on any mismatch, so libFuzzer keeps
 * the input (and a Check suite that compiles the body in reports the abort
 * as an error of the test).  PKV_FUZZ_ENTRY(body) makes the body the
 * libFuzzer entry point, unless PKV_FUZZ_NO_MAIN is defined: the replay
 * suites (check_fuzz_replay.c, check_engine_fuzz.c, check_sim.c) define it
 * and drive the body themselves.
 */
#ifndef PKV_FUZZ_COMMON_H
#define PKV_FUZZ_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Prints "<harness>: <message>" and aborts. */
__attribute__((noreturn, format(printf, 2, 3), unused)) static void
pkv_fuzz_fail(const char *harness, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", harness);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  abort();
}

/* The input, read a byte at a time; past its end every byte reads 0, so a
 * short input is still a whole (if dull) case. */
typedef struct pkv_fuzz_in {
  const uint8_t *p;
  size_t n;
} pkv_fuzz_in;

__attribute__((unused)) static uint8_t pkv_fuzz_byte(pkv_fuzz_in *in) {
  if (in->n == 0) return 0;
  in->n--;
  return *in->p++;
}

#ifdef PKV_FUZZ_NO_MAIN
#define PKV_FUZZ_ENTRY(body)
#else
#define PKV_FUZZ_ENTRY(body)                                        \
  int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);     \
  int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {    \
    return body(data, size);                                        \
  }
#endif

#endif
