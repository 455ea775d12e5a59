/*
 * dispatch.c -- picks the kernel table once per process, and answers the system questions of the
 * public API (l3c_backend_path, l3c_default_threads).
 *
 * The dispatched table is a copy of the reference table with the ISA overrides applied in order
 * (x86: avx2, then avx512, then amx on top; arm: neon). An ISA is used only when the CPU and OS
 * support every extension its file is compiled with (see the Makefile's ISA_FLAGS); AMX also
 * needs the OS to enable the tile state (XCR0) and Linux to grant it to this process
 * (arch_prctl ARCH_REQ_XCOMP_PERM, asked once). L3C_KERNELS=<path> caps the path (e.g. avx2 on
 * an avx512 machine, or ref); an unknown or unavailable value is reported on stderr once and
 * ignored. "amx-emu" (the AMX kernels on an emulated tile unit, for tests) is used only when
 * named: it is never the best path by itself.
 *
 * Linking: on x86-64 the AVX2 / AVX-512 files always compile (their code is guarded by the
 * compiler's ISA macros, which the Makefile sets for them), so their hooks are referenced
 * strongly and any program linking libllama3c.a gets them, no linker flags needed. A file that
 * was compiled without its flags (another build system) defines an empty hook instead, which
 * reports itself as not built (override(NULL) == false), so the path is skipped. Other ISA hooks (neon) stay weak: NULL when not linked in.
 *
 * Invariants: the table is built exactly once (pthread_once) and never changes afterwards, so
 * the pointers l3c_type_traits_get returns stay valid for the life of the process.
 */
#include "kernels/types.h"

#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#if !defined(__x86_64__)
#pragma weak l3c_kernels_override_avx2
#pragma weak l3c_kernels_override_avx512
#pragma weak l3c_kernels_override_amx
#pragma weak l3c_kernels_override_amx_emu
#pragma weak l3c_kernels_amx_check
#endif
#pragma weak l3c_kernels_override_neon

typedef struct isa_path {
    const char *name;
    bool (*override)(l3c_type_traits *table); /* NULL: not linked in / not this architecture */
    bool (*cpu_ok)(void);
    bool by_name_only; /* used only when L3C_KERNELS (or a test) names it */
} isa_path;

#if defined(__x86_64__) || defined(__i386__)
static bool cpu_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("osxsave") && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

/* every extension x86_avx512.c is compiled with (Makefile ISA_FLAGS) */
static bool cpu_avx512(void) {
    return cpu_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16");
}

#include <cpuid.h>
#include <sys/syscall.h>
#define L3C_ARCH_REQ_XCOMP_PERM 0x1023 /* <asm/prctl.h>, Linux 5.16 */
#define L3C_XFEATURE_XTILEDATA 18

/* AMX-TILE, AMX-INT8 and AMX-BF16 (cpuid 7.0 EDX bits 24, 25, 22), the tile state enabled by the
 * OS (XCR0 bits 17, 18) and granted to this process; answered once (the grant is per process) */
