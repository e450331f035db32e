// The weft wire protocol (docs/PROTOCOL.md): one msgpack array per frame,
// [tag, fields...]. encodeMessage writes exactly the bytes of the golden
// fixtures in crdt/syncproto/testdata/golden; decodeMessage treats frames
// as hostile (lengths checked, nesting ≤ 16, no trailing bytes), skips
// fields a newer version appends, and returns {type: "unknown"} for tags
// it does not know.

import type { Timestamp } from "./hlc.js";
import { MsgpackError, Reader, Writer } from "./msgpack.js";
import { replicaFromBytes, replicaToBytes } from "./types.js";
import type { Anchor, ReplicaID, VersionVector } from "./types.js";

export const PROTOCOL_VERSION = 1;

export const Tag = {
  hello: 1,
  welcome: 2,
  subscribe: 3,
  unsubscribe: 4,
  sync: 5,
  update: 6,
  ack: 7,
  changes: 8,
  presence: 9,
  presenceLeave: 10,
  ping: 11,
  pong: 12,
  error: 13,
  versionPart: 17,
} as const;

/** Statuses of ack and error (section 6). */
export const Status = {
  ok: 0,
  readOnly: 1,
  tooLarge: 2,
  rateLimited: 3,
  invalid: 4,
  clockSkew: 5,
  unauthorized: 6,
  notFound: 7,
  pendingFull: 8,
  overloaded: 9,
  internal: 10,
  missingDeps: 11,
  peerTimeout: 12,
} as const;

export const STATUS_NAMES = [
  "ok", "read_only", "too_large", "rate_limited", "invalid", "clock_skew",
  "unauthorized", "not_found", "pending_full", "overloaded", "internal", "missing_deps", "peer_timeout",
];

export function statusName(s: number): string {
  return STATUS_NAMES[s] ?? `status_${s}`;
}

/** Close codes (section 7). */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  tryAgainLater: 1013,
  protocolError: 4000,
  authFailed: 4001,
  authTimeout: 4002,
  tooSlow: 4003,
  rateLimited: 4004,
  frameTooLarge: 4005,
  unsupportedVersion: 4006,
  heartbeatTimeout: 4007,
  replicaConflict: 4008,
} as const;

export interface Limits {
  maxFrame: number;
  maxChangesPerSec: number;
  maxPresencePerSec: number;
  maxDocBytes: number;
  maxPending: number;
  maxDocs: number;
  /** The most ops one update may declare (the server's ops burst); 0 when the server does not say. */
  maxOpsBurst: number;
}

export interface Selection {
  anchor: Anchor;
  head: Anchor;
}

export type Message =
  | { type: "hello"; version: number; token: string; replica: ReplicaID; client: string }
  | { type: "welcome"; version: number; serverTime: Timestamp; session: string; user: string; limits: Limits }
  | { type: "subscribe"; doc: string; version: VersionVector }
  | { type: "unsubscribe"; doc: string }
  /** Part of the version of the next subscribe or sync of doc (PROTOCOL.md "version_part"). */
  | { type: "versionPart"; doc: string; version: VersionVector }
  | { type: "sync"; doc: string; version: VersionVector; changes: Uint8Array }
  | { type: "update"; doc: string; batch: number; changes: Uint8Array }
  | { type: "ack"; doc: string; batch: number; status: number; message: string }
  | { type: "changes"; doc: string; changes: Uint8Array }
  | {
      type: "presence";
      doc: string;
      session: string;
      user: string;
      name: string;
      color: string;
      clock: number;
      field: string;
      cursor: Anchor | null;
      selection: Selection | null;
      typing: boolean;
      /** One raw msgpack value, or null. */
      state: Uint8Array | null;
    }
  | { type: "presenceLeave"; doc: string; session: string }
  | { type: "ping"; nonce: number }
  | { type: "pong"; nonce: number }
  | { type: "error"; status: number; message: string; doc: string }
  | { type: "unknown"; tag: number };

export class ProtocolError extends Error {
  constructor(message: string) {
    super(`syncproto: malformed frame: ${message}`);
    this.name = "ProtocolError";
  }
}

