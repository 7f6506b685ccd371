/*
 * insncount: a QEMU TCG plugin (user mode) that counts the guest instructions executed by ONE
 * guest thread between two marker syscalls.
 *
 * The guest marks a region with a harmless syscall the plugin watches for: lseek(-1, MAGIC, 0)
 * (fails with EBADF, changes nothing). MAGIC_START starts counting on the calling thread (vcpu),
 * MAGIC_STOP stops it and records the region. Only the thread that set the start marker is
 * counted: ORT's worker threads and Python's helper threads are ignored, which is what makes the
 * figure repeatable (spin-waiting threads vary run to run).
 *
 * Also counts every instruction of that thread from its first marker to exit, and of the whole
 * process ("total"), for reference.
 *
 * Build (bookworm: qemu-user 7.2, plugin API v1; header from the qemu source package):
 *   gcc -O2 -shared -fPIC -I INCLUDE_DIR -o insncount.so insncount.c $(pkg-config --cflags glib-2.0)
 * Run:
 *   qemu-aarch64 -cpu cortex-a72 -plugin ./insncount.so,outfile=counts.txt -L ROOTFS ...
 * Output (one line each): "region <i> <instructions>" for every closed region, then
 *   "total <instructions of all threads>".
 *
 * Counting uses a per-translation-block callback (instructions of the block added when it runs),
 * because QEMU 7.2's inline counters cannot be made per-thread.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define SYS_LSEEK_AARCH64 62
#define MAGIC_START 0x6b726f6e0001ULL /* "kron" + 1 */
#define MAGIC_STOP 0x6b726f6e0002ULL
#define MAX_REGIONS 256
#define NO_VCPU 0xffffffffu

static unsigned int marked_vcpu = NO_VCPU; /* the thread being counted, or none */
static int counting;                       /* 1 between START and STOP */
static uint64_t region_count;              /* instructions in the open region */
static uint64_t regions[MAX_REGIONS];
static int n_regions;
static uint64_t total; /* all threads, whole run (not thread-safe: reference only) */
static char outfile[4096];

static void tb_exec(unsigned int vcpu_index, void *udata)
{
    uint64_t n = (uint64_t)(uintptr_t)udata;
    total += n;
    if (counting && vcpu_index == marked_vcpu) {
        region_count += n;
    }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)n);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    if (num != SYS_LSEEK_AARCH64 || (int64_t)a1 != -1) {
        return;
    }
    if (a2 == MAGIC_START) {
        marked_vcpu = vcpu_index;
        region_count = 0;
        counting = 1;
    } else if (a2 == MAGIC_STOP && counting && vcpu_index == marked_vcpu) {
        counting = 0;
        if (n_regions < MAX_REGIONS) {
            regions[n_regions++] = region_count;
        }
    }
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    FILE *f = outfile[0] ? fopen(outfile, "w") : stderr;
    if (!f) {
        perror("insncount: cannot open outfile");
        return;
    }
    for (int i = 0; i < n_regions; i++) {
        fprintf(f, "region %d %" PRIu64 "\n", i, regions[i]);
    }
    fprintf(f, "total %" PRIu64 "\n", total);
    if (f != stderr) {
        fclose(f);
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "outfile=", 8) == 0) {
            snprintf(outfile, sizeof(outfile), "%s", argv[i] + 8);
        } else {
            fprintf(stderr, "insncount: unknown argument %s (known: outfile=PATH)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
