/* bu_paged.c — the tests' synthetic paged layer (tests/tu_paged.c), built
 * into the benchmarks too so that both measure the same layout. */
#include "../tests/tu_paged.c"
