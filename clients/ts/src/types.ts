// The document model shared with crdt/ in Go: replica ids, ids, ops,
// changes, version vectors, anchors.

import type { Timestamp } from "./hlc.js";

/**
 * ReplicaID is a replica's UUID as 32 lowercase hex digits (no dashes), so
 * that comparing two ids as strings compares their bytes, as Go does.
 */
export type ReplicaID = string;

const HEX = "0123456789abcdef";

export function replicaFromBytes(b: Uint8Array): ReplicaID {
  if (b.length !== 16) throw new Error(`weft: a replica id has 16 bytes, not ${b.length}`);
  let s = "";
  for (let i = 0; i < 16; i++) s += HEX[b[i] >> 4] + HEX[b[i] & 15];
  return s;
}

export function replicaToBytes(r: ReplicaID): Uint8Array {
  const b = new Uint8Array(16);
  for (let i = 0; i < 16; i++) b[i] = parseInt(r.substr(2 * i, 2), 16);
  return b;
}

/** Parses a UUID ("0b6f9e4c-1d2a-...") or 32 hex digits. */
export function parseReplica(s: string): ReplicaID {
  const h = s.replace(/-/g, "").toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(h) || (s.includes("-") && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s)))
    throw new Error(`weft: replica id ${JSON.stringify(s)} is not a UUID`);
  if (/^0+$/.test(h)) throw new Error("weft: the zero replica id is not allowed");
  return h;
}

/** The canonical UUID form of a replica id. */
export function replicaUUID(r: ReplicaID): string {
  return `${r.slice(0, 8)}-${r.slice(8, 12)}-${r.slice(12, 16)}-${r.slice(16, 20)}-${r.slice(20)}`;
}

/** A fresh random (version 4) replica id. */
export function newReplica(): ReplicaID {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return replicaFromBytes(b);
}

/** ID names one op unit: the seq'th of a replica. null is the zero ID. */
export interface ID {
  replica: ReplicaID;
  seq: number;
}

export enum OpKind {
  Add = 1,
  Set = 2,
  Ins = 3,
  Del = 4,
}

export enum FieldType {
  Counter = 1,
  Register = 2,
  Text = 3,
}

export function fieldTypeOf(kind: OpKind): FieldType {
  switch (kind) {
    case OpKind.Add:
      return FieldType.Counter;
    case OpKind.Set:
      return FieldType.Register;
    default:
      return FieldType.Text;
  }
}

export type Op =
  | { kind: OpKind.Add; field: string; delta: bigint }
  | { kind: OpKind.Set; field: string; value: Uint8Array }
  | { kind: OpKind.Ins; field: string; text: string; left: ID | null; right: ID | null }
  | { kind: OpKind.Del; field: string; target: ID; count: number; backward: boolean };

/** A change: the ops of one transaction of one replica, seqs seq.., one time. */
export interface Change {
  replica: ReplicaID;
  seq: number;
  time: Timestamp;
  ops: Op[];
}

/** Runes (Unicode scalar values) in s. */
export function runeCount(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      n--;
      i++;
    }
  }
  return n;
}

export function opLen(op: Op): number {
  switch (op.kind) {
    case OpKind.Ins:
      return runeCount(op.text);
    case OpKind.Del:
      return op.count;
    default:
      return 1;
  }
}

export function changeLen(c: Change): number {
  let n = 0;
  for (const op of c.ops) n += opLen(op);
  return n;
}

/** VersionVector: replica → highest seq held. */
export type VersionVector = Map<ReplicaID, number>;

export function vvIncludes(v: VersionVector, id: ID): boolean {
  return id.seq <= (v.get(id.replica) ?? 0);
}

export function vvCovers(v: VersionVector, o: VersionVector): boolean {
  for (const [r, s] of o) if ((v.get(r) ?? 0) < s) return false;
  return true;
}

export function vvMerge(v: VersionVector, o: VersionVector): void {
  for (const [r, s] of o) if (s > (v.get(r) ?? 0)) v.set(r, s);
}

export enum Side {
  Before = 0,
  After = 1,
}

/** A position that survives concurrent edits: a character id and a side. */
export interface Anchor {
  id: ID | null;
  side: Side;
}

/** UTF-8 byte length of s. */
export function utf8Len(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 2; // 4 bytes for 2 units
      i++;
    } else n += 2;
  }
  return n;
}

/** The UTF-16 offset of rune index k in s (which holds n runes). */
export function runeOffset(s: string, n: number, k: number): number {
  if (s.length === n) return k;
  let i = 0;
  for (; k > 0; k--) {
    const c = s.charCodeAt(i);
    i += c >= 0xd800 && c <= 0xdbff ? 2 : 1;
  }
  return i;
}
