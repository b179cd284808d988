/* C reference of one control tick: a faithful int32_t port of firmware/tick.py compute()
 * (ADC scaling, pll.step, grid_measure.step, protect_fast.check, current.step with
 * _isqrt, svpwm.modulate), for `v2g bench` to compare the viper build against.
 *
 * Everything that is data comes from the firmware through a header that `v2g bench`
 * generates at build time (tick_ref_data.h, see v2g/bench.py): the sine and atan tables
 * (firmware/tables.py), every integer constant of the modules (PLL__RING_D, CUR_ENABLE,
 * ...), the initial state arrays exactly as tick.Control() and current.set_enable /
 * set_power leave them, and the ADC samples of host_tools/v2g/mp/tick_harness.py. So the
 * checksum printed here must equal the MicroPython harness's for the same N: that is
 * the test of this port.
 *
 * Semantics kept from the Python source: `>>` of a negative value is an arithmetic shift
 * (gcc's documented behaviour), `//` floors (floordiv below), left shifts of values that
 * may be negative go through uint32_t (SHL) to stay defined C. Every intermediate fits
 * in +/-2**30 (v2g.build.wordcheck proves it for the Python source), so int32_t never wraps.
 *
 * usage: tick_ref N [COMPUTE_TICKS]
 *   runs N ticks (ADC copy, compute, PWM record, tick counters), then COMPUTE_TICKS
 *   (default N; 0 skips) calls of compute() alone on a fresh state with fixed ADC words.
 * stdout: impl=c ticks=N elapsed_ns=.. tick_ns=.. compute_ticks=.. compute_ns=..
 *         state=.. n_set=.. n_off=.. checksum=..
 * Build: gcc -O2 -I<dir of tick_ref_data.h> tick_ref.c -o tick_ref
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tick_ref_data.h"

typedef int32_t i32;

#define SHL(x, n) ((i32)((uint32_t)(x) << (n)))

static inline i32 floordiv(i32 a, i32 b) {
    i32 q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) {
        q -= 1;
    }
    return q;
}

/* ---- pll.step ------------------------------------------------------------------- */
static void pll_step(i32 *st, i32 va, i32 vb, i32 vc) {
    const uint16_t *tab = SIN_Q14_B;
    const i32 *atan = ATAN_T28;
    if (va > PLL__V_MAX_Q12) va = PLL__V_MAX_Q12;
    else if (va < -PLL__V_MAX_Q12) va = -PLL__V_MAX_Q12;
    if (vb > PLL__V_MAX_Q12) vb = PLL__V_MAX_Q12;
    else if (vb < -PLL__V_MAX_Q12) vb = -PLL__V_MAX_Q12;
    if (vc > PLL__V_MAX_Q12) vc = PLL__V_MAX_Q12;
    else if (vc < -PLL__V_MAX_Q12) vc = -PLL__V_MAX_Q12;
    i32 al = ((va + va - vb - vc) * 10923 + 16384) >> 15;  /* rounded */
    i32 be = ((vb - vc) * 18919 + 16384) >> 15;

    i32 th_r = st[PLL__TH_R];
    i32 k = th_r >> PLL__SIN_IDX_SHIFT;
    i32 s0 = tab[k];
    i32 sn = s0 + (((tab[k + 1] - s0) * ((th_r >> 4) & 0x7FFF) + 16384) >> 15) - PLL__SIN_BIAS;
    i32 t = (th_r + PLL__QUARTER28) & PLL__MASK28;
    k = t >> PLL__SIN_IDX_SHIFT;
    s0 = tab[k];
    i32 cs = s0 + (((tab[k + 1] - s0) * ((t >> 4) & 0x7FFF) + 16384) >> 15) - PLL__SIN_BIAS;
    i32 d = (al * cs + be * sn + 8192) >> 14;
    i32 q = (be * cs - al * sn + 8192) >> 14;

    i32 pos = (st[PLL__POS] + 1) & PLL__RING_MASK;
    st[PLL__POS] = pos;
    st[PLL__RING_D + pos] = d + PLL__RING_BIAS;
    st[PLL__RING_Q + pos] = q + PLL__RING_BIAS;
    i32 w_r_q6 = st[PLL__W_R_Q6];
    i32 w_r = w_r_q6 >> 6;
    i32 win_q8 = floordiv(0x20000000, w_r >> 6);
    st[PLL_WIN_Q8] = win_q8;
    i32 ni = st[PLL__NI];
    i32 j = (pos - ni) & PLL__RING_MASK;
    i32 sd = st[PLL__SD] - PLL__SUM_BIAS + d - (st[PLL__RING_D + j] - PLL__RING_BIAS);
    i32 sq = st[PLL__SQ] - PLL__SUM_BIAS + q - (st[PLL__RING_Q + j] - PLL__RING_BIAS);
    if ((win_q8 >> 8) > ni) {
        ni += 1;
        j = (pos - ni + 1) & PLL__RING_MASK;
        sd += st[PLL__RING_D + j] - PLL__RING_BIAS;
        sq += st[PLL__RING_Q + j] - PLL__RING_BIAS;
    } else if ((win_q8 >> 8) < ni) {
        j = (pos - ni + 1) & PLL__RING_MASK;
        sd -= st[PLL__RING_D + j] - PLL__RING_BIAS;
        sq -= st[PLL__RING_Q + j] - PLL__RING_BIAS;
        ni -= 1;
    }
    st[PLL__NI] = ni;
    st[PLL__SD] = sd + PLL__SUM_BIAS;
    st[PLL__SQ] = sq + PLL__SUM_BIAS;
    i32 fr = SHL(win_q8 - SHL(ni, 8), 6);
    if (fr < 0) fr = 0;
    else if (fr > 16384) fr = 16384;
    i32 fr2 = (fr * fr) >> 15;
    j = (pos - ni) & PLL__RING_MASK;
    i32 a = st[PLL__RING_D + j] - PLL__RING_BIAS;
    i32 b = st[PLL__RING_D + ((j - 1) & PLL__RING_MASK)] - PLL__RING_BIAS;
    i32 x = sd + sd - d + a + ((fr * a) >> 13) + ((fr2 * (b - a)) >> 13);
    a = st[PLL__RING_Q + j] - PLL__RING_BIAS;
    b = st[PLL__RING_Q + ((j - 1) & PLL__RING_MASK)] - PLL__RING_BIAS;
    i32 y = sq + sq - q + a + ((fr * a) >> 13) + ((fr2 * (b - a)) >> 13);

    i32 phi = 0;
    if (x < 0) {
        x = -x;
        y = -y;
        phi = PLL__HALF28;
    }
    for (i32 i = 0; i < PLL__CORDIC_STEPS; i++) {
        if (y > 0) {
            t = x + (y >> i);
            y = y - (x >> i);
            phi += atan[i];
        } else {
            t = x - (y >> i);
            y = y + (x >> i);
            phi -= atan[i];
        }
        x = t;
    }
    i32 v_pos = ((x >> 8) * (((w_r >> 8) * 19898) >> 12)) >> 15;

    i32 d_q2 = st[PLL__D_Q2];
    i32 l_sh = st[PLL__L_SH];
    t = (th_r + phi - ((w_r * d_q2) >> 2)) & PLL__MASK28;
    st[PLL__RING_T + pos] = t;
    i32 dw = t - st[PLL__RING_T + ((pos - SHL(1, l_sh)) & PLL__RING_MASK)] - SHL(w_r, l_sh);
    dw = (((dw + PLL__HALF28) & PLL__MASK28) - PLL__HALF28) >> l_sh;
    if (dw > PLL__DW_CLAMP) dw = PLL__DW_CLAMP;
    else if (dw < -PLL__DW_CLAMP) dw = -PLL__DW_CLAMP;
    st[PLL_DW] = dw + PLL__SUM_BIAS;

    i32 theta = (th_r + phi + ((dw * d_q2) >> 2)) & PLL__MASK28;
    st[PLL_THETA] = theta;

    i32 w_f_q6 = st[PLL__W_F_Q6];
    i32 e = w_r + dw - (w_f_q6 >> 6);
    if (e > PLL__DW_CLAMP) e = PLL__DW_CLAMP;
    else if (e < -PLL__DW_CLAMP) e = -PLL__DW_CLAMP;
    st[PLL__W_F_Q6] = w_f_q6 + ((((e + 4) >> 3) * st[PLL__K_F]) >> 7);
    w_r_q6 += (dw * st[PLL__K_R]) >> 10;
    if (w_r_q6 < SHL(st[PLL__W_MIN], 6)) w_r_q6 = SHL(st[PLL__W_MIN], 6);
    else if (w_r_q6 > SHL(st[PLL__W_MAX], 6)) w_r_q6 = SHL(st[PLL__W_MAX], 6);
    st[PLL__W_R_Q6] = w_r_q6;
    st[PLL__TH_R] = (th_r + w_r) & PLL__MASK28;

    i32 cnt = st[PLL__LOCK_CNT];
    i32 lim = st[PLL__DW_LOCK];
    if (v_pos >= st[PLL__AMP_LOCK] && dw <= lim && dw >= -lim) {
        if (cnt < st[PLL__CNT_MAX]) cnt += 1;
        else st[PLL_LOCKED] = 1;
    } else {
        cnt -= 2;
        if (cnt <= 0) {
            cnt = 0;
            st[PLL_LOCKED] = 0;
        }
    }
    st[PLL__LOCK_CNT] = cnt;
    st[PLL_V_POS] = v_pos;

    k = theta >> PLL__SIN_IDX_SHIFT;
    s0 = tab[k];
    st[PLL_SIN_B] = s0 + (((tab[k + 1] - s0) * ((theta >> 4) & 0x7FFF)) >> 15);
    t = (theta + PLL__QUARTER28) & PLL__MASK28;
    k = t >> PLL__SIN_IDX_SHIFT;
    s0 = tab[k];
    st[PLL_COS_B] = s0 + (((tab[k + 1] - s0) * ((t >> 4) & 0x7FFF)) >> 15);
}

