/* tu_rand.c — the tests' one RNG (splitmix64), apart from tu_core.c so
 * that the benchmarks (bench/bu_paged.c) can use it without Check. */
#include <stdint.h>

uint64_t tu_rand(uint64_t *s);

uint64_t tu_rand(uint64_t *s) {
  uint64_t x = *s += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
