// The WebAssembly form of XXH64 (src/xxh64.ts): the module is assembled
// here from a listing of its one function, h(n), the low 32 bits of XXH64
// (seed 0) of the n bytes at the start of its imported memory x.m.
// xxh64.ts holds the bytes this assembles (XXH64_WASM), so that loading
// the client does not run the assembler; test/snapshot.test.ts checks
// they are the same.

const M64 = (1n << 64n) - 1n;
const P1 = 0x9e3779b185ebca87n, P2 = 0xc2b2ae3d27d4eb4fn, P3 = 0x165667b19e3779f9n, P4 = 0x85ebca77c2b2ae63n, P5 = 0x27d4eb2f165667c5n;

// Opcodes and types (WebAssembly core spec, binary format).
const I32 = 0x7f, I64 = 0x7e, VOID = 0x40;
const BLOCK = 0x02, LOOP = 0x03, IF = 0x04, ELSE = 0x05, END = 0x0b, BR = 0x0c, BR_IF = 0x0d;
const GET = 0x20, SET = 0x21;
const LOAD64 = 0x29, LOAD8U = 0x31, LOAD32U = 0x35;
const I32_CONST = 0x41, I64_CONST = 0x42;
const I32_GT_U = 0x4b, I32_LE_U = 0x4d, I32_GE_U = 0x4f, I32_ADD = 0x6a;
const I64_ADD = 0x7c, I64_MUL = 0x7e, I64_XOR = 0x85, I64_SHR_U = 0x88, I64_ROTL = 0x89;
const WRAP = 0xa7, EXTEND_U = 0xad;

function uleb(v: number): number[] {
  const out: number[] = [];
  do {
    let c = v & 0x7f;
    v >>>= 7;
    if (v !== 0) c |= 0x80;
    out.push(c);
  } while (v !== 0);
  return out;
}

/** Signed LEB128 of a 64-bit value (given mod 2^64). */
function sleb64(u: bigint): number[] {
  let v = BigInt.asIntN(64, u);
  const out: number[] = [];
  for (;;) {
    const c = Number(v & 0x7fn);
    v >>= 7n;
    if ((v === 0n && (c & 0x40) === 0) || (v === -1n && (c & 0x40) !== 0)) {
      out.push(c);
      return out;
    }
    out.push(c | 0x80);
  }
}

export function xxh64Module(): Uint8Array<ArrayBuffer> {
  // Locals: 0 n (the parameter), 1 p; 2-5 the lanes v1..v4, 6 h.
  const n = 0, p = 1, h = 6;
  const c: number[] = [];
  const k64 = (x: bigint) => c.push(I64_CONST, ...sleb64(x));
  const k32 = (x: number) => c.push(I32_CONST, ...uleb(x)); // small non-negative only
  // acc = rotl(acc + input * P2, 31) * P1, the input on the stack.
  const round = (acc: number, input: () => void) => {
    c.push(GET, acc);
    input();
    k64(P2);
    c.push(I64_MUL, I64_ADD);
    k64(31n);
    c.push(I64_ROTL);
    k64(P1);
    c.push(I64_MUL, SET, acc);
  };
  // round(0, input) on the stack.
  const round0 = (input: () => void) => {
    input();
    k64(P2);
    c.push(I64_MUL);
    k64(31n);
    c.push(I64_ROTL);
    k64(P1);
    c.push(I64_MUL);
  };
  const load64 = (off: number) => () => c.push(GET, p, LOAD64, 3, ...uleb(off));
  // while (p + step <= n) { body; p += step }
  const loop = (step: number, body: () => void) => {
    c.push(BLOCK, VOID, LOOP, VOID, GET, p);
    k32(step);
    c.push(I32_ADD, GET, n, I32_GT_U, BR_IF, 1);
    body();
    c.push(GET, p);
    k32(step);
    c.push(I32_ADD, SET, p, BR, 0, END, END);
  };
  c.push(GET, n);
  k32(32);
  c.push(I32_GE_U, IF, VOID);
  k64((P1 + P2) & M64);
  c.push(SET, 2);
  k64(P2);
  c.push(SET, 3);
  k64(-P1 & M64);
  c.push(SET, 5);
  loop(32, () => {
    for (let i = 0; i < 4; i++) round(2 + i, load64(8 * i));
  });
  [1n, 7n, 12n, 18n].forEach((r, i) => {
    c.push(GET, 2 + i);
    k64(r);
    c.push(I64_ROTL);
    if (i > 0) c.push(I64_ADD);
  });
  c.push(SET, h);
  for (let i = 0; i < 4; i++) {
    c.push(GET, h);
    round0(() => c.push(GET, 2 + i));
    c.push(I64_XOR);
    k64(P1);
    c.push(I64_MUL);
    k64(P4);
    c.push(I64_ADD, SET, h);
  }
  c.push(ELSE);
  k64(P5);
  c.push(SET, h, END);
  c.push(GET, h, GET, n, EXTEND_U, I64_ADD, SET, h);
  loop(8, () => {
    c.push(GET, h);
    round0(load64(0));
    c.push(I64_XOR);
    k64(27n);
    c.push(I64_ROTL);
    k64(P1);
    c.push(I64_MUL);
    k64(P4);
    c.push(I64_ADD, SET, h);
  });
  c.push(GET, p);
  k32(4);
  c.push(I32_ADD, GET, n, I32_LE_U, IF, VOID, GET, h, GET, p, LOAD32U, 2, 0);
  k64(P1);
  c.push(I64_MUL, I64_XOR);
  k64(23n);
  c.push(I64_ROTL);
  k64(P2);
  c.push(I64_MUL);
  k64(P3);
  c.push(I64_ADD, SET, h, GET, p);
  k32(4);
  c.push(I32_ADD, SET, p, END);
  loop(1, () => {
    c.push(GET, h, GET, p, LOAD8U, 0, 0);
    k64(P5);
    c.push(I64_MUL, I64_XOR);
    k64(11n);
    c.push(I64_ROTL);
    k64(P1);
    c.push(I64_MUL, SET, h);
  });
  // Avalanche: h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32.
  for (const [shift, prime] of [[33n, P2], [29n, P3], [32n, 0n]] as const) {
    c.push(GET, h, GET, h);
    k64(shift);
    c.push(I64_SHR_U, I64_XOR);
    if (prime !== 0n) {
      k64(prime);
      c.push(I64_MUL);
    }
    c.push(SET, h);
  }
  c.push(GET, h, WRAP, END);
  const body = [2, 1, I32, 5, I64, ...c]; // locals: 1 i32 (p), 5 i64 (v1..v4, h)
  const section = (id: number, bytes: number[]) => [id, ...uleb(bytes.length), ...bytes];
  const name = (s: string) => [s.length, ...Array.from(s, (ch) => ch.charCodeAt(0))];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 1, I32, 1, I32]), // type 0: (i32) -> i32
    ...section(2, [1, ...name("x"), ...name("m"), 0x02, 0x00, 0x00]), // import x.m: memory, min 0 pages
    ...section(3, [1, 0]), // function 0 of type 0
    ...section(7, [1, ...name("h"), 0x00, 0]), // export h = function 0
    ...section(10, [1, ...uleb(body.length), ...body]),
  ]);
}

