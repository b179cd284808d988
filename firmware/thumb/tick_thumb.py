"""Inline-assembler kernels of the tick's two heaviest blocks, for cores that run Thumb
code (MicroPython's ``@micropython.asm_thumb``): the PLL's window integral and CORDIC,
and the grid measurement's six channels.

Why here and not in firmware/: this module only compiles where the port has the inline
Thumb assembler (ARM Cortex-M boards); CPython, the x86-64 unix runtime, mpy-cross for
other archs and Xtensa boards cannot compile it. ``tick`` tries ``import tick_fused_thumb``
(the generated fused tick calling these kernels, which imports this module) and keeps the
viper body (``tick_fused.run``) when that fails. Boards with an ARM core freeze this
folder (``boards/<board>/manifest.py``).

Reference: the viper code of ``pll.step`` and ``grid_measure.step`` (as fused into
``tick_fused.run`` / ``tick_fused_compute.compute``) stays the reference. Each kernel
replaces one contiguous stretch of the fused compute (``v2g.build.gen_tick``,
``THUMB_KERNELS``) and reads and writes the same words of the state block ``m`` that the
stretch does; values the stretch kept in locals it derives again from the block (every
``x + BIAS`` stored is read back as ``word - BIAS``, exact on 32-bit words).

Arithmetic: viper's ``int`` is the machine word, ``+ - *`` wrap modulo 2**32 and ``>>``
is the arithmetic shift; the kernels use the same 32-bit ``adds``/``subs``/``muls``/
``asrs``/``lsls`` on the same operands, so their results equal the viper code's word for
word (a sum regrouped, ``a - b`` as ``a + (-b)``, is the same word modulo 2**32). The
tests (``tests_host/targets/test_thumb.py``) prove it on the emulated Cortex-M0 and
Cortex-M4F: state checksums of the Thumb tick and the viper tick over randomized ticks
are identical.

Instruction set: the Thumb-1 subset of ARMv6-M only (low registers, ``ldr``/``str``
with a word offset below 128 bytes, no ``movw``, ``it``, ``sdiv``), so the same kernels
run on the RP2040's Cortex-M0+ and the STM32's Cortex-M4F. Each kernel keeps its locals
in a small frame on the stack (r7 points at it; ``asm_thumb``'s prologue saves r4-r7 and
lr), and restores ``sp`` before it returns.

Calls from viper cost a few hundred instructions (boxing the arguments, the generic call
path), so there are two kernels, each covering a long stretch; arguments and return
values are small ints (no allocation: the address of the block is below 2**30 on the
Cortex-M boards' RAM, the other values are bounded by the state they come from).
Context: tick (allocation-free, no floats, never raises).
"""

import micropython

# Frame slots of pll_window_cordic (byte offsets from r7)
# FR 0, FR2 4, OJ 8, OJB 12, OPOS 16, BIAS 20, M 24, X 28


