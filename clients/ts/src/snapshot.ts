// Snapshots (docs/PROTOCOL.md section 9; crdt/codec/snapshot.go is
// authoritative): ["weft.snapshot", 3, raw_len, body], body one zstd frame
// holding a header and 15 varint columns. decodeSnapshot reads one and
// builds the document from its item columns directly (Doc._fromState);
// nothing is replayed.
//
// Every count is checked against the bytes of its column before anything
// is allocated for it, so a hostile snapshot gives a SnapshotError, never
// a hang or an allocation out of proportion to its size. The zstd frame's
// content checksum (XXH64) is verified, as Go's decoder does.

import { decompress } from "fzstd";
import { Doc } from "./doc.js";
import type { DocOptions } from "./doc.js";
import { Clock } from "./hlc.js";
import type { Timestamp } from "./hlc.js";
import { Reader } from "./msgpack.js";
import { replicaFromBytes } from "./types.js";
import { xxh64Low32 } from "./xxh64.js";
import type { ReplicaID } from "./types.js";

export const SNAPSHOT_MAGIC = "weft.snapshot";
export const SNAPSHOT_VERSION = 3;
/** The largest uncompressed body a snapshot may have (Go: MaxSnapshotRaw). */
export const MAX_SNAPSHOT_RAW = 2 ** 30;
/** The media type of GET /v1/docs/{id} answering with a snapshot. */
export const SNAPSHOT_MEDIA_TYPE = "application/vnd.weft.snapshot";

/** SnapshotError: a snapshot is malformed (Go: codec.ErrSnapshot). */
export class SnapshotError extends Error {
  constructor(message: string) {
    super(`codec: bad snapshot: ${message}`);
    this.name = "SnapshotError";
  }
}

/**
 * A replica's log spans (crdt.StateSpan), one entry per span in each
 * array: the state is kept in columns, not an object per span, which is
 * most of what makes loading a large snapshot fast.
 */
export interface StateSpans {
  length: number;
  n: Uint32Array;
  field: Uint32Array;
  kind: Uint8Array;
  back: Uint8Array;
  /** Inserts: content bytes; registers: value bytes. */
  bytes: Uint32Array;
  /** Inserts: left origin of the first character; deletes: first target (replica index, seq; seq 0 = none). */
  ar: Uint32Array;
  as: Uint32Array;
  /** Inserts: right origin of every character. */
  br: Uint32Array;
  bs: Uint32Array;
  delta: BigInt64Array;
}

export interface StateTime {
  n: number;
  stepped: boolean;
  t: Timestamp;
}

/** A text's items in document order (crdt.StateItem), in columns. */
export interface StateItems {
  length: number;
  r: Uint32Array;
  seq: Uint32Array;
  n: Uint32Array;
  del: Uint8Array;
}

/** A document's state as plain data (crdt.State). */
export interface DocState {
  replicas: ReplicaID[];
  fields: { type: number; name: string }[];
  logs: { spans: StateSpans; times: StateTime[] }[];
  texts: StateItems[];
  content: Uint8Array;
}

// The columns of a body, in order (crdt/codec/snapshot.go).
const enum Col {
  SpanKind,
  SpanN,
  SpanField,
  SpanBytes,
  Origin,
  OriginSeq,
  DelTarget,
  DelSeq,
  Delta,
  TimeN,
  TimeT,
  Content,
  ItemRep,
  ItemSeq,
  ItemN,
  Count,
}

const U32_MAX = 2 ** 32 - 1;