static int g_amx_usable = -1; /* -1: not probed yet */
static bool cpu_amx_probe(void) {
    unsigned a, b, c, d, lo, hi;
    if (!cpu_avx512() || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const unsigned need = 1u << 22 | 1u << 24 | 1u << 25;
    if ((d & need) != need) return false;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return false;
    if (syscall(SYS_arch_prctl, L3C_ARCH_REQ_XCOMP_PERM, L3C_XFEATURE_XTILEDATA) != 0) return false;
    if (!l3c_kernels_override_amx(NULL)) return false; /* not built: nothing to check */
    const int agree = l3c_kernels_amx_check();
    if (agree == 1) return true;
    fprintf(stderr, "llama3c: %s; AMX not used\n",
            agree == 0 ? "this CPU's AMX tile unit disagrees with the AVX-512 kernels"
                       : "no memory to check the AMX kernels");
    return false;
}
static bool cpu_amx(void) {
    int v = __atomic_load_n(&g_amx_usable, __ATOMIC_ACQUIRE);
    if (v < 0) {
        v = cpu_amx_probe();
        __atomic_store_n(&g_amx_usable, v, __ATOMIC_RELEASE);
    }
    return v == 1;
}
#endif

#if defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
/* NEON is mandatory on AArch64; arm_neon.c is also compiled with the dot-product extension
 * (Makefile ISA_FLAGS), which the kernel reports in AT_HWCAP */
static bool cpu_neon(void) { return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0; }
#endif

/* lowest first; each applies on top of the ones before it */
static const isa_path g_paths[] = {
    {"ref", NULL, NULL, false},
#if defined(__x86_64__) || defined(__i386__)
    {"avx2", l3c_kernels_override_avx2, cpu_avx2, false},
    {"avx512", l3c_kernels_override_avx512, cpu_avx512, false},
    {"amx", l3c_kernels_override_amx, cpu_amx, false},
    {"amx-emu", l3c_kernels_override_amx_emu, cpu_avx512, true},
#elif defined(__aarch64__)
    {"neon", l3c_kernels_override_neon, cpu_neon, false},
#endif
};

static const isa_path *paths(int *count) {
    *count = (int)(sizeof g_paths / sizeof g_paths[0]);
    return g_paths;
}

static bool path_usable(const isa_path *p) {
    if (p->override == NULL) return strcmp(p->name, "ref") == 0;
    return p->override(NULL) && p->cpu_ok();
}

/* whether path i takes part in a table built up to path cap */
static bool path_applies(const isa_path *p, int i, int cap) {
    return path_usable(&p[i]) && (!p[i].by_name_only || i == cap);
}

/* index of the best usable path <= cap; a by-name-only path only when it is cap and was named */
static int best_path(int cap, bool named) {
    int n, best = 0;
    const isa_path *p = paths(&n);
    for (int i = 1; i < n && i <= cap; i++)
        if (path_applies(p, i, cap) && (named || !p[i].by_name_only)) best = i;
    return best;
}

static void fill_table(int upto, l3c_type_traits *table) {
    int n;
    const isa_path *p = paths(&n);
    for (int t = 0; t < L3C_TYPE_COUNT; t++) table[t] = *l3c_type_traits_ref(t);
    for (int i = 1; i <= upto && i < n; i++)
        if (path_applies(p, i, upto)) p[i].override(table);
}

int l3c_kernels_available(const char **names, int max) {
    int n, count = 0;
    const isa_path *p = paths(&n);
    for (int i = 0; i < n; i++) {
        if (!path_usable(&p[i])) continue;
        if (count < max) names[count] = p[i].name;
        count++;
    }
    return count;
}

static int find_path(const char *name) {
    int n;
    const isa_path *p = paths(&n);
    for (int i = 0; i < n; i++)
        if (strcmp(p[i].name, name) == 0) return i;
    return -1;
}

bool l3c_kernels_build_table(const char *name, l3c_type_traits *table) {
    int i = name ? find_path(name) : -1;
    if (i < 0) return false;
    int n;
    if (!path_usable(&paths(&n)[i])) return false;
    fill_table(i, table);
    return true;
}

static l3c_type_traits g_table[L3C_TYPE_COUNT];
static const char *g_path_name = "ref";
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void dispatch_init(void) {
    int n;
    const isa_path *p = paths(&n);
    int cap = n - 1;
    bool named = false;
    const char *env = getenv("L3C_KERNELS");
    if (env && *env) {
        int i = find_path(env);
        if (i < 0)
            fprintf(stderr, "llama3c: L3C_KERNELS=%s is not a kernel path of this build; ignored\n",
                    env);
        else if (!path_usable(&p[i]))
            fprintf(stderr, "llama3c: L3C_KERNELS=%s is not available on this CPU/build; ignored\n",
                    env);
        else
            cap = i, named = true;
    }
    int best = best_path(cap, named);
    fill_table(best, g_table);
    g_path_name = p[best].name;
}

const l3c_type_traits *l3c_type_traits_get(int type) {
    pthread_once(&g_once, dispatch_init);
    if (type < 0 || type >= L3C_TYPE_COUNT) return l3c_type_traits_ref(type); /* zero entry */
    return &g_table[type];
}

const char *l3c_kernels_path(void) {
    pthread_once(&g_once, dispatch_init);
    return g_path_name;
}

const char *l3c_backend_path(void) { return l3c_kernels_path(); }

/* ---------------------------------------------------------------- default thread count */

static int read_int_file(const char *path, long *out) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int ok = fscanf(f, "%ld", out) == 1;
    fclose(f);
    return ok;
}

/* Distinct (package, core) pairs among the CPUs this process may run on; 0 if unknown. */
static int count_physical_cores(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    int n_cpu = CPU_COUNT(&set);
    if (n_cpu <= 0) return 0;
    long(*pairs)[2] = l3c_calloc((size_t)n_cpu, sizeof *pairs);
    if (!pairs) return 0;
    int n_pairs = 0, seen = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && seen < n_cpu; cpu++) {
        if (!CPU_ISSET(cpu, &set)) continue;
        seen++;
        char path[128];
        long core, pkg;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
        if (!read_int_file(path, &core)) goto unknown;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id",
                 cpu);
        if (!read_int_file(path, &pkg)) goto unknown;
        bool dup = false;
        for (int i = 0; i < n_pairs && !dup; i++) dup = pairs[i][0] == pkg && pairs[i][1] == core;
        if (!dup) {
            pairs[n_pairs][0] = pkg;
            pairs[n_pairs][1] = core;
            n_pairs++;
        }
    }
    free(pairs);
    return n_pairs;
unknown:
    free(pairs);
    return 0;
}

static int g_default_threads;
static pthread_once_t g_threads_once = PTHREAD_ONCE_INIT;

static void threads_init(void) {
    int n = count_physical_cores();
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    g_default_threads = n > 0 ? n : 1;
}

int l3c_default_threads(void) {
    pthread_once(&g_threads_once, threads_init);
    return g_default_threads;
}
