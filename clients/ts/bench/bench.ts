// npm run bench -- trace FILE [FILE...] [--json]
//   Replays editing traces (internal/traces/data) into the TypeScript Doc,
//   one transaction per trace transaction, checks the text against
//   endContent and the encoded history against Go's (the conformance
//   corpus), and replays ASCII traces into Yjs in the same sitting.
//   decode_ms: the whole history decoded and applied to a fresh replica;
//   snapshot_decode_ms: Go's snapshot of the document decoded
//   (decodeSnapshot), for traces the conformance corpus has one of.
// npm run bench -- keystroke [--json]
//   Applies remote keystrokes to a 100k-character document the way the
//   CodeMirror binding does (decode, CRDT apply, CodeMirror state update).
//
// Figures are wall-clock medians of --runs runs (default 5) on whatever
// else the machine is doing: quote them with the load average.

import { createHash } from "node:crypto";
import { loadavg } from "node:os";
import { ChangeSet, EditorState } from "@codemirror/state";
import * as Y from "yjs";
import { decodeChanges, encodeChanges } from "../src/codec.js";
import { Doc } from "../src/doc.js";
import { Clock } from "../src/hlc.js";
import { decodeSnapshot } from "../src/snapshot.js";
import { loadTrace, replaySequential, traceRID, wallsOf } from "../test/tracekit.js";
import type { Trace } from "../test/tracekit.js";
import { readRepo } from "../test/util.js";

const args = process.argv.slice(2);
const json = args.includes("--json");
const runsArg = args.indexOf("--runs");
const runs = runsArg >= 0 ? Number(args[runsArg + 1]) : 5;
const positional = args.filter((a, i) => !a.startsWith("--") && !(runsArg >= 0 && i === runsArg + 1));
const cmd = positional[0];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const round = (x: number) => Math.round(x * 100) / 100;

function ascii(tr: Trace): boolean {
  return !/[^\x00-\x7f]/.test(tr.endContent) && tr.txns.every((t) => t.patches.every((p) => !/[^\x00-\x7f]/.test(p[2])));
}

function replayYjs(tr: Trace): Y.Doc {
  const d = new Y.Doc();
  const t = d.getText("body");
  if (tr.startContent) t.insert(0, tr.startContent);
  for (const txn of tr.txns) {
    d.transact(() => {
      for (const [pos, del, ins] of txn.patches) {
        if (del > 0) t.delete(pos, del);
        if (ins) t.insert(pos, ins);
      }
    });
  }
  return d;
}

function benchTrace(file: string) {
  const tr = loadTrace(file);
  const walls = wallsOf(tr); // parsed once, outside the timing (as Go's bench does)
  const goWant = (JSON.parse(readRepo("crdt/codec/testdata/conformance/traces.json").toString()) as { name: string; history_sha256: string }[]).find((x) => x.name === file);
  const replay: number[] = [];
  const decode: number[] = [];
  let ok = true;
  let bytes = 0;
  let identical: boolean | null = null;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const d = replaySequential(tr, walls);
    replay.push(performance.now() - t0);
    ok &&= d.text("body") === tr.endContent;
    if (i === 0) {
      const b = encodeChanges(d.changesSince());
      bytes = b.length;
      identical = goWant ? sha(b) === goWant.history_sha256 : null;
      ok &&= identical !== false;
      // Decoding the whole history into a fresh replica (what loading it
      // from IndexedDB or a first sync costs).
      for (let k = 0; k < runs; k++) {
        const t1 = performance.now();
        const e = new Doc(traceRID(2), new Clock(() => 0, 0));
        e.applyTrusted(decodeChanges(b));
        decode.push(performance.now() - t1);
        ok &&= e.text("body") === tr.endContent;
      }
    }
  }
  // Loading the snapshot Go encodes of the same document (the conformance
  // corpus has automerge-paper's), when there is one.
  const snapCase = (JSON.parse(readRepo("crdt/codec/testdata/conformance/snapshots.json").toString()) as { name: string; file?: string }[]).find(
    (x) => x.file && file === x.name + ".json.gz",
  );
  let snapMs: number | null = null;
  if (snapCase) {
    const snap = new Uint8Array(readRepo("crdt/codec/testdata/conformance/" + snapCase.file));
    const xs: number[] = [];
    for (let k = 0; k < runs; k++) {
      const t1 = performance.now();
      const e = decodeSnapshot(snap, traceRID(3), new Clock(() => 0, 0));
      xs.push(performance.now() - t1);
      ok &&= e.text("body") === tr.endContent;
    }
    snapMs = median(xs);
    if (process.env.BENCH_DEBUG) console.error("snapshot decodes", xs.map((x) => round(x)));
  }
  let yjs: number | null = null;
  if (ascii(tr)) {
    const ys: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const y = replayYjs(tr);
      ys.push(performance.now() - t0);
      ok &&= y.getText("body").toString() === tr.endContent;
    }
    yjs = median(ys);
  }
  const rm = median(replay);
  return {
    trace: file,
    ok,
    replay_ms: round(rm),
    encoded_bytes: bytes,
    go_identical: identical,
    decode_ms: round(median(decode)),
    snapshot_decode_ms: snapMs === null ? null : round(snapMs),
    yjs_replay_ms: yjs === null ? null : round(yjs),
    yjs_over_weft: yjs === null ? null : round(yjs / rm),
    runs,
    loadavg: loadavg().map((x) => round(x)),
  };
}