/** A varint stream; errors name the column. */
class Col_ {
  pos = 0;
  constructor(
    readonly b: Uint8Array,
    readonly name: string,
  ) {}
  left(): number {
    return this.b.length - this.pos;
  }
  fail(msg: string): never {
    throw new SnapshotError(`${this.name}: ${msg}`);
  }
  /** A uvarint as a number (exact up to 2^53; larger values are range-checked by callers). */
  uint(): number {
    const b = this.b;
    let p = this.pos;
    if (p < b.length && b[p] < 0x80) {
      this.pos = p + 1;
      return b[p];
    }
    let x = 0;
    let mul = 1;
    for (let i = 0; ; i++) {
      if (p >= b.length) this.fail("truncated varint");
      const c = b[p++];
      if (i === 9 && c > 1) this.fail("varint overflows 64 bits");
      x += (c & 0x7f) * mul;
      if (c < 0x80) break;
      mul *= 128;
    }
    this.pos = p;
    return x;
  }
  uintBig(): bigint {
    const b = this.b;
    let x = 0n;
    let s = 0n;
    for (let i = 0; ; i++) {
      if (this.pos >= b.length) this.fail("truncated varint");
      const c = b[this.pos++];
      if (i === 9 && c > 1) this.fail("varint overflows 64 bits");
      x |= BigInt(c & 0x7f) << s;
      if (c < 0x80) return x;
      s += 7n;
    }
  }
  /** A zigzag varint as a number (exact within ±2^52). */
  int(): number {
    const u = this.uint();
    return u % 2 === 0 ? u / 2 : -(u + 1) / 2;
  }
  /** A zigzag varint as an int64. */
  intBig(): bigint {
    const u = this.uintBig();
    return u & 1n ? -(u >> 1n) - 1n : u >> 1n;
  }
  u32(): number {
    const v = this.uint();
    if (v > U32_MAX) this.fail(`value ${v} out of range`);
    return v;
  }
  /** A seq: base plus a zigzag delta, which must be a 32-bit value. */
  seq(base: number): number {
    const v = base + this.int();
    if (v < 0 || v > U32_MAX) this.fail(`seq ${v} out of range`);
    return v;
  }
  /** A count of elements taking at least min bytes each, checked against what is left. */
  count(min: number): number {
    const v = this.uint();
    if (v > Math.floor(this.left() / min)) this.fail(`count ${v} exceeds the ${this.left()} bytes left`);
    return v;
  }
  bytes(n: number): Uint8Array {
    if (n > this.left()) this.fail("truncated");
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
}

const COL_NAMES = [
  "span.kind", "span.n", "span.field", "span.bytes", "origin", "origin.seq", "del.target", "del.seq",
  "delta", "time.n", "time.t", "content", "item.replica", "item.seq", "item.n",
];

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The zstd frame's declared content size, which must be raw_len: checking
 * it first means the decompressor, which allocates what the frame header
 * declares, never allocates more than the envelope claims (and that is
 * bounded by what a frame of this size can possibly hold).
 */
function checkFrame(z: Uint8Array, rawLen: number): void {
  if (z.length < 6 || z[0] !== 0x28 || z[1] !== 0xb5 || z[2] !== 0x2f || z[3] !== 0xfd) throw new SnapshotError("body is not a zstd frame");
  const flg = z[4];
  const single = (flg >> 5) & 1;
  const fcf = flg >> 6;
  const dictBytes = [0, 1, 2, 4][flg & 3];
  if (flg & 8) throw new SnapshotError("zstd: reserved bit set");
  const sizeBytes = fcf ? 1 << fcf : single;
  let p = 5 + (single ? 0 : 1) + dictBytes;
  if (z.length < p + sizeBytes) throw new SnapshotError("zstd frame header truncated");
  if (sizeBytes > 0) {
    let size = 0;
    for (let i = sizeBytes - 1; i >= 0; i--) size = size * 256 + z[p + i];
    if (sizeBytes === 2) size += 256;
    if (size !== rawLen) throw new SnapshotError(`zstd frame holds ${size} bytes, envelope says ${rawLen}`);
  }
  if (!single) {
    // The decompressor allocates the window when the size is not declared
    // (Go's encoder leaves it out for small bodies): no more than the body
    // needs, or 8 MiB.
    const wl = z[5];
    const base = 2 ** (10 + (wl >> 3));
    const window = base + (base / 8) * (wl & 7);
    if (window > Math.max(rawLen, 1 << 23)) throw new SnapshotError(`zstd window of ${window} bytes for a ${rawLen} byte body`);
  }
  // Walk the blocks: the body must be exactly one frame (a second frame
  // would declare, and make the decompressor allocate, a size of its own).
  // Each block holds at most 128 KiB, so this also bounds what the frame
  // can hold by its length.
  p += sizeBytes;
  let blocks = 0;
  for (;;) {
    if (p + 3 > z.length) throw new SnapshotError("zstd frame truncated");
    const bh = z[p] | (z[p + 1] << 8) | (z[p + 2] << 16);
    const type = (bh >> 1) & 3;
    const size = bh >>> 3;
    if (type === 3) throw new SnapshotError("zstd: reserved block type");
    if (size > 131072) throw new SnapshotError("zstd: block too large");
    p += 3 + (type === 1 ? 1 : size);
    blocks++;
    if (bh & 1) break;
  }
  if (flg & 4) p += 4; // content checksum
  if (p !== z.length) throw new SnapshotError(`body is not exactly one zstd frame (${p} of ${z.length} bytes)`);
  if (rawLen > blocks * 131072) throw new SnapshotError(`${blocks} zstd blocks cannot hold ${rawLen} bytes`);
}

/** The raw body of a snapshot (header and columns, uncompressed). */
function snapshotBody(data: Uint8Array): Uint8Array {
  const r = new Reader(data);
  let rawLen: number;
  let z: Uint8Array;
  try {
    if (r.arrayHeader() !== 4) throw new SnapshotError("not a snapshot envelope");
    if (r.str(64) !== SNAPSHOT_MAGIC) throw new SnapshotError("wrong magic");
    const ver = r.uint();
    if (ver !== SNAPSHOT_VERSION) throw new SnapshotError(`unsupported version ${ver}`);
    rawLen = r.uint();
    // The header length and 15 column lengths take 16 bytes at least.
    if (rawLen > MAX_SNAPSHOT_RAW || rawLen < 16) throw new SnapshotError(`body length ${rawLen}`);
    z = r.bin();
    if (r.left() !== 0) throw new SnapshotError(`${r.left()} bytes after the body`);
  } catch (e) {
    if (e instanceof SnapshotError) throw e;
    throw new SnapshotError(`envelope: ${(e as Error).message}`);
  }
  checkFrame(z, rawLen);
  let raw: Uint8Array;
  try {
    raw = decompress(z);
  } catch (e) {
    throw new SnapshotError(`zstd: ${(e as Error).message}`);
  }
  if (raw.length !== rawLen) throw new SnapshotError(`body inflates to ${raw.length} bytes, want ${rawLen}`);
  // fzstd does not check the frame's content checksum; Go's decoder does,
  // and so must we, or a corrupted body could decode to other text.
  if (z[4] & 4) {
    const e = z.length;
    const want = (z[e - 4] | (z[e - 3] << 8) | (z[e - 2] << 16) | (z[e - 1] << 24)) >>> 0;
    if (xxh64Low32(raw) !== want) throw new SnapshotError("zstd: content checksum mismatch");
  }
  return raw;
}

/** decodeState decodes a snapshot into its state without building a Doc. */
export function decodeState(data: Uint8Array): DocState {
  const body = new Col_(snapshotBody(data), "body");
  const h = new Col_(body.bytes(body.count(1)), "header");
  const c: Col_[] = [];
  for (let i = 0; i < Col.Count; i++) c.push(new Col_(body.bytes(body.count(1)), COL_NAMES[i]));
  if (body.left() !== 0) throw new SnapshotError(`${body.left()} trailing bytes`);
  const s: DocState = { replicas: [], fields: [], logs: [], texts: [], content: new Uint8Array(0) };
  const nr = h.count(16);
  for (let i = 0; i < nr; i++) s.replicas.push(replicaFromBytes(h.bytes(16)));
  const nf = h.count(2);
  for (let i = 0; i < nf; i++) {
    const type = h.uint();
    const nb = h.bytes(h.count(1));
    let name: string;
    try {
      name = utf8.decode(nb);
    } catch {
      throw new SnapshotError(`field ${i}: name is not UTF-8`);
    }
    s.fields.push({ type, name });
  }
  for (let i = 0; i < nr; i++) {
    // Each span takes at least one byte of the kind column, each time run
    // one byte of its column: counts are checked against those.
    const ns = h.uint();
    const nt = h.uint();
    if (ns > c[Col.SpanKind].left() || nt > c[Col.TimeN].left()) throw new SnapshotError(`replica ${i} claims more spans or times than the columns hold`);
    s.logs.push({ spans: readSpans(c, ns), times: readTimes(c[Col.TimeN], c[Col.TimeT], nt) });
  }
  const content = c[Col.Content];
  s.content = content.b;
  for (let i = 0; i < nf; i++) {
    const ni = h.uint();
    if (ni > c[Col.ItemRep].left()) throw new SnapshotError(`field ${i} claims more items than the columns hold`);
    s.texts.push(readItems(c[Col.ItemRep], c[Col.ItemSeq], c[Col.ItemN], ni));
  }
  if (h.left() !== 0) throw new SnapshotError(`${h.left()} trailing header bytes`);
  for (let i = 0; i < Col.Count; i++) {
    if (i !== Col.Content && c[i].left() !== 0) throw new SnapshotError(`column ${i} has ${c[i].left()} trailing bytes`);
  }
  return s;
}

// The loops over spans, time runs and items are functions of their own:
// a snapshot is usually decoded once, and small functions are optimized
// sooner (and more cheaply) than one large one.

/** ns spans of one replica's log from the span columns. */
function readSpans(c: Col_[], ns: number): StateSpans {
  const kindC = c[Col.SpanKind], nC = c[Col.SpanN], fieldC = c[Col.SpanField], bytesC = c[Col.SpanBytes];
  const originC = c[Col.Origin], oseqC = c[Col.OriginSeq], dtC = c[Col.DelTarget], dsC = c[Col.DelSeq];
  const deltaC = c[Col.Delta];
  const sp: StateSpans = {
    length: ns,
    n: new Uint32Array(ns),
    field: new Uint32Array(ns),
    kind: new Uint8Array(ns),
    back: new Uint8Array(ns),
    bytes: new Uint32Array(ns),
    ar: new Uint32Array(ns),
    as: new Uint32Array(ns),
    br: new Uint32Array(ns),
    bs: new Uint32Array(ns),
    delta: new BigInt64Array(ns),
  };
  const N = sp.n, F = sp.field, K = sp.kind, B = sp.back, NB = sp.bytes, AR = sp.ar, AS = sp.as, BR = sp.br, BS = sp.bs;
  let seq = 1;
  for (let j = 0; j < ns; j++) {
    const flags = kindC.uint();
    const n = nC.u32();
    const kind = flags % 8;
    N[j] = n;
    F[j] = fieldC.u32();
    K[j] = kind;
    B[j] = Math.floor(flags / 8) % 2;
    switch (kind) {
      case 3: {
        NB[j] = Math.min(n + bytesC.uint(), U32_MAX);
        let tag = originC.uint();
        if (tag !== 0) {
          AR[j] = Math.min(tag - 1, U32_MAX);
          AS[j] = oseqC.seq(seq);
        }
        tag = originC.uint();
        if (tag !== 0) {
          BR[j] = Math.min(tag - 1, U32_MAX);
          BS[j] = oseqC.seq(seq);
        }
        break;
      }
      case 4:
        AR[j] = dtC.u32();
        AS[j] = dsC.seq(seq);
        break;
      case 1:
        sp.delta[j] = deltaC.intBig();
        break;
      case 2:
        NB[j] = bytesC.u32();
        break;
      default:
        throw new SnapshotError(`unknown span kind ${kind}`);
    }
    seq += n;
  }
  return sp;
}

/** nt time runs of one replica's log. */
function readTimes(tnC: Col_, ttC: Col_, nt: number): StateTime[] {
  const times: StateTime[] = [];
  let prev = 0n;
  for (let j = 0; j < nt; j++) {
    const x = tnC.uint();
    prev = BigInt.asUintN(64, prev + ttC.intBig());
    times.push({ n: Math.min(Math.floor(x / 2), U32_MAX), stepped: x % 2 === 1, t: prev });
  }
  return times;
}

/** ni items of one text. */
function readItems(repC: Col_, iseqC: Col_, inC: Col_, ni: number): StateItems {
  const items: StateItems = { length: ni, r: new Uint32Array(ni), seq: new Uint32Array(ni), n: new Uint32Array(ni), del: new Uint8Array(ni) };
  const R = items.r, D = items.del, S = items.seq, N = items.n;
  let prev = 0;
  for (let j = 0; j < ni; j++) {
    const x = repC.uint();
    const seq = iseqC.seq(prev);
    const n = inC.u32();
    R[j] = Math.min(Math.floor(x / 2), U32_MAX);
    D[j] = x % 2;
    S[j] = seq;
    N[j] = n;
    prev = seq + n;
  }
  return items;
}

/**
 * decodeSnapshot loads a snapshot (what GET /v1/docs/{id} answers with
 * Accept: application/vnd.weft.snapshot) as a document of replica, with
 * clock. Throws SnapshotError when the snapshot is malformed or
 * inconsistent.
 */
export function decodeSnapshot(data: Uint8Array, replica: ReplicaID, clock: Clock = new Clock(), opts: DocOptions = {}): Doc {
  const s = decodeState(data);
  try {
    return Doc._fromState(s, replica, clock, opts);
  } catch (e) {
    if (e instanceof SnapshotError) throw e;
    throw new SnapshotError((e as Error).message);
  }
}
