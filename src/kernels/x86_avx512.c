/* placeholder, being written */
#if defined(__x86_64__) && defined(__AVX512F__)
#include "kernels/types.h"
void l3c_kernels_override_avx512(l3c_type_traits *table) { (void)table; }
#else
typedef int l3c_x86_avx512_empty;
#endif
