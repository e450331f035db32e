// Every golden frame of crdt/syncproto/testdata/golden decodes to the
// fields its .json lists, and encodes back to the same bytes.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import path from "node:path";
import { decodeChanges } from "../src/codec.js";
import { decodeMessage, encodeMessage, splitVersion, statusName } from "../src/protocol.js";
import type { Message } from "../src/protocol.js";
import { newReplica, parseReplica } from "../src/types.js";
import type { Anchor } from "../src/types.js";
import { changesFromJSON, changesToJSON, hex, readRepo, repoRoot } from "./util.js";

const dir = "crdt/syncproto/testdata/golden";
const names = readdirSync(path.join(repoRoot, dir))
  .filter((f) => f.endsWith(".json"))
  .map((f) => f.slice(0, -5));

function vvJSON(v: Map<string, number>) {
  const o: Record<string, number> = {};
  for (const [k, s] of v) o[k] = s;
  return o;
}

function vvFrom(o: Record<string, number>) {
  const m = new Map<string, number>();
  for (const k of Object.keys(o)) m.set(parseReplica(k), o[k]);
  return m;
}

function anchorFrom(a: any): Anchor | null {
  if (!a) return null;
  return { id: a.id ? { replica: parseReplica(a.id.replica), seq: a.id.seq } : null, side: a.side === "after" ? 1 : 0 };
}

const PEER_ONLY = new Set(["peer_hello", "digest", "digest_docs", "owners"]);

test("there are golden frames", () => assert.ok(names.length >= 18, `${names.length} golden files`));

for (const name of names) {
  test(`golden ${name}`, () => {
    const j = JSON.parse(readRepo(`${dir}/${name}.json`).toString());
    const frame = new Uint8Array(readRepo(`${dir}/${name}.bin`));
    assert.equal(hex(frame), j.hex);
    const m = decodeMessage(frame);
    if (PEER_ONLY.has(j.type)) {
      // Cluster peer links only: a client treats them as unknown tags.
      assert.deepEqual(m, { type: "unknown", tag: j.tag });
      return;
    }
    assert.equal(hex(encodeMessage(m)), j.hex, "re-encoded");
    const want = expected(j);
    assert.deepEqual(normalize(m), normalize(want));
    if ("changes" in m && typeof j.changes === "object") {
      assert.deepEqual(changesToJSON(decodeChanges(m.changes)), changesToJSON(changesFromJSON(j.changes.decoded)));
    }
    if (j.status_name) assert.equal(statusName(j.status), j.status_name);
  });
}

function normalize(m: Message): unknown {
  const o: any = { ...m };
  for (const k of Object.keys(o)) {
    if (o[k] instanceof Uint8Array) o[k] = hex(o[k]);
    if (o[k] instanceof Map) o[k] = vvJSON(o[k]);
    if (typeof o[k] === "bigint") o[k] = o[k].toString();
  }
  return o;
}

