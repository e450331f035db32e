// Snapshots Go encodes (crdt/codec TestConformanceSnapshots): each must
// decode to exactly the value Go decodes it to, then accept the changes Go
// made after it and reach Go's value; hostile snapshots must be refused
// with a SnapshotError.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { decodeChanges, encodeChanges } from "../src/codec.js";
import { Doc } from "../src/doc.js";
import { decompress } from "fzstd";
import { Reader, Writer } from "../src/msgpack.js";
import { decodeSnapshot, decodeState, SnapshotError } from "../src/snapshot.js";
import { FieldType, replicaUUID } from "../src/types.js";
import { XXH64_WASM, xxh64JS, xxh64Low32 } from "../src/xxh64.js";
import { xxh64Module } from "../src/xxh64wasm.js";
import { hex, readRepo, unhex } from "./util.js";

const dir = "crdt/codec/testdata/conformance/";
const cases = JSON.parse(readRepo(dir + "snapshots.json").toString());
const traces = JSON.parse(readRepo(dir + "traces.json").toString());
const sha = (b: Uint8Array | string) => createHash("sha256").update(b).digest("hex");
const ME = "f0000000000000000000000000000042";

function stateOf(d: Doc, hashed: boolean) {
  const s = { texts: {} as Record<string, string>, counters: {} as Record<string, string>, registers: {} as Record<string, string>, pending: d.pendingCount() };
  const h: Record<string, string> = {};
  for (const f of d.fieldList()) {
    if (f.type === FieldType.Text) {
      if (hashed) h[f.name] = sha(d.text(f.name));
      else s.texts[f.name] = d.text(f.name);
    } else if (f.type === FieldType.Counter) s.counters[f.name] = d.counter(f.name).toString();
    else s.registers[f.name] = hex(d.register(f.name)!);
  }
  return { s, h };
}

function bytesOf(c: any): Uint8Array {
  return c.file ? new Uint8Array(readRepo(dir + c.file)) : unhex(c.hex);
}

for (const c of cases) {
  const large = !!c.file;
  test(`snapshot ${c.name}: decodes to Go's value and accepts later changes`, () => {
    const d = decodeSnapshot(bytesOf(c), ME);
    const got = stateOf(d, large);
    assert.deepEqual(got.s, c.state);
    if (large) assert.deepEqual(got.h, c.text_sha256);
    const v: Record<string, number> = {};
    for (const [r, s] of d.version()) v[replicaUUID(r)] = s;
    assert.deepEqual(v, c.version);
    d.apply(decodeChanges(unhex(c.later_hex)));
    const after = stateOf(d, large);
    assert.deepEqual(after.s, c.after);
    if (large) assert.deepEqual(after.h, c.after_text_sha256);
  });
}

test("snapshot automerge-paper: the decoded history is byte for byte the replayed one", () => {
  const c = cases.find((x: any) => x.name === "automerge-paper");
  const w = traces.find((x: any) => x.name === "automerge-paper.json.gz");
  const d = decodeSnapshot(bytesOf(c), ME);
  assert.equal(sha(encodeChanges(d.changesSince())), w.history_sha256);
});

test("snapshot: a decoded document edits locally like any other", () => {
  const c = cases.find((x: any) => x.name === "counters registers deletions");
  const d = decodeSnapshot(unhex(c.hex), ME);
  const before = d.text("body");
  d.transact((tx) => tx.insert("body", 3, "X").delete("body", 0, 1).add("likes", -10n));
  assert.equal(d.text("body"), before.slice(1, 3) + "X" + before.slice(3));
  // The counter is a 128-bit sum shown clamped: 10 less is still clamped.
  assert.equal(d.counter("likes"), 9223372036854775807n);
  // The local change goes to another replica and gives the same value.
  const e = decodeSnapshot(unhex(c.hex), "f0000000000000000000000000000043");
  e.apply(d.changesSince(e.version()));
  assert.equal(e.text("body"), d.text("body"));
});

// ---- hostile input ----

/** A zstd frame storing raw as raw blocks (no compression), for crafting bodies. */
function zstdStore(raw: Uint8Array): Uint8Array {
  const out: number[] = [0x28, 0xb5, 0x2f, 0xfd, 0xa0 /* single segment, 4-byte size */];
  out.push(raw.length & 255, (raw.length >> 8) & 255, (raw.length >> 16) & 255, raw.length >>> 24);
  for (let p = 0; p < raw.length || p === 0; p += 131072) {
    const n = Math.min(131072, raw.length - p);
    const last = p + n >= raw.length ? 1 : 0;
    const bh = (n << 3) | last;
    out.push(bh & 255, (bh >> 8) & 255, (bh >> 16) & 255);
    for (let i = 0; i < n; i++) out.push(raw[p + i]);
    if (raw.length === 0) break;
  }
  return new Uint8Array(out);
}