@micropython.asm_thumb
def pll_window_cordic(r0):
    """From ``pll.step``'s window integral to the CORDIC and V_POS, after the running sums
    are stored: reads POS (m[24]), NI (m[25]), SD/SQ (m[26], m[27]), WIN_Q8 (m[35]),
    W_R_Q6 (m[22]), the D and Q rings (m[53..308], m[309..564]) and ATAN_T28 (m[3363..]);
    writes V_POS (m[29]); returns phi (t28, |phi| < 2**28). ``r0``: the block's address."""
    mov(r6, sp)
    sub(r6, 32)
    mov(sp, r6)
    mov(r7, sp)
    str(r0, [r7, 24])
    ldr(r1, [r0, 96])  # pos = m[24]
    ldr(r2, [r0, 100])  # ni = m[25]
    mov(r3, r0)
    add(r3, 140)
    ldr(r3, [r3, 0])  # win_q8 = m[35]
    lsl(r4, r2, 8)
    sub(r3, r3, r4)
    lsl(r3, r3, 6)  # fr = (win_q8 - (ni << 8)) << 6
    cmp(r3, 0)
    bge(FR_NN)
    mov(r3, 0)
    b(FR_OK)
    label(FR_NN)
    mov(r4, 1)
    lsl(r4, r4, 14)
    cmp(r3, r4)
    ble(FR_OK)
    mov(r3, r4)
    label(FR_OK)
    str(r3, [r7, 0])  # fr
    mov(r4, r3)
    mul(r4, r3)
    asr(r4, r4, 15)
    str(r4, [r7, 4])  # fr2 = fr * fr >> 15
    sub(r3, r1, r2)
    mov(r4, 255)
    and_(r3, r4)  # j = pos - ni & 255
    mov(r2, r3)
    sub(r2, 1)
    and_(r2, r4)
    lsl(r2, r2, 2)
    str(r2, [r7, 12])  # (j - 1 & 255) * 4
    lsl(r3, r3, 2)
    str(r3, [r7, 8])  # j * 4
    lsl(r1, r1, 2)
    str(r1, [r7, 16])  # pos * 4
    mov(r2, 1)
    lsl(r2, r2, 20)
    str(r2, [r7, 20])  # ring bias 2**20
    # x from the D ring and SD
    mov(r6, r0)
    add(r6, 212)  # &m[53]
    ldr(r5, [r0, 104])  # m[26]
    bl(WIN)
    str(r0, [r7, 28])
    # y from the Q ring and SQ
    ldr(r1, [r7, 24])
    mov(r6, 77)
    lsl(r6, r6, 4)
    add(r6, 4)
    add(r6, r6, r1)  # &m[309] (1236 bytes)
    ldr(r5, [r1, 108])  # m[27]
    bl(WIN)
    ldr(r1, [r7, 28])
    # CORDIC vectoring: r1 = x, r0 = y, r3 = phi
    mov(r3, 0)
    cmp(r1, 0)
    bge(C_POS)
    neg(r1, r1)
    neg(r0, r0)
    mov(r3, 1)
    lsl(r3, r3, 27)
    label(C_POS)
    ldr(r5, [r7, 24])
    mov(r4, 210)
    lsl(r4, r4, 6)
    add(r4, 12)
    add(r5, r5, r4)  # &m[3363] (13452 bytes): ATAN_T28
    mov(r4, 0)  # i
    mov(r12, r7)
    label(C_LOOP)
    mov(r2, r0)
    asr(r2, r4)  # y >> i
    mov(r6, r1)
    asr(r6, r4)  # x >> i
    ldr(r7, [r5, 0])
    add(r5, 4)
    cmp(r0, 0)
    ble(C_NEG)
    add(r1, r1, r2)
    sub(r0, r0, r6)
    add(r3, r3, r7)
    b(C_NEXT)
    label(C_NEG)
    sub(r1, r1, r2)
    add(r0, r0, r6)
    sub(r3, r3, r7)
    label(C_NEXT)
    add(r4, 1)
    cmp(r4, 18)
    blt(C_LOOP)
    mov(r7, r12)
    # v_pos = (x >> 8) * ((w_r >> 8) * 19898 >> 12) >> 15, w_r = m[22] >> 6
    asr(r1, r1, 8)
    ldr(r0, [r7, 24])
    ldr(r2, [r0, 88])
    asr(r2, r2, 6)
    asr(r2, r2, 8)
    mov(r4, 77)
    lsl(r4, r4, 8)
    add(r4, 186)
    mul(r2, r4)
    asr(r2, r2, 12)
    mul(r1, r2)
    asr(r1, r1, 15)
    str(r1, [r0, 116])  # m[29] = v_pos
    mov(r0, r3)
    mov(r6, sp)
    add(r6, 32)
    mov(sp, r6)
    b(END)
    # 2 * window integral of one ring: r6 = &ring[0], r5 = the running sum word
    # (sum + 2**29); returns it in r0: s + s - d + a + (fr * a >> 13) + (fr2 * (b - a) >> 13)
    label(WIN)
    mov(r0, 1)
    lsl(r0, r0, 29)
    sub(r5, r5, r0)
    ldr(r1, [r7, 20])
    ldr(r0, [r7, 16])
    add(r0, r6, r0)
    ldr(r0, [r0, 0])
    sub(r0, r0, r1)  # d (this tick's sample)
    ldr(r2, [r7, 8])
    add(r2, r6, r2)
    ldr(r2, [r2, 0])
    sub(r2, r2, r1)  # a
    ldr(r3, [r7, 12])
    add(r3, r6, r3)
    ldr(r3, [r3, 0])
    sub(r3, r3, r1)  # b
    add(r5, r5, r5)
    sub(r5, r5, r0)
    add(r5, r5, r2)
    sub(r3, r3, r2)
    ldr(r4, [r7, 4])
    mul(r3, r4)
    asr(r3, r3, 13)
    ldr(r4, [r7, 0])
    mul(r2, r4)
    asr(r2, r2, 13)
    add(r5, r5, r2)
    add(r5, r5, r3)
    mov(r0, r5)
    bx(lr)
    label(END)


