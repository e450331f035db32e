// Change batches in the columnar format of docs/PROTOCOL.md section 8,
// byte for byte as crdt/codec (Go) encodes them. encodeChanges writes the
// plain form (format 0x01); decodeChanges reads it, and inflateBatch turns
// the compressed form (0x02, raw DEFLATE) into it first.

import type { Timestamp } from "./hlc.js";
import { LOGICAL_BITS } from "./hlc.js";
import { checkMsgpack } from "./msgpack.js";
import { OpKind, replicaFromBytes, replicaToBytes, runeCount } from "./types.js";
import type { Change, ID, Op, ReplicaID } from "./types.js";

export const CHANGES_FORMAT = 1;
export const CHANGES_FORMAT_DEFLATE = 2;
export const MAX_CHANGES = 1 << 18;
export const MAX_OPS = 1 << 18;
export const MAX_SEQ = 2 ** 40;
export const MAX_FIELD_NAME = 1024;
export const MAX_RAW_BATCH = 16 << 20;

/** CorruptError: a change batch is malformed (Go: codec.ErrCorrupt). */
export class CorruptError extends Error {
  constructor(message: string) {
    super(`codec: corrupt change batch: ${message}`);
    this.name = "CorruptError";
  }
}

const COLS = 17;
const C = {
  chReplica: 0,
  chSeq: 1,
  chTime: 2,
  chLogical: 3,
  chOps: 4,
  opKind: 5,
  opField: 6,
  insLen: 7,
  insLeft: 8,
  insRight: 9,
  insText: 10,
  delTarget: 11,
  delCount: 12,
  delBackward: 13,
  addDelta: 14,
  setLen: 15,
  setValue: 16,
} as const;
const COLUMN_NAMES = [
  "change.replica", "change.seq", "change.time", "change.logical", "change.ops",
  "op.kind", "op.field", "ins.len", "ins.left", "ins.right", "ins.text",
  "del.target", "del.count", "del.backward", "add.delta", "set.len", "set.value",
];

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

// ---- varints (numbers up to 2^53; bigints for add.delta) ----

