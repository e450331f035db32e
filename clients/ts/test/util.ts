import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { OpKind, parseReplica } from "../src/types.js";
import type { Change, ID, Op } from "../src/types.js";

/** The repository root (tests run from clients/ts/dist/test). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");

export function readRepo(rel: string): Buffer {
  return readFileSync(path.join(repoRoot, rel));
}

export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

export function unhex(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, "hex"));
}

interface JID {
  replica: string;
  seq: number;
}

function idOf(j: JID | null | undefined): ID | null {
  return j ? { replica: parseReplica(j.replica), seq: j.seq } : null;
}

/** Changes from the corpus's (and the golden files') JSON form. */
export function changesFromJSON(js: any[]): Change[] {
  return js.map((c) => ({
    replica: parseReplica(c.replica),
    seq: c.seq,
    time: BigInt(c.time),
    ops: c.ops.map((o: any): Op => {
      switch (o.kind) {
        case "ins":
          return { kind: OpKind.Ins, field: o.field, text: o.text, left: idOf(o.left), right: idOf(o.right) };
        case "del":
          return { kind: OpKind.Del, field: o.field, target: idOf(o.target)!, count: o.count, backward: !!o.backward };
        case "add":
          return { kind: OpKind.Add, field: o.field, delta: BigInt(o.delta) };
        case "set":
          return { kind: OpKind.Set, field: o.field, value: unhex(o.value_hex) };
      }
      throw new Error(`unknown op kind ${o.kind}`);
    }),
  }));
}

/** A comparable plain-JSON form of changes. */
export function changesToJSON(cs: Change[]): unknown {
  return cs.map((c) => ({
    replica: c.replica,
    seq: c.seq,
    time: c.time.toString(),
    ops: c.ops.map((o) => {
      switch (o.kind) {
        case OpKind.Ins:
          return { kind: "ins", field: o.field, text: o.text, left: o.left, right: o.right };
        case OpKind.Del:
          return { kind: "del", field: o.field, target: o.target, count: o.count, backward: o.backward };
        case OpKind.Add:
          return { kind: "add", field: o.field, delta: o.delta.toString() };
        case OpKind.Set:
          return { kind: "set", field: o.field, value: hex(o.value) };
      }
    }),
  }));
}
