// XXH64 (seed 0), for the content checksum of zstd frames (RFC 8878: the
// low 32 bits of XXH64 of the decompressed content), which fzstd does not
// verify. 64-bit words are pairs of uint32 (hi, lo) in plain numbers:
// BigInt arithmetic made it several times slower.

// Results of the helpers below (no object per operation).
let H = 0;
let L = 0;

/** H:L = low 64 bits of (ah:al) * (bh:bl). */
function mul(ah: number, al: number, bh: number, bl: number): void {
  const a0 = al & 0xffff, a1 = al >>> 16, b0 = bl & 0xffff, b1 = bl >>> 16;
  const mid = a0 * b1 + a1 * b0; // < 2^33
  const lo = a0 * b0 + (mid % 65536) * 65536; // < 2^49
  const carry = Math.floor(lo / 4294967296);
  L = lo >>> 0;
  H = (a1 * b1 + Math.floor(mid / 65536) + carry + Math.imul(al, bh) + Math.imul(ah, bl)) >>> 0;
}

/** H:L = (ah:al) + (bh:bl) mod 2^64. */
function add(ah: number, al: number, bh: number, bl: number): void {
  const lo = al + bl;
  L = lo >>> 0;
  H = (ah + bh + (lo > 0xffffffff ? 1 : 0)) >>> 0;
}

/** H:L = (h:l) rotated left by r (0 < r < 32). */
function rotl(h: number, l: number, r: number): void {
  H = ((h << r) | (l >>> (32 - r))) >>> 0;
  L = ((l << r) | (h >>> (32 - r))) >>> 0;
}

const P1H = 0x9e3779b1, P1L = 0x85ebca87;
const P2H = 0xc2b2ae3d, P2L = 0x27d4eb4f;
const P3H = 0x165667b1, P3L = 0x9e3779f9;
const P4H = 0x85ebca77, P4L = 0xc2b2ae63;
const P5H = 0x27d4eb2f, P5L = 0x165667c5;

/** H:L = round(acc, input) = rotl(acc + input * P2, 31) * P1. */
function round(ah: number, al: number, ih: number, il: number): void {
  mul(ih, il, P2H, P2L);
  add(ah, al, H, L);
  rotl(H, L, 31);
  mul(H, L, P1H, P1L);
}

const u32 = (b: Uint8Array, p: number) => (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24)) >>> 0;

