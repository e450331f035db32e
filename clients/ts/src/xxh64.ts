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
  if (b.length >= WASM_MIN) {
    const x = wasmSum(b);
    if (x >= 0) return x;
  }
  return xxh64JS(b);
}

/** The low 32 bits of XXH64(b, seed 0), in JavaScript. */
export function xxh64JS(b: Uint8Array): number {
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

// ---- the same in WebAssembly ----
//
// A first call of the JavaScript above runs unoptimized for most of a
// large input (17-26 ms for a 335 KB snapshot body, 1.5-2 ms once
// optimized): 64-bit arithmetic on pairs of numbers is many operations
// per byte. WebAssembly has 64-bit integers, and its code is compiled
// before it first runs. XXH64_WASM is the module src/xxh64wasm.ts
// assembles (one function, h(n): the low 32 bits of XXH64 of the n bytes
// at the start of its imported memory); where WebAssembly is missing or
// refused (a Content-Security-Policy without 'wasm-unsafe-eval'), the
// JavaScript is used.

/** Inputs shorter than this are summed in JavaScript (not worth an instance). */
const WASM_MIN = 4096;
/** Inputs up to this size share one memory, kept for the next; larger ones get their own. */
const WASM_KEEP = 1 << 20;

/** The module src/xxh64wasm.ts assembles, in hex. */
export const XXH64_WASM = "0061736d0100000001060160017f017f0208010178016d02000003020100070501016800000aff0501fc0502017f057e200041204f044042d6eb82eeeafd89f5e000210242cfd6d3bed2c7abd942210342f9ead0d0e7c9a1e4e100210502400340200141206a20004b0d012002200129030042cfd6d3bed2c7abd9427e7c421f89428795afaf98b6de9b9e7f7e21022003200129030842cfd6d3bed2c7abd9427e7c421f89428795afaf98b6de9b9e7f7e21032004200129031042cfd6d3bed2c7abd9427e7c421f89428795afaf98b6de9b9e7f7e21042005200129031842cfd6d3bed2c7abd9427e7c421f89428795afaf98b6de9b9e7f7e2105200141206a21010c000b0b200242018920034207897c2004420c897c20054212897c21062006200242cfd6d3bed2c7abd9427e421f89428795afaf98b6de9b9e7f7e85428795afaf98b6de9b9e7f7e42e3dcca95fccef2f5857f7c21062006200342cfd6d3bed2c7abd9427e421f89428795afaf98b6de9b9e7f7e85428795afaf98b6de9b9e7f7e42e3dcca95fccef2f5857f7c21062006200442cfd6d3bed2c7abd9427e421f89428795afaf98b6de9b9e7f7e85428795afaf98b6de9b9e7f7e42e3dcca95fccef2f5857f7c21062006200542cfd6d3bed2c7abd9427e421f89428795afaf98b6de9b9e7f7e85428795afaf98b6de9b9e7f7e42e3dcca95fccef2f5857f7c21060542c5cfd9b2f1e5baea2721060b20062000ad7c210602400340200141086a20004b0d012006200129030042cfd6d3bed2c7abd9427e421f89428795afaf98b6de9b9e7f7e85421b89428795afaf98b6de9b9e7f7e42e3dcca95fccef2f5857f7c2106200141086a21010c000b0b200141046a20004d044020062001350200428795afaf98b6de9b9e7f7e8542178942cfd6d3bed2c7abd9427e42f9f3ddf199f699ab167c2106200141046a21010b02400340200141016a20004b0d012006200131000042c5cfd9b2f1e5baea277e85420b89428795afaf98b6de9b9e7f7e2106200141016a21010c000b0b200620064221888542cfd6d3bed2c7abd9427e210620062006421d888542f9f3ddf199f699ab167e2106200620064220888521062006a70b";

let module: WebAssembly.Module | null | undefined;
let kept: { mem: WebAssembly.Memory; h: (n: number) => number } | undefined;

function instance(mem: WebAssembly.Memory): (n: number) => number {
  return new WebAssembly.Instance(module!, { x: { m: mem } }).exports.h as (n: number) => number;
}

/** The low 32 bits of XXH64(b) by WebAssembly, or -1 where it cannot run. */
function wasmSum(b: Uint8Array): number {
  if (module === undefined) {
    try {
      const bytes = new Uint8Array(XXH64_WASM.length / 2);
      for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(XXH64_WASM.substr(2 * i, 2), 16);
      module = new WebAssembly.Module(bytes);
    } catch {
      module = null;
    }
  }
  if (module === null) return -1;
  const n = b.length;
  let mem: WebAssembly.Memory;
  let h: (n: number) => number;
  try {
    if (n <= WASM_KEEP) {
      if (!kept) {
        const m = new WebAssembly.Memory({ initial: WASM_KEEP / 65536 });
        kept = { mem: m, h: instance(m) };
      }
      ({ mem, h } = kept);
    } else {
      mem = new WebAssembly.Memory({ initial: Math.ceil(n / 65536) });
      h = instance(mem);
    }
  } catch {
    return -1;
  }
  new Uint8Array(mem.buffer, 0, n).set(b);
  return h(n) >>> 0;
}