const MAX_DOC = 512;
const MAX_TOKEN = 8192;
const MAX_NAME = 256;
const MAX_MESSAGE = 4096;
const MAX_STATE = 4096;

function writeVV(w: Writer, v: VersionVector): void {
  const keys = [...v.keys()].filter((k) => (v.get(k) ?? 0) > 0).sort();
  w.arrayHeader(2);
  w.arrayHeader(keys.length);
  for (const k of keys) w.bin(replicaToBytes(k));
  w.arrayHeader(keys.length);
  for (const k of keys) w.int(v.get(k)!);
}

/** Bounds the replicas of one version vector assembled from version_part messages (PROTOCOL.md "version_part"). */
export const MAX_VERSION_ENTRIES = 1 << 20;

/** What a version vector's encoding adds around its entries: array(2) and two array32 headers. */
const VV_OVERHEAD = 1 + 5 + 5;

/** The encoded size of one version vector entry: a bin8 of 16 bytes and the seq as a msgpack uint. */
function vvEntryBytes(seq: number): number {
  const n = seq < 0x80 ? 1 : seq < 0x100 ? 2 : seq < 0x10000 ? 3 : seq < 2 ** 32 ? 5 : 9;
  return 2 + 16 + n;
}

/**
 * splitVersion cuts v into parts of at most maxBytes encoded each (a part
 * holds at least one replica, whatever maxBytes), in replica order, each
 * replica in one part. It returns [v] when v fits; otherwise every part
 * but the last goes as a version_part and the last in the subscribe or
 * sync (PROTOCOL.md "version_part (17)").
 */
export function splitVersion(v: VersionVector, maxBytes: number): VersionVector[] {
  let size = VV_OVERHEAD;
  for (const s of v.values()) if (s > 0) size += vvEntryBytes(s);
  if (size <= maxBytes) return [v];
  const keys = [...v.keys()].filter((k) => (v.get(k) ?? 0) > 0).sort();
  const parts: VersionVector[] = [];
  let cur: VersionVector = new Map();
  let n = VV_OVERHEAD;
  for (const k of keys) {
    const s = v.get(k)!;
    const e = vvEntryBytes(s);
    if (cur.size > 0 && n + e > maxBytes) {
      parts.push(cur);
      cur = new Map();
      n = VV_OVERHEAD;
    }
    cur.set(k, s);
    n += e;
  }
  parts.push(cur);
  return parts;
}

function writeAnchor(w: Writer, a: Anchor): void {
  w.arrayHeader(3);
  if (!a.id || a.id.seq === 0) {
    w.nil();
    w.int(0);
  } else {
    w.bin(replicaToBytes(a.id.replica));
    w.int(a.id.seq);
  }
  w.int(a.side);
}

