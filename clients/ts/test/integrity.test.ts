// What a Go replica refuses a TS replica refuses too (issue 11): inserts
// whose origins contradict the text (Go: crdt.ErrOrigins) and changes
// stamped no later than what they follow (crdt.ErrBackdated), batch whole,
// leaving no trace. Mirrors crdt/integrity_test.go.

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

test("inserts whose origins contradict the text are refused, in either order (Go: TestInconsistentOriginsMinimal)", () => {
  const base = base8();
  const mkIns = (r: number, right: number, text: string): Change => ({
    replica: rid(r), seq: 1, time: timestamp(2000 + r, 0), ops: [ins("body", text, null, xid(right))],
  });
  // P: left none, right X@3; Q: left none, right X@2. 'a' (and 'b' for
  // P) lie between their origins, and their senders knew them.
  let p = mkIns(1, 3, "P"), q = mkIns(2, 2, "Q");
  const texts: string[] = [];
  for (const order of [[p, q], [q, p]]) {
    const d = newDoc(5, 10_000);
    d.apply(base);
    for (const c of order) assert.throws(() => d.apply([c]), (e: Error) => e instanceof InvalidChangeError && /origins contradict the text/.test(e.message), c.ops[0].kind === OpKind.Ins ? c.ops[0].text : "");
    texts.push(d.text("body"));
  }
  assert.deepEqual(texts, ["abcdefgh", "abcdefgh"]);
  // With right X@1 (the first character) the same inserts are honest.
  p = mkIns(1, 1, "P");
  q = mkIns(2, 1, "Q");
  for (const order of [[p, q], [q, p]]) {
    const d = newDoc(5, 10_000);
    d.apply([...base, ...order]);
    assert.equal(d.text("body"), "PQabcdefgh");
  }
});

test("a batch refused for its last change's origins is taken back whole (Go: TestRefusedBatchRollsBack)", () => {
  const x = newDoc(9, 1000);
  x.transact((tx) => tx.insert("body", 0, "abcdefgh").add("n", 2).set("r", new Uint8Array([0xa1, 0x61])));
  const base = x.changesSince();
  const good: Change[] = [
    {
      replica: rid(1), seq: 1, time: timestamp(2000, 0), ops: [
        ins("body", "zz", xid(1), xid(2)),
        { kind: OpKind.Del, field: "body", target: xid(3), count: 1, backward: false },
        { kind: OpKind.Add, field: "n", delta: 5n },
        { kind: OpKind.Set, field: "r", value: new Uint8Array([0xa1, 0x62]) },
        ins("new", "q", null, null),
      ],
    },
    { replica: rid(1), seq: 7, time: timestamp(2001, 0), ops: [ins("body", "w", { replica: rid(1), seq: 2 }, xid(2))] },
  ];
  const bad: Change = { replica: rid(2), seq: 1, time: timestamp(2002, 0), ops: [ins("body", "!", xid(1), xid(4))] };
  const d = newDoc(5, 10_000);
  d.apply(base);
  const before = state(d), beforeLog = history(d), clock = d.clock.last();
  assert.throws(() => d.apply([...good, bad]), /origins contradict the text/);
  assert.equal(state(d), before, "the refused batch left a trace");
  assert.equal(history(d), beforeLog);
  assert.equal(d.clock.last(), clock, "the refused batch moved the clock");
  assert.equal(d.fieldList().length, 3);
  d.apply(good);
  assert.equal(d.text("body"), "azzwbdefgh");
  assert.equal(d.counter("n"), 7n);
  assert.equal(d.text("new"), "q");
});

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

function rng(seed: number) {
  return (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return Math.floor((seed / 2147483648) * n);
  };
}
const ALPHABET = Array.from("abcdefghij XYZ\n→é😀");
const randString = (r: (n: number) => number, n: number) => Array.from({ length: n }, () => ALPHABET[r(ALPHABET.length)]).join("");

function randomEdit(r: (n: number) => number, d: Doc): void {
  d.transact((tx) => {
    const n = d.textLen("body");
    if (n === 0 || r(3) > 0) tx.insert("body", r(n + 1), randString(r, 1 + r(3)));
    else {
      const p = r(n);
      tx.delete("body", p, 1 + r(Math.min(3, n - p)));
    }
  });
}

