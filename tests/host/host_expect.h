/* host_expect.h — the host tests' assertion (no Check: these are plain
 * programs a host would be). */
#ifndef HOST_EXPECT_H
#define HOST_EXPECT_H

#include <stdio.h>

/* Fails the test program with a message naming the first thing that was
 * wrong. */
#define HOST_EXPECT(cond, ...)                                                \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: FAILED %s: ", __FILE__, __LINE__, #cond);       \
      fprintf(stderr, __VA_ARGS__);                                           \
      fprintf(stderr, "\n");                                                  \
      return 1;                                                               \
    }                                                                         \
  } while (0)

#endif /* HOST_EXPECT_H */