static i32 isqrt(i32 n);

/* ---- grid_measure.step ---------------------------------------------------------- */
static inline i32 clamp_v(i32 v) {
    if (v > GM__V_MAX_Q12) return GM__V_MAX_Q12;
    if (v < -GM__V_MAX_Q12) return -GM__V_MAX_Q12;
    return v;
}

/* one region: count while the condition holds (saturating at the hold), else 0 */
static inline void region(i32 *gm, int idx, int cond, int bit, i32 *due) {
    if (cond) {
        i32 n = gm[GM__CNT + idx];
        if (n < gm[GM__HOLD + idx]) {
            n += 1;
            gm[GM__CNT + idx] = n;
        }
        if (n >= gm[GM__HOLD + idx]) *due |= bit;
    } else {
        gm[GM__CNT + idx] = 0;
    }
}

/* one channel of the window: the product (biased) into its ring and running sum, the
 * normalised window mean (Q12, clamped) out */
static inline i32 gm_channel(i32 *gm, i32 ring, i32 sum, i32 pb, i32 pos, i32 j0, i32 j1,
                             i32 grow, i32 ja, i32 jb, i32 nb, i32 fr, i32 fr2, i32 rnd,
                             i32 a_sh, i32 m) {
    gm[ring + pos] = pb;
    i32 sb = gm[sum] + pb - gm[ring + j0];
    if (grow > 0) sb += gm[ring + j0];
    else if (grow < 0) sb -= gm[ring + j1];
    gm[sum] = sb;
    i32 ab = gm[ring + ja];
    i32 x = sb - nb;
    x = x + x + ab - pb + ((fr * (ab - GM__RING_BIAS)) >> 13);
    x += (fr2 * (gm[ring + jb] - ab)) >> 13;
    i32 c = (((x + rnd) >> a_sh) * m + 4096) >> 13;
    if (c > GM__COMP_MAX) c = GM__COMP_MAX;
    else if (c < -GM__COMP_MAX) c = -GM__COMP_MAX;
    return c;
}