function envelope(rawLen: number, z: Uint8Array): Uint8Array {
  const w = new Writer();
  w.arrayHeader(4);
  w.str("weft.snapshot");
  w.int(3);
  w.int(rawLen);
  w.bin(z);
  return w.finish();
}

function uvarint(v: number): number[] {
  const out: number[] = [];
  while (v >= 0x80) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

/** A body of a header and 15 columns. */
function body(header: number[], cols: number[][] = []): Uint8Array {
  const out = [...uvarint(header.length), ...header];
  for (let i = 0; i < 15; i++) {
    const c = cols[i] ?? [];
    out.push(...uvarint(c.length), ...c);
  }
  return new Uint8Array(out);
}

const crafted = (raw: Uint8Array) => envelope(raw.length, zstdStore(raw));

test("snapshot: a crafted empty body decodes (the crafting is sound)", () => {
  const d = decodeSnapshot(crafted(body([0, 0])), ME);
  assert.deepEqual(d.fieldList(), []);
});

// Snapshots Go refuses (crdt/codec TestConformanceRefusedSnapshots), a TS
// replica refuses too: the body must be exactly one zstd frame, nothing
// before or after it, not even an empty or skippable frame.
for (const r of JSON.parse(readRepo(dir + "refused_snapshots.json").toString())) {
  test(`refused snapshot ${r.name}: refused as Go refuses it`, () => {
    assert.throws(() => decodeSnapshot(unhex(r.hex), ME), (e: Error) => e instanceof SnapshotError && e.message.includes(r.error_contains));
  });
}

test("snapshot: hostile counts and lengths are refused", () => {
  const R = new Array(16).fill(7);
  const refused: [string, Uint8Array][] = [
    ["replica count past the header", crafted(body([...uvarint(2 ** 40)]))],
    ["field count past the header", crafted(body([0, ...uvarint(1e9)]))],
    ["spans past the kind column", crafted(body([1, ...R, 0, ...uvarint(1e9), 0]))],
    ["times past the time column", crafted(body([1, ...R, 0, 0, ...uvarint(1e9)]))],
    ["items past the item column", crafted(body([0, 1, 3, 1, 98, ...uvarint(1e9)]))],
    ["column length past the body", envelope(20, zstdStore(new Uint8Array([0, ...uvarint(1e9), 0, 0, 0])))],
    ["trailing header bytes", crafted(body([0, 0, 5]))],
    ["trailing column bytes", crafted(body([0, 0], [[1]]))],
    ["unknown span kind", crafted(body([1, ...R, 0, 1, 1], [[7], [1], [0], [], [], [], [], [], [], [2], [0]]))],
    ["seq out of range", crafted(body([1, ...R, 1, 3, 1, 98, 1, 1, 1], [[3], [1], [0], [0], [0, 0], [], [], [], [], [2], [2], [98], [2], uvarint(2 ** 33), [1]]))],
    ["item of unknown ids", crafted(body([1, ...R, 1, 3, 1, 98, 1, 1, 1], [[3], [1], [0], [0], [0, 0], [], [], [], [], [2], [2], [98], [2], [8], [1]]))],
    ["zero replica", crafted(body([1, ...new Array(16).fill(0), 0, 0, 0]))],
    ["huge raw length for a tiny frame", envelope(2 ** 30, zstdStore(new Uint8Array(16)))],
    ["raw length over the limit", envelope(2 ** 31, zstdStore(new Uint8Array(16)))],
    ["frame size disagrees with the envelope", envelope(17, zstdStore(new Uint8Array(16)))],
    ["two frames", envelope(32, new Uint8Array([...zstdStore(new Uint8Array(16)), ...zstdStore(new Uint8Array(16))]))],
    ["wrong magic", new Uint8Array([0x94, 0xa1, 0x78, 3, 16, 0xc4, 0])],
    ["not an array", new Uint8Array([0x01])],
    ["version 2", (() => {
      const w = new Writer();
      w.arrayHeader(4);
      w.str("weft.snapshot");
      w.int(2);
      w.int(16);
      w.bin(zstdStore(body([0, 0])));
      return w.finish();
    })()],
  ];
  for (const [what, b] of refused) {
    assert.throws(() => decodeSnapshot(b, ME), SnapshotError, what);
  }
  // The valid one next to them: one replica, one insert "b" with its item.
  const ok = crafted(body([1, ...R, 1, 3, 1, 98, 1, 1, 1], [[3], [1], [0], [0], [0, 0], [], [], [], [], [2], [2], [98], [0], [2], [1]]));
  assert.equal(decodeSnapshot(ok, ME).text("b"), "b");
});

test("snapshot: every truncation and many corruptions are refused with a SnapshotError", () => {
  const c = cases.find((x: any) => x.name === "counters registers deletions");
  const snap = unhex(c.hex);
  for (let n = 0; n < snap.length; n++) assert.throws(() => decodeSnapshot(snap.subarray(0, n), ME), SnapshotError, `truncated to ${n}`);
  // Corrupt the raw body (recompressed as stored blocks) byte by byte: each
  // must decode or be refused with a SnapshotError, nothing else.
  const st = decodeState(snap);
  assert.ok(st.replicas.length > 0);
  const raw = rawBody(snap);
  let refused = 0;
  for (let i = 0; i < raw.length; i++) {
    for (const x of [1, 0x80, 0xff]) {
      const r = raw.slice();
      r[i] ^= x;
      try {
        decodeSnapshot(crafted(r), ME);
      } catch (e) {
        assert.ok(e instanceof SnapshotError, `byte ${i} ^ ${x}: ${e}`);
        refused++;
      }
    }
  }
  assert.ok(refused > raw.length, `only ${refused} corruptions refused`);
});

test("snapshot: a corrupted zstd body is refused or decodes to the same document (the checksum is verified)", () => {
  const c = cases.find((x: any) => x.name === "counters registers deletions");
  const snap = unhex(c.hex);
  const key = (d: Doc) => hex(encodeChanges(d.changesSince()));
  const want = key(decodeSnapshot(snap, ME));
  let same = 0;
  for (let i = 20; i < snap.length; i++) {
    for (const x of [1, 0x10, 0x80]) {
      const b = snap.slice();
      b[i] ^= x;
      let d: Doc;
      try {
        d = decodeSnapshot(b, ME);
      } catch (e) {
        assert.ok(e instanceof SnapshotError, `byte ${i} ^ ${x}: ${e}`);
        continue;
      }
      assert.equal(key(d), want, `byte ${i} ^ ${x} decodes to another document`);
      same++;
    }
  }
  assert.ok(same < snap.length, `${same} corruptions went unnoticed`);
});

/** The raw body (header and columns) of a snapshot. */
function rawBody(snap: Uint8Array): Uint8Array {
  const r = new Reader(snap);
  r.arrayHeader();
  r.str();
  r.uint();
  r.uint();
  return decompress(r.bin());
}

test("xxh64: the low 32 bits match Go's XXH64, at any length and alignment", () => {
  // Sums from github.com/cespare/xxhash/v2 (what Go's zstd checks) of the
  // first n bytes of (i*31 + 7) ^ (i >> 3).
  const want: [number, number][] = [
    [0, 1373170073], [1, 3898129335], [3, 849643513], [4, 3825176324], [8, 647398368], [31, 1705090418], [32, 2339762060],
    [33, 1683938688], [63, 3520997400], [64, 1356426271], [100, 2044167762], [1000, 2664935898], [4093, 3787872879], [4096, 1099790711],
  ];
  const gen = (n: number, at: number) => {
    const buf = new Uint8Array(n + at);
    for (let i = 0; i < n; i++) buf[at + i] = ((i * 31 + 7) ^ (i >> 3)) & 255;
    return buf.subarray(at);
  };
  for (const [n, sum] of want) {
    for (const at of [0, 1, 3, 4]) {
      assert.equal(xxh64JS(gen(n, at)), sum, `JavaScript, n=${n} at byte ${at}`);
      assert.equal(xxh64Low32(gen(n, at)), sum, `n=${n} at byte ${at}`);
    }
  }
  // Inputs of 4 KB and more go to WebAssembly: the same sums as the
  // JavaScript, whichever memory they are copied to (kept or their own).
  for (const n of [4096, 4097, 4100, 4103, 65536, 65543, 1 << 20, (1 << 20) + 9]) {
    const b = gen(n, n % 3);
    assert.equal(xxh64Low32(b), xxh64JS(b), `n=${n}`);
  }
  const text = (s: string) => new TextEncoder().encode(s);
  assert.equal(xxh64Low32(text("")), 0x51d8e999);
  assert.equal(xxh64Low32(text("a")), 0xa98c6e5b);
  assert.equal(xxh64Low32(text("abc")), 0xad770999);
});

test("xxh64: the WebAssembly module is what src/xxh64wasm.ts assembles", () => {
  assert.equal(Buffer.from(xxh64Module()).toString("hex"), XXH64_WASM);
});
