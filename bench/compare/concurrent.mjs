// Replays a concurrent editing trace (the format of
// internal/traces/data/README.md) in Yjs and in Loro exactly as
// `weft bench trace` replays it in weft: one document per agent; before each
// transaction the agent's document imports the updates of every ancestor
// transaction it lacks; then it applies the transaction's patches as one
// local transaction. It then times merging the whole history into a fresh
// document, and checks every text against endContent.
//
//   npm ci && node concurrent.mjs [--runs N] [TRACE.json.gz]
//
// Prints one JSON line per library: {lib, ok, replay_ms, merge_ms,
// history_bytes, runs}, medians over N timed runs after one warm-up.
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import * as Y from 'yjs';
import { LoroDoc } from 'loro-crdt';

const args = process.argv.slice(2);
let runs = 5;
let file = fileURLToPath(new URL('../../internal/traces/data/concurrent/friendsforever.json.gz', import.meta.url));
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--runs') runs = Number(args[++i]);
  else file = args[i];
}
const trace = JSON.parse(gunzipSync(readFileSync(file)).toString('utf8'));
if (trace.kind !== 'concurrent') throw new Error(`${file}: not a concurrent trace`);

// ancestorsToApply returns, in index (so causal) order, the transactions in
// the causal past of txn i's parents that agent state `applied` lacks.
function ancestorsToApply(i, applied, seen) {
  const out = [];
  const stack = [...trace.txns[i].parents];
  while (stack.length) {
    const p = stack.pop();
    if (applied[p] || seen[p] === i + 1) continue;
    seen[p] = i + 1;
    out.push(p);
    for (const q of trace.txns[p].parents) stack.push(q);
  }
  return out.sort((a, b) => a - b);
}

const libs = {
  yjs: {
    newDoc(agent) {
      const doc = new Y.Doc();
      doc.clientID = agent + 1;
      return doc;
    },
    edit(doc, patches) {
      let update;
      const h = (u) => { update = u; };
      doc.on('update', h);
      const text = doc.getText('body');
      doc.transact(() => {
        for (const [pos, del, ins] of patches) {
          if (del > 0) text.delete(pos, del);
          if (ins !== '') text.insert(pos, ins);
        }
      });
      doc.off('update', h);
      return update;
    },
    importAll(doc, updates) {
      Y.transact(doc, () => { for (const u of updates) Y.applyUpdate(doc, u); });
    },
    text: (doc) => doc.getText('body').toString(),
    history: (doc) => Y.encodeStateAsUpdate(doc),
    load(bytes) {
      const d = new Y.Doc();
      Y.applyUpdate(d, bytes);
      return d;
    },
  },
  loro: {
    newDoc(agent) {
      const doc = new LoroDoc();
      doc.setPeerId(BigInt(agent + 1));
      return doc;
    },
    edit(doc, patches) {
      const from = doc.oplogVersion();
      const text = doc.getText('body');
      for (const [pos, del, ins] of patches) {
        if (del > 0) text.delete(pos, del);
        if (ins !== '') text.insert(pos, ins);
      }
      doc.commit();
      return doc.export({ mode: 'update', from });
    },
    importAll(doc, updates) {
      if (updates.length === 1) doc.import(updates[0]);
      else doc.importBatch(updates);
    },
    text: (doc) => doc.getText('body').toString(),
    history: (doc) => doc.export({ mode: 'update' }),
    load(bytes) {
      const d = new LoroDoc();
      d.import(bytes);
      return d;
    },
  },
};

function replay(lib) {
  const n = trace.txns.length;
  const agents = [];
  for (let a = 0; a < trace.numAgents; a++) agents.push({ doc: lib.newDoc(a), applied: new Uint8Array(n) });
  const updates = new Array(n);
  const seen = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const t = trace.txns[i];
    const ag = agents[t.agent];
    const need = ancestorsToApply(i, ag.applied, seen);
    if (need.length) {
      lib.importAll(ag.doc, need.map((j) => updates[j]));
      for (const j of need) ag.applied[j] = 1;
    }
    updates[i] = lib.edit(ag.doc, t.patches);
    ag.applied[i] = 1;
  }
  const all = agents[0];
  const rest = [];
  for (let j = 0; j < n; j++) if (!all.applied[j]) rest.push(updates[j]);
  if (rest.length) lib.importAll(all.doc, rest);
  return all.doc;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

for (const [name, lib] of Object.entries(libs)) {
  const replayMs = [];
  const mergeMs = [];
  let ok = true;
  let history;
  for (let run = 0; run <= runs; run++) {
    const t0 = performance.now();
    const doc = replay(lib);
    const t1 = performance.now();
    ok &&= lib.text(doc) === trace.endContent;
    history = lib.history(doc);
    const t2 = performance.now();
    const fresh = lib.load(history);
    const t3 = performance.now();
    ok &&= lib.text(fresh) === trace.endContent;
    if (run > 0) {
      replayMs.push(t1 - t0);
      mergeMs.push(t3 - t2);
    }
  }
  console.log(JSON.stringify({ lib: name, trace: file.split('/').pop(), ok, replay_ms: +median(replayMs).toFixed(2), merge_ms: +median(mergeMs).toFixed(2), history_bytes: history.length, runs }));
}