static i32 gm_step(i32 *gm, const i32 *pll_st, i32 *prot, i32 va, i32 vb, i32 vc,
                   i32 armed) {
    va = clamp_v(va);
    vb = clamp_v(vb);
    vc = clamp_v(vc);
    i32 cs = pll_st[GM__PLL_COS_B] - GM__SIN_BIAS;
    i32 sn = pll_st[GM__PLL_SIN_B] - GM__SIN_BIAS;
    i32 win_q8 = pll_st[GM__PLL_WIN_Q8];
    if (win_q8 < gm[GM__WIN_MIN]) win_q8 = gm[GM__WIN_MIN];
    else if (win_q8 > gm[GM__WIN_MAX]) win_q8 = gm[GM__WIN_MAX];
    i32 pos = (gm[GM__POS] + 1) & GM__RING_MASK;
    gm[GM__POS] = pos;
    i32 k = pos & GM__VRING_MASK;
    gm[GM__VRING + k] = va + GM__RING_BIAS;
    gm[GM__VRING + GM__VRING_LEN + k] = vb + GM__RING_BIAS;
    gm[GM__VRING + 2 * GM__VRING_LEN + k] = vc + GM__RING_BIAS;
    i32 jd = (pos - ((win_q8 + 256) >> 9)) & GM__VRING_MASK;

    i32 ni = gm[GM__NI];
    i32 grow = 0;
    if ((win_q8 >> 8) > ni && ni < GM__NI_MAX) grow = 1;
    else if ((win_q8 >> 8) < ni) grow = -1;
    i32 j0 = (pos - ni) & GM__RING_MASK;
    i32 j1 = (j0 + 1) & GM__RING_MASK;
    ni += grow;
    gm[GM__NI] = ni;
    i32 ja = (pos - ni) & GM__RING_MASK;
    i32 jb = (ja - 1) & GM__RING_MASK;
    i32 nb = SHL(ni, 20);
    i32 fr = SHL(win_q8 - SHL(ni, 8), 6);
    if (fr < 0) fr = 0;
    else if (fr > 16384) fr = 16384;
    i32 fr2 = (fr * fr) >> 15;
    i32 m = floordiv(gm[GM__ONE_K], win_q8);
    i32 a_sh = gm[GM__A_SH];
    i32 rnd = (1 << a_sh) >> 1;
    i32 hi = -1, lo = 0x3FFFFFFF, ph_hi = 0, ph_lo = 0;
    for (i32 ph = 0; ph < 3; ph++) {
        i32 v = gm[GM__VRING + (ph << 7) + k] - GM__RING_BIAS;
        i32 d = gm[GM__VRING + (ph << 7) + jd] - GM__RING_BIAS;
        i32 ring = GM__RING0 + (ph << 9);
        i32 re = gm_channel(gm, ring, GM__SUM + 2 * ph,
                            ((v * cs + d * sn + 8192) >> 14) + GM__RING_BIAS, pos, j0, j1,
                            grow, ja, jb, nb, fr, fr2, rnd, a_sh, m);
        i32 im = gm_channel(gm, ring + GM__RING, GM__SUM + 2 * ph + 1,
                            ((d * cs - v * sn + 8192) >> 14) + GM__RING_BIAS, pos, j0, j1,
                            grow, ja, jb, nb, fr, fr2, rnd, a_sh, m);
        gm[GM_PHASOR_B + 2 * ph] = re + GM_BIAS;
        gm[GM_PHASOR_B + 2 * ph + 1] = im + GM_BIAS;
        i32 x = re * re + im * im;
        gm[GM_MAG2_A + ph] = x;
        if (x > hi) {
            hi = x;
            ph_hi = ph;
        }
        if (x < lo) {
            lo = x;
            ph_lo = ph;
        }
    }

    i32 due = 0;
    region(gm, 0, hi > gm[GM__OV2_M2], 1, &due);
    region(gm, 1, lo < gm[GM__UV2_M2], 2, &due);
    i32 w_f = pll_st[GM__PLL_W_F_Q6];
    int present = pll_st[GM__PLL_V_POS] >= GM__V_PRESENT_Q12;
    region(gm, 2, w_f > gm[GM__OF2_Q6] && present, 4, &due);
    region(gm, 3, w_f < gm[GM__UF2_Q6] && present, 8, &due);
    if (due == 0 || armed == 0) return 0;

    i32 code = prot[GM__PROT_LATCH];
    if (code != 0) return code;
    i32 n, ph, r;
    if (due & 3) {
        if (due & 1) {
            code = GM_OV2;
            n = hi;
            ph = ph_hi;
        } else {
            code = GM_UV2;
            n = lo;
            ph = ph_lo;
        }
        r = isqrt(n);
    } else {
        code = (due & 4) ? GM_OF2 : GM_UF2;
        n = w_f;
        ph = 3;
        r = floordiv(w_f, gm[GM__F_DIV]);
    }
    prot[GM__PROT_VALUE_B] = r + GM_BIAS;
    prot[GM__PROT_LATCH] = code;
    prot[GM__PROT_COUNT] = prot[GM__PROT_COUNT] + 1;
    gm[GM_TRIP_CODE] = code;
    gm[GM_TRIP_PHASE] = ph;
    gm[GM_TRIP_VALUE_B] = n + GM_BIAS;
    return code;
}

