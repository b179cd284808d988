"""``tick_fused_compute`` for cores with the inline Thumb assembler: generated, do not edit.

The stretches of THUMB_KERNELS (``v2g.build.gen_tick``) call the kernels of ``tick_thumb``
(firmware/thumb/); importing this module fails where that one cannot be compiled
(no asm_thumb), and ``tick`` keeps the viper body. Regenerate with
``python -m v2g.build.gen_tick``. Context: tick (allocation-free).
"""

import micropython

from tick_thumb import gm_channels, pll_window_cordic


@micropython.viper
def compute(m: ptr32) -> int:
    """tick.compute fused (generated), its heaviest stretches in tick_thumb's asm_thumb kernels. Context: tick."""
    grid_measure_n = 0
    va = (m[0] - m[7]) * m[14] >> 14
    vb = (m[1] - m[8]) * m[15] >> 14
    vc = (m[2] - m[9]) * m[16] >> 14
    ia = (m[3] - m[10]) * m[17] >> 14
    ib = (m[4] - m[11]) * m[18] >> 14
    ic = (m[5] - m[12]) * m[19] >> 14
    v_dc = (m[6] - m[13]) * m[20] >> 14
    pll_va = va
    pll_vb = vb
    pll_vc = vc
    if pll_va > 16383:
        pll_va = 16383
    elif pll_va < -16383:
        pll_va = -16383
    if pll_vb > 16383:
        pll_vb = 16383
    elif pll_vb < -16383:
        pll_vb = -16383
    if pll_vc > 16383:
        pll_vc = 16383
    elif pll_vc < -16383:
        pll_vc = -16383
    pll_al = (pll_va + pll_va - pll_vb - pll_vc) * 10923 + 16384 >> 15
    pll_be = (pll_vb - pll_vc) * 18919 + 16384 >> 15
    pll_th_r = m[21]
    pll_k = pll_th_r >> 19
    pll_s0 = m[2850 + pll_k]
    pll_sn = pll_s0 + ((m[2851 + pll_k] - pll_s0) * (pll_th_r >> 4 & 32767) + 16384 >> 15) - 16384
    pll_t = pll_th_r + 67108864 & 268435455
    pll_k = pll_t >> 19
    pll_s0 = m[2850 + pll_k]
    pll_cs = pll_s0 + ((m[2851 + pll_k] - pll_s0) * (pll_t >> 4 & 32767) + 16384 >> 15) - 16384
    pll_d = pll_al * pll_cs + pll_be * pll_sn + 8192 >> 14
    pll_q = pll_be * pll_cs - pll_al * pll_sn + 8192 >> 14
    pll_pos = m[24] + 1 & 255
    m[24] = pll_pos
    m[53 + pll_pos] = pll_d + 1048576
    m[309 + pll_pos] = pll_q + 1048576
    pll_w_r_q6 = m[22]
    pll_w_r = pll_w_r_q6 >> 6
    pll_win_q8 = 536870912 // (pll_w_r >> 6)
    m[35] = pll_win_q8
    pll_ni = m[25]
    pll_j = pll_pos - pll_ni & 255
    pll_sd = m[26] - 536870912 + pll_d - (m[53 + pll_j] - 1048576)
    pll_sq = m[27] - 536870912 + pll_q - (m[309 + pll_j] - 1048576)
    if pll_win_q8 >> 8 > pll_ni:
        pll_ni += 1
        pll_j = pll_pos - pll_ni + 1 & 255
        pll_sd += m[53 + pll_j] - 1048576
        pll_sq += m[309 + pll_j] - 1048576
    elif pll_win_q8 >> 8 < pll_ni:
        pll_j = pll_pos - pll_ni + 1 & 255
        pll_sd -= m[53 + pll_j] - 1048576
        pll_sq -= m[309 + pll_j] - 1048576
        pll_ni -= 1
    m[25] = pll_ni
    m[26] = pll_sd + 536870912
    m[27] = pll_sq + 536870912
    pll_phi = int(pll_window_cordic(m))
    pll_v_pos = m[29]
    pll_d_q2 = m[41]
    pll_l_sh = m[42]
    pll_t = pll_th_r + pll_phi - (pll_w_r * pll_d_q2 >> 2) & 268435455
    m[565 + pll_pos] = pll_t
    pll_dw = pll_t - m[565 + (pll_pos - (1 << pll_l_sh) & 255)] - (pll_w_r << pll_l_sh)
    pll_dw = (pll_dw + 134217728 & 268435455) - 134217728 >> pll_l_sh
    if pll_dw > 524288:
        pll_dw = 524288
    elif pll_dw < -524288:
        pll_dw = -524288
    m[34] = pll_dw + 536870912
    pll_theta = pll_th_r + pll_phi + (pll_dw * pll_d_q2 >> 2) & 268435455
    m[28] = pll_theta
    pll_w_f_q6 = m[23]
    pll_e = pll_w_r + pll_dw - (pll_w_f_q6 >> 6)
    if pll_e > 524288:
        pll_e = 524288
    elif pll_e < -524288:
        pll_e = -524288
    m[23] = pll_w_f_q6 + ((pll_e + 4 >> 3) * m[40] >> 7)
    pll_w_r_q6 += pll_dw * m[39] >> 10
    if pll_w_r_q6 < m[37] << 6:
        pll_w_r_q6 = m[37] << 6
    elif pll_w_r_q6 > m[38] << 6:
        pll_w_r_q6 = m[38] << 6
    m[22] = pll_w_r_q6
    m[21] = pll_th_r + pll_w_r & 268435455
    pll_cnt = m[31]
    pll_lim = m[43]
    if pll_v_pos >= m[44] and pll_dw <= pll_lim and (pll_dw >= -pll_lim):
        if pll_cnt < m[45]:
            pll_cnt += 1
        else:
            m[30] = 1
    else:
        pll_cnt -= 2
        if pll_cnt <= 0:
            pll_cnt = 0
            m[30] = 0
    m[31] = pll_cnt
    m[29] = pll_v_pos
    pll_k = pll_theta >> 19
    pll_s0 = m[2850 + pll_k]
    m[33] = pll_s0 + ((m[2851 + pll_k] - pll_s0) * (pll_theta >> 4 & 32767) >> 15)
    pll_t = pll_theta + 67108864 & 268435455
    pll_k = pll_t >> 19
    pll_s0 = m[2850 + pll_k]
    m[32] = pll_s0 + ((m[2851 + pll_k] - pll_s0) * (pll_t >> 4 & 32767) >> 15)
    grid_measure_va = va
    grid_measure_vb = vb
    grid_measure_vc = vc
    grid_measure_armed = m[831]
    if grid_measure_va > 16383:
        grid_measure_va = 16383
    elif grid_measure_va < -16383:
        grid_measure_va = -16383
    if grid_measure_vb > 16383:
        grid_measure_vb = 16383
    elif grid_measure_vb < -16383:
        grid_measure_vb = -16383
    if grid_measure_vc > 16383:
        grid_measure_vc = 16383
    elif grid_measure_vc < -16383:
        grid_measure_vc = -16383
    grid_measure_win_q8 = m[35]
    if grid_measure_win_q8 < m[904]:
        grid_measure_win_q8 = m[904]
    elif grid_measure_win_q8 > m[905]:
        grid_measure_win_q8 = m[905]
    grid_measure_pos = m[882] + 1 & 255
    m[882] = grid_measure_pos
    grid_measure_k = grid_measure_pos & 127
    m[930 + grid_measure_k] = grid_measure_va + 1048576
    m[1058 + grid_measure_k] = grid_measure_vb + 1048576
    m[1186 + grid_measure_k] = grid_measure_vc + 1048576
    gm_channels(m, m[902] // grid_measure_win_q8)
    grid_measure_m_a = m[866]
    grid_measure_m_b = m[867]
    grid_measure_m_c = m[868]
    grid_measure_hi = grid_measure_m_a
    grid_measure_ph_hi = 0
    if grid_measure_m_b > grid_measure_hi:
        grid_measure_hi = grid_measure_m_b
        grid_measure_ph_hi = 1
    if grid_measure_m_c > grid_measure_hi:
        grid_measure_hi = grid_measure_m_c
        grid_measure_ph_hi = 2
    grid_measure_lo = grid_measure_m_a
    grid_measure_ph_lo = 0
    if grid_measure_m_b < grid_measure_lo:
        grid_measure_lo = grid_measure_m_b
        grid_measure_ph_lo = 1
    if grid_measure_m_c < grid_measure_lo:
        grid_measure_lo = grid_measure_m_c
        grid_measure_ph_lo = 2
    grid_measure_due = 0
    if grid_measure_hi > m[894]:
        grid_measure_n = m[890]
        if grid_measure_n < m[898]:
            grid_measure_n += 1
            m[890] = grid_measure_n
        if grid_measure_n >= m[898]:
            grid_measure_due = 1
    else:
        m[890] = 0
    if grid_measure_lo < m[895]:
        grid_measure_n = m[891]
        if grid_measure_n < m[899]:
            grid_measure_n += 1
            m[891] = grid_measure_n
        if grid_measure_n >= m[899]:
            grid_measure_due |= 2
    else:
        m[891] = 0
    grid_measure_w_f = m[23]
    if grid_measure_w_f > m[896] and m[29] >= 410:
        grid_measure_n = m[892]
        if grid_measure_n < m[900]:
            grid_measure_n += 1
            m[892] = grid_measure_n
        if grid_measure_n >= m[900]:
            grid_measure_due |= 4
    else:
        m[892] = 0
    if grid_measure_w_f < m[897] and m[29] >= 410:
        grid_measure_n = m[893]
        if grid_measure_n < m[901]:
            grid_measure_n += 1
            m[893] = grid_measure_n
        if grid_measure_n >= m[901]:
            grid_measure_due |= 8
    else:
        m[893] = 0
    if not grid_measure_due or not grid_measure_armed:
        grid_measure_ret = 0
    else:
        grid_measure_code = m[855]
        if grid_measure_code:
            grid_measure_ret = grid_measure_code
        else:
            if grid_measure_due & 3:
                if grid_measure_due & 1:
                    grid_measure_code = 65
                    grid_measure_n = grid_measure_hi
                    grid_measure_ph = grid_measure_ph_hi
                else:
                    grid_measure_code = 66
                    grid_measure_n = grid_measure_lo
                    grid_measure_ph = grid_measure_ph_lo
                grid_measure_r = 0
                grid_measure_bit = 268435456
                while grid_measure_bit > grid_measure_n:
                    grid_measure_bit >>= 2
                grid_measure_v = grid_measure_n
                while grid_measure_bit:
                    if grid_measure_v >= grid_measure_r + grid_measure_bit:
                        grid_measure_v -= grid_measure_r + grid_measure_bit
                        grid_measure_r = (grid_measure_r >> 1) + grid_measure_bit
                    else:
                        grid_measure_r >>= 1
                    grid_measure_bit >>= 2
            else:
                grid_measure_code = 68
                if grid_measure_due & 4:
                    grid_measure_code = 67
                grid_measure_n = grid_measure_w_f
                grid_measure_ph = 3
                grid_measure_r = grid_measure_w_f // m[906]
            m[856] = grid_measure_r + 536870912
            m[855] = grid_measure_code
            m[857] = m[857] + 1
            m[869] = grid_measure_code
            m[870] = grid_measure_ph
            m[871] = grid_measure_n + 536870912
            grid_measure_ret = grid_measure_code
    protect_fast_code = m[855]
    if protect_fast_code:
        code = protect_fast_code
    else:
        protect_fast_lim = m[853]
        protect_fast_value = 0
        if ia > protect_fast_lim or ia < -protect_fast_lim:
            protect_fast_value = ia
            protect_fast_code = 33
        elif ib > protect_fast_lim or ib < -protect_fast_lim:
            protect_fast_value = ib
            protect_fast_code = 33
        elif ic > protect_fast_lim or ic < -protect_fast_lim:
            protect_fast_value = ic
            protect_fast_code = 33
        elif v_dc > m[854]:
            protect_fast_value = v_dc
            protect_fast_code = 34
        if protect_fast_code:
            m[856] = protect_fast_value + 536870912
            m[855] = protect_fast_code
            m[857] = m[857] + 1
        code = protect_fast_code
    if code:
        m[831] = 0
    current_cs = m[32] - 16384
    current_sn = m[33] - 16384
    current_v_pos = m[29]
    current_al = (va + va - vb - vc) * 10923 >> 15
    current_be = (vb - vc) * 18919 >> 15
    current_v_d = current_al * current_cs + current_be * current_sn >> 14
    current_v_q = current_be * current_cs - current_al * current_sn >> 14
    current_al = (ia + ia - ib - ic) * 10923 >> 15
    current_be = (ib - ic) * 18919 >> 15
    current_i_d = current_al * current_cs + current_be * current_sn >> 14
    current_i_q = current_be * current_cs - current_al * current_sn >> 14
    m[841] = current_i_d
    m[842] = current_i_q
    m[843] = current_v_d
    m[844] = current_v_q
    m[847] = (current_v_d * current_i_d >> 12) + (current_v_q * current_i_q >> 12)
    m[848] = (current_v_q * current_i_d >> 12) - (current_v_d * current_i_q >> 12)
    current_p_ref = m[833] - 536870912
    current_q_ref = m[834] - 536870912
    if not m[831]:
        m[833] = 536870912
        m[834] = 536870912
        m[835] = 536870912
        m[836] = 536870912
        m[849] = 0
        m[850] = 0
        m[845] = current_v_d + 536870912
        m[846] = current_v_q + 536870912
    else:
        current_ramp = m[825]
        current_t = (m[829] - 536870912 << 8) - current_p_ref
        if current_t > current_ramp:
            current_t = current_ramp
        elif current_t < -current_ramp:
            current_t = -current_ramp
        current_p_ref += current_t
        current_t = (m[830] - 536870912 << 8) - current_q_ref
        if current_t > current_ramp:
            current_t = current_ramp
        elif current_t < -current_ramp:
            current_t = -current_ramp
        current_q_ref += current_t
        m[833] = current_p_ref + 536870912
        m[834] = current_q_ref + 536870912
        if current_v_pos < 410:
            current_v_pos = 410
        current_i_max = m[824]
        current_id_ref = (current_p_ref >> 8 << 12) // current_v_pos
        current_iq_ref = -((current_q_ref >> 8 << 12) // current_v_pos)
        if current_id_ref > current_i_max:
            current_id_ref = current_i_max
        elif current_id_ref < -current_i_max:
            current_id_ref = -current_i_max
        if current_iq_ref > current_i_max:
            current_iq_ref = current_i_max
        elif current_iq_ref < -current_i_max:
            current_iq_ref = -current_i_max
        current_n = current_i_max * current_i_max - current_id_ref * current_id_ref
        if current_iq_ref * current_iq_ref > current_n:
            isqrt_n = current_n
            isqrt_root = 0
            isqrt_bit = 268435456
            while isqrt_bit > isqrt_n:
                isqrt_bit >>= 2
            while isqrt_bit:
                if isqrt_n >= isqrt_root + isqrt_bit:
                    isqrt_n -= isqrt_root + isqrt_bit
                    isqrt_root = (isqrt_root >> 1) + isqrt_bit
                else:
                    isqrt_root >>= 1
                isqrt_bit >>= 2
            current_t = isqrt_root
            if current_iq_ref > current_t:
                current_iq_ref = current_t
            elif current_iq_ref < -current_t:
                current_iq_ref = -current_t
        m[849] = current_id_ref
        m[850] = current_iq_ref
        current_kp = m[821]
        current_ki = m[822]
        current_int_max = m[826]
        current_sat = m[837]
        current_wl = m[823]
        current_e = current_id_ref - current_i_d
        if current_e > 8192:
            current_e = 8192
        elif current_e < -8192:
            current_e = -8192
        current_integ = m[835] - 536870912
        if not current_sat or (current_e > 0 and current_integ < 0) or (current_e < 0 and current_integ > 0):
            current_integ += current_ki * current_e
            if current_integ > current_int_max:
                current_integ = current_int_max
            elif current_integ < -current_int_max:
                current_integ = -current_int_max
        m[835] = current_integ + 536870912
        m[845] = current_v_d + (current_wl * current_i_q >> 12) - (current_kp * current_e >> 12) - (current_integ >> 12) + 536870912
        current_e = current_iq_ref - current_i_q
        if current_e > 8192:
            current_e = 8192
        elif current_e < -8192:
            current_e = -8192
        current_integ = m[836] - 536870912
        if not current_sat or (current_e > 0 and current_integ < 0) or (current_e < 0 and current_integ > 0):
            current_integ += current_ki * current_e
            if current_integ > current_int_max:
                current_integ = current_int_max
            elif current_integ < -current_int_max:
                current_integ = -current_int_max
        m[836] = current_integ + 536870912
        m[846] = current_v_q - (current_wl * current_i_d >> 12) - (current_kp * current_e >> 12) - (current_integ >> 12) + 536870912
    if code:
        return code
    if not m[831]:
        return -1
    svpwm_v_dc = v_dc
    svpwm_cs = m[32] - 16384
    svpwm_sn = m[33] - 16384
    svpwm_u_d = m[845] - 536870912
    svpwm_u_q = m[846] - 536870912
    if svpwm_u_d > 16383:
        svpwm_u_d = 16383
    elif svpwm_u_d < -16383:
        svpwm_u_d = -16383
    if svpwm_u_q > 16383:
        svpwm_u_q = 16383
    elif svpwm_u_q < -16383:
        svpwm_u_q = -16383
    svpwm_ua = svpwm_u_d * svpwm_cs - svpwm_u_q * svpwm_sn >> 14
    svpwm_be = svpwm_u_d * svpwm_sn + svpwm_u_q * svpwm_cs >> 14
    svpwm_ub = svpwm_be * 28378 - svpwm_ua * 16384 >> 15
    svpwm_uc = -svpwm_ua - svpwm_ub
    svpwm_mx = svpwm_ua
    if svpwm_ub > svpwm_mx:
        svpwm_mx = svpwm_ub
    if svpwm_uc > svpwm_mx:
        svpwm_mx = svpwm_uc
    svpwm_mn = svpwm_ua
    if svpwm_ub < svpwm_mn:
        svpwm_mn = svpwm_ub
    if svpwm_uc < svpwm_mn:
        svpwm_mn = svpwm_uc
    svpwm_v0 = svpwm_mx + svpwm_mn >> 1
    if svpwm_v_dc < 2048:
        svpwm_v_dc = 2048
    elif svpwm_v_dc > 16384:
        svpwm_v_dc = 16384
    svpwm_period = m[861]
    svpwm_lo = m[862]
    svpwm_hi = svpwm_period - svpwm_lo
    svpwm_half = svpwm_period >> 1
    svpwm_scale = (svpwm_period << 14) // svpwm_v_dc
    svpwm_sat = 0
    svpwm_ua -= svpwm_v0
    svpwm_ub -= svpwm_v0
    svpwm_uc -= svpwm_v0
    if svpwm_ua > svpwm_v_dc:
        svpwm_ua = svpwm_v_dc
    elif svpwm_ua < -svpwm_v_dc:
        svpwm_ua = -svpwm_v_dc
    if svpwm_ub > svpwm_v_dc:
        svpwm_ub = svpwm_v_dc
    elif svpwm_ub < -svpwm_v_dc:
        svpwm_ub = -svpwm_v_dc
    if svpwm_uc > svpwm_v_dc:
        svpwm_uc = svpwm_v_dc
    elif svpwm_uc < -svpwm_v_dc:
        svpwm_uc = -svpwm_v_dc
    svpwm_t = svpwm_half + (svpwm_ua * svpwm_scale >> 14)
    if svpwm_t < svpwm_lo:
        svpwm_t = svpwm_lo
        svpwm_sat = 1
    elif svpwm_t > svpwm_hi:
        svpwm_t = svpwm_hi
        svpwm_sat = 1
    m[863] = svpwm_t
    svpwm_t = svpwm_half + (svpwm_ub * svpwm_scale >> 14)
    if svpwm_t < svpwm_lo:
        svpwm_t = svpwm_lo
        svpwm_sat = 1
    elif svpwm_t > svpwm_hi:
        svpwm_t = svpwm_hi
        svpwm_sat = 1
    m[864] = svpwm_t
    svpwm_t = svpwm_half + (svpwm_uc * svpwm_scale >> 14)
    if svpwm_t < svpwm_lo:
        svpwm_t = svpwm_lo
        svpwm_sat = 1
    elif svpwm_t > svpwm_hi:
        svpwm_t = svpwm_hi
        svpwm_sat = 1
    m[865] = svpwm_t
    m[837] = svpwm_sat
    return 0
