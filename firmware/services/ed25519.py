"""Ed25519 signature verification (RFC 8032, verify only) in plain Python big integers.

    ok = ed25519.verify(pub32, sig64, msg)          # True / False, never raises for bad input
    for _ in ed25519.verify_steps(pub32, sig64, msg, out): feed_watchdog()   # sliced

The board holds only the public key; signing happens on the host (``cryptography``).
Checked: the public key decodes to a curve point (y < p, x recoverable), S < L, and
``[S]B - [k]A`` encodes to exactly R (k = SHA-512(R || A || msg) mod L), which also
rejects non-canonical R. This is the "cofactorless" check of RFC 8032 5.1.7 as
``cryptography``/OpenSSL do it; the tests compare both on valid and tampered inputs.

Cost: one SHA-512 block in Python (the ports' ``hashlib`` has no SHA-512; ``hashlib.sha512``
is used where it exists), one square root and one inversion (``pow`` with 255-bit
exponents), then a joint double-and-add over 253 bits (Shamir's trick: ~253 doublings,
~190 additions, 8-9 multiplications mod p each). Measured on the x64 unix runtime:
see docs/update.md (about 0.1 s); a board's interpreter is 20-50x slower. RAM: a few
dozen 32-byte integers live at a time (under 2 KB), but every operation allocates a new
big integer: run it outside the tick, and slice it (``verify_steps`` yields every
``SLICE_BITS`` bits) when the watchdog must be fed meanwhile.

Context: supervisor / services (asyncio) or the REPL; never the tick. Runs on
MicroPython (ports with arbitrary-precision integers: unix, rp2, esp32, stm32) and CPython.
"""

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
D2 = 2 * D % P
SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
SLICE_BITS = 16  # verify_steps yields after this many bits of the scalar loop

_M64 = 0xFFFFFFFFFFFFFFFF
_K512 = None  # SHA-512 round constants, built at first use (80 x 64-bit)


def _k512():
    global _K512
    if _K512 is None:
        # first 64 bits of the fractional parts of the cube roots of the first 80 primes
        h = ("428a2f98d728ae22 7137449123ef65cd b5c0fbcfec4d3b2f e9b5dba58189dbbc "
             "3956c25bf348b538 59f111f1b605d019 923f82a4af194f9b ab1c5ed5da6d8118 "
             "d807aa98a3030242 12835b0145706fbe 243185be4ee4b28c 550c7dc3d5ffb4e2 "
             "72be5d74f27b896f 80deb1fe3b1696b1 9bdc06a725c71235 c19bf174cf692694 "
             "e49b69c19ef14ad2 efbe4786384f25e3 0fc19dc68b8cd5b5 240ca1cc77ac9c65 "
             "2de92c6f592b0275 4a7484aa6ea6e483 5cb0a9dcbd41fbd4 76f988da831153b5 "
             "983e5152ee66dfab a831c66d2db43210 b00327c898fb213f bf597fc7beef0ee4 "
             "c6e00bf33da88fc2 d5a79147930aa725 06ca6351e003826f 142929670a0e6e70 "
             "27b70a8546d22ffc 2e1b21385c26c926 4d2c6dfc5ac42aed 53380d139d95b3df "
             "650a73548baf63de 766a0abb3c77b2a8 81c2c92e47edaee6 92722c851482353b "
             "a2bfe8a14cf10364 a81a664bbc423001 c24b8b70d0f89791 c76c51a30654be30 "
             "d192e819d6ef5218 d69906245565a910 f40e35855771202a 106aa07032bbd1b8 "
             "19a4c116b8d2d0c8 1e376c085141ab53 2748774cdf8eeb99 34b0bcb5e19b48a8 "
             "391c0cb3c5c95a63 4ed8aa4ae3418acb 5b9cca4f7763e373 682e6ff3d6b2b8a3 "
             "748f82ee5defb2fc 78a5636f43172f60 84c87814a1f0ab72 8cc702081a6439ec "
             "90befffa23631e28 a4506cebde82bde9 bef9a3f7b2c67915 c67178f2e372532b "
             "ca273eceea26619c d186b8c721c0c207 eada7dd6cde0eb1e f57d4f7fee6ed178 "
             "06f067aa72176fba 0a637dc5a2c898a6 113f9804bef90dae 1b710b35131c471b "
             "28db77f523047d84 32caab7b40c72493 3c9ebe0a15c9bebc 431d67c49c100d4c "
             "4cc5d4becb3e42b6 597f299cfc657e2a 5fcb6fab3ad6faec 6c44198c4a475817")
        _K512 = [int(w, 16) for w in h.split()]
    return _K512


def _rotr(x, n):
    return ((x >> n) | (x << (64 - n))) & _M64


