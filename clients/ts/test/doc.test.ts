// Doc behaviour the conformance corpus does not cover: the text events
// remote changes produce (in runes and UTF-16 units), position
// conversions, anchors, atomicity of refused batches.

import { test } from "node:test";
import assert from "node:assert/strict";
import { ChangeFullError, Doc, InvalidChangeError, MAX_CHANGE_OPS } from "../src/doc.js";
import { Clock } from "../src/hlc.js";
import { OpKind, Side } from "../src/types.js";
import type { Change } from "../src/types.js";

const rep = (b: number) => b.toString(16).padStart(2, "0").repeat(16);
const mk = (b: number) => new Doc(rep(b), new Clock(() => 1_700_000_000_000, 0));
const CHARS = ["a", "é", "😀", "中", "𝄞", "\n"];

function rng(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
}

test("remote text events replay to the same text, in runes and in UTF-16", () => {
  for (let seed = 1; seed <= 20; seed++) {
    const r = rng(seed);
    const a = mk(1);
    const b = mk(2);
    const seen = mk(3);
    let shadow = ""; // replayed with UTF-16 positions
    let runes: string[] = []; // replayed with rune positions
    seen.onText = (_f, e) => {
      shadow = shadow.slice(0, e.pos16) + e.insert + shadow.slice(e.pos16 + e.delete16);
      runes.splice(e.pos, e.delete, ...Array.from(e.insert));
    };
    for (let i = 0; i < 60; i++) {
      for (const d of [a, b]) {
        d.transact((tx) => {
          const n = d.textLen("body");
          if (r() < 0.65 || n === 0) tx.insert("body", Math.floor(r() * (n + 1)), CHARS[Math.floor(r() * CHARS.length)] + (r() < 0.3 ? "xy" : ""));
          else {
            const p = Math.floor(r() * n);
            tx.delete("body", p, 1 + Math.floor(r() * Math.min(3, n - p)));
          }
        });
      }
      if (i % 7 === 6) {
        a.apply(b.changesSince(a.version()));
        b.apply(a.changesSince(b.version()));
        seen.apply(a.changesSince(seen.version()).reverse());
        assert.equal(shadow, seen.text("body"), `seed ${seed} step ${i}: UTF-16 events`);
        assert.equal(runes.join(""), seen.text("body"), `seed ${seed} step ${i}: rune events`);
        assert.equal(seen.textLen16("body"), seen.text("body").length);
      }
    }
    a.apply(b.changesSince(a.version()));
    b.apply(a.changesSince(b.version()));
    assert.equal(a.text("body"), b.text("body"));
  }
});

test("UTF-16 and rune positions convert both ways; a split surrogate pair is refused", () => {
  const d = mk(1);
  d.transact((tx) => tx.insert("body", 0, "a😀b"));
  d.transact((tx) => tx.insert("body", 2, "中𝄞"));
  const s = d.text("body");
  assert.equal(s, "a😀中𝄞b");
  const cps = Array.from(s);
  let u = 0;
  for (let p = 0; p <= cps.length; p++) {
    assert.equal(d.utf16FromRunes("body", p), u);
    assert.equal(d.runesFromUtf16("body", u), p);
    if (p < cps.length) u += cps[p].length;
  }
  assert.throws(() => d.runesFromUtf16("body", 2), /surrogate/);
});

test("anchors follow their character through concurrent edits", () => {
  const a = mk(1);
  const b = mk(2);
  a.transact((tx) => tx.insert("body", 0, "hello world"));
  b.apply(a.changesSince());
  const before = a.anchorAt("body", 6, Side.Before); // at "w"
  const after = a.anchorAt("body", 5, Side.After); // after "o" of hello
  b.transact((tx) => tx.insert("body", 0, "¡"));
  b.transact((tx) => tx.insert("body", 6, "!!"));
  a.apply(b.changesSince(a.version()));
  assert.equal(a.text("body"), "¡hello!! world");
  assert.equal(a.indexOf("body", before), 9);
  assert.equal(a.indexOf("body", after), 6);
  // The end and the start.
  assert.equal(a.indexOf("body", a.anchorAt("body", a.textLen("body"), Side.Before)), a.textLen("body"));
  assert.equal(a.indexOf("body", a.anchorAt("body", 0, Side.After)), 0);
});

test("an invalid change refuses the whole batch and changes nothing", () => {
  const a = mk(1);
  a.transact((tx) => tx.insert("body", 0, "abc").add("n", 2));
  const good = a.changesSince();
  const bad: Change = { replica: rep(9), seq: 1, time: 1n << 20n, ops: [{ kind: OpKind.Del, field: "body", target: { replica: rep(1), seq: 99 }, count: 1, backward: false }] };
  const b = mk(2);
  // rep(1)@99 is known once good is applied (seq ≤ next)? No: it is past
  // what replica 1 wrote, so the change waits; a target in the wrong field
  // is invalid.
  const wrongField: Change = { replica: rep(9), seq: 1, time: 1n << 20n, ops: [{ kind: OpKind.Del, field: "title", target: { replica: rep(1), seq: 1 }, count: 1, backward: false }] };
  assert.throws(() => b.apply([...good, wrongField]), InvalidChangeError);
  assert.equal(b.text("body"), "");
  assert.equal(b.version().size, 0);
  b.apply([...good, bad]);
  assert.equal(b.text("body"), "abc");
  assert.equal(b.pendingCount(), 1);
  assert.equal(b.counter("n"), 2n);
});

test("a transaction's change is bounded at MAX_CHANGE_OPS ops, as Go's crdt.MaxChangeOps: a refused edit changes nothing", () => {
  const d = mk(1);
  const tx = d.begin();
  for (let i = 0; i < MAX_CHANGE_OPS; i++) tx.add(`c${i % 7}`, 1);
  const before = JSON.stringify([...d.version()]);
  assert.throws(() => tx.add("c0", 1), ChangeFullError);
  assert.throws(() => tx.insert("t", 0, "x"), ChangeFullError);
  assert.throws(() => tx.set("r", new Uint8Array([0xc0])), ChangeFullError);
  assert.equal(JSON.stringify([...d.version()]), before);
  tx.commit();
  const chs = d.changesSince();
  assert.equal(chs.length, 1);
  assert.equal(chs[0].ops.length, MAX_CHANGE_OPS);
  d.transact((t) => t.add("c0", 1)); // a new transaction has room again

  // A delete takes one op per run of visible characters it removes,
  // counted before anything is deleted.
  const f = mk(3);
  f.transact((t) => t.insert("t", 0, "ab".repeat(MAX_CHANGE_OPS)));
  f.transact((t) => {
    for (let i = 0; i < MAX_CHANGE_OPS; i++) t.delete("t", i + 1, 1); // every "b": runs of one
  });
  const tx3 = f.begin();
  tx3.add("n", 1);
  assert.throws(() => tx3.delete("t", 0, MAX_CHANGE_OPS), ChangeFullError); // 4,096 runs and the add
  assert.equal(f.text("t"), "a".repeat(MAX_CHANGE_OPS));
  tx3.delete("t", 0, MAX_CHANGE_OPS - 1);
  tx3.commit();
  assert.equal(f.text("t"), "a");
});
