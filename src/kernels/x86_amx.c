/*
 * x86_amx.c -- the AMX path ("amx"): the kernels of x86_amx.h on the tile instructions.
 * Compiled with the AVX-512 and AMX flags (Makefile ISA_FLAGS); dispatch.c uses it only where
 * cpuid reports AMX-TILE / INT8 / BF16, the OS enables the tile state in XCR0 and Linux grants
 * this process the tile data (arch_prctl ARCH_REQ_XCOMP_PERM).
 */
#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__) && defined(__AVX512BF16__) && defined(__AMX_TILE__) && defined(__AMX_INT8__) &&  \
    defined(__AMX_BF16__)

#include "kernels/x86_amx.h"

#else
/* Compiled without the ISA flags (or not x86-64): an empty hook, so the reference in dispatch.c
 * links; the path reports itself as not built. */
#include "kernels/types.h"
bool l3c_kernels_override_amx(l3c_type_traits *table) { (void)table; return false; }
int l3c_kernels_amx_check(void) { return 0; }
#endif