function expected(j: any): Message {
  const t = j.type;
  const changes = typeof j.changes === "object" ? new Uint8Array(Buffer.from(j.changes.hex, "hex")) : new Uint8Array(0);
  switch (t) {
    case "hello":
      return { type: "hello", version: j.version, token: j.token, replica: parseReplica(j.replica), client: j.client };
    case "welcome":
      return {
        type: "welcome", version: j.version, serverTime: BigInt(j.server_time), session: j.session, user: j.user,
        limits: { maxFrame: j.limits[0], maxChangesPerSec: j.limits[1], maxPresencePerSec: j.limits[2], maxDocBytes: j.limits[3], maxPending: j.limits[4], maxDocs: j.limits[5], maxOpsBurst: j.limits[6] },
      };
    case "subscribe":
      return { type: "subscribe", doc: j.doc, version: vvFrom(j.version) };
    case "unsubscribe":
      return { type: "unsubscribe", doc: j.doc };
    case "version_part":
      return { type: "versionPart", doc: j.doc, version: vvFrom(j.version) };
    case "sync":
      return { type: "sync", doc: j.doc, version: vvFrom(j.version), changes };
    case "update":
      return { type: "update", doc: j.doc, batch: j.batch, changes };
    case "ack":
      return { type: "ack", doc: j.doc, batch: j.batch, status: j.status, message: j.message };
    case "changes":
      return { type: "changes", doc: j.doc, changes };
    case "presence":
      return {
        type: "presence", doc: j.doc, session: j.session, user: j.user, name: j.name, color: j.color, clock: j.clock, field: j.field,
        cursor: anchorFrom(j.cursor),
        selection: j.selection ? { anchor: anchorFrom(j.selection.anchor)!, head: anchorFrom(j.selection.head)! } : null,
        typing: j.typing,
        state: j.state_hex ? new Uint8Array(Buffer.from(j.state_hex, "hex")) : null,
      };
    case "presence_leave":
      return { type: "presenceLeave", doc: j.doc, session: j.session };
    case "ping":
      return { type: "ping", nonce: j.nonce };
    case "pong":
      return { type: "pong", nonce: j.nonce };
    case "error":
      return { type: "error", status: j.status, message: j.message, doc: j.doc };
  }
  throw new Error(`unknown golden type ${t}`);
}

test("decodeMessage refuses malformed frames and skips appended fields", () => {
  const ping = encodeMessage({ type: "ping", nonce: 42 });
  assert.throws(() => decodeMessage(ping.subarray(0, 1)), /malformed/);
  assert.throws(() => decodeMessage(new Uint8Array([...ping, 0])), /trailing/);
  // A newer version appends a field: skipped.
  assert.deepEqual(decodeMessage(new Uint8Array([0x93, 0x0b, 0x2a, 0xa1, 0x78])), { type: "ping", nonce: 42 });
  // Too few fields.
  assert.throws(() => decodeMessage(new Uint8Array([0x91, 0x0b])), /fields/);
  // Unknown tag: not malformed.
  assert.deepEqual(decodeMessage(new Uint8Array([0x92, 0x63, 0xc0])), { type: "unknown", tag: 99 });
  // Nesting deeper than 16.
  const deep = new Uint8Array([0x93, 0x0b, 0x2a, ...new Array(20).fill(0x91), 0xc0]);
  assert.throws(() => decodeMessage(deep), /nested/);
  // A length that claims more than the frame holds.
  assert.throws(() => decodeMessage(new Uint8Array([0x92, 0x0b, 0xce, 0xff, 0xff])), /bytes left/);
  assert.throws(() => decodeMessage(new Uint8Array([0x92, 0x04, 0xdb, 0x00, 0x00, 0x01, 0x00])), /bytes left/);
});

test("splitVersion: parts within the budget, in replica order, each replica once, the union the whole", () => {
  const v = new Map<string, number>();
  for (let i = 0; i < 1000; i++) v.set(newReplica(), [1, 200, 70_000, 2 ** 33][i % 4]);
  assert.deepEqual(splitVersion(v, 1 << 20), [v]);
  const budget = 500;
  const parts = splitVersion(v, budget);
  assert.ok(parts.length > 1);
  const seen = new Map<string, number>();
  let last = "";
  for (const p of parts) {
    assert.ok(p.size >= 1);
    // The version's own bytes: the frame less its tag and document id.
    const frame = encodeMessage({ type: "versionPart", doc: "", version: p });
    assert.ok(frame.length - 3 <= budget, `a part of ${frame.length - 3} bytes`);
    for (const [r, s] of p) {
      assert.ok(r > last, "parts not in replica order");
      last = r;
      seen.set(r, s);
    }
  }
  assert.deepEqual(seen, v);
  // A budget below one entry still makes progress: one replica a part.
  assert.equal(splitVersion(v, 1).length, v.size);
});