export class ByteWriter {
  buf: Uint8Array;
  len = 0;
  constructor(size = 64) {
    this.buf = new Uint8Array(size);
  }
  room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }
  byte(b: number): void {
    this.room(1);
    this.buf[this.len++] = b;
  }
  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  uvarint(v: number): void {
    this.room(10);
    const buf = this.buf;
    if (v < 0x80) {
      buf[this.len++] = v;
      return;
    }
    while (v >= 0x80) {
      buf[this.len++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    buf[this.len++] = v;
  }
  uvarintBig(v: bigint): void {
    this.room(10);
    while (v >= 0x80n) {
      this.buf[this.len++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.len++] = Number(v);
  }
  view(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

export class ByteReader {
  pos = 0;
  constructor(
    public b: Uint8Array,
    public name = "",
  ) {}
  left(): number {
    return this.b.length - this.pos;
  }
  /** A uvarint; values past 2^53 lose precision, which every caller range-checks. */
  uvarint(): number {
    const b = this.b;
    let x = 0;
    let mul = 1;
    for (let i = 0; ; i++) {
      if (this.pos >= b.length) throw new CorruptError(`${this.where()}column ended early`);
      const c = b[this.pos++];
      if (i === 9 && c > 1) throw new CorruptError(`${this.where()}varint overflows 64 bits`);
      x += (c & 0x7f) * mul;
      if (c < 0x80) return x;
      mul *= 128;
    }
  }
  uvarintBig(): bigint {
    const b = this.b;
    let x = 0n;
    let s = 0n;
    for (let i = 0; ; i++) {
      if (this.pos >= b.length) throw new CorruptError(`${this.where()}column ended early`);
      const c = b[this.pos++];
      if (i === 9 && c > 1) throw new CorruptError(`${this.where()}varint overflows 64 bits`);
      x |= BigInt(c & 0x7f) << s;
      if (c < 0x80) return x;
      s += 7n;
    }
  }
  take(n: number): Uint8Array {
    if (n > this.left()) throw new CorruptError(`${this.where()}length ${n} but only ${this.left()} bytes left`);
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  private where(): string {
    return this.name ? `column ${this.name}: ` : "";
  }
}

export function zigzag(v: number): number {
  return v >= 0 ? v * 2 : -v * 2 - 1;
}
export function unzigzag(u: number): number {
  return u % 2 === 0 ? u / 2 : -(u + 1) / 2;
}
function zigzagBig(v: bigint): bigint {
  return BigInt.asUintN(64, (v << 1n) ^ (v >> 63n));
}
function unzigzagBig(u: bigint): bigint {
  return BigInt.asIntN(64, (u >> 1n) ^ -(u & 1n));
}

// ---- RLE columns ----

/** Encodes values as RLE groups: a run for every value repeated at least twice. */
function rleEncode<T extends number | bigint>(vals: T[], w: ByteWriter, put: (w: ByteWriter, v: T) => void): void {
  let i = 0;
  const n = vals.length;
  while (i < n) {
    let j = i + 1;
    while (j < n && vals[j] === vals[i]) j++;
    if (j - i >= 2) {
      w.uvarint((j - i - 1) * 2);
      put(w, vals[i]);
      i = j;
      continue;
    }
    // A literal group: values up to the next run.
    let k = i;
    while (k < n && !(k + 1 < n && vals[k + 1] === vals[k])) k++;
    w.uvarint((k - i - 1) * 2 + 1);
    for (let x = i; x < k; x++) put(w, vals[x]);
    i = k;
  }
}

const putNum = (w: ByteWriter, v: number) => w.uvarint(v);
const putBig = (w: ByteWriter, v: bigint) => w.uvarintBig(v);

class RleReader extends ByteReader {
  private run = 0;
  private lit = 0;
  private val = 0;
  next(): number {
    if (this.run > 0) {
      this.run--;
      return this.val;
    }
    if (this.lit === 0) {
      const h = this.uvarint();
      if (h % 2 === 0) {
        this.val = this.uvarint();
        this.run = h / 2;
        return this.val;
      }
      this.lit = (h - 1) / 2 + 1;
    }
    this.lit--;
    return this.uvarint();
  }
  done(): void {
    if (this.run !== 0 || this.lit !== 0 || this.left() !== 0) throw new CorruptError(`column ${this.name} has values left over`);
  }
}

class RleBigReader extends ByteReader {
  private run = 0n;
  private lit = 0n;
  private val = 0n;
  next(): bigint {
    if (this.run > 0n) {
      this.run--;
      return this.val;
    }
    if (this.lit === 0n) {
      const h = this.uvarintBig();
      if ((h & 1n) === 0n) {
        this.val = this.uvarintBig();
        this.run = h >> 1n;
        return this.val;
      }
      this.lit = (h >> 1n) + 1n;
    }
    this.lit--;
    return this.uvarintBig();
  }
  done(): void {
    if (this.run !== 0n || this.lit !== 0n || this.left() !== 0) throw new CorruptError(`column ${this.name} has values left over`);
  }
}

class KindReader extends ByteReader {
  private run = 0;
  private sym = 0;
  next(): number {
    if (this.run > 0) {
      this.run--;
      return this.sym;
    }
    const h = this.uvarint();
    this.sym = h % 4;
    this.run = Math.floor(h / 4);
    return this.sym;
  }
  done(): void {
    if (this.run !== 0 || this.left() !== 0) throw new CorruptError("column kinds has values left over");
  }
}

// ---- the right-origin predictor ----

// A packed id: seq·16 + replica table index while that fits a small
// integer (V8 keeps those unboxed; boxed keys made the predictor's maps
// most of the codec's garbage), else 2^50 + index·2^41 + seq (seqs ≤ 2^40;
// exact in a double for up to 2^12 replicas in a batch). 0 is the zero id.
const SMALL = 2 ** 26;
const BIG = 2 ** 50;
const PID = 2 ** 41;
const pidOf = (r: number, seq: number): number => (seq === 0 ? 0 : r < 16 && seq < SMALL ? seq * 16 + r : BIG + r * PID + seq);
const pidR = (p: number): number => (p < BIG ? p % 16 : Math.floor((p - BIG) / PID));
const pidSeq = (p: number): number => (p < BIG ? Math.floor(p / 16) : (p - BIG) % PID);

/**
 * PidMap maps packed ids (non-negative integers below 2^53) to packed ids:
 * open addressing over two Float64Arrays. A profile of decoding
 * automerge-paper's history (260k changes) put the predictor's two Maps
 * at a fifth of the codec's time, most of it growing them, plus the
 * garbage their tables left; flat typed arrays avoid both.
 */
class PidMap {
  private keys: Float64Array;
  private vals: Float64Array;
  private mask: number;
  private size = 0;

  /** Sized for about n entries (it grows past them). */
  constructor(n = 32) {
    let cap = 64;
    while (cap < n * 2 && cap < 1 << 22) cap *= 2;
    this.keys = new Float64Array(cap).fill(-1);
    this.vals = new Float64Array(cap);
    this.mask = cap - 1;
  }

  private slot(k: number): number {
    let h = Math.imul((k | 0) ^ ((k / 4294967296) | 0), 0x9e3779b1);
    h ^= h >>> 15;
    return h & this.mask;
  }
  /** The value for k, or -2 when there is none. */
  get(k: number): number {
    const keys = this.keys;
    for (let i = this.slot(k); ; i = (i + 1) & this.mask) {
      const x = keys[i];
      if (x === k) return this.vals[i];
      if (x === -1) return -2;
    }
  }
  set(k: number, v: number): void {
    if ((this.size + 1) * 2 > this.mask) this.grow();
    const keys = this.keys;
    for (let i = this.slot(k); ; i = (i + 1) & this.mask) {
      const x = keys[i];
      if (x === k) {
        this.vals[i] = v;
        return;
      }
      if (x === -1) {
        keys[i] = k;
        this.vals[i] = v;
        this.size++;
        return;
      }
    }
  }
  private grow(): void {
    const ok = this.keys, ov = this.vals;
    this.keys = new Float64Array(ok.length * 2).fill(-1);
    this.vals = new Float64Array(ok.length * 2);
    this.mask = ok.length * 2 - 1;
    this.size = 0;
    for (let i = 0; i < ok.length; i++) if (ok[i] !== -1) this.set(ok[i], ov[i]);
  }
}

class Predictor {
  private lastAfter: PidMap;
  private runEnd: PidMap;
  /** inserts: about how many inserts the batch has (sizes the maps). */
  constructor(inserts = 32) {
    this.lastAfter = new PidMap(inserts);
    this.runEnd = new PidMap(inserts);
  }
  /** The predicted right (a packed id, 0: the zero id) for an insert after left, or -1 for no prediction. */
  right(left: number): number {
    const a = this.lastAfter.get(left);
    if (a !== -2) return a;
    if (left === 0) return -1;
    const e = this.runEnd.get(left);
    if (e !== -2) return e;
    return pidOf(pidR(left), pidSeq(left) + 1);
  }
  /** An insert of n runes (r, seq..) between left and right (packed ids). */
  inserted(r: number, seq: number, n: number, left: number, right: number): void {
    this.lastAfter.set(left, pidOf(r, seq));
    this.runEnd.set(pidOf(r, seq + n - 1), right);
  }
}

// ---- encoding ----

/**
 * encodeChanges encodes changes (in causal order, as Doc.changesSince
 * returns them) in the plain columnar form, byte for byte as Go's
 * codec.EncodeChanges does (Go may then compress a large batch; any batch
 * may be sent either way).
 */
export function encodeChanges(changes: readonly Change[]): Uint8Array {
  const reps: ReplicaID[] = [];
  const repIdx = new Map<ReplicaID, number>();
  const fields: string[] = [];
  const fieldIdx = new Map<string, number>();
  const curL: number[] = [];
  const curR: number[] = [];
  const curT: number[] = [];
  const expected: number[] = [];
  // Origin columns before the replica count is known: per value, a plain
  // value (r = -1) or a code's zigzag distance, replica and +1.
  const idZZ: number[][] = [[], [], []];
  const idR: number[][] = [[], [], []];
  const cols: number[][] = [];
  for (let c = 0; c < COLS; c++) cols.push([]);
  const chReplica = cols[C.chReplica], chSeq = cols[C.chSeq], chTime = cols[C.chTime], chLogical = cols[C.chLogical], chOps = cols[C.chOps];
  const opField = cols[C.opField], insLen = cols[C.insLen], delCount = cols[C.delCount], delBackward = cols[C.delBackward], setLen = cols[C.setLen];
  const deltas: bigint[] = [];
  const kinds: number[] = [];
  const texts: string[] = [];
  const values: Uint8Array[] = [];
  let valuesLen = 0;
  let nOps = 0;
  let prevWall = 0;
  let prevLogical = 0;
  let prevTime = -1n;
  const pred = new Predictor();
  let lastField = "";
  let lastFieldI = -1;

  const addReplica = (r: ReplicaID): number => {
    let i = repIdx.get(r);
    if (i !== undefined) return i;
    i = reps.length;
    reps.push(r);
    repIdx.set(r, i);
    curL.push(0);
    curR.push(0);
    curT.push(0);
    expected.push(0);
    return i;
  };
  const plain = (k: number, v: number) => {
    idZZ[k].push(v);
    idR[k].push(-1);
  };
  const code = (k: number, cur: number[], r: number, seq: number, plusOne: boolean) => {
    idZZ[k].push(zigzag(seq - cur[r]));
    idR[k].push(plusOne ? -(r + 2) : r); // -(r+2): a right code, plus one
    cur[r] = seq;
  };

  for (const ch of changes) {
    const r = addReplica(ch.replica);
    checkSeq(ch.seq);
    chReplica.push(r);
    if (expected[r] === 0) expected[r] = 1;
    chSeq.push(zigzag(ch.seq - expected[r]));
    if (curL[r] === 0) curL[r] = ch.seq - 1;
    if (curT[r] === 0) curT[r] = ch.seq - 1;
    let wall = prevWall;
    let logical = prevLogical;
    if (ch.time !== prevTime) {
      wall = Number(ch.time >> LOGICAL_BITS);
      logical = Number(ch.time & 0xffffn);
      prevTime = ch.time;
    }
    if (wall === prevWall) {
      chTime.push(zigzag(logical - prevLogical) * 2);
    } else {
      chTime.push(zigzag(wall - prevWall) * 2 + 1);
      chLogical.push(logical);
    }
    prevWall = wall;
    prevLogical = logical;
    const ops = ch.ops;
    chOps.push(ops.length);
    nOps += ops.length;
    let seq = ch.seq;
    for (let j = 0; j < ops.length; j++) {
      const op = ops[j];
      kinds.push(op.kind - 1);
      if (op.field !== lastField || lastFieldI < 0) {
        let fi = fieldIdx.get(op.field);
        if (fi === undefined) {
          fi = fields.length;
          fields.push(op.field);
          fieldIdx.set(op.field, fi);
        }
        lastField = op.field;
        lastFieldI = fi;
      }
      opField.push(lastFieldI);
      switch (op.kind) {
        case OpKind.Ins: {
          const n = runeCount(op.text);
          insLen.push(n);
          let left = 0;
          const l = op.left;
          if (l && l.seq !== 0) {
            checkSeq(l.seq);
            const li = l.replica === ch.replica ? r : addReplica(l.replica);
            code(0, curL, li, l.seq, false);
            left = pidOf(li, l.seq);
          } else plain(0, 0);
          let right = 0;
          let ri = 0;
          const rt = op.right;
          if (rt && rt.seq !== 0) {
            checkSeq(rt.seq);
            ri = rt.replica === ch.replica ? r : addReplica(rt.replica);
            right = pidOf(ri, rt.seq);
          }
          const guess = pred.right(left);
          if (guess !== -1 && guess === right) {
            plain(1, 0);
            if (right !== 0) curR[ri] = rt!.seq;
          } else if (right === 0) plain(1, 1);
          else code(1, curR, ri, rt!.seq, true);
          pred.inserted(r, seq, n, left, right);
          curL[r] = seq + n - 1;
          texts.push(op.text);
          seq += n;
          break;
        }
        case OpKind.Del: {
          const t = op.target;
          if (t.seq !== 0) {
            checkSeq(t.seq);
            code(2, curT, t.replica === ch.replica ? r : addReplica(t.replica), t.seq, false);
          } else plain(2, 0);
          delCount.push(op.count);
          delBackward.push(op.backward ? 1 : 0);
          seq += op.count;
          break;
        }
        case OpKind.Add:
          deltas.push(zigzagBig(op.delta));
          seq++;
          break;
        case OpKind.Set:
          setLen.push(op.value.length);
          values.push(op.value);
          valuesLen += op.value.length;
          seq++;
          break;
        default:
          throw new Error(`codec: unknown op kind ${(op as Op).kind}`);
      }
    }
    expected[r] = seq;
  }
  const nRep = Math.max(reps.length, 1);
  const idCols = [C.insLeft, C.insRight, C.delTarget];
  for (let k = 0; k < 3; k++) {
    const col = cols[idCols[k]];
    const zz = idZZ[k], rr = idR[k];
    for (let i = 0; i < zz.length; i++) {
      const x = rr[i];
      if (x === -1) col.push(zz[i]);
      else if (x >= 0) col.push(1 + zz[i] * nRep + x);
      else col.push(2 + zz[i] * nRep + (-x - 2));
    }
  }
  const out = new ByteWriter(1024);
  out.byte(CHANGES_FORMAT);
  out.uvarint(reps.length);
  for (const rep of reps) out.bytes(replicaToBytes(rep));
  out.uvarint(fields.length);
  for (const f of fields) {
    const b = enc.encode(f);
    out.uvarint(b.length);
    out.bytes(b);
  }
  out.uvarint(changes.length);
  out.uvarint(nOps);
  const w = new ByteWriter(1024);
  for (let c = 0; c < COLS; c++) {
    w.len = 0;
    if (c === C.opKind) {
      let i = 0;
      while (i < kinds.length) {
        let j = i + 1;
        while (j < kinds.length && kinds[j] === kinds[i]) j++;
        w.uvarint((j - i - 1) * 4 + kinds[i]);
        i = j;
      }
    } else if (c === C.insText) {
      w.bytes(enc.encode(texts.join("")));
    } else if (c === C.setValue) {
      w.room(valuesLen);
      for (const v of values) w.bytes(v);
    } else if (c === C.addDelta) {
      rleEncode(deltas, w, putBig);
    } else {
      rleEncode(cols[c], w, putNum);
    }
    out.uvarint(w.len);
    out.bytes(w.view());
  }
  return out.buf.slice(0, out.len);
}

function checkSeq(s: number): void {
  if (s > MAX_SEQ) throw new Error(`codec: seq ${s} above MaxSeq`);
}

// ---- decoding ----

/**
 * inflateRaw runs z through DecompressionStream("deflate-raw"), handing
 * each chunk of output to sink, and resolves when the stream ends (after
 * its final block). It rejects when the input is not a complete stream,
 * with the platform's error, or with whatever sink throws (the stream is
 * then cancelled).
 */
async function inflateRaw(z: Uint8Array<ArrayBuffer>, sink: (chunk: Uint8Array) => void): Promise<void> {
  const ds = new DecompressionStream("deflate-raw");
  const writer = ds.writable.getWriter();
  writer.write(z).catch(() => {});
  writer.close().catch(() => {});
  const reader = ds.readable.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      sink(value);
    }
  } catch (e) {
    reader.cancel().catch(() => {});
    throw e;
  }
}

/**
 * inflateBatch returns the plain form of a batch: itself if plain, else
 * its DEFLATE body inflated (at most raw_len ≤ 16 MiB bytes; a stream
 * that yields more or fewer, or that bytes follow, is corrupt).
 */
export async function inflateBatch(data: Uint8Array): Promise<Uint8Array> {
  if (data.length === 0 || data[0] !== CHANGES_FORMAT_DEFLATE) return data;
  const r = new ByteReader(data);
  r.pos = 1;
  const rawLen = r.uvarint();
  if (rawLen > MAX_RAW_BATCH) throw new CorruptError(`compressed batch: ${rawLen} bytes exceed ${MAX_RAW_BATCH}`);
  const z = data.subarray(r.pos);
  const out = new Uint8Array(rawLen + 1);
  out[0] = CHANGES_FORMAT;
  let got = 0;
  try {
    await inflateRaw(new Uint8Array(z), (value) => {
      if (got + value.length > rawLen) throw new CorruptError(`compressed batch: more than the ${rawLen} bytes its header says`);
      out.set(value, 1 + got);
      got += value.length;
    });
  } catch (e) {
    if (e instanceof CorruptError) throw e;
    throw new CorruptError(`compressed batch: ${(e as Error).message}`);
  }
  if (got !== rawLen) throw new CorruptError(`compressed batch: ${got} bytes, header says ${rawLen}`);
  // Nothing may follow the stream (docs/PROTOCOL.md, "Compressed form").
  // Some platforms' DecompressionStream refuses bytes after the final
  // block (Chromium's), others ignore them (Node's), and none says how much
  // it consumed. The last byte of an exact stream holds the end of its
  // final block, so without it the stream cannot complete: if z without
  // its last byte still inflates to the end, bytes followed the stream.
  // This inflates the body a second time, keeping none of the output.
  // (Each stream gets a copy of its own: a stream may keep what it is given.)
  let probeGot = 0;
  const complete = await inflateRaw(new Uint8Array(z.subarray(0, z.length - 1)), (value) => {
    probeGot += value.length;
    if (probeGot > rawLen) throw new Error("longer than the stream");
  }).then(
    () => true,
    () => false,
  );
  if (complete) throw new CorruptError("compressed batch: bytes after the end of the DEFLATE stream");
  return out;
}

/**
 * decodeChanges decodes a plain batch (use inflateBatch first for the
 * compressed form). It treats data as hostile, as Go's DecodeChanges does;
 * errors are CorruptErrors saying what was wrong.
 */
export function decodeChanges(data: Uint8Array): Change[] {
  if (data.length === 0) throw new CorruptError("empty input");
  if (data[0] === CHANGES_FORMAT_DEFLATE) throw new CorruptError("compressed batch: inflate it first (inflateBatch)");
  if (data[0] !== CHANGES_FORMAT) throw new CorruptError(`unknown format ${data[0]} (want 1 or 2)`);
  const inp = new ByteReader(data);
  inp.pos = 1;
  const nRep = inp.uvarint();
  if (nRep > inp.left() / 16) throw new CorruptError(`${nRep} replicas but only ${inp.left()} bytes left`);
  const reps: ReplicaID[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < nRep; i++) {
    const b = inp.take(16);
    if (b.every((x) => x === 0)) throw new CorruptError(`replica ${i} is the zero id`);
    const r = replicaFromBytes(b);
    if (seen.has(r)) throw new CorruptError(`replica ${r} listed twice`);
    seen.add(r);
    reps.push(r);
  }
  const nField = inp.uvarint();
  if (nField > inp.left()) throw new CorruptError(`${nField} fields but only ${inp.left()} bytes left`);
  const fields: string[] = [];
  const seenF = new Set<string>();
  for (let i = 0; i < nField; i++) {
    const n = inp.uvarint();
    if (n > MAX_FIELD_NAME) throw new CorruptError(`field ${i}: name of ${n} bytes exceeds ${MAX_FIELD_NAME}`);
    let f: string;
    try {
      f = dec.decode(inp.take(n));
    } catch (e) {
      if (e instanceof CorruptError) throw e;
      throw new CorruptError(`field ${i}: name is not UTF-8`);
    }
    if (seenF.has(f)) throw new CorruptError(`field ${JSON.stringify(f)} listed twice`);
    seenF.add(f);
    fields.push(f);
  }
  const nCh = inp.uvarint();
  const nOps = inp.uvarint();
  if (nCh > MAX_CHANGES) throw new CorruptError(`${nCh} changes exceed the limit ${MAX_CHANGES}`);
  if (nOps > MAX_OPS) throw new CorruptError(`${nOps} ops exceed the limit ${MAX_OPS}`);
  if (nOps < nCh) throw new CorruptError(`${nOps} ops for ${nCh} changes (every change has one)`);
  if (nCh > 0 && nRep === 0) throw new CorruptError("changes but no replicas");
  const raw: Uint8Array[] = [];
  for (let c = 0; c < COLS; c++) {
    const n = inp.uvarint();
    try {
      raw.push(inp.take(n));
    } catch {
      throw new CorruptError(`column ${COLUMN_NAMES[c]}: length ${n} but only ${inp.left()} bytes left`);
    }
  }
  if (inp.left() !== 0) throw new CorruptError(`${inp.left()} trailing bytes`);
  let text: string;
  try {
    text = dec.decode(raw[C.insText]);
  } catch {
    throw new CorruptError("inserted text is not UTF-8");
  }
  const col = (c: number) => new RleReader(raw[c], COLUMN_NAMES[c]);
  const chRep = col(C.chReplica), chSeq = col(C.chSeq), chTime = col(C.chTime), chLogical = col(C.chLogical), chOps = col(C.chOps);
  const opField = col(C.opField), insLen = col(C.insLen), insLeft = col(C.insLeft), insRight = col(C.insRight);
  const delTarget = col(C.delTarget), delCount = col(C.delCount), delBackward = col(C.delBackward), setLen = col(C.setLen);
  const addDelta = new RleBigReader(raw[C.addDelta], COLUMN_NAMES[C.addDelta]);
  const kinds = new KindReader(raw[C.opKind], "op.kind");
  const values = new ByteReader(raw[C.setValue], "set.value");
  const cursors: number[][] = [new Array(nRep).fill(0), new Array(nRep).fill(0), new Array(nRep).fill(0)];
  const radix = Math.max(nRep, 1);
  // decodeId returns the seq and leaves the replica index in idR (no
  // tuple per id: decoding a long history made millions of them).
  let idR = 0;
  const decodeId = (k: number, code: number, what: () => string): number => {
    code--;
    const r = code % radix;
    const d = unzigzag(Math.floor(code / radix));
    const s = cursors[k][r] + d;
    if (d > MAX_SEQ || d < -MAX_SEQ || s < 1 || s > MAX_SEQ || !Number.isSafeInteger(code)) throw new CorruptError(`${what()}: id seq out of range [1, 2^40]`);
    cursors[k][r] = s;
    idR = r;
    return s;
  };
  const expected: number[] = new Array(nRep).fill(0);
  const pred = new Predictor(Math.min(nOps, raw[C.insLen].length * 64));
  const out: Change[] = [];
  let textPos = 0;
  let opAt = 0;
  let prevWall = 0;
  let prevLog = 0;
  const MAX_WALL = 2 ** 48 - 1;
  let lastWall = -1;
  let lastLogical = -1;
  let lastTime = 0n;
  for (let i = 0; i < nCh; i++) {
    const r = chRep.next();
    if (r >= nRep) throw new CorruptError(`change ${i}: replica index ${r} of ${nRep}`);
    if (expected[r] === 0) expected[r] = 1;
    const d = unzigzag(chSeq.next());
    const seq0 = expected[r] + d;
    if (d > MAX_SEQ || d < -MAX_SEQ || seq0 < 1 || seq0 > MAX_SEQ) throw new CorruptError(`change ${i}: seq out of range [1, 2^40]`);
    if (cursors[0][r] === 0) cursors[0][r] = seq0 - 1;
    if (cursors[2][r] === 0) cursors[2][r] = seq0 - 1;
    const tc = chTime.next();
    let wall = prevWall;
    let logical = prevLog;
    const td = unzigzag(Math.floor(tc / 2));
    if (tc % 2 === 0) {
      if (td >= 65536 || td <= -65536) throw new CorruptError(`change ${i}: logical clock out of range`);
      logical += td;
    } else {
      wall += td;
      if (td === 0 || td > MAX_WALL || td < -MAX_WALL || wall < 0 || wall > MAX_WALL) throw new CorruptError(`change ${i}: wall time out of range`);
      const lv = chLogical.next();
      if (lv >= 65536) throw new CorruptError(`change ${i}: logical clock out of range`);
      logical = lv;
    }
    if (logical < 0 || logical >= 65536) throw new CorruptError(`change ${i}: logical clock out of range`);
    prevWall = wall;
    prevLog = logical;
    const n = chOps.next();
    if (n === 0) throw new CorruptError(`change ${i} has no ops`);
    if (n > nOps - opAt) throw new CorruptError(`change ${i}: ${n} ops but only ${nOps - opAt} left of ${nOps}`);
    opAt += n;
    const ops: Op[] = [];
    let seq = seq0;
    for (let j = 0; j < n; j++) {
      const k = kinds.next() + 1;
      const fi = opField.next();
      if (fi >= nField) throw new CorruptError(`change ${i} op ${j}: field index ${fi} of ${nField}`);
      const field = fields[fi];
      let size = 1;
      switch (k) {
        case OpKind.Ins: {
          const nr = insLen.next();
          if (nr === 0 || nr > text.length - textPos) throw new CorruptError(`change ${i} op ${j}: insert of ${nr} runes, ${text.length - textPos} units of text left`);
          size = nr;
          const start = textPos;
          for (let q = 0; q < nr; q++) {
            if (textPos >= text.length) throw new CorruptError(`change ${i} op ${j}: inserted text runs out`);
            const cc = text.charCodeAt(textPos);
            textPos += cc >= 0xd800 && cc <= 0xdbff ? 2 : 1;
          }
          let lr = 0, ls = 0;
          const lcode = insLeft.next();
          if (lcode !== 0) {
            ls = decodeId(0, lcode, () => `change ${i} op ${j}: left origin`);
            lr = idR;
          }
          const rc = insRight.next();
          let rr = 0, rs = 0;
          const lp = ls === 0 ? 0 : pidOf(lr, ls);
          let rp = 0;
          if (rc === 0) {
            const g = pred.right(lp);
            if (g === -1) throw new CorruptError(`change ${i} op ${j}: right origin predicted where there is no prediction`);
            if (g !== 0) {
              const gr = pidR(g), gs = pidSeq(g);
              if (gs > MAX_SEQ) throw new CorruptError(`change ${i} op ${j}: predicted right origin past MaxSeq`);
              rr = gr;
              rs = gs;
              rp = g;
              cursors[1][gr] = gs;
            }
          } else if (rc !== 1) {
            rs = decodeId(1, rc - 1, () => `change ${i} op ${j}: right origin`);
            rr = idR;
            rp = pidOf(rr, rs);
          }
          pred.inserted(r, seq, size, lp, rp);
          cursors[0][r] = seq + size - 1;
          ops.push({
            kind: OpKind.Ins,
            field,
            text: text.slice(start, textPos),
            left: ls !== 0 ? { replica: reps[lr], seq: ls } : null,
            right: rs !== 0 ? { replica: reps[rr], seq: rs } : null,
          });
          break;
        }
        case OpKind.Del: {
          const code = delTarget.next();
          if (code === 0) throw new CorruptError(`change ${i} op ${j}: delete without target`);
          const s = decodeId(2, code, () => `change ${i} op ${j}: delete target`);
          const ti = idR;
          const count = delCount.next();
          const b = delBackward.next();
          if (b > 1) throw new CorruptError(`change ${i} op ${j}: backward flag ${b}`);
          const backward = b === 1;
          if (count === 0) throw new CorruptError(`change ${i} op ${j}: delete of 0 characters`);
          if (count > MAX_SEQ) throw new CorruptError(`change ${i} op ${j}: delete of ${count} characters`);
          if (backward && count > s) throw new CorruptError(`change ${i} op ${j}: backward delete runs below seq 1`);
          if (!backward && s + count - 1 > MAX_SEQ) throw new CorruptError(`change ${i} op ${j}: delete runs past MaxSeq`);
          size = count;
          ops.push({ kind: OpKind.Del, field, target: { replica: reps[ti], seq: s }, count, backward });
          break;
        }
        case OpKind.Add:
          ops.push({ kind: OpKind.Add, field, delta: unzigzagBig(addDelta.next()) });
          break;
        case OpKind.Set: {
          const len = setLen.next();
          let value: Uint8Array;
          try {
            value = values.take(len).slice();
          } catch {
            throw new CorruptError(`change ${i} op ${j}: register value: length ${len} but only ${values.left()} bytes left`);
          }
          ops.push({ kind: OpKind.Set, field, value });
          break;
        }
      }
      seq += size;
      if (seq - 1 > MAX_SEQ) throw new CorruptError(`change ${i}: seqs run past MaxSeq`);
    }
    expected[r] = seq;
    if (wall !== lastWall || logical !== lastLogical) {
      lastTime = (BigInt(wall) << LOGICAL_BITS) | BigInt(logical);
      lastWall = wall;
      lastLogical = logical;
    }
    out.push({ replica: reps[r], seq: seq0, time: lastTime, ops });
  }
  if (opAt !== nOps) throw new CorruptError(`${nOps} ops declared, ${opAt} used`);
  if (textPos !== text.length) throw new CorruptError(`${text.length - textPos} units of inserted text left over`);
  if (values.left() !== 0) throw new CorruptError(`${values.left()} bytes of register values left over`);
  for (const c of [chRep, chSeq, chTime, chLogical, chOps, opField, insLen, insLeft, insRight, delTarget, delCount, delBackward, setLen]) c.done();
  addDelta.done();
  kinds.done();
  return out;
}

/** Validates register values as msgpack (crdt checks this at apply time too). */
export function checkValue(v: Uint8Array): void {
  checkMsgpack(v);
}

export type { Timestamp, ID };
