/*
 * insn_count.c: a qemu TCG plugin that counts executed guest instructions between
 * markers, for the emulated target cores of v2g.targets.
 *
 *   qemu-system-arm ... -plugin insn_count.so,marker=0x21654,out=FILE
 *
 * marker  guest address (hex or decimal; bit 0, the Thumb bit, is ignored) of an
 *         instruction, e.g. the entry of mp_hal_ticks_cpu (time.ticks_cpu() from a
 *         MicroPython script, or a call from the C reference's main).
 * out     file for the results (default: qemu's log, i.e. stderr).
 *
 * Each execution of the marker writes one line "mark K N": the K-th marker (from 1) and
 * N, the guest instructions executed since the previous marker (or since reset for
 * K = 1): the script's bytecode, the runtime, interrupt handlers, everything. The
 * marker's own instruction falls in one of the two segments it borders, the same one
 * every time, so differences of segments are exact. At exit:
 * "total N" (every instruction since reset).
 *
 * Counting is exact: every instruction gets an inline add of 1 (not one add per
 * translation block, which would over-count a block left half-way by an exception).
 * One vCPU only (the Cortex-M machines have one).
 *
 * Written against qemu's plugin API version 1 (Debian bookworm's qemu 7.2, which loads
 * plugins but ships neither the header nor the example plugins); the few declarations
 * needed are below, copied in shape from qemu's include/qemu/qemu-plugin.h of that
 * version. After the pattern of qemu's tests/plugin/insn.c (inline per-instruction counter).
 * Build: gcc -O2 -shared -fPIC -fvisibility=hidden -o insn_count.so insn_count.c
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the plugin API (qemu 7.x, QEMU_PLUGIN_VERSION 1) ------------------------------ */
#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
#define QEMU_PLUGIN_VERSION 1

typedef uint64_t qemu_plugin_id_t;

typedef struct qemu_info_t {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;

struct qemu_plugin_tb;
struct qemu_plugin_insn;

enum qemu_plugin_cb_flags {
    QEMU_PLUGIN_CB_NO_REGS,
    QEMU_PLUGIN_CB_R_REGS,
    QEMU_PLUGIN_CB_RW_REGS,
};

enum qemu_plugin_op {
    QEMU_PLUGIN_INLINE_ADD_U64,
};

typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id,
                                               struct qemu_plugin_tb *tb);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
                                           qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
                                            qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags,
                                            void *userdata);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn,
                                                enum qemu_plugin_op op,
                                                void *ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb,
                                                 size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb,
                                    void *userdata);
void qemu_plugin_outs(const char *string);

/* ---- the counter -------------------------------------------------------------------- */
QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static uint64_t count;      /* instructions since reset (inline adds) */
static uint64_t last;       /* count at the previous marker */
static uint64_t marks;      /* markers seen */
static uint64_t marker = UINT64_MAX;
static FILE *out;

static void emit(const char *line) {
    if (out) {
        fputs(line, out);
        fflush(out);
    } else {
        qemu_plugin_outs(line);
    }
}

static void on_marker(unsigned int vcpu_index, void *userdata) {
    char line[80];
    (void)vcpu_index;
    (void)userdata;
    marks++;
    snprintf(line, sizeof line, "mark %" PRIu64 " %" PRIu64 "\n", marks, count - last);
    last = count;
    emit(line);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    size_t n = qemu_plugin_tb_n_insns(tb);
    (void)id;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                   &count, 1);
        if ((qemu_plugin_insn_vaddr(insn) & ~(uint64_t)1) == marker) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker,
                                                   QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
    }
}

static void on_plugin_exit(qemu_plugin_id_t id, void *userdata) {
    char line[80];
    (void)id;
    (void)userdata;
    snprintf(line, sizeof line, "total %" PRIu64 "\n", count);
    emit(line);
    if (out) {
        fclose(out);
        out = NULL;
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv) {
    if (info->version.min > QEMU_PLUGIN_VERSION) {
        fprintf(stderr, "insn_count: qemu wants plugin API >= %d, this is %d\n",
                info->version.min, QEMU_PLUGIN_VERSION);
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "marker=", 7) == 0) {
            char *end;
            marker = strtoull(a + 7, &end, 0) & ~(uint64_t)1;
            if (*end) {
                fprintf(stderr, "insn_count: bad marker address %s\n", a + 7);
                return 1;
            }
        } else if (strncmp(a, "out=", 4) == 0) {
            out = fopen(a + 4, "w");
            if (!out) {
                fprintf(stderr, "insn_count: cannot write %s\n", a + 4);
                return 1;
            }
        } else {
            fprintf(stderr, "insn_count: unknown argument %s (marker=ADDR, out=FILE)\n", a);
            return 1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
