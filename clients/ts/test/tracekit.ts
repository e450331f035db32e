// Loading and replaying the editing traces (internal/traces/data) as Go's
// trace tests do: for traces.test.ts and the bench.

import { gunzipSync } from "node:zlib";
import { Doc } from "../src/doc.js";
import { Clock } from "../src/hlc.js";
import { changeLen, vvCovers, vvMerge } from "../src/types.js";
import type { Change, VersionVector } from "../src/types.js";
import { readRepo } from "./util.js";

export interface Trace {
  startContent: string;
  endContent: string;
  numAgents?: number;
  txns: { time: string; patches: [number, number, string][]; parents?: number[]; agent?: number }[];
}

export function loadTrace(name: string): Trace {
  return JSON.parse(gunzipSync(readRepo(`internal/traces/data/${name}`)).toString());
}

export const traceRID = (b: number) => b.toString(16).padStart(2, "0") + "00".repeat(14) + b.toString(16).padStart(2, "0");

/** The wall time of each transaction (0 where it does not parse). */
export function wallsOf(tr: Trace): number[] {
  return tr.txns.map((t) => {
    const w = Date.parse(t.time);
    return Number.isNaN(w) ? 0 : w;
  });
}

/**
 * Replays a sequential trace as Go's trace tests do. walls (wallsOf) may
 * be parsed beforehand, so that a timed replay does not time parsing.
 */
export function replaySequential(tr: Trace, walls: number[] = wallsOf(tr)): Doc {
  let wall = 0;
  const d = new Doc(traceRID(1), new Clock(() => wall, 0));
  if (tr.startContent) d.transact((tx) => tx.insert("body", 0, tr.startContent));
  const txns = tr.txns;
  for (let i = 0; i < txns.length; i++) {
    wall = walls[i];
    const tx = d.begin();
    for (const [pos, del, ins] of txns[i].patches) {
      if (del > 0) tx.delete("body", pos, del);
      if (ins) tx.insert("body", pos, ins);
    }
    tx.commit();
  }
  return d;
}

/** Replays a concurrent trace with real forks and merges (Go's replayConcurrent). */
export function replayConcurrent(tr: Trace): Doc {
  let wall = 1;
  const mk = (b: number) => new Doc(traceRID(b), new Clock(() => wall, 0));
  const all = mk(100);
  const agents = Array.from({ length: tr.numAgents! }, (_, a) => mk(a + 1));
  const versions: VersionVector[] = [];
  tr.txns.forEach((txn, i) => {
    const target: VersionVector = new Map();
    for (const p of txn.parents ?? []) vvMerge(target, versions[p]);
    let d = agents[txn.agent!];
    if (!vvCovers(target, d.version())) d = mk(txn.agent! + 1);
    const need: Change[] = all.changesSince(d.version()).filter((c) => c.seq + changeLen(c) - 1 <= (target.get(c.replica) ?? 0));
    d.apply(need);
    const before = d.version();
    wall++;
    const tx = d.begin();
    for (const [pos, del, ins] of txn.patches) {
      if (del > 0) tx.delete("body", pos, del);
      if (ins) tx.insert("body", pos, ins);
    }
    tx.commit();
    agents[txn.agent!] = d;
    all.apply(d.changesSince(before));
    versions[i] = d.version();
  });
  return all;
}

