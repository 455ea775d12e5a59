/*
 * x86_amx_emu.c -- the path "amx-emu": the kernels of x86_amx.h on a C model of the AMX tile
 * unit (x86_amx.h, L3C_AMX_EMULATE), so they are tested against the reference on any AVX-512
 * CPU. Slow (a tile product is a scalar loop); dispatch.c never picks it by itself: only
 * L3C_KERNELS=amx-emu or l3c_kernels_build_table("amx-emu") select it.
 */
#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__) && defined(__AVX512BF16__)

#define L3C_AMX_EMULATE 1
#include "kernels/x86_amx.h"

#else
#include "kernels/types.h"
bool l3c_kernels_override_amx_emu(l3c_type_traits *table) { (void)table; return false; }
int l3c_kernels_amx_emu_check(void) { return 0; }
#endif