function benchKeystroke() {
  const n = 100_000;
  const base = "lorem ipsum dolor sit amet, ".repeat(Math.ceil(n / 28)).slice(0, n);
  const remote = new Doc(traceRID(1), new Clock(() => 1_700_000_000_000, 0));
  remote.transact((tx) => tx.insert("body", 0, base));
  const local = new Doc(traceRID(2), new Clock(() => 1_700_000_000_000, 0));
  local.apply(remote.changesSince());
  let state = EditorState.create({ doc: local.text("body") });
  const times: number[] = [];
  let seed = 7;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648), seed / 2147483648);
  for (let i = 0; i < 2000; i++) {
    const before = remote.version();
    remote.transact((tx) => tx.insert("body", Math.floor(rand() * remote.textLen("body")), "x"));
    const wire = encodeChanges(remote.changesSince(before));
    const t0 = performance.now();
    let cs = ChangeSet.empty(state.doc.length);
    let len = state.doc.length;
    local.onText = (_f, e) => {
      const c = ChangeSet.of({ from: e.pos16, to: e.pos16 + e.delete16, insert: e.insert }, len);
      cs = cs.compose(c);
      len = c.newLength;
    };
    local.apply(decodeChanges(wire));
    state = state.update({ changes: cs }).state;
    times.push(performance.now() - t0);
  }
  const ok = state.doc.toString() === remote.text("body");
  return { bench: "remote keystroke, 100k-character document, CRDT + CodeMirror state", ok, median_ms: round(median(times.slice(200))), p99_ms: round([...times].sort((a, b) => a - b)[Math.floor(times.length * 0.99)]), keystrokes: times.length, loadavg: loadavg().map((x) => round(x)) };
}

if (cmd === "trace") {
  const files = positional.slice(1);
  if (files.length === 0) {
    console.error("usage: npm run bench -- trace FILE [FILE...] [--json] [--runs N]   (FILE under internal/traces/data)");
    process.exit(2);
  }
  const out = files.map(benchTrace);
  if (json) console.log(JSON.stringify(out.length === 1 ? out[0] : out));
  else for (const r of out) console.log(`${r.trace}: ok=${r.ok} replay ${r.replay_ms} ms (Yjs ${r.yjs_replay_ms ?? "-"} ms, ${r.yjs_over_weft ?? "-"}×), history ${r.encoded_bytes} bytes (identical to Go: ${r.go_identical}), decode ${r.decode_ms} ms; load ${r.loadavg.join(" ")}`);
  process.exit(out.every((r) => r.ok) ? 0 : 1);
} else if (cmd === "keystroke") {
  const r = benchKeystroke();
  if (json) console.log(JSON.stringify(r));
  else console.log(`${r.bench}: median ${r.median_ms} ms, p99 ${r.p99_ms} ms (ok=${r.ok}); load ${r.loadavg.join(" ")}`);
  process.exit(r.ok ? 0 : 1);
} else {
  console.error("usage: npm run bench -- trace FILE... [--json] | keystroke [--json]");
  process.exit(2);
}