def sha512(data):
    """SHA-512 of ``data`` (bytes): the port's ``hashlib.sha512`` when it has one, else
    Python (about 1 ms per 128-byte block on the x64 unix runtime)."""
    try:
        import hashlib

        return hashlib.sha512(data).digest()
    except (ImportError, AttributeError):
        pass
    k = _k512()
    h = [0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
         0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179]
    n = len(data)
    pad = bytearray(data)
    pad.append(0x80)
    while len(pad) % 128 != 112:
        pad.append(0)
    pad.extend((n * 8).to_bytes(16, "big"))
    for off in range(0, len(pad), 128):
        w = [int.from_bytes(pad[off + 8 * i:off + 8 * i + 8], "big") for i in range(16)]
        for i in range(16, 80):
            x = w[i - 15]
            y = w[i - 2]
            s0 = _rotr(x, 1) ^ _rotr(x, 8) ^ (x >> 7)
            s1 = _rotr(y, 19) ^ _rotr(y, 61) ^ (y >> 6)
            w.append((w[i - 16] + s0 + w[i - 7] + s1) & _M64)
        a, b, c, d, e, f, g, hh = h
        for i in range(80):
            t1 = (hh + (_rotr(e, 14) ^ _rotr(e, 18) ^ _rotr(e, 41))
                  + ((e & f) ^ (~e & g)) + k[i] + w[i]) & _M64
            t2 = ((_rotr(a, 28) ^ _rotr(a, 34) ^ _rotr(a, 39))
                  + ((a & b) ^ (a & c) ^ (b & c))) & _M64
            hh = g
            g = f
            f = e
            e = (d + t1) & _M64
            d = c
            c = b
            b = a
            a = (t1 + t2) & _M64
        # MicroPython's zip takes no strict=
        h = [(x + y) & _M64 for x, y in zip(h, (a, b, c, d, e, f, g, hh))]  # noqa: B905
    out = bytearray()
    for x in h:
        out.extend(x.to_bytes(8, "big"))
    return bytes(out)


# ---- the curve, extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, x*y = T/Z ----

def _add(p1, p2):
    """Point addition (RFC 8032 5.1.4; complete: also doubles)."""
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * D2 * t2 % P
    d = 2 * z1 * z2 % P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p1):
    """Point doubling (dbl-2008-hwcd, a = -1): 4 squarings, 4 multiplications."""
    x1, y1, z1, _ = p1
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1) % P
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _decode(s):
    """32 bytes -> point, or None when they encode no point (y >= p, no square root)."""
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    y2 = y * y % P
    u = (y2 - 1) % P
    v = (D * y2 + 1) % P
    # x = sqrt(u / v) = u v^3 (u v^7)^((p-5)/8)
    v3 = v * v % P * v % P
    x = u * v3 % P * pow(u * v3 % P * v3 % P * v % P, (P - 5) // 8, P) % P
    vx2 = v * x % P * x % P
    if vx2 == u % P:
        pass
    elif vx2 == (-u) % P:
        x = x * SQRT_M1 % P
    else:
        return None
    if x == 0 and sign:
        return None
    if (x & 1) != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def _encode(pt):
    x, y, z, _ = pt
    zi = pow(z, P - 2, P)
    x = x * zi % P
    y = y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def verify_steps(pub, sig, msg, out):
    """Generator form of ``verify``: yields every ``SLICE_BITS`` bits of the scalar loop
    (so a caller can feed a watchdog or let other tasks run); ``out[0]`` is set to the
    result (True/False) when it ends."""
    out[0] = False
    if len(pub) != 32 or len(sig) != 64:
        return
    a = _decode(bytes(pub))
    if a is None:
        return
    r = bytes(sig[:32])
    s = int.from_bytes(bytes(sig[32:]), "little")
    if s >= L:
        return
    k = int.from_bytes(sha512(r + bytes(pub) + bytes(msg)), "little") % L
    yield
    neg_a = ((P - a[0]) % P, a[1], a[2], (P - a[3]) % P)
    base = (_BX, _BY, 1, _BX * _BY % P)
    both = _add(base, neg_a)
    q = (0, 1, 1, 0)  # neutral element
    for i in range(255, -1, -1):
        q = _double(q)
        sb = (s >> i) & 1
        kb = (k >> i) & 1
        if sb and kb:
            q = _add(q, both)
        elif sb:
            q = _add(q, base)
        elif kb:
            q = _add(q, neg_a)
        if i % SLICE_BITS == 0:
            yield
    out[0] = _encode(q) == r


def verify(pub, sig, msg):
    """True when ``sig`` (64 bytes) is ``pub``'s (32 bytes) Ed25519 signature of ``msg``."""
    out = [False]
    for _ in verify_steps(pub, sig, msg, out):
        pass
    return out[0]