/** Encodes one message as a frame. */
export function encodeMessage(m: Message): Uint8Array {
  const w = new Writer();
  switch (m.type) {
    case "hello":
      w.arrayHeader(5);
      w.int(Tag.hello);
      w.int(m.version);
      w.str(m.token);
      w.bin(replicaToBytes(m.replica));
      w.str(m.client);
      break;
    case "welcome":
      w.arrayHeader(6);
      w.int(Tag.welcome);
      w.int(m.version);
      w.int(m.serverTime);
      w.str(m.session);
      w.str(m.user);
      w.arrayHeader(7);
      for (const x of [m.limits.maxFrame, m.limits.maxChangesPerSec, m.limits.maxPresencePerSec, m.limits.maxDocBytes, m.limits.maxPending, m.limits.maxDocs, m.limits.maxOpsBurst]) w.int(x);
      break;
    case "subscribe":
      w.arrayHeader(3);
      w.int(Tag.subscribe);
      w.str(m.doc);
      writeVV(w, m.version);
      break;
    case "unsubscribe":
      w.arrayHeader(2);
      w.int(Tag.unsubscribe);
      w.str(m.doc);
      break;
    case "versionPart":
      w.arrayHeader(3);
      w.int(Tag.versionPart);
      w.str(m.doc);
      writeVV(w, m.version);
      break;
    case "sync":
      w.arrayHeader(4);
      w.int(Tag.sync);
      w.str(m.doc);
      writeVV(w, m.version);
      w.bin(m.changes);
      break;
    case "update":
      w.arrayHeader(4);
      w.int(Tag.update);
      w.str(m.doc);
      w.int(m.batch);
      w.bin(m.changes);
      break;
    case "ack":
      w.arrayHeader(5);
      w.int(Tag.ack);
      w.str(m.doc);
      w.int(m.batch);
      w.int(m.status);
      w.str(m.message);
      break;
    case "changes":
      w.arrayHeader(3);
      w.int(Tag.changes);
      w.str(m.doc);
      w.bin(m.changes);
      break;
    case "presence":
      w.arrayHeader(12);
      w.int(Tag.presence);
      w.str(m.doc);
      w.str(m.session);
      w.str(m.user);
      w.str(m.name);
      w.str(m.color);
      w.int(m.clock);
      w.str(m.field);
      if (m.cursor) writeAnchor(w, m.cursor);
      else w.nil();
      if (m.selection) {
        w.arrayHeader(2);
        writeAnchor(w, m.selection.anchor);
        writeAnchor(w, m.selection.head);
      } else w.nil();
      w.bool(m.typing);
      if (m.state) w.bytes(m.state);
      else w.nil();
      break;
    case "presenceLeave":
      w.arrayHeader(3);
      w.int(Tag.presenceLeave);
      w.str(m.doc);
      w.str(m.session);
      break;
    case "ping":
    case "pong":
      w.arrayHeader(2);
      w.int(m.type === "ping" ? Tag.ping : Tag.pong);
      w.int(m.nonce);
      break;
    case "error":
      w.arrayHeader(4);
      w.int(Tag.error);
      w.int(m.status);
      w.str(m.message);
      w.str(m.doc);
      break;
    default:
      throw new Error(`syncproto: cannot encode ${(m as Message).type}`);
  }
  return w.finish();
}

function uuid(r: Reader): ReplicaID {
  const b = r.bin(16);
  if (b.length !== 16) throw new ProtocolError(`a replica id has 16 bytes, not ${b.length}`);
  if (b.every((x) => x === 0)) throw new ProtocolError("zero replica id");
  return replicaFromBytes(b);
}

function readVV(r: Reader): VersionVector {
  if (r.arrayHeader() !== 2) throw new ProtocolError("a version vector is an array of 2 arrays");
  const n = r.arrayHeader();
  const reps: ReplicaID[] = [];
  for (let i = 0; i < n; i++) {
    const rep = uuid(r);
    if (i > 0 && !(rep > reps[i - 1])) throw new ProtocolError("version vector replicas not in strictly increasing order");
    reps.push(rep);
  }
  if (r.arrayHeader() !== n) throw new ProtocolError("version vector arrays of different lengths");
  const v: VersionVector = new Map();
  for (let i = 0; i < n; i++) {
    const s = r.uint();
    if (s < 1) throw new ProtocolError("version vector seq 0");
    v.set(reps[i], s);
  }
  return v;
}

function readAnchor(r: Reader): Anchor {
  if (r.arrayHeader() !== 3) throw new ProtocolError("an anchor is an array of 3");
  const rep = r.isNil() ? null : uuid(r);
  const seq = r.uint();
  const side = r.uint();
  if (side > 1) throw new ProtocolError(`anchor side ${side}`);
  if ((rep === null) !== (seq === 0)) throw new ProtocolError("anchor with a replica but no seq, or a seq but no replica");
  return { id: rep ? { replica: rep, seq } : null, side };
}