/** The low 32 bits of XXH64(b, seed 0). */
export function xxh64Low32(b: Uint8Array): number {
  const n = b.length;
  let p = 0;
  let hh: number, hl: number;
  if (n >= 32) {
    // v1 = P1 + P2, v2 = P2, v3 = 0, v4 = -P1 (mod 2^64).
    add(P1H, P1L, P2H, P2L);
    let v1h = H, v1l = L;
    let v2h: number = P2H, v2l: number = P2L;
    let v3h = 0, v3l = 0;
    add(~P1H >>> 0, ~P1L >>> 0, 0, 1);
    let v4h = H, v4l = L;
    const v = new Uint32Array([v1h, v1l, v2h, v2l, v3h, v3l, v4h, v4l]);
    p = stripes(b, v);
    v1h = v[0]; v1l = v[1]; v2h = v[2]; v2l = v[3]; v3h = v[4]; v3l = v[5]; v4h = v[6]; v4l = v[7];
    rotl(v1h, v1l, 1);
    hh = H; hl = L;
    rotl(v2h, v2l, 7);
    add(hh, hl, H, L);
    hh = H; hl = L;
    rotl(v3h, v3l, 12);
    add(hh, hl, H, L);
    hh = H; hl = L;
    rotl(v4h, v4l, 18);
    add(hh, hl, H, L);
    hh = H; hl = L;
    for (const [vh, vl] of [[v1h, v1l], [v2h, v2l], [v3h, v3l], [v4h, v4l]]) {
      round(0, 0, vh, vl);
      mul((hh ^ H) >>> 0, (hl ^ L) >>> 0, P1H, P1L);
      add(H, L, P4H, P4L);
      hh = H; hl = L;
    }
  } else {
    hh = P5H; hl = P5L;
  }
  add(hh, hl, Math.floor(n / 4294967296), n >>> 0);
  hh = H; hl = L;
  for (; p + 8 <= n; p += 8) {
    round(0, 0, u32(b, p + 4), u32(b, p));
    rotl((hh ^ H) >>> 0, (hl ^ L) >>> 0, 27);
    mul(H, L, P1H, P1L);
    add(H, L, P4H, P4L);
    hh = H; hl = L;
  }
  if (p + 4 <= n) {
    mul(0, u32(b, p), P1H, P1L);
    rotl((hh ^ H) >>> 0, (hl ^ L) >>> 0, 23);
    mul(H, L, P2H, P2L);
    add(H, L, P3H, P3L);
    hh = H; hl = L;
    p += 4;
  }
  for (; p < n; p++) {
    mul(0, b[p], P5H, P5L);
    rotl((hh ^ H) >>> 0, (hl ^ L) >>> 0, 11);
    mul(H, L, P1H, P1L);
    hh = H; hl = L;
  }
  // Avalanche: h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32.
  hl = (hl ^ (hh >>> 1)) >>> 0;
  mul(hh, hl, P2H, P2L);
  hh = H; hl = L;
  const lo29 = ((hh << 3) | (hl >>> 29)) >>> 0;
  hh = (hh ^ (hh >>> 29)) >>> 0;
  hl = (hl ^ lo29) >>> 0;
  mul(hh, hl, P3H, P3L);
  return (L ^ H) >>> 0;
}

/**
 * The 32-byte stripes of b, each lane's round inlined: it is nearly all of
 * the work, and one loop without calls is what runs fast early, before
 * the engine has optimized anything (a snapshot is usually decoded once).
 * Returns the offset after the last whole stripe.
 */
function stripes(b: Uint8Array, v: Uint32Array): number {
  const n = b.length;
  let p = 0;
  for (; p + 32 <= n; p += 32) {
    for (let k = 0; k < 4; k++) {
      const q = p + 8 * k;
      // input = the little-endian u64 at q
      const il = (b[q] | (b[q + 1] << 8) | (b[q + 2] << 16) | (b[q + 3] << 24)) >>> 0;
      const ih = (b[q + 4] | (b[q + 5] << 8) | (b[q + 6] << 16) | (b[q + 7] << 24)) >>> 0;
      // t = input * P2
      let a0 = il & 0xffff, a1 = il >>> 16;
      let mid = a0 * (P2L >>> 16) + a1 * (P2L & 0xffff);
      let lo = a0 * (P2L & 0xffff) + (mid % 65536) * 65536;
      let tl = lo >>> 0;
      let th = (a1 * (P2L >>> 16) + Math.floor(mid / 65536) + Math.floor(lo / 4294967296) + Math.imul(il, P2H) + Math.imul(ih, P2L)) >>> 0;
      // acc += t
      const sl = v[2 * k + 1] + tl;
      tl = sl >>> 0;
      th = (v[2 * k] + th + (sl > 0xffffffff ? 1 : 0)) >>> 0;
      // rotl 31
      const rh = ((th << 31) | (tl >>> 1)) >>> 0;
      const rl = ((tl << 31) | (th >>> 1)) >>> 0;
      // acc = r * P1
      a0 = rl & 0xffff;
      a1 = rl >>> 16;
      mid = a0 * (P1L >>> 16) + a1 * (P1L & 0xffff);
      lo = a0 * (P1L & 0xffff) + (mid % 65536) * 65536;
      v[2 * k + 1] = lo >>> 0;
      v[2 * k] = (a1 * (P1L >>> 16) + Math.floor(mid / 65536) + Math.floor(lo / 4294967296) + Math.imul(rl, P1H) + Math.imul(rh, P1L)) >>> 0;
    }
  }
  return p;
}