# Frame slots of gm_channels (byte offsets from r7)
# A 0, B 4, CS 8, SN 12, P 16, OPOS 20, G 24, GROW 28, OJ0 32, OJ1 36, NB 40, OJA 44,
# FR 48, OJB 52, FR2 56, RND 60, ASH 64, MM 68, K4096 72, K8192 76, K23170 80, K2_29 84,
# BIAS 88, K1024 92, CNT 96, SQ 100, MAGP 104, PV 108, PD 112, M 116


@micropython.asm_thumb
def gm_channels(r0, r1, r2):
    """``grid_measure.step`` from the quarter-period delay index to the squared phase
    magnitudes, after the voltage rings are written: window index (NI, m[883]) grown or
    shrunk, the six channels' products, running sums and windowed, normalised components
    (PHASOR_B, m[874..879]) and the squared magnitudes (m[866..868]). ``r0``: the block's
    address, ``r1``: the clamped window (Q8 samples), ``r2``: ``m[902] // win_q8``."""
    mov(r6, sp)
    sub(r6, 120)
    mov(sp, r6)
    mov(r7, sp)
    str(r0, [r7, 116])
    str(r2, [r7, 68])
    mov(r6, 220)
    lsl(r6, r6, 4)
    add(r6, 8)
    add(r6, r6, r0)  # B = &m[882] (3528 bytes)
    ldr(r3, [r6, 0])  # pos
    ldr(r4, [r6, 4])  # ni (before this tick)
    # jd = pos - (win_q8 + 256 >> 9) & 127; pd = &m[930 + jd], pv = &m[930 + (pos & 127)]
    mov(r5, 1)
    lsl(r5, r5, 8)
    add(r5, r5, r1)
    asr(r5, r5, 9)
    sub(r5, r3, r5)
    mov(r2, 127)
    and_(r5, r2)
    lsl(r5, r5, 2)
    mov(r0, r6)
    add(r0, 192)  # &m[930]
    add(r5, r0, r5)
    str(r5, [r7, 112])
    mov(r5, r3)
    and_(r5, r2)
    lsl(r5, r5, 2)
    add(r5, r0, r5)
    str(r5, [r7, 108])
    # grow: +1 when win_q8 >> 8 > ni and ni < 254, -1 when win_q8 >> 8 < ni
    asr(r2, r1, 8)
    mov(r5, 0)
    cmp(r2, r4)
    ble(G_LE)
    cmp(r4, 254)
    bge(G_OK)
    mov(r5, 1)
    b(G_OK)
    label(G_LE)
    bge(G_OK)
    mov(r5, 1)
    neg(r5, r5)
    label(G_OK)
    str(r5, [r7, 28])
    mov(r2, 255)
    sub(r0, r3, r4)
    and_(r0, r2)
    lsl(r0, r0, 2)
    str(r0, [r7, 32])  # j0 * 4
    lsr(r0, r0, 2)
    add(r0, 1)
    and_(r0, r2)
    lsl(r0, r0, 2)
    str(r0, [r7, 36])  # j1 * 4
    add(r4, r4, r5)
    str(r4, [r6, 4])  # m[883] = ni + grow
    sub(r0, r3, r4)
    and_(r0, r2)
    lsl(r0, r0, 2)
    str(r0, [r7, 44])  # ja * 4
    lsr(r0, r0, 2)
    sub(r0, 1)
    and_(r0, r2)
    lsl(r0, r0, 2)
    str(r0, [r7, 52])  # jb * 4
    lsl(r0, r3, 2)
    str(r0, [r7, 20])  # pos * 4
    lsl(r0, r4, 20)
    str(r0, [r7, 40])  # nb = ni << 20
    lsl(r0, r4, 8)
    sub(r0, r1, r0)
    lsl(r0, r0, 6)  # fr = (win_q8 - (ni << 8)) << 6, clamped to 0..16384
    cmp(r0, 0)
    bge(FR_NN)
    mov(r0, 0)
    b(FR_OK)
    label(FR_NN)
    mov(r2, 1)
    lsl(r2, r2, 14)
    cmp(r0, r2)
    ble(FR_OK)
    mov(r0, r2)
    label(FR_OK)
    str(r0, [r7, 48])
    mov(r2, r0)
    mul(r2, r0)
    asr(r2, r2, 15)
    str(r2, [r7, 56])  # fr2
    ldr(r0, [r6, 84])  # a_sh = m[903]
    str(r0, [r7, 64])
    mov(r2, 1)
    lsl(r2, r0)
    asr(r2, r2, 1)
    str(r2, [r7, 60])  # rnd = 1 << a_sh >> 1
    # constants
    mov(r0, 1)
    lsl(r0, r0, 12)
    str(r0, [r7, 72])
    lsl(r0, r0, 1)
    str(r0, [r7, 76])
    lsl(r0, r0, 1)
    lsl(r2, r0, 6)
    str(r2, [r7, 88])  # 2**20
    lsl(r2, r0, 15)
    str(r2, [r7, 84])  # 2**29
    mov(r2, 181)
    lsl(r2, r2, 7)
    add(r2, 2)
    str(r2, [r7, 80])  # 23170
    mov(r2, 1)
    lsl(r2, r2, 10)
    str(r2, [r7, 92])  # 1024
    # cs, sn = m[32] - 16384, m[33] - 16384
    ldr(r1, [r7, 116])
    add(r1, 128)
    ldr(r2, [r1, 0])
    sub(r2, r2, r0)
    str(r2, [r7, 8])
    ldr(r2, [r1, 4])
    sub(r2, r2, r0)
    str(r2, [r7, 12])
    # pointers: P = &m[1314] (ring of channel 0), G = &m[874], MAGP = &m[866]
    mov(r0, r6)
    sub(r0, 32)
    str(r0, [r7, 24])
    sub(r0, 32)
    str(r0, [r7, 104])
    mov(r0, 216)
    lsl(r0, r0, 3)
    add(r0, r6, r0)  # B + 1728
    str(r0, [r7, 16])
    mov(r0, 0)
    str(r0, [r7, 96])
    b(PHASE)
    # --- one channel: pb = (A * cs + B * sn + 8192 >> 14) + bias, ...
    label(CH)
    ldr(r5, [r7, 0])
    ldr(r6, [r7, 4])
    ldr(r0, [r7, 8])
    mul(r0, r5)
    ldr(r1, [r7, 12])
    mul(r1, r6)
    add(r0, r0, r1)
    ldr(r1, [r7, 76])
    add(r0, r0, r1)
    asr(r0, r0, 14)
    ldr(r1, [r7, 88])
    add(r0, r0, r1)  # pb
    ldr(r2, [r7, 16])  # this channel's ring
    ldr(r3, [r7, 20])
    add(r3, r2, r3)
    str(r0, [r3, 0])  # ring[pos] = pb
    ldr(r4, [r7, 24])  # G: PHASOR_B word of this channel; its running sum 10 words on
    ldr(r3, [r4, 40])
    add(r3, r3, r0)
    ldr(r1, [r7, 28])
    cmp(r1, 0)
    bgt(SB_OK)  # grows: sum + pb - ring[j0] + ring[j0]
    ldr(r5, [r7, 32])
    add(r5, r2, r5)
    ldr(r5, [r5, 0])
    sub(r3, r3, r5)
    cmp(r1, 0)
    beq(SB_OK)
    ldr(r5, [r7, 36])
    add(r5, r2, r5)
    ldr(r5, [r5, 0])
    sub(r3, r3, r5)
    label(SB_OK)
    str(r3, [r4, 40])  # running sum
    ldr(r1, [r7, 40])
    sub(r3, r3, r1)  # x = sb - nb
    ldr(r1, [r7, 44])
    add(r1, r2, r1)
    ldr(r1, [r1, 0])  # ab = ring[ja]
    add(r3, r3, r3)
    add(r3, r3, r1)
    sub(r3, r3, r0)
    ldr(r0, [r7, 88])
    sub(r0, r1, r0)
    ldr(r5, [r7, 48])
    mul(r0, r5)
    asr(r0, r0, 13)
    add(r3, r3, r0)  # x + x + ab - pb + (fr * (ab - bias) >> 13)
    ldr(r0, [r7, 52])
    add(r0, r2, r0)
    ldr(r0, [r0, 0])
    sub(r0, r0, r1)
    ldr(r5, [r7, 56])
    mul(r0, r5)
    asr(r0, r0, 13)
    add(r3, r3, r0)  # + (fr2 * (ring[jb] - ab) >> 13)
    ldr(r0, [r7, 60])
    add(r3, r3, r0)
    ldr(r0, [r7, 64])
    asr(r3, r0)
    ldr(r0, [r7, 68])
    mul(r3, r0)
    ldr(r0, [r7, 72])
    add(r3, r3, r0)
    asr(r3, r3, 13)  # ((x + rnd) >> a_sh) * m + 4096 >> 13
    ldr(r0, [r7, 80])
    cmp(r3, r0)
    ble(CL_HI)
    mov(r3, r0)
    b(CL_OK)
    label(CL_HI)
    neg(r0, r0)
    cmp(r3, r0)
    bge(CL_OK)
    mov(r3, r0)
    label(CL_OK)
    ldr(r0, [r7, 84])
    add(r0, r3, r0)
    str(r0, [r4, 0])  # PHASOR_B word
    add(r4, 4)
    str(r4, [r7, 24])
    ldr(r0, [r7, 92])
    add(r2, r2, r0)
    str(r2, [r7, 16])
    mov(r0, r3)
    mul(r0, r3)
    ldr(r1, [r7, 96])
    add(r1, 1)
    str(r1, [r7, 96])
    mov(r2, 1)
    tst(r1, r2)
    beq(IM_DONE)
    # re done: keep re**2, next (A, B) = (B, -A): the im channel of the same phase
    str(r0, [r7, 100])
    ldr(r5, [r7, 0])
    ldr(r6, [r7, 4])
    str(r6, [r7, 0])
    neg(r5, r5)
    str(r5, [r7, 4])
    b(CH)
    label(IM_DONE)
    ldr(r2, [r7, 100])
    add(r0, r0, r2)
    ldr(r2, [r7, 104])
    str(r0, [r2, 0])  # m[866 + phase] = re**2 + im**2
    add(r2, 4)
    str(r2, [r7, 104])
    cmp(r1, 6)
    beq(DONE)
    ldr(r0, [r7, 108])
    mov(r2, 128)
    lsl(r2, r2, 2)
    add(r0, r0, r2)
    str(r0, [r7, 108])
    ldr(r0, [r7, 112])
    add(r0, r0, r2)
    str(r0, [r7, 112])
    # (A, B) = (v, v delayed) of the phase
    label(PHASE)
    ldr(r2, [r7, 88])
    ldr(r0, [r7, 108])
    ldr(r0, [r0, 0])
    sub(r0, r0, r2)
    str(r0, [r7, 0])
    ldr(r0, [r7, 112])
    ldr(r0, [r0, 0])
    sub(r0, r0, r2)
    str(r0, [r7, 4])
    b(CH)
    label(DONE)
    mov(r6, sp)
    add(r6, 120)
    mov(sp, r6)
    mov(r0, 0)