/** Decodes one frame. Throws ProtocolError for a malformed one. */
export function decodeMessage(frame: Uint8Array): Message {
  const r = new Reader(frame, 16);
  try {
    const n = r.arrayHeader();
    if (n < 1) throw new ProtocolError("empty frame array");
    const tag = r.uint();
    const fields: Record<number, number> = { 1: 4, 2: 5, 3: 2, 4: 1, 5: 3, 6: 3, 7: 4, 8: 2, 9: 11, 10: 2, 11: 1, 12: 1, 13: 3, 17: 2 };
    const want = fields[tag];
    if (want === undefined) {
      for (let i = 1; i < n; i++) r.skip(1);
      if (r.left() !== 0) throw new ProtocolError(`${r.left()} trailing bytes`);
      return { type: "unknown", tag };
    }
    if (n - 1 < want) throw new ProtocolError(`tag ${tag} has ${n - 1} fields, wants ${want}`);
    const doc = () => {
      const d = r.str(MAX_DOC);
      if (d === "") throw new ProtocolError("empty document id");
      return d;
    };
    let m: Message;
    switch (tag) {
      case Tag.hello:
        m = { type: "hello", version: r.uint(), token: r.str(MAX_TOKEN), replica: uuid(r), client: r.str(MAX_NAME) };
        break;
      case Tag.welcome: {
        const version = r.uint();
        const serverTime = r.uintBig();
        const session = r.str(MAX_NAME);
        const user = r.str(MAX_NAME);
        const k = r.arrayHeader();
        const ls: number[] = [];
        for (let i = 0; i < k; i++) {
          if (i < 7) ls.push(r.uint());
          else r.skip(1);
        }
        while (ls.length < 7) ls.push(0);
        m = { type: "welcome", version, serverTime, session, user, limits: { maxFrame: ls[0], maxChangesPerSec: ls[1], maxPresencePerSec: ls[2], maxDocBytes: ls[3], maxPending: ls[4], maxDocs: ls[5], maxOpsBurst: ls[6] } };
        break;
      }
      case Tag.subscribe:
        m = { type: "subscribe", doc: doc(), version: readVV(r) };
        break;
      case Tag.unsubscribe:
        m = { type: "unsubscribe", doc: doc() };
        break;
      case Tag.versionPart:
        m = { type: "versionPart", doc: doc(), version: readVV(r) };
        break;
      case Tag.sync:
        m = { type: "sync", doc: doc(), version: readVV(r), changes: r.bin() };
        break;
      case Tag.update:
        m = { type: "update", doc: doc(), batch: r.uint(), changes: r.bin() };
        break;
      case Tag.ack:
        m = { type: "ack", doc: doc(), batch: r.uint(), status: r.uint(), message: r.str(MAX_MESSAGE) };
        break;
      case Tag.changes:
        m = { type: "changes", doc: doc(), changes: r.bin() };
        break;
      case Tag.presence: {
        const d = doc();
        const session = r.str(MAX_NAME);
        const user = r.str(MAX_NAME);
        const name = r.str(MAX_NAME);
        const color = r.str(MAX_NAME);
        const clock = r.uint();
        const field = r.str(MAX_NAME);
        const cursor = r.isNil() ? null : readAnchor(r);
        let selection: Selection | null = null;
        if (!r.isNil()) {
          if (r.arrayHeader() !== 2) throw new ProtocolError("a selection is an array of 2 anchors");
          selection = { anchor: readAnchor(r), head: readAnchor(r) };
        }
        const typing = r.bool();
        let state: Uint8Array | null = null;
        if (!r.isNil()) {
          state = r.skip(1).slice();
          if (state.length > MAX_STATE) throw new ProtocolError(`presence state of ${state.length} bytes exceeds ${MAX_STATE}`);
        }
        m = { type: "presence", doc: d, session, user, name, color, clock, field, cursor, selection, typing, state };
        break;
      }
      case Tag.presenceLeave:
        m = { type: "presenceLeave", doc: doc(), session: r.str(MAX_NAME) };
        break;
      case Tag.ping:
        m = { type: "ping", nonce: r.uint() };
        break;
      case Tag.pong:
        m = { type: "pong", nonce: r.uint() };
        break;
      default: // Tag.error
        m = { type: "error", status: r.uint(), message: r.str(MAX_MESSAGE), doc: r.str(MAX_DOC) };
    }
    for (let i = 1 + want; i < n; i++) r.skip(1);
    if (r.left() !== 0) throw new ProtocolError(`${r.left()} trailing bytes`);
    return m;
  } catch (e) {
    if (e instanceof MsgpackError) throw new ProtocolError(e.message);
    throw e;
  }
}