/* ---- protect_fast.check --------------------------------------------------------- */
static i32 protect_check(i32 *prot, i32 ia, i32 ib, i32 ic, i32 v_dc) {
    i32 code = prot[PROT_LATCH];
    if (code != 0) return code;
    i32 lim = prot[PROT_OC_TRIP_Q12];
    i32 value = 0;
    if (ia > lim || ia < -lim) {
        value = ia;
        code = PROT_OVER_CURRENT;
    } else if (ib > lim || ib < -lim) {
        value = ib;
        code = PROT_OVER_CURRENT;
    } else if (ic > lim || ic < -lim) {
        value = ic;
        code = PROT_OVER_CURRENT;
    } else if (v_dc > prot[PROT_VDC_TRIP_Q12]) {
        value = v_dc;
        code = PROT_DC_OVER_VOLTAGE;
    }
    if (code != 0) {
        prot[PROT_VALUE_B] = value + PROT__BIAS;
        prot[PROT_LATCH] = code;
        prot[PROT_COUNT] = prot[PROT_COUNT] + 1;
    }
    return code;
}

/* ---- current._isqrt, current.step ---------------------------------------------- */
static i32 isqrt(i32 n) {
    i32 root = 0;
    i32 bit = 1 << 28;
    while (bit > n) bit >>= 2;
    while (bit != 0) {
        if (n >= root + bit) {
            n -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    return root;
}

static void current_step(i32 *cc, const i32 *pll_st, i32 va, i32 vb, i32 vc, i32 ia, i32 ib,
                         i32 ic) {
    i32 cs = pll_st[PLL_COS_B] - CUR__SIN_BIAS;
    i32 sn = pll_st[PLL_SIN_B] - CUR__SIN_BIAS;
    i32 v_pos = pll_st[PLL_V_POS];
    i32 al = ((va + va - vb - vc) * 10923) >> 15;
    i32 be = ((vb - vc) * 18919) >> 15;
    i32 v_d = (al * cs + be * sn) >> 14;
    i32 v_q = (be * cs - al * sn) >> 14;
    al = ((ia + ia - ib - ic) * 10923) >> 15;
    be = ((ib - ic) * 18919) >> 15;
    i32 i_d = (al * cs + be * sn) >> 14;
    i32 i_q = (be * cs - al * sn) >> 14;
    cc[CUR_I_D] = i_d;
    cc[CUR_I_Q] = i_q;
    cc[CUR_V_D] = v_d;
    cc[CUR_V_Q] = v_q;
    cc[CUR_P_MEAS] = ((v_d * i_d) >> 12) + ((v_q * i_q) >> 12);
    cc[CUR_Q_MEAS] = ((v_q * i_d) >> 12) - ((v_d * i_q) >> 12);

    i32 p_ref = cc[CUR__P_REF_Q20] - CUR__BIAS;
    i32 q_ref = cc[CUR__Q_REF_Q20] - CUR__BIAS;
    if (cc[CUR_ENABLE] == 0) {
        cc[CUR__P_REF_Q20] = CUR__BIAS;
        cc[CUR__Q_REF_Q20] = CUR__BIAS;
        cc[CUR__INT_D_Q24] = CUR__BIAS;
        cc[CUR__INT_Q_Q24] = CUR__BIAS;
        cc[CUR_I_D_REF] = 0;
        cc[CUR_I_Q_REF] = 0;
        cc[CUR_U_D_B] = v_d + CUR__BIAS;
        cc[CUR_U_Q_B] = v_q + CUR__BIAS;
        return;
    }
    i32 ramp = cc[CUR_RAMP_Q20];
    i32 t = SHL(cc[CUR_P_CMD] - CUR__BIAS, 8) - p_ref;
    if (t > ramp) t = ramp;
    else if (t < -ramp) t = -ramp;
    p_ref += t;
    t = SHL(cc[CUR_Q_CMD] - CUR__BIAS, 8) - q_ref;
    if (t > ramp) t = ramp;
    else if (t < -ramp) t = -ramp;
    q_ref += t;
    cc[CUR__P_REF_Q20] = p_ref + CUR__BIAS;
    cc[CUR__Q_REF_Q20] = q_ref + CUR__BIAS;

    if (v_pos < CUR__V_MIN_Q12) v_pos = CUR__V_MIN_Q12;
    i32 i_max = cc[CUR_I_MAX_Q12];
    i32 id_ref = floordiv(SHL(p_ref >> 8, 12), v_pos);
    i32 iq_ref = -floordiv(SHL(q_ref >> 8, 12), v_pos);
    if (id_ref > i_max) id_ref = i_max;
    else if (id_ref < -i_max) id_ref = -i_max;
    /* as current.step: clamp to +/-i_max (same result), the root only beyond the limit */
    if (iq_ref > i_max) iq_ref = i_max;
    else if (iq_ref < -i_max) iq_ref = -i_max;
    i32 n = i_max * i_max - id_ref * id_ref;
    if (iq_ref * iq_ref > n) {
        t = isqrt(n);
        if (iq_ref > t) iq_ref = t;
        else if (iq_ref < -t) iq_ref = -t;
    }
    cc[CUR_I_D_REF] = id_ref;
    cc[CUR_I_Q_REF] = iq_ref;

    i32 kp = cc[CUR_KP_Q12];
    i32 ki = cc[CUR_KI_Q12];
    i32 int_max = cc[CUR_INT_MAX_Q24];
    i32 sat = cc[CUR_SAT];
    i32 wl = cc[CUR_WL_Q12];
    i32 e = id_ref - i_d;
    if (e > CUR__E_MAX) e = CUR__E_MAX;
    else if (e < -CUR__E_MAX) e = -CUR__E_MAX;
    i32 integ = cc[CUR__INT_D_Q24] - CUR__BIAS;
    if (sat == 0 || (e > 0 && integ < 0) || (e < 0 && integ > 0)) {
        integ += ki * e;
        if (integ > int_max) integ = int_max;
        else if (integ < -int_max) integ = -int_max;
    }
    cc[CUR__INT_D_Q24] = integ + CUR__BIAS;
    cc[CUR_U_D_B] = v_d + ((wl * i_q) >> 12) - ((kp * e) >> 12) - (integ >> 12) + CUR__BIAS;
    e = iq_ref - i_q;
    if (e > CUR__E_MAX) e = CUR__E_MAX;
    else if (e < -CUR__E_MAX) e = -CUR__E_MAX;
    integ = cc[CUR__INT_Q_Q24] - CUR__BIAS;
    if (sat == 0 || (e > 0 && integ < 0) || (e < 0 && integ > 0)) {
        integ += ki * e;
        if (integ > int_max) integ = int_max;
        else if (integ < -int_max) integ = -int_max;
    }
    cc[CUR__INT_Q_Q24] = integ + CUR__BIAS;
    cc[CUR_U_Q_B] = v_q - ((wl * i_d) >> 12) - ((kp * e) >> 12) - (integ >> 12) + CUR__BIAS;
}

/* ---- svpwm.modulate ------------------------------------------------------------- */
static inline i32 clamp_leg(i32 t, i32 lo, i32 hi, i32 *sat) {
    if (t < lo) {
        *sat = 1;
        return lo;
    }
    if (t > hi) {
        *sat = 1;
        return hi;
    }
    return t;
}

static void svpwm_modulate(i32 *cc, const i32 *pll_st, i32 *pw, i32 v_dc) {
    i32 cs = pll_st[PLL_COS_B] - PWM__SIN_BIAS;
    i32 sn = pll_st[PLL_SIN_B] - PWM__SIN_BIAS;
    i32 u_d = cc[CUR_U_D_B] - PWM__BIAS;
    i32 u_q = cc[CUR_U_Q_B] - PWM__BIAS;
    if (u_d > 16383) u_d = 16383;
    else if (u_d < -16383) u_d = -16383;
    if (u_q > 16383) u_q = 16383;
    else if (u_q < -16383) u_q = -16383;
    i32 ua = (u_d * cs - u_q * sn) >> 14;
    i32 be = (u_d * sn + u_q * cs) >> 14;
    i32 ub = (be * 28378 - ua * 16384) >> 15;
    i32 uc = -ua - ub;
    i32 mx = ua;
    if (ub > mx) mx = ub;
    if (uc > mx) mx = uc;
    i32 mn = ua;
    if (ub < mn) mn = ub;
    if (uc < mn) mn = uc;
    i32 v0 = (mx + mn) >> 1;
    if (v_dc < PWM__VDC_MIN_Q12) v_dc = PWM__VDC_MIN_Q12;
    else if (v_dc > PWM__VDC_MAX_Q12) v_dc = PWM__VDC_MAX_Q12;
    i32 period = pw[PWM_PERIOD];
    i32 lo = pw[PWM_D_MIN];
    i32 hi = period - lo;
    i32 half = period >> 1;
    i32 scale = floordiv(period << 14, v_dc);
    i32 sat = 0;
    ua -= v0;
    ub -= v0;
    uc -= v0;
    if (ua > v_dc) ua = v_dc;
    else if (ua < -v_dc) ua = -v_dc;
    if (ub > v_dc) ub = v_dc;
    else if (ub < -v_dc) ub = -v_dc;
    if (uc > v_dc) uc = v_dc;
    else if (uc < -v_dc) uc = -v_dc;
    pw[PWM_DUTY_A] = clamp_leg(half + ((ua * scale) >> 14), lo, hi, &sat);
    pw[PWM_DUTY_B] = clamp_leg(half + ((ub * scale) >> 14), lo, hi, &sat);
    pw[PWM_DUTY_C] = clamp_leg(half + ((uc * scale) >> 14), lo, hi, &sat);
    cc[CUR_SAT] = sat;
}

/* ---- tick.compute --------------------------------------------------------------- */
i32 compute(const i32 *raw, const i32 *cal, i32 *pll_st, i32 *cc, i32 *prot, i32 *pw,
            i32 *gm) {
    i32 va = ((raw[0] - cal[0]) * cal[7]) >> 14;
    i32 vb = ((raw[1] - cal[1]) * cal[8]) >> 14;
    i32 vc = ((raw[2] - cal[2]) * cal[9]) >> 14;
    i32 ia = ((raw[3] - cal[3]) * cal[10]) >> 14;
    i32 ib = ((raw[4] - cal[4]) * cal[11]) >> 14;
    i32 ic = ((raw[5] - cal[5]) * cal[12]) >> 14;
    i32 v_dc = ((raw[6] - cal[6]) * cal[13]) >> 14;
    pll_step(pll_st, va, vb, vc);
    gm_step(gm, pll_st, prot, va, vb, vc, cc[CUR_ENABLE]);
    i32 code = protect_check(prot, ia, ib, ic, v_dc);
    if (code != 0) cc[CUR_ENABLE] = 0;
    current_step(cc, pll_st, va, vb, vc, ia, ib, ic);
    if (code != 0) return code;
    if (cc[CUR_ENABLE] == 0) return -1;
    svpwm_modulate(cc, pll_st, pw, v_dc);
    return 0;
}

/* ---- driver: the tick loop of tick.make_tick with the bench HAL ----------------- */
i32 raw[TICK_CHANNELS], cal[2 * TICK_CHANNELS];
i32 pll_st[PLL_STATE_WORDS], cc[CUR_WORDS], prot[PROT_WORDS], pw[PWM_WORDS];
i32 gm[GM_STATE_WORDS];
i32 stats[TICK_STATS_WORDS], rec[8];

static void reset(void) {
    memcpy(cal, INIT_CAL, sizeof cal);
    memcpy(pll_st, INIT_PLL, sizeof pll_st);
    memcpy(cc, INIT_CC, sizeof cc);
    memcpy(prot, INIT_PROT, sizeof prot);
    memcpy(pw, INIT_PW, sizeof pw);
    memcpy(gm, INIT_GM, sizeof gm);
    memset(stats, 0, sizeof stats);
    memset(rec, 0, sizeof rec);
    memset(raw, 0, sizeof raw);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t checksum(void) {
    const i32 *arrays[5] = {pll_st, cc, prot, pw, gm};
    const int sizes[5] = {PLL_STATE_WORDS, CUR_WORDS, PROT_WORDS, PWM_WORDS, GM_STATE_WORDS};
    const int64_t mod = INT64_C(1) << 30;
    int64_t s = 0, idx = 0;
    for (int a = 0; a < 5; a++) {
        for (int i = 0; i < sizes[a]; i++) {
            idx += 1;
            s = ((s + idx * arrays[a][i]) % mod + mod) % mod;
        }
    }
    return s;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: tick_ref N [COMPUTE_TICKS]\n");
        return 1;
    }
    char *end;
    long n = strtol(argv[1], &end, 10);
    long n_compute = n;
    if (*end || n < 1) {
        fprintf(stderr, "tick_ref: N must be an integer >= 1, got %s\n", argv[1]);
        return 1;
    }
    if (argc == 3) {
        n_compute = strtol(argv[2], &end, 10);
        if (*end || n_compute < 0) {
            fprintf(stderr, "tick_ref: COMPUTE_TICKS must be an integer >= 0, got %s\n",
                    argv[2]);
            return 1;
        }
    }
    reset();
    const int wrap = SAMPLE_WORDS - TICK_CHANNELS + 1;
    int pos = 0;
    int64_t t0 = now_ns();
    for (long k = 0; k < n; k++) {
        for (int c = 0; c < TICK_CHANNELS; c++) raw[c] = SAMPLES[pos + c];  /* adc_read */
        pos += TICK_CHANNELS;
        if (pos >= wrap) pos = 0;
        i32 state = compute(raw, cal, pll_st, cc, prot, pw, gm);
        if (state == 0) {  /* pwm_set */
            rec[0] += 1;
            rec[2] = pw[PWM_DUTY_A];
            rec[3] = pw[PWM_DUTY_B];
            rec[4] = pw[PWM_DUTY_C];
            stats[TICK_STATE] = 1;
        } else {  /* pwm_off */
            rec[1] += 1;
            stats[TICK_STATE] = state > 0 ? state : 0;
        }
        stats[TICK_COUNT] = (stats[TICK_COUNT] + 1) & TICK__COUNT_MASK;
    }
    int64_t t1 = now_ns();
    printf("impl=c ticks=%ld elapsed_ns=%lld tick_ns=%lld", n, (long long)(t1 - t0),
           (long long)((t1 - t0) / n));
    i32 state = stats[TICK_STATE], n_set = rec[0], n_off = rec[1];
    long long sum = (long long)checksum();

    printf(" compute_ticks=%ld", n_compute);
    if (n_compute > 0) {
        reset();
        for (int c = 0; c < TICK_CHANNELS; c++) raw[c] = SAMPLES[c];
        t0 = now_ns();
        for (long k = 0; k < n_compute; k++) compute(raw, cal, pll_st, cc, prot, pw, gm);
        t1 = now_ns();
        printf(" compute_ns=%.1f", (double)(t1 - t0) / (double)n_compute);
    }
    printf(" state=%d n_set=%d n_off=%d checksum=%lld\n", state, n_set, n_off, sum);
    return 0;
}
