// A small MessagePack codec for weft frames and register values. It is
// hand-written rather than a dependency because the wire spec needs exact
// control: shortest-form integers, bin versus str, uint64 HLC times as
// BigInt, and a decoder that treats every byte as hostile (lengths checked
// against what remains before allocating, nesting bounded).

/** Values this codec reads and writes. Integers beyond 2^53 are BigInts. */
export type Value =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | Value[]
  | Map<Value, Value>
  | { [key: string]: Value }
  | Ext;

/** An extension value, kept as its type and bytes. */
export class Ext {
  constructor(
    readonly type: number,
    readonly data: Uint8Array,
  ) {}
}

export class MsgpackError extends Error {
  constructor(message: string) {
    super(`msgpack: ${message}`);
    this.name = "MsgpackError";
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

export class Writer {
  buf = new Uint8Array(64);
  len = 0;
  private view = new DataView(this.buf.buffer);

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
    this.view = new DataView(b.buffer);
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

  private u8(c: number, v: number) {
    this.room(2);
    this.buf[this.len++] = c;
    this.buf[this.len++] = v;
  }
  private u16(c: number, v: number) {
    this.room(3);
    this.buf[this.len++] = c;
    this.view.setUint16(this.len, v);
    this.len += 2;
  }
  private u32(c: number, v: number) {
    this.room(5);
    this.buf[this.len++] = c;
    this.view.setUint32(this.len, v);
    this.len += 4;
  }
  private u64(c: number, v: bigint) {
    this.room(9);
    this.buf[this.len++] = c;
    this.view.setBigUint64(this.len, BigInt.asUintN(64, v));
    this.len += 8;
  }

  nil(): void {
    this.byte(0xc0);
  }
  bool(b: boolean): void {
    this.byte(b ? 0xc3 : 0xc2);
  }

  /** An integer in its shortest form (unsigned formats for values ≥ 0). */
  int(v: number | bigint): void {
    if (typeof v === "number") {
      if (!Number.isSafeInteger(v)) throw new MsgpackError(`${v} is not a safe integer`);
      if (v >= 0) {
        if (v < 0x80) this.byte(v);
        else if (v < 0x100) this.u8(0xcc, v);
        else if (v < 0x10000) this.u16(0xcd, v);
        else if (v < 0x100000000) this.u32(0xce, v);
        else this.u64(0xcf, BigInt(v));
      } else {
        if (v >= -32) this.byte(v & 0xff);
        else if (v >= -0x80) this.u8(0xd0, v & 0xff);
        else if (v >= -0x8000) this.u16(0xd1, v & 0xffff);
        else if (v >= -0x80000000) this.u32(0xd2, v >>> 0);
        else this.u64(0xd3, BigInt(v));
      }
      return;
    }
    if (v >= 0n) {
      if (v > 0xffffffffffffffffn) throw new MsgpackError(`${v} does not fit 64 bits`);
      if (v < 0x100000000n) this.int(Number(v));
      else this.u64(0xcf, v);
    } else {
      if (v < -0x8000000000000000n) throw new MsgpackError(`${v} does not fit 64 bits`);
      if (v >= -0x80000000n) this.int(Number(v));
      else this.u64(0xd3, v);
    }
  }

  float(v: number): void {
    this.room(9);
    this.buf[this.len++] = 0xcb;
    this.view.setFloat64(this.len, v);
    this.len += 8;
  }

  str(s: string): void {
    const b = enc.encode(s);
    const n = b.length;
    if (n < 32) this.byte(0xa0 | n);
    else if (n < 0x100) this.u8(0xd9, n);
    else if (n < 0x10000) this.u16(0xda, n);
    else this.u32(0xdb, n);
    this.bytes(b);
  }

  bin(b: Uint8Array): void {
    const n = b.length;
    if (n < 0x100) this.u8(0xc4, n);
    else if (n < 0x10000) this.u16(0xc5, n);
    else this.u32(0xc6, n);
    this.bytes(b);
  }

  arrayHeader(n: number): void {
    if (n < 16) this.byte(0x90 | n);
    else if (n < 0x10000) this.u16(0xdc, n);
    else this.u32(0xdd, n);
  }

  mapHeader(n: number): void {
    if (n < 16) this.byte(0x80 | n);
    else if (n < 0x10000) this.u16(0xde, n);
    else this.u32(0xdf, n);
  }

  value(v: Value, depth = 0): void {
    if (depth > 32) throw new MsgpackError("value nested deeper than 32");
    if (v === null || v === undefined) return this.nil();
    switch (typeof v) {
      case "boolean":
        return this.bool(v);
      case "number":
        return Number.isInteger(v) && Number.isSafeInteger(v) ? this.int(v) : this.float(v);
      case "bigint":
        return this.int(v);
      case "string":
        return this.str(v);
    }
    if (v instanceof Uint8Array) return this.bin(v);
    if (v instanceof Ext) {
      const n = v.data.length;
      const fix: Record<number, number> = { 1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8 };
      if (fix[n] !== undefined) this.u8(fix[n], v.type & 0xff);
      else if (n < 0x100) {
        this.u8(0xc7, n);
        this.byte(v.type & 0xff);
      } else if (n < 0x10000) {
        this.u16(0xc8, n);
        this.byte(v.type & 0xff);
      } else {
        this.u32(0xc9, n);
        this.byte(v.type & 0xff);
      }
      return this.bytes(v.data);
    }
    if (Array.isArray(v)) {
      this.arrayHeader(v.length);
      for (const x of v) this.value(x, depth + 1);
      return;
    }
    if (v instanceof Map) {
      this.mapHeader(v.size);
      for (const [k, x] of v) {
        this.value(k, depth + 1);
        this.value(x, depth + 1);
      }
      return;
    }
    const keys = Object.keys(v);
    this.mapHeader(keys.length);
    for (const k of keys) {
      this.str(k);
      this.value((v as { [key: string]: Value })[k], depth + 1);
    }
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

/** Encodes one value. */
export function encode(v: Value): Uint8Array {
  const w = new Writer();
  w.value(v);
  return w.finish();
}

/**
 * Reader decodes msgpack from bytes it treats as hostile: every length is
 * checked against the bytes that remain before anything is allocated, and
 * nesting is bounded by maxDepth.
 */
export class Reader {
  pos = 0;
  private view: DataView;
  constructor(
    readonly buf: Uint8Array,
    readonly maxDepth = 16,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  left(): number {
    return this.buf.length - this.pos;
  }

  private need(n: number): void {
    if (n > this.left()) throw new MsgpackError(`length ${n} but only ${this.left()} bytes left`);
  }

  peek(): number {
    this.need(1);
    return this.buf[this.pos];
  }

  private take(n: number): Uint8Array {
    this.need(n);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  private u(size: number): number {
    this.need(size);
    let v: number;
    switch (size) {
      case 1:
        v = this.buf[this.pos];
        break;
      case 2:
        v = this.view.getUint16(this.pos);
        break;
      default:
        v = this.view.getUint32(this.pos);
    }
    this.pos += size;
    return v;
  }

  /** Reads any integer; values beyond 2^53 come back as BigInt. */
  int(): number | bigint {
    const c = this.peek();
    this.pos++;
    if (c <= 0x7f) return c;
    if (c >= 0xe0) return c - 0x100;
    switch (c) {
      case 0xcc:
        return this.u(1);
      case 0xcd:
        return this.u(2);
      case 0xce:
        return this.u(4);
      case 0xcf: {
        this.need(8);
        const v = this.view.getBigUint64(this.pos);
        this.pos += 8;
        return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
      case 0xd0:
        return (this.u(1) << 24) >> 24;
      case 0xd1:
        return (this.u(2) << 16) >> 16;
      case 0xd2:
        return this.u(4) | 0;
      case 0xd3: {
        this.need(8);
        const v = this.view.getBigInt64(this.pos);
        this.pos += 8;
        return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
    }
    this.pos--;
    throw new MsgpackError(`0x${c.toString(16)} is not an integer`);
  }

  /** A uint (any integer format holding a value ≥ 0) as a BigInt. */
  uintBig(): bigint {
    const v = this.int();
    if (typeof v === "bigint") {
      if (v < 0n) throw new MsgpackError("negative value where a uint is expected");
      return v;
    }
    if (v < 0) throw new MsgpackError("negative value where a uint is expected");
    return BigInt(v);
  }

  /** A uint that must fit a safe JavaScript integer. */
  uint(): number {
    const v = this.int();
    if (typeof v === "bigint" || v < 0) throw new MsgpackError(`${v} is not a uint of at most 2^53`);
    return v;
  }

  isNil(): boolean {
    if (this.peek() === 0xc0) {
      this.pos++;
      return true;
    }
    return false;
  }

  bool(): boolean {
    const c = this.peek();
    if (c !== 0xc2 && c !== 0xc3) throw new MsgpackError(`0x${c.toString(16)} is not a bool`);
    this.pos++;
    return c === 0xc3;
  }

  str(max = Infinity): string {
    const c = this.peek();
    let n: number;
    this.pos++;
    if (c >= 0xa0 && c <= 0xbf) n = c & 0x1f;
    else if (c === 0xd9) n = this.u(1);
    else if (c === 0xda) n = this.u(2);
    else if (c === 0xdb) n = this.u(4);
    else {
      this.pos--;
      throw new MsgpackError(`0x${c.toString(16)} is not a str`);
    }
    if (n > max) throw new MsgpackError(`str of ${n} bytes exceeds ${max}`);
    const b = this.take(n);
    try {
      return dec.decode(b);
    } catch {
      throw new MsgpackError("str is not valid UTF-8");
    }
  }

  bin(max = Infinity): Uint8Array {
    const c = this.peek();
    let n: number;
    this.pos++;
    if (c === 0xc4) n = this.u(1);
    else if (c === 0xc5) n = this.u(2);
    else if (c === 0xc6) n = this.u(4);
    else {
      this.pos--;
      throw new MsgpackError(`0x${c.toString(16)} is not a bin`);
    }
    if (n > max) throw new MsgpackError(`bin of ${n} bytes exceeds ${max}`);
    return this.take(n).slice();
  }

  arrayHeader(): number {
    const c = this.peek();
    this.pos++;
    let n: number;
    if (c >= 0x90 && c <= 0x9f) n = c & 0x0f;
    else if (c === 0xdc) n = this.u(2);
    else if (c === 0xdd) n = this.u(4);
    else {
      this.pos--;
      throw new MsgpackError(`0x${c.toString(16)} is not an array`);
    }
    if (n > this.left()) throw new MsgpackError(`array of ${n} but only ${this.left()} bytes left`);
    return n;
  }

  mapHeader(): number {
    const c = this.peek();
    this.pos++;
    let n: number;
    if (c >= 0x80 && c <= 0x8f) n = c & 0x0f;
    else if (c === 0xde) n = this.u(2);
    else if (c === 0xdf) n = this.u(4);
    else {
      this.pos--;
      throw new MsgpackError(`0x${c.toString(16)} is not a map`);
    }
    if (2 * n > this.left()) throw new MsgpackError(`map of ${n} but only ${this.left()} bytes left`);
    return n;
  }

  /** Skips one value of any type; returns its bytes. */
  skip(depth = 0): Uint8Array {
    const start = this.pos;
    this.skipValue(depth);
    return this.buf.subarray(start, this.pos);
  }

  private skipValue(depth: number): void {
    if (depth > this.maxDepth) throw new MsgpackError(`nested deeper than ${this.maxDepth}`);
    const c = this.peek();
    if (c <= 0x7f || c >= 0xe0 || c === 0xc0 || c === 0xc2 || c === 0xc3) {
      this.pos++;
      return;
    }
    if (c >= 0x80 && c <= 0x8f) {
      this.pos++;
      return this.elems((c & 0x0f) * 2, depth);
    }
    if (c >= 0x90 && c <= 0x9f) {
      this.pos++;
      return this.elems(c & 0x0f, depth);
    }
    if (c >= 0xa0 && c <= 0xbf) {
      this.pos++;
      this.take(c & 0x1f);
      return;
    }
    this.pos++;
    switch (c) {
      case 0xc4:
      case 0xd9:
        this.take(this.u(1));
        return;
      case 0xc5:
      case 0xda:
        this.take(this.u(2));
        return;
      case 0xc6:
      case 0xdb:
        this.take(this.u(4));
        return;
      case 0xc7:
        this.take(this.u(1) + 1);
        return;
      case 0xc8:
        this.take(this.u(2) + 1);
        return;
      case 0xc9:
        this.take(this.u(4) + 1);
        return;
      case 0xca:
        this.take(4);
        return;
      case 0xcb:
        this.take(8);
        return;
      case 0xcc:
      case 0xd0:
        this.take(1);
        return;
      case 0xcd:
      case 0xd1:
        this.take(2);
        return;
      case 0xce:
      case 0xd2:
        this.take(4);
        return;
      case 0xcf:
      case 0xd3:
        this.take(8);
        return;
      case 0xd4:
        this.take(2);
        return;
      case 0xd5:
        this.take(3);
        return;
      case 0xd6:
        this.take(5);
        return;
      case 0xd7:
        this.take(9);
        return;
      case 0xd8:
        this.take(17);
        return;
      case 0xdc:
        return this.elems(this.u(2), depth);
      case 0xdd:
        return this.elems(this.u(4), depth);
      case 0xde:
        return this.elems(this.u(2) * 2, depth);
      case 0xdf:
        return this.elems(this.u(4) * 2, depth);
    }
    throw new MsgpackError(`reserved byte 0x${c.toString(16)}`);
  }

  private elems(n: number, depth: number): void {
    if (n > this.left()) throw new MsgpackError(`${n} elements but only ${this.left()} bytes left`);
    for (let i = 0; i < n; i++) this.skipValue(depth + 1);
  }

  /** Reads one value of any type. Maps with string keys become objects. */
  value(depth = 0): Value {
    if (depth > this.maxDepth) throw new MsgpackError(`nested deeper than ${this.maxDepth}`);
    const c = this.peek();
    if (c <= 0x7f || c >= 0xe0 || (c >= 0xcc && c <= 0xd3 && c !== 0xd4)) return this.int();
    if (c === 0xc0) {
      this.pos++;
      return null;
    }
    if (c === 0xc2 || c === 0xc3) return this.bool();
    if ((c >= 0xa0 && c <= 0xbf) || c === 0xd9 || c === 0xda || c === 0xdb) return this.str();
    if (c === 0xc4 || c === 0xc5 || c === 0xc6) return this.bin();
    if ((c >= 0x90 && c <= 0x9f) || c === 0xdc || c === 0xdd) {
      const n = this.arrayHeader();
      const out: Value[] = [];
      for (let i = 0; i < n; i++) out.push(this.value(depth + 1));
      return out;
    }
    if ((c >= 0x80 && c <= 0x8f) || c === 0xde || c === 0xdf) {
      const n = this.mapHeader();
      const keys: Value[] = [];
      const vals: Value[] = [];
      let allStr = true;
      for (let i = 0; i < n; i++) {
        const k = this.value(depth + 1);
        if (typeof k !== "string") allStr = false;
        keys.push(k);
        vals.push(this.value(depth + 1));
      }
      if (allStr) {
        const o: { [key: string]: Value } = Object.create(null);
        keys.forEach((k, i) => (o[k as string] = vals[i]));
        return o;
      }
      return new Map(keys.map((k, i) => [k, vals[i]]));
    }
    if (c === 0xca) {
      this.pos++;
      this.need(4);
      const v = this.view.getFloat32(this.pos);
      this.pos += 4;
      return v;
    }
    if (c === 0xcb) {
      this.pos++;
      this.need(8);
      const v = this.view.getFloat64(this.pos);
      this.pos += 8;
      return v;
    }
    // ext
    const start = this.pos;
    this.skipValue(depth);
    const raw = this.buf.subarray(start, this.pos);
    const hdr = c >= 0xd4 && c <= 0xd8 ? 1 : c === 0xc7 ? 2 : c === 0xc8 ? 3 : 5;
    return new Ext((raw[hdr] << 24) >> 24, raw.slice(hdr + 1));
  }
}

/** Decodes exactly one value; trailing bytes are an error. */
export function decode(b: Uint8Array, maxDepth = 32): Value {
  const r = new Reader(b, maxDepth);
  const v = r.value();
  if (r.left() !== 0) throw new MsgpackError(`${r.left()} trailing bytes`);
  return v;
}

/** Throws unless b holds exactly one well-formed msgpack value (nesting ≤ 32). */
export function checkMsgpack(b: Uint8Array): void {
  if (b.length === 0) throw new MsgpackError("empty msgpack value");
  const r = new Reader(b, 32);
  r.skip();
  if (r.left() !== 0) throw new MsgpackError(`${r.left()} trailing bytes`);
}
