// What a Go replica refuses a TS replica refuses too (issue 11): changes
// stamped no later than what they follow (crdt.ErrBackdated), batch whole,
// and what it accepts it accepts too. Mirrors crdt/integrity_test.go.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Doc, InvalidChangeError } from "../src/doc.js";
import { Clock, timestamp } from "../src/hlc.js";
import { OpKind } from "../src/types.js";
import type { Change, ID, Op } from "../src/types.js";

/** Go's rid(b): the first and last bytes b. */
const rid = (b: number) => {
  const h = b.toString(16).padStart(2, "0");
  return h + "00".repeat(14) + h;
};
const newDoc = (b: number, wall: number) => new Doc(rid(b), new Clock(() => wall, 0));
const state = (d: Doc) => `${d.describe()}version ${JSON.stringify([...d.version()].sort())} pending ${d.pendingCount()}`;
const history = (d: Doc) => JSON.stringify(d.changesSince(), (_k, v) => (typeof v === "bigint" ? v.toString() : v instanceof Uint8Array ? [...v] : v));
const xid = (s: number): ID => ({ replica: rid(9), seq: s });
const ins = (field: string, text: string, left: ID | null, right: ID | null): Op => ({ kind: OpKind.Ins, field, text, left, right });

function base8(): Change[] {
  const x = newDoc(9, 1000);
  x.transact((tx) => tx.insert("body", 0, "abcdefgh"));
  return x.changesSince();
}

test("changes stamped before what they follow are refused (Go: TestBackdatedChangesRefused)", () => {
  const d = newDoc(1, 1_700_000_000_000);
  const add = (seq: number, t: bigint): Change => ({ replica: rid(4), seq, time: t, ops: [{ kind: OpKind.Add, field: "n", delta: 1n }] });
  const prev = [add(1, timestamp(5000, 0)), add(2, timestamp(5000, 0))];
  assert.throws(() => d.apply(prev), /stamped before what it follows/);
  d.apply([prev[0]]);
  assert.throws(() => d.apply([prev[1]]), /stamped before what it follows/);
  assert.equal(d.counter("n"), 1n);
  // A delete stamped no later than the character it deletes.
  const base = base8();
  const del: Change = { replica: rid(5), seq: 1, time: base[0].time, ops: [{ kind: OpKind.Del, field: "body", target: xid(1), count: 1, backward: false }] };
  const d2 = newDoc(1, 1_700_000_000_000);
  assert.throws(() => d2.apply([...base, del]), /stamped before what it follows/);
  assert.equal(d2.text("body"), "");
  d2.apply([...base, { ...del, time: del.time + 1n }]);
  assert.equal(d2.text("body"), "bcdefgh");
});

test("a change overlapping what the replica holds keeps its cut insert's left origin (Go: TestTrimmedChangeKeepsLeftOrigin)", () => {
  const x = rid(7);
  const o = (text: string, left: number, right: number): Op => ins("t", text, left ? { replica: x, seq: left } : null, right ? { replica: x, seq: right } : null);
  const at = timestamp(1000, 0);
  const short: Change = { replica: x, seq: 1, time: at, ops: [o("ab", 0, 0), o("c", 1, 2)] };
  const long: Change = { replica: x, seq: 1, time: at, ops: [o("ab", 0, 0), o("cd", 1, 2)] };
  const whole = newDoc(1, 2000);
  whole.apply([long]);
  const d = newDoc(2, 2000);
  d.apply([short]);
  d.apply([long]);
  assert.equal(whole.text("t"), "acdb");
  assert.equal(d.text("t"), "acdb");
});