/**
 * hostileScenario (crdt/integrity_test.go's): a base document, honest
 * concurrent edits on copies of it, and hostile inserts whose origins are
 * drawn at random among the characters there are, stamped after all of
 * them so that only the origins can be wrong.
 */
function hostileScenario(r: (n: number) => number): { base: Change[]; extra: Change[] } {
  let wall = 1000;
  const a = new Doc(rid(1), new Clock(() => wall, 0));
  const b = new Doc(rid(2), new Clock(() => wall, 0));
  for (let i = 0, n = 4 + r(6); i < n; i++) {
    wall += 1 + r(50);
    randomEdit(r, [a, b][r(2)]);
    if (r(3) === 0) {
      a.apply(b.changesSince(a.version()));
      b.apply(a.changesSince(b.version()));
    }
  }
  a.apply(b.changesSince(a.version()));
  const base = a.changesSince();
  const chars: ID[] = [];
  for (const c of base) {
    let seq = c.seq;
    for (const op of c.ops) {
      const n = op.kind === OpKind.Ins ? Array.from(op.text).length : op.kind === OpKind.Del ? op.count : 1;
      if (op.kind === OpKind.Ins && op.field === "body") for (let k = 0; k < n; k++) chars.push({ replica: c.replica, seq: seq + k });
      seq += n;
    }
  }
  const extra: Change[] = [];
  for (let h = 0, n = 1 + r(3); h < n; h++) {
    let hw = wall + 100;
    const d = new Doc(rid(20 + h), new Clock(() => hw, 0));
    d.apply(base);
    for (let i = 0, m = 1 + r(3); i < m; i++) {
      hw += 1 + r(20);
      randomEdit(r, d);
    }
    extra.push(...d.changesSince(a.version()));
  }
  let now = wall + 10_000;
  const pick = (): ID | null => (chars.length === 0 || r(6) === 0 ? null : chars[r(chars.length)]);
  for (let h = 0, n = 2 + r(4); h < n; h++) {
    let seq = 1;
    for (let i = 0, m = 1 + r(3); i < m; i++) {
      now += 10;
      const text = randString(r, 1 + r(2));
      const c: Change = { replica: rid(40 + h), seq, time: timestamp(now, 0), ops: [ins("body", text, pick(), pick())] };
      extra.push(c);
      const len = Array.from(text).length;
      for (let k = 0; k < len; k++) chars.push({ replica: c.replica, seq: seq + k });
      seq += len;
    }
  }
  return { base, extra };
}

test("random hostile origins: every delivery order leaves replicas identical; a batch is refused whole or applied (Go: TestHostileOriginsConverge)", () => {
  let refusedSome = 0;
  for (let seed = 0; seed < 60; seed++) {
    const r = rng(seed + 1);
    const { base, extra } = hostileScenario(r);
    let want = "";
    let wantBatch = "";
    for (let order = 0; order < 6; order++) {
      const cs = extra.slice();
      for (let i = cs.length - 1; i > 0; i--) {
        const j = r(i + 1);
        [cs[i], cs[j]] = [cs[j], cs[i]];
      }
      const d = newDoc(3, 2 ** 40);
      d.apply(base);
      const before = state(d);
      const beforeLog = history(d);
      if (order % 2 === 0) {
        for (const c of cs) {
          try {
            d.apply([c]);
          } catch (e) {
            if (!/origins contradict the text/.test((e as Error).message)) throw e;
            refusedSome++;
          }
        }
        const got = state(d);
        if (want === "") want = got;
        else assert.equal(got, want, `seed ${seed} order ${order}: replicas differ`);
        continue;
      }
      let got: string;
      try {
        d.apply(cs);
        got = state(d);
      } catch (e) {
        if (!/origins contradict the text/.test((e as Error).message)) throw e;
        assert.equal(state(d), before, `seed ${seed} order ${order}: the refused batch left a trace`);
        assert.equal(history(d), beforeLog);
        // And the document goes on: the honest changes apply.
        d.apply(cs.filter((c) => parseInt(c.replica.slice(0, 2), 16) < 40));
        got = "refused";
      }
      if (wantBatch === "") wantBatch = got;
      else assert.equal(got, wantBatch, `seed ${seed} order ${order}: batches differ`);
    }
  }
  assert.ok(refusedSome > 0, "no hostile insert was refused");
});
