// Replays the conformance corpus that Go writes (crdt/codec
// TestConformanceCorpus and its neighbours): every batch must decode to the
// same changes and encode to the same bytes, every batch Go refuses as
// corrupt must be refused, and every scripted history must pass through
// the same states and end with byte-identical histories.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { constants, deflateRawSync } from "node:zlib";
import { CorruptError, decodeChanges, encodeChanges, inflateBatch } from "../src/codec.js";
import { Doc, Tx } from "../src/doc.js";
import { Clock } from "../src/hlc.js";
import { FieldType, parseReplica } from "../src/types.js";
import { changesFromJSON, changesToJSON, hex, readRepo, unhex } from "./util.js";

const dir = "crdt/codec/testdata/conformance/";
const batches = JSON.parse(readRepo(dir + "batches.json").toString());
const histories = JSON.parse(readRepo(dir + "histories.json").toString());

for (const b of batches) {
  test(`batch ${b.name}: decodes as Go decodes it`, async () => {
    const plain = await inflateBatch(unhex(b.hex));
    assert.equal(hex(plain), b.plain_hex);
    const got = decodeChanges(plain);
    assert.deepEqual(changesToJSON(got), changesToJSON(changesFromJSON(b.changes)));
  });
  test(`batch ${b.name}: encodes as Go encodes it`, () => {
    assert.equal(hex(encodeChanges(changesFromJSON(b.changes))), b.plain_hex);
  });
}

// Batches Go refuses as corrupt (crdt/codec TestConformanceRefused), a TS
// replica refuses too, on every platform: among them bytes after the end
// of a compressed batch's DEFLATE stream, which Node's DecompressionStream
// would ignore and Chromium's refuses.
const refused = JSON.parse(readRepo(dir + "refused.json").toString());
assert.ok(refused.some((r: any) => /after the end of the DEFLATE stream/.test(r.error_contains)));

for (const r of refused) {
  test(`refused batch ${r.name}: refused as Go refuses it`, async () => {
    await assert.rejects(
      async () => decodeChanges(await inflateBatch(unhex(r.hex))),
      (e: Error) => e instanceof CorruptError && e.message.includes(r.error_contains),
    );
  });
}

test("inflateBatch: exact streams of every block kind inflate; with any byte after them, refused", async () => {
  const plain = unhex(batches.find((b: any) => b.name === "two typists merged").plain_hex);
  const body = plain.subarray(1);
  const opts = [
    { level: 0 }, // stored blocks
    { level: 1 },
    { level: 9 },
    { level: 6, strategy: constants.Z_FIXED },
    { level: 6, strategy: constants.Z_HUFFMAN_ONLY },
  ];
  for (const o of opts) {
    const z = deflateRawSync(body, o);
    const head = [2, ...uvarint(body.length)];
    assert.equal(hex(await inflateBatch(new Uint8Array([...head, ...z]))), hex(plain), JSON.stringify(o));
    for (const junk of [[0], [0x03, 0x00], [0xff, 0xff, 0xff]]) {
      await assert.rejects(inflateBatch(new Uint8Array([...head, ...z, ...junk])), (e: Error) => e instanceof CorruptError && /after the end of the DEFLATE stream/.test(e.message), `${JSON.stringify(o)} + ${junk}`);
    }
  }
});

function uvarint(n: number): number[] {
  const out: number[] = [];
  for (; n >= 0x80; n >>>= 7) out.push((n & 0x7f) | 0x80);
  out.push(n);
  return out;
}

function stateOf(d: Doc) {
  const s = { texts: {} as Record<string, string>, counters: {} as Record<string, string>, registers: {} as Record<string, string>, pending: d.pendingCount() };
  for (const f of d.fieldList()) {
    if (f.type === FieldType.Text) s.texts[f.name] = d.text(f.name);
    else if (f.type === FieldType.Counter) s.counters[f.name] = d.counter(f.name).toString();
    else s.registers[f.name] = hex(d.register(f.name)!);
  }
  return s;
}

for (const h of histories) {
  test(`history ${h.name}: same states and histories as Go`, () => {
    const walls = h.replicas.map(() => 1_700_000_000_000);
    const docs: Doc[] = h.replicas.map((r: string, i: number) => new Doc(parseReplica(r), new Clock(() => walls[i], 0)));
    h.steps.forEach((s: any, k: number) => {
      const where = `step ${k}`;
      if (s.sync) {
        const [from, to] = s.sync;
        const cs = s.full ? docs[from].changesSince() : docs[from].changesSince(docs[to].version());
        const b = encodeChanges(cs);
        assert.equal(hex(b), s.batch_hex, `${where}: the batch sent`);
        const dec = decodeChanges(b);
        if (s.reverse) dec.reverse();
        docs[to].apply(dec);
        assert.deepEqual(stateOf(docs[to]), s.state, `${where}: state after the sync`);
        return;
      }
      walls[s.r] = s.wall;
      docs[s.r].transact((tx: Tx) => {
        for (const op of s.ops) {
          switch (op[0]) {
            case "ins":
              tx.insert(op[1], op[2], op[3]);
              break;
            case "del":
              tx.delete(op[1], op[2], op[3]);
              break;
            case "add":
              tx.add(op[1], BigInt(op[2]));
              break;
            case "set":
              tx.set(op[1], unhex(op[2]));
              break;
          }
        }
      });
    });
    docs.forEach((d: Doc, i: number) => {
      assert.deepEqual(stateOf(d), h.final, `replica ${i}: final state`);
      const sum = createHash("sha256").update(encodeChanges(d.changesSince())).digest("hex");
      assert.equal(sum, h.history_sha256[i], `replica ${i}: encoded history`);
    });
  });
}

// What Go's crdt refuses, a TS replica refuses alike (crdt/codec
// hostile_conformance_test.go): inserts whose origins contradict the text,
// changes stamped no later than what they follow, delivered one at a time
// and as one batch, with the same answer and the same state after each.
const hostile = JSON.parse(readRepo(dir + "hostile.json").toString());

function outcomeOf(d: Doc, batch: string): string {
  try {
    d.apply(decodeChanges(unhex(batch)));
    return "ok";
  } catch (e) {
    const m = (e as Error).message;
    if (/origins contradict the text/.test(m)) return "origins";
    if (/stamped before what it follows/.test(m)) return "backdated";
    throw e;
  }
}

function hostileStateOf(d: Doc) {
  const version: Record<string, number> = {};
  for (const [r, s] of d.version()) version[r] = s;
  return { ...stateOf(d), version, rejected: d.rejected() };
}

for (const h of hostile) {
  test(`${h.name}: refused and applied as Go does, same states`, () => {
    const receiver = () => {
      // Go's cfReplica(7): bytes 0x88, 0x89, ...; its wall clock far ahead.
      const me = Array.from({ length: 16 }, (_, k) => (0x88 + k).toString(16)).join("");
      const d = new Doc(me, new Clock(() => 2 ** 40, 0));
      d.apply(decodeChanges(unhex(h.base_hex)));
      return d;
    };
    const d = receiver();
    h.steps.forEach((s: any, k: number) => {
      assert.equal(outcomeOf(d, s.batch_hex), s.outcome, `step ${k}`);
      assert.deepEqual(hostileStateOf(d), s.state, `step ${k}: state`);
    });
    const b = receiver();
    assert.equal(outcomeOf(b, h.batch.batch_hex), h.batch.outcome, "the whole batch");
    assert.deepEqual(hostileStateOf(b), h.batch.state, "the whole batch: state");
  });
}
