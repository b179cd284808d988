/*
 * cref_main.c: the C reference (bench/c_reference/tick_ref.c, compiled in with its main
 * renamed tick_ref_main) as a bare-metal program for the emulated Cortex-M cores.
 *
 * Build (host_tools/v2g/targets/build.sh, step cref): arm-none-eabi-gcc -O2 for the
 * core, with the header v2g.bench generates, newlib's semihosting syscalls (rdimon:
 * printf goes to qemu's stdout) and the small vector table and start-up below.
 *
 * tick_ref's timer, now_ns(), calls clock_gettime, defined here as the marker: the
 * instruction-counting plugin (insn_count.so, marker = address of clock_gettime) prints
 * a count at each call. One tick_ref_main(N, N) run makes four markers: before and after
 * N ticks, before and after N compute() calls. main runs N1 = CREF_N1 and then
 * N2 = CREF_N2, so per tick = (segment(N2) - segment(N1)) / (N2 - N1), as v2g.bench
 * does with callgrind; tick_ref prints its checksum after each run.
 * The program ends with semihosting SYS_EXIT (qemu exits).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#ifndef CREF_N1
#define CREF_N1 "500"
#endif
#ifndef CREF_N2
#define CREF_N2 "2500"
#endif

int tick_ref_main(int argc, char **argv);
extern void initialise_monitor_handles(void);

/* The marker: tick_ref's now_ns() reads the time through this. No timer runs. */
__attribute__((noinline, used)) int clock_gettime(clockid_t clk, struct timespec *ts) {
    (void)clk;
    __asm__ volatile ("" ::: "memory");
    ts->tv_sec = 0;
    ts->tv_nsec = 0;
    return 0;
}

int main(void) {
    char *a1[] = {"tick_ref", CREF_N1, CREF_N1, NULL};
    char *a2[] = {"tick_ref", CREF_N2, CREF_N2, NULL};
    initialise_monitor_handles();
    tick_ref_main(3, a1);
    tick_ref_main(3, a2);
    fflush(stdout);
    return 0;
}

/* ---- start-up: vector table, .data/.bss, main, semihosting exit -------------------- */
extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss;
void Reset_Handler(void);

static void semihost_exit(int code) {
    /* SYS_EXIT (0x18) with ADP_Stopped_ApplicationExit: qemu exits */
    register uint32_t r0 __asm__("r0") = 0x18;
    register uint32_t r1 __asm__("r1") = code == 0 ? 0x20026 : 0x20024;
    __asm__ volatile ("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    for (;;) {
    }
}

void _exit(int code) {
    semihost_exit(code);
}

static void Fault_Handler(void) {
    semihost_exit(1);
}

__attribute__((section(".isr_vector"), used))
void (*const vectors[16])(void) = {
    (void (*)(void))&_estack, Reset_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, Fault_Handler, 0, 0, 0, 0,
    Fault_Handler, Fault_Handler, 0, Fault_Handler, Fault_Handler,
};

void Reset_Handler(void) {
    #if defined(__ARM_FP)
    /* full access to CP10/CP11 (the FPU) before any float code */
    *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20;
    __asm__ volatile ("dsb\n isb");
    #endif
    memcpy(&_sdata, &_sidata, (char *)&_edata - (char *)&_sdata);
    memset(&_sbss, 0, (char *)&_ebss - (char *)&_sbss);
    semihost_exit(main());
}
