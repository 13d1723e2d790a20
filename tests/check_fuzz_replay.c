/*
 * check_fuzz_replay.c — the fuzz harnesses' bodies in the ordinary suite.
 *
 * Replays every file of tests/fuzz/corpus_ops/ (the seed corpus) and
 * tests/fuzz/regress_ops/ (inputs that once found a bug: each is a
 * regression test) through the same model-checking body libFuzzer drives,
 * then a fixed-seed batch of random inputs so that a build without clang
 * still exercises the harness.  A finding aborts, which Check reports as
 * an error of the test.
 */
#define PKV_FUZZ_NO_MAIN
#include "fuzz/fuzz_ops.c"

#include <check.h>
#include "tu_core.h"


START_TEST(seed_corpus) {
  ck_assert_msg(tu_replay_fuzz("corpus_ops", pkv_fuzz_ops_run) > 0,
                "no seed corpus in tests/fuzz/corpus_ops (run from the repo root or set "
                "PKV_SRCDIR)");
}
END_TEST

START_TEST(regressions) {
  ck_assert_msg(tu_replay_fuzz("regress_ops", pkv_fuzz_ops_run) >= 0, "no tests/fuzz/regress_ops");
}
END_TEST

/* xorshift64*: fixed seed, so a failure reproduces. */
static uint64_t rng_state;
static uint64_t rng(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1Dull;
}

START_TEST(random_inputs) {
#if PKV_SANITIZE
  const int runs = 150;
#else
  const int runs = 600;
#endif
  static uint8_t buf[2048];
  rng_state = 0x9e3779b97f4a7c15ull + (uint64_t)_i;
  for (int k = 0; k < runs; k++) {
    size_t len = 3 + rng() % (sizeof buf - 3);
    for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)rng();
    /* Mostly valid configs with a pool large enough to do work. */
    buf[0] &= 0x3f;
    if ((buf[0] & 7) == 7) buf[0] &= ~1;
    buf[1] = (uint8_t)(4 + rng() % 44);
    buf[2] &= 0x3f;
    if (((buf[2] >> 1) & 7) >= 6) buf[2] &= ~0x08;
    pkv_fuzz_ops_run(buf, len);
  }
}
END_TEST

TU_MAIN("fuzz_replay", {"replay", 300, {{seed_corpus}, {regressions}, {random_inputs, 0, 4}}})
