// Doc: one replica of a weft document, the same CRDT as crdt/ in Go.
//
// Fields are identified by name and type; counters are PN-counters, registers
// last-writer-wins (greatest HLC time, then replica id, then seq), texts a
// sequence CRDT with the "YjsMod" integration rule (left and right origins;
// maximal non-interleaving as FugueMax; Weidner & Kleppmann 2023), exactly
// as crdt/document.go and crdt/apply.go integrate them, so that replicas in
// both languages that hold the same changes show the same document. Each
// replica's history is kept as Go keeps it (spans of ops and runs of
// times), so that changesSince returns the changes Go's ChangesSince
// returns for the same history and encodes to the same bytes.
//
// A text is a list of leaves of run-length items (each a run of characters
// with consecutive ids inserted by one op: char k>0 has the char before it
// as left origin, all share the run's right origin), with the visible and
// raw lengths of each leaf, and an id index per replica (the inserted runs,
// each with its current pieces).

import { Clock, ClockSkewError } from "./hlc.js";
import type { Timestamp } from "./hlc.js";
import { checkMsgpack } from "./msgpack.js";
import { FieldType, OpKind, fieldTypeOf, runeCount, runeOffset, utf8Len, Side } from "./types.js";
import type { DocState, StateItems, StateSpans, StateTime } from "./snapshot.js";
import type { Anchor, Change, ID, Op, ReplicaID, VersionVector } from "./types.js";

export class InvalidChangeError extends Error {
  constructor(message: string) {
    super(`crdt: invalid change: ${message}`);
    this.name = "InvalidChangeError";
  }
}
export class PendingFullError extends Error {
  constructor(message: string) {
    super(`crdt: pending buffer full: ${message}`);
    this.name = "PendingFullError";
  }
}
export class OutOfRangeError extends Error {
  constructor(message: string) {
    super(`crdt: position out of range: ${message}`);
    this.name = "OutOfRangeError";
  }
}
/**
 * MAX_CHANGE_OPS bounds the operations of the change one transaction makes,
 * as Go's crdt.MaxChangeOps does: an insert, a counter add and a register
 * set take one, a delete one per run of adjacent characters it removes.
 * Servers refuse a burst below it, so every change a transaction makes
 * can be sent.
 */
export const MAX_CHANGE_OPS = 4096;

/** An edit would take its transaction's change past MAX_CHANGE_OPS (Go: ErrChangeFull); nothing changed. */
export class ChangeFullError extends Error {
  constructor() {
    super(`crdt: the transaction's change is full (${MAX_CHANGE_OPS} ops): commit and continue in a new transaction`);
    this.name = "ChangeFullError";
  }
}
export class FieldTypeError extends Error {
  constructor(message: string) {
    super(`crdt: wrong field type: ${message}`);
    this.name = "FieldTypeError";
  }
}

const MAX_SEQ = 2 ** 32 - 2;
const INT64_MAX = 0x7fffffffffffffffn;
const INT64_MIN = -0x8000000000000000n;
export const MAX_FIELD_NAME = 1024;
const LEAF_CAP = 64;

// ---- the text ----

class Item {
  leaf!: Leaf;
  run!: Run;
  constructor(
    public r: number,
    public seq: number,
    public n: number,
    public s: string,
    public del: boolean,
    public lr: number,
    public ls: number,
    public rr: number,
    public rs: number,
  ) {}
}

class Leaf {
  /** Position in Text.leaves (renumbered when a leaf splits). */
  idx = 0;
  items: Item[] = [];
  vis = 0;
  /** Visible UTF-16 code units (what editors count). */
  vis16 = 0;
  raw = 0;
}

/** An inserted run of ids (r, seq..end-1) and the items it is now cut into. */
class Run {
  constructor(
    public seq: number,
    public end: number,
    public pieces: Item[],
  ) {}
}

class Text {
  leaves: Leaf[] = [new Leaf()];
  vis = 0;
  vis16 = 0;
  raw = 0;
  // visAt starts from the leaf it found last (edits cluster): cacheLi and
  // the visible length of the leaves before it, kept exact as leaves
  // change (visChanged, fixLeaf).
  private cacheLi = 0;
  private cacheBefore = 0;

  /** Records that leaf l's visible length changed by dv. */
  visChanged(l: Leaf, dv: number): void {
    if (l.idx < this.cacheLi) this.cacheBefore += dv;
  }
  runs: Run[][] = [];

  private runsOf(r: number): Run[] {
    while (this.runs.length <= r) this.runs.push([]);
    return this.runs[r];
  }

  private findRunIndex(r: number, seq: number): number {
    const rs = this.runs[r];
    if (!rs || rs.length === 0) return -1;
    let lo = 0;
    let hi = rs.length;
    const last = rs[hi - 1];
    if (seq >= last.seq) return seq < last.end ? hi - 1 : -1;
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      if (rs[m].end > seq) hi = m;
      else lo = m + 1;
    }
    const run = rs[lo];
    return run && run.seq <= seq && seq < run.end ? lo : -1;
  }

  private findRun(r: number, seq: number): Run | undefined {
    const i = this.findRunIndex(r, seq);
    return i < 0 ? undefined : this.runs[r][i];
  }

  /** The item holding id (r, seq) and the offset in it, or undefined. */
  locate(r: number, seq: number): [Item, number] | undefined {
    const run = this.findRun(r, seq);
    if (!run) return undefined;
    const ps = run.pieces;
    let lo = 0;
    let hi = ps.length;
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      if (ps[m].seq + ps[m].n > seq) hi = m;
      else lo = m + 1;
    }
    const it = ps[lo];
    return [it, seq - it.seq];
  }

  /** Whether ids (r, lo..hi-1) are all characters of this text. */
  covered(r: number, lo: number, hi: number): boolean {
    let i = this.findRunIndex(r, lo);
    if (i < 0) return false;
    const rs = this.runs[r];
    let run = rs[i];
    while (run.end < hi) {
      const next = rs[++i];
      if (!next || next.seq !== run.end) return false;
      run = next;
    }
    return true;
  }

  leafIndex(l: Leaf): number {
    return l.idx;
  }

  rawIndex(r: number, seq: number): number {
    const loc = this.locate(r, seq);
    if (!loc) throw new Error("crdt: rawIndex of unknown id");
    const [it, k] = loc;
    let pos = 0;
    for (const l of this.leaves) {
      if (l === it.leaf) break;
      pos += l.raw;
    }
    for (const x of it.leaf.items) {
      if (x === it) break;
      pos += x.n;
    }
    return pos + k;
  }

  /** Visible characters before id, and whether it is visible itself. */
  visIndex(r: number, seq: number): [number, boolean] {
    const loc = this.locate(r, seq);
    if (!loc) throw new Error("crdt: visIndex of unknown id");
    const [it, k] = loc;
    let pos = 0;
    for (const l of this.leaves) {
      if (l === it.leaf) break;
      pos += l.vis;
    }
    for (const x of it.leaf.items) {
      if (x === it) break;
      if (!x.del) pos += x.n;
    }
    if (it.del) return [pos, false];
    return [pos + k, true];
  }

  /** Visible UTF-16 units before id (r, seq). */
  visIndex16(r: number, seq: number): number {
    const loc = this.locate(r, seq);
    if (!loc) throw new Error("crdt: visIndex16 of unknown id");
    const [it, k] = loc;
    let pos = 0;
    for (const l of this.leaves) {
      if (l === it.leaf) break;
      pos += l.vis16;
    }
    for (const x of it.leaf.items) {
      if (x === it) break;
      if (!x.del) pos += x.s.length;
    }
    return it.del ? pos : pos + runeOffset(it.s, it.n, k);
  }

  /** The rune position of UTF-16 position u (0..vis16). Throws if u splits a surrogate pair. */
  runesAt16(u: number): number {
    if (u < 0 || u > this.vis16) throw new RangeError(`crdt: UTF-16 position ${u} outside 0..${this.vis16}`);
    if (this.vis16 === this.vis) return u;
    let runes = 0;
    for (const l of this.leaves) {
      if (u >= l.vis16 && l !== this.leaves[this.leaves.length - 1]) {
        u -= l.vis16;
        runes += l.vis;
        continue;
      }
      for (const it of l.items) {
        if (it.del) continue;
        if (u >= it.s.length) {
          u -= it.s.length;
          runes += it.n;
          continue;
        }
        let i = 0;
        while (i < u) {
          const c = it.s.charCodeAt(i);
          i += c >= 0xd800 && c <= 0xdbff ? 2 : 1;
          runes++;
        }
        if (i !== u) throw new RangeError("crdt: a UTF-16 position splits a surrogate pair");
        return runes;
      }
      if (u === 0) return runes;
    }
    return runes;
  }

  /** The UTF-16 position of rune position p (0..vis). */
  u16At(p: number): number {
    if (p < 0 || p > this.vis) throw new RangeError(`crdt: position ${p} outside 0..${this.vis}`);
    if (this.vis16 === this.vis) return p;
    let u = 0;
    for (const l of this.leaves) {
      if (p >= l.vis) {
        p -= l.vis;
        u += l.vis16;
        continue;
      }
      for (const it of l.items) {
        if (it.del) continue;
        if (p >= it.n) {
          p -= it.n;
          u += it.s.length;
          continue;
        }
        return u + runeOffset(it.s, it.n, p);
      }
    }
    return u;
  }

  /** The leaf index, item index and offset of visible character pos. */
  visAt(pos: number): [number, number, number] {
    const leaves = this.leaves;
    if (pos < 0 || pos >= this.vis) throw new Error("crdt: visible index outside the text");
    let li = this.cacheLi;
    let before = this.cacheBefore;
    if (li >= leaves.length) {
      li = 0;
      before = 0;
    }
    while (pos < before) {
      li--;
      before -= leaves[li].vis;
    }
    while (pos >= before + leaves[li].vis) {
      before += leaves[li].vis;
      li++;
    }
    this.cacheLi = li;
    this.cacheBefore = before;
    pos -= before;
    const items = leaves[li].items;
    for (let i = 0; i < items.length; i++) {
      const it = items[i];
      if (it.del) continue;
      if (pos < it.n) return [li, i, pos];
      pos -= it.n;
    }
    throw new Error("crdt: visible index outside leaf");
  }

  /** Cuts item i of leaf li after k runes (0 < k < n); both stay in the leaf. */
  split(l: Leaf, i: number, k: number): void {
    const it = l.items[i];
    const off = runeOffset(it.s, it.n, k);
    const b = new Item(it.r, it.seq + k, it.n - k, it.s.slice(off), it.del, it.r, it.seq + k - 1, it.rr, it.rs);
    b.leaf = l;
    b.run = it.run;
    it.n = k;
    it.s = it.s.slice(0, off);
    l.items.splice(i + 1, 0, b);
    const ps = it.run.pieces;
    ps.splice(ps.indexOf(it) + 1, 0, b);
  }

  /** Puts a new item (a new run of ids) at item position i of leaf l. */
  insertItem(l: Leaf, i: number, it: Item): void {
    it.leaf = l;
    l.items.splice(i, 0, it);
    const dv = it.del ? 0 : it.n;
    const dv16 = it.del ? 0 : it.s.length;
    l.raw += it.n;
    l.vis += dv;
    l.vis16 += dv16;
    this.raw += it.n;
    this.vis += dv;
    this.vis16 += dv16;
    this.visChanged(l, dv);
    const rs = this.runsOf(it.r);
    const run = new Run(it.seq, it.seq + it.n, [it]);
    it.run = run;
    rs.push(run);
    this.fixLeaf(l);
  }

  fixLeaf(l: Leaf): void {
    while (l.items.length > LEAF_CAP) {
      const half = l.items.length >> 1;
      const nl = new Leaf();
      nl.items = l.items.splice(half);
      for (const it of nl.items) {
        it.leaf = nl;
        nl.raw += it.n;
        if (!it.del) {
          nl.vis += it.n;
          nl.vis16 += it.s.length;
        }
      }
      l.raw -= nl.raw;
      l.vis -= nl.vis;
      l.vis16 -= nl.vis16;
      this.leaves.splice(l.idx + 1, 0, nl);
      for (let j = l.idx + 1; j < this.leaves.length; j++) this.leaves[j].idx = j;
      // Only a leaf before the cached one shifts it; the visible length
      // before it is unchanged (the split only moved items).
      if (l.idx < this.cacheLi) this.cacheLi++;
      this.fixLeaf(nl);
    }
  }

  /** Deletes n characters from offset k of item i of leaf l (no-op on tombstones). */
  deleteRange(l: Leaf, i: number, k: number, n: number): void {
    if (l.items[i].del) return;
    if (k > 0) {
      this.split(l, i, k);
      i++;
    }
    if (n < l.items[i].n) this.split(l, i, n);
    const it = l.items[i];
    it.del = true;
    l.vis -= it.n;
    this.vis -= it.n;
    this.visChanged(l, -it.n);
    l.vis16 -= it.s.length;
    this.vis16 -= it.s.length;
    this.fixLeaf(l);
  }

  deleteIDs(r: number, seq: number, n: number, onDelete?: (pos: number, n: number, pos16: number, n16: number) => void): void {
    while (n > 0) {
      const loc = this.locate(r, seq);
      if (!loc) throw new Error("crdt: delete of unknown id passed validation");
      const [it, k] = loc;
      const m = Math.min(it.n - k, n);
      const l = it.leaf;
      if (onDelete && !it.del) {
        const a = runeOffset(it.s, it.n, k);
        onDelete(this.visIndex(r, seq)[0], m, this.visIndex16(r, seq), runeOffset(it.s, it.n, k + m) - a);
      }
      this.deleteRange(l, l.items.indexOf(it), k, m);
      seq += m;
      n -= m;
    }
  }

  /** The first item after item i of leaf li in raw order, or undefined. */
  nextItem(li: number, i: number): Item | undefined {
    const l = this.leaves[li];
    if (i + 1 < l.items.length) return l.items[i + 1];
    for (let j = li + 1; j < this.leaves.length; j++) if (this.leaves[j].items.length > 0) return this.leaves[j].items[0];
    return undefined;
  }

  toString(): string {
    const parts: string[] = [];
    for (const l of this.leaves) for (const it of l.items) if (!it.del) parts.push(it.s);
    return parts.join("");
  }

  /**
   * integrate places a remote item between its origins (YjsMod / FugueMax),
   * exactly as crdt/document.go's integrate: scan from just after left
   * towards right; an item whose left origin is before left ends the scan;
   * one with the same left origin is a sibling, ordered by its right
   * origin and then by replica id.
   */
  integrate(it: Item, lr: number, ls: number, rr: number, rs: number, replicas: ReplicaID[]): void {
    let li = 0;
    let i = 0;
    if (ls !== 0) {
      const loc = this.locate(lr, ls);
      if (!loc) throw new Error("crdt: integrate with unknown left origin");
      const [L, k] = loc;
      const l = L.leaf;
      let at = l.items.indexOf(L);
      if (k + 1 < L.n) this.split(l, at, k + 1);
      li = this.leafIndex(l);
      i = at + 1;
    }
    const touched: Leaf[] = [this.leaves[li]];
    let leftIdx = -2;
    let rightIdx = -2;
    const rid = replicas[it.r];
    let dli = li;
    let di = i;
    let scanning = false;
    const leaves = this.leaves;
    for (;;) {
      while (li < leaves.length && i >= leaves[li].items.length) {
        li++;
        i = 0;
      }
      if (!scanning) {
        dli = li;
        di = i;
      }
      if (li >= leaves.length) break;
      const l = leaves[li];
      let o = l.items[i];
      if (rs !== 0 && o.r === rr && rs >= o.seq && rs - o.seq < o.n) {
        if (rs === o.seq) break;
        this.split(l, i, rs - o.seq);
        touched.push(l);
        o = l.items[i];
      }
      // o's origins (of its first character).
      const olr = o.lr, ols = o.ls, orr = o.rr, ors = o.rs;
      let cmpLeft: number;
      if (ols === ls && (ls === 0 || olr === lr)) cmpLeft = 0;
      else if (ols === 0) cmpLeft = -1;
      else {
        if (leftIdx === -2) leftIdx = ls === 0 ? -1 : this.rawIndex(lr, ls);
        cmpLeft = Math.sign(this.rawIndex(olr, ols) - leftIdx);
      }
      if (cmpLeft < 0) break;
      if (cmpLeft === 0) {
        let cmpRight = 0;
        if (ors === rs && (rs === 0 || orr === rr)) cmpRight = 0;
        else if (ors === 0) cmpRight = 1;
        else {
          if (rightIdx === -2) rightIdx = rs === 0 ? this.raw : this.rawIndex(rr, rs);
          cmpRight = Math.sign(this.rawIndex(orr, ors) - rightIdx);
        }
        if (cmpRight < 0) scanning = true;
        else if (cmpRight === 0) {
          if (rid < replicas[o.r]) break;
          scanning = false;
        } else scanning = false;
      }
      i++;
    }
    if (dli >= leaves.length) {
      dli = leaves.length - 1;
      di = leaves[dli].items.length;
    }
    const dl = leaves[dli];
    // A remote typist's next character, placed right after the previous
    // one with the same right origin: grow that item (its characters get
    // the same origins either way) instead of adding one per keystroke.
    const p = di > 0 ? dl.items[di - 1] : undefined;
    if (p && p.r === it.r && p.r === lr && p.seq + p.n === it.seq && p.seq + p.n - 1 === ls && !p.del && !it.del && p.rr === rr && p.rs === rs && p.run.end === it.seq) {
      p.n += it.n;
      p.s += it.s;
      p.run.end += it.n;
      dl.raw += it.n;
      dl.vis += it.n;
      dl.vis16 += it.s.length;
      this.raw += it.n;
      this.vis += it.n;
      this.vis16 += it.s.length;
      this.visChanged(dl, it.n);
    } else this.insertItem(dl, di, it);
    for (const l of touched) this.fixLeaf(l);
  }
}

// ---- fields and the log ----

interface Field {
  name: string;
  type: FieldType;
  text?: Text;
  counter: bigint;
  reg?: RegState;
}

interface RegState {
  t: Timestamp;
  r: number;
  seq: number;
  value: Uint8Array;
}

interface Span {
  seq: number;
  n: number;
  field: Field;
  kind: OpKind;
  back: boolean;
  off: number;
  nb: number;
  ar: number;
  as: number;
  br: number;
  bs: number;
  delta: bigint;
  text: string;
  value?: Uint8Array;
}

interface TimeRun {
  seq: number;
  n: number;
  stepped: boolean;
  t: Timestamp;
}

class RLog {
  spans: Span[] = [];
  times: TimeRun[] = [];
  next = 1;
  /** Register spans, while a snapshot is being loaded (Doc._fromState). */
  sets = 0;
}

const lastTime = (tr: TimeRun) => (tr.stepped ? tr.t + BigInt(tr.n - 1) : tr.t);
const timeAtRun = (tr: TimeRun, seq: number) => (tr.stepped ? tr.t + BigInt(seq - tr.seq) : tr.t);

export interface DocOptions {
  /** Changes held while their dependencies are missing. Default: 4096. */
  maxPending?: number;
}

interface Head {
  t: Timestamp;
  r: number;
  seq: number;
  end: number;
}

/**
 * TextEvent: a remote change to the visible text of a field, in rune
 * positions at the moment it happens (events of one apply come in order,
 * each relative to the text the previous one left).
 */
export interface TextEvent {
  /** Rune position. */
  pos: number;
  /** Runes deleted at pos. */
  delete: number;
  insert: string;
  /** The same in UTF-16 code units (what CodeMirror and the DOM count). */
  pos16: number;
  delete16: number;
}

/** Doc is one replica of a document. Not shared between tasks: one owner. */
export class Doc {
  /** Called for every visible change remote changes make to a text. */
  onText?: (field: string, e: TextEvent) => void;
  readonly replica: ReplicaID;
  readonly clock: Clock;
  private maxPending: number;
  private replicas: ReplicaID[] = [];
  private rindex = new Map<ReplicaID, number>();
  private logs: RLog[] = [];
  private contentLen = 0;
  private fields: Field[] = [];
  private fieldIdx = new Map<string, Field>();
  private pending: Change[] = [];
  private rejectedCount = 0;
  private tx: Tx | null = null;
  /** What each inserting replica's ops depend on, by replica (see knowsAny). */
  private closures = new Map<number, Closure>();

  constructor(replica: ReplicaID, clock: Clock = new Clock(), opts: DocOptions = {}) {
    if (!/^[0-9a-f]{32}$/.test(replica) || /^0+$/.test(replica)) throw new Error("crdt: a Doc needs a non-zero replica id");
    this.replica = replica;
    this.clock = clock;
    this.maxPending = opts.maxPending && opts.maxPending > 0 ? opts.maxPending : 4096;
    this.replicaIndex(replica);
  }

  private replicaIndex(id: ReplicaID): number {
    let i = this.rindex.get(id);
    if (i !== undefined) return i;
    i = this.replicas.length;
    this.replicas.push(id);
    this.rindex.set(id, i);
    this.logs.push(new RLog());
    return i;
  }

  /** The document's version vector (a fresh map). */
  version(): VersionVector {
    const v: VersionVector = new Map();
    this.replicas.forEach((r, i) => {
      if (this.logs[i].next > 1) v.set(r, this.logs[i].next - 1);
    });
    return v;
  }

  /** Changes waiting for missing dependencies. */
  pendingCount(): number {
    return this.pending.length;
  }
  rejected(): number {
    return this.rejectedCount;
  }

  private lastField: Field | undefined;

  private field(name: string, type: FieldType, create: boolean): Field | undefined {
    // Edits come in bursts on one field: skip building its key.
    const lf = this.lastField;
    if (lf && lf.type === type && lf.name === name) return lf;
    const f = this.fieldLookup(name, type, create);
    if (f) this.lastField = f;
    return f;
  }

  private fieldLookup(name: string, type: FieldType, create: boolean): Field | undefined {
    const key = type + ":" + name;
    let f = this.fieldIdx.get(key);
    if (f || !create) return f;
    f = { name, type, counter: 0n };
    if (type === FieldType.Text) f.text = new Text();
    this.fieldIdx.set(key, f);
    this.fields.push(f);
    return f;
  }

  /** The fields, sorted by name then type. */
  fieldList(): { name: string; type: FieldType }[] {
    return this.fields
      .map((f) => ({ name: f.name, type: f.type }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.type - b.type));
  }

  text(name: string): string {
    return this.field(name, FieldType.Text, false)?.text!.toString() ?? "";
  }

  textLen(name: string): number {
    return this.field(name, FieldType.Text, false)?.text!.vis ?? 0;
  }

  /** The length of a text in UTF-16 code units. */
  textLen16(name: string): number {
    return this.field(name, FieldType.Text, false)?.text!.vis16 ?? 0;
  }

  /** Converts a UTF-16 position of a text into a rune position. */
  runesFromUtf16(name: string, u16: number): number {
    const t = this.field(name, FieldType.Text, false)?.text;
    if (!t) {
      if (u16 !== 0) throw new RangeError(`crdt: UTF-16 position ${u16} in an empty text`);
      return 0;
    }
    return t.runesAt16(u16);
  }

  /** Converts a rune position of a text into UTF-16 code units. */
  utf16FromRunes(name: string, runes: number): number {
    const t = this.field(name, FieldType.Text, false)?.text;
    if (!t) {
      if (runes !== 0) throw new RangeError(`crdt: position ${runes} in an empty text`);
      return 0;
    }
    return t.u16At(runes);
  }

  /** The counter's value: the exact sum of its deltas, saturated to int64. */
  counter(name: string): bigint {
    const v = this.field(name, FieldType.Counter, false)?.counter ?? 0n;
    return v > INT64_MAX ? INT64_MAX : v < INT64_MIN ? INT64_MIN : v;
  }

  /** The msgpack bytes of a register, or undefined when never set. */
  register(name: string): Uint8Array | undefined {
    return this.field(name, FieldType.Register, false)?.reg?.value.slice();
  }

  registerTime(name: string): Timestamp | undefined {
    return this.field(name, FieldType.Register, false)?.reg?.t;
  }

  // ---- local transactions ----

  /** Starts a local transaction (committing one left open). */
  begin(): Tx {
    if (this.tx) this.tx.commit();
    this.tx = new Tx(this, this.logs[0].next);
    return this.tx;
  }

  /** Runs fn in a transaction and commits it, even when fn throws. */
  transact<T>(fn: (tx: Tx) => T): T {
    const tx = this.begin();
    try {
      return fn(tx);
    } finally {
      tx.commit();
    }
  }

  /** @internal */
  _endTx(tx: Tx): void {
    if (this.tx === tx) this.tx = null;
  }

  /** @internal */
  _stamp(tx: Tx, seq: number, n: number): Timestamp {
    if (tx.time === undefined) tx.time = this.clock.now();
    this.appendTime(0, seq, n, tx.time);
    this.logs[0].next = seq + n;
    return tx.time;
  }

  /** @internal */
  _reserve(n: number): number {
    const seq = this.logs[0].next;
    if (seq + n > MAX_SEQ) throw new Error(`crdt: replica ${this.replica} exhausted its sequence numbers`);
    return seq;
  }

  /** @internal the runs of visible characters a delete of n runes at pos removes, counted up to limit (Go: text.visRuns). */
  _deleteRuns(name: string, pos: number, n: number, limit: number): number {
    const f = this.field(name, FieldType.Text, false);
    if (!f || !Number.isInteger(pos) || !Number.isInteger(n) || n <= 0 || pos < 0 || pos + n > f.text!.vis) return 0; // _delete reports a bad range
    const t = f.text!;
    let [li, i, k] = t.visAt(pos);
    let runs = 0;
    while (n > 0 && runs < limit) {
      while (i >= t.leaves[li].items.length) {
        if (++li >= t.leaves.length) return runs;
        i = 0;
      }
      const it = t.leaves[li].items[i];
      if (!it.del) {
        n -= Math.min(n, it.n - k);
        k = 0;
        runs++;
      }
      i++;
    }
    return runs;
  }

  /** @internal local insert of s at rune position pos. */
  _insert(tx: Tx, name: string, pos: number, s: string): void {
    checkName(name);
    if (!isWellFormed(s)) throw new FieldTypeError("inserted text is not valid UTF-16 (a lone surrogate)");
    let f = this.field(name, FieldType.Text, false);
    const vis = f ? f.text!.vis : 0;
    if (!Number.isInteger(pos) || pos < 0 || pos > vis) throw new OutOfRangeError(`insert at ${pos} in text ${JSON.stringify(name)} of length ${vis}`);
    if (s === "") return;
    const n = runeCount(s);
    const seq = this._reserve(n);
    if (!f) f = this.field(name, FieldType.Text, true)!;
    this._stamp(tx, seq, n);
    const nb = utf8Len(s);
    const off = this.contentLen;
    this.contentLen += nb;
    const t = f.text!;
    let l: Leaf;
    let i: number;
    let lr = 0, ls = 0, rr = 0, rs = 0;
    if (pos === 0) {
      l = t.leaves[0];
      i = 0;
      if (l.items.length > 0) {
        rr = l.items[0].r;
        rs = l.items[0].seq;
      }
    } else {
      const [li, ii, k] = t.visAt(pos - 1);
      l = t.leaves[li];
      i = ii;
      const it = l.items[i];
      lr = it.r;
      ls = it.seq + k;
      if (k + 1 < it.n) {
        rr = it.r;
        rs = it.seq + k + 1;
        t.split(l, i, k + 1);
      } else {
        const nx = t.nextItem(li, i);
        if (nx) {
          rr = nx.r;
          rs = nx.seq;
        }
        // Typing at the end of our own run: grow it in place (same origins
        // as a new item would have).
        if (it.r === 0 && it.seq + it.n === seq && it.rr === rr && it.rs === rs && it.run.end === seq) {
          it.n += n;
          it.s += s;
          it.run.end += n;
          l.vis += n;
          l.raw += n;
          t.vis += n;
          t.raw += n;
          l.vis16 += s.length;
          t.vis16 += s.length;
          t.visChanged(l, n);
          this.appendSpan(0, { seq, n, field: f, kind: OpKind.Ins, back: false, off, nb, ar: lr, as: ls, br: rr, bs: rs, delta: 0n, text: s });
          return;
        }
      }
      i++;
    }
    t.insertItem(l, i, new Item(0, seq, n, s, false, lr, ls, rr, rs));
    this.appendSpan(0, { seq, n, field: f, kind: OpKind.Ins, back: false, off, nb, ar: lr, as: ls, br: rr, bs: rs, delta: 0n, text: s });
  }

  /** @internal local delete of n runes at pos. */
  _delete(tx: Tx, name: string, pos: number, n: number): void {
    const f = this.field(name, FieldType.Text, false);
    const vis = f ? f.text!.vis : 0;
    if (!Number.isInteger(pos) || !Number.isInteger(n) || pos < 0 || n < 0 || pos + n > vis)
      throw new OutOfRangeError(`delete ${n} at ${pos} in text ${JSON.stringify(name)} of length ${vis}`);
    if (n === 0) return;
    let seq = this._reserve(n);
    this._stamp(tx, seq, n);
    const t = f!.text!;
    while (n > 0) {
      const [li, i, k] = t.visAt(pos);
      const l = t.leaves[li];
      const it = l.items[i];
      const r = it.r;
      const tseq = it.seq + k;
      const m = Math.min(n, it.n - k);
      t.deleteRange(l, i, k, m);
      this.appendSpan(0, { seq, n: m, field: f!, kind: OpKind.Del, back: false, off: 0, nb: 0, ar: r, as: tseq, br: 0, bs: 0, delta: 0n, text: "" });
      seq += m;
      n -= m;
    }
  }

  /** @internal */
  _add(tx: Tx, name: string, delta: bigint): void {
    checkName(name);
    if (delta === 0n) throw new FieldTypeError("counter delta must be non-zero");
    if (delta > 0x7fffffffffffffffn || delta < -0x8000000000000000n) throw new FieldTypeError("counter delta must fit 64 bits");
    const seq = this._reserve(1);
    const f = this.field(name, FieldType.Counter, true)!;
    this._stamp(tx, seq, 1);
    this.applyCounter(f, 0, seq, delta);
  }

  /** @internal */
  _set(tx: Tx, name: string, value: Uint8Array): void {
    checkName(name);
    try {
      checkMsgpack(value);
    } catch (e) {
      throw new FieldTypeError((e as Error).message);
    }
    const seq = this._reserve(1);
    const f = this.field(name, FieldType.Register, true)!;
    const t = this._stamp(tx, seq, 1);
    this.applyRegister(f, 0, seq, t, value.slice());
  }

  // ---- applying ops ----

  private applyCounter(f: Field, r: number, seq: number, delta: bigint): void {
    this.appendSpan(r, { seq, n: 1, field: f, kind: OpKind.Add, back: false, off: 0, nb: 0, ar: 0, as: 0, br: 0, bs: 0, delta, text: "" });
    // The exact sum: it never wraps, so it does not depend on the order the
    // deltas arrive in (counter() saturates it to int64, as Go does).
    f.counter += delta;
  }

  private applyRegister(f: Field, r: number, seq: number, t: Timestamp, value: Uint8Array): void {
    const off = this.contentLen;
    this.contentLen += value.length;
    this.appendSpan(r, { seq, n: 1, field: f, kind: OpKind.Set, back: false, off, nb: value.length, ar: 0, as: 0, br: 0, bs: 0, delta: 0n, text: "", value });
    const w: RegState = { t, r, seq, value };
    if (!f.reg || this.regLess(f.reg, w)) f.reg = w;
  }

  private regLess(a: RegState, b: RegState): boolean {
    if (a.t !== b.t) return a.t < b.t;
    const ra = this.replicas[a.r], rb = this.replicas[b.r];
    if (ra !== rb) return ra < rb;
    return a.seq < b.seq;
  }

  private appendSpan(r: number, s: Span): void {
    const lg = this.logs[r];
    const p = lg.spans[lg.spans.length - 1];
    if (p && p.kind === s.kind && p.field === s.field && p.seq + p.n === s.seq) {
      switch (s.kind) {
        case OpKind.Ins:
          if (s.ar === r && s.as === s.seq - 1 && s.br === p.br && s.bs === p.bs && p.off + p.nb === s.off) {
            p.n += s.n;
            p.nb += s.nb;
            p.text += s.text;
            return;
          }
          break;
        case OpKind.Del:
          if (s.ar === p.ar) {
            if (!p.back && !s.back && s.as === p.as + p.n) {
              p.n += s.n;
              return;
            }
            if ((p.back || p.n === 1) && s.n === 1 && s.as + p.n === p.as && p.as >= p.n) {
              p.back = true;
              p.n++;
              return;
            }
          }
          break;
        case OpKind.Add:
          if (s.delta === p.delta) {
            p.n += s.n;
            return;
          }
      }
    }
    lg.spans.push(s);
  }

  private appendTime(r: number, seq: number, n: number, t: Timestamp): void {
    const lg = this.logs[r];
    const p = lg.times[lg.times.length - 1];
    if (p && p.seq + p.n === seq) {
      if (!p.stepped && p.t === t) {
        p.n += n;
        return;
      }
      if (n === 1 && (p.stepped || p.n === 1) && lastTime(p) + 1n === t) {
        p.stepped = true;
        p.n++;
        return;
      }
    }
    lg.times.push({ seq, n, stepped: false, t });
  }

  private refOf(id: ID | null): [number, number] {
    if (!id || id.seq === 0) return [0, 0];
    const i = this.rindex.get(id.replica);
    if (i === undefined) throw new Error("crdt: reference to an unknown replica passed validation");
    return [i, id.seq];
  }

  /**
   * applyChange applies a planned change. With check, an insert whose
   * origins contradict the text throws InvalidChangeError (Go: ErrOrigins),
   * the change then applied in part: the caller takes it back (rollback).
   */
  private applyChange(c: Change, check: boolean): void {
    const r = this.replicaIndex(c.replica);
    let seq = c.seq;
    for (const op of c.ops) {
      let n = 1;
      switch (op.kind) {
        case OpKind.Add:
          this.applyCounter(this.field(op.field, FieldType.Counter, true)!, r, seq, op.delta);
          break;
        case OpKind.Set:
          this.applyRegister(this.field(op.field, FieldType.Register, true)!, r, seq, c.time, op.value.slice());
          break;
        case OpKind.Ins: {
          const f = this.field(op.field, FieldType.Text, true)!;
          n = runeCount(op.text);
          const [lr, ls] = this.refOf(op.left);
          const [rr, rs] = this.refOf(op.right);
          if (check && !this.consistent(f.text!, lr, ls, rr, rs, r, seq))
            throw new InvalidChangeError(
              `origins contradict the text: right origin ${idString(op.right)} is not the first character after left origin ${idString(op.left)} its sender knew`,
            );
          const nb = utf8Len(op.text);
          const off = this.contentLen;
          this.contentLen += nb;
          this.appendSpan(r, { seq, n, field: f, kind: OpKind.Ins, back: false, off, nb, ar: lr, as: ls, br: rr, bs: rs, delta: 0n, text: op.text });
          f.text!.integrate(new Item(r, seq, n, op.text, false, lr, ls, rr, rs), lr, ls, rr, rs, this.replicas);
          if (this.onText) this.onText(op.field, { pos: f.text!.visIndex(r, seq)[0], insert: op.text, delete: 0, pos16: f.text!.visIndex16(r, seq), delete16: 0 });
          break;
        }
        case OpKind.Del: {
          const f = this.field(op.field, FieldType.Text, true)!;
          n = op.count;
          const [tr, ts] = this.refOf(op.target);
          const on = this.onText;
          f.text!.deleteIDs(tr, op.backward ? ts - n + 1 : ts, n, on ? (pos, m, pos16, m16) => on(op.field, { pos, insert: "", delete: m, pos16, delete16: m16 }) : undefined);
          for (let k = 0; k < n; k++) {
            const t = op.backward ? ts - k : ts + k;
            this.appendSpan(r, { seq: seq + k, n: 1, field: f, kind: OpKind.Del, back: false, off: 0, nb: 0, ar: tr, as: t, br: 0, bs: 0, delta: 0n, text: "" });
          }
          break;
        }
      }
      this.appendTime(r, seq, n, c.time);
      seq += n;
    }
    this.logs[r].next = seq;
  }

  // ---- the origin check (Go: crdt ErrOrigins, text.consistent) ----

  /**
   * consistent reports whether an insert by replica r at seq with origins
   * (lr, ls) and (rr, rs) agrees with the text: its right origin (the end,
   * when none) is the first character after its left one (the start, when
   * none), counting tombstones, among the characters the insert depends on
   * (docs/PROTOCOL.md section 8, "Origins"). It walks from the left origin
   * to the first character its sender must have known; only when
   * characters lie in between does knowsAny compute what it depends on.
   */
  private consistent(t: Text, lr: number, ls: number, rr: number, rs: number, r: number, seq: number): boolean {
    const leaves = t.leaves;
    let li = 0;
    let i = 0;
    let from = 0; // the first seq of item i to look at (0: all)
    if (ls !== 0) {
      const loc = t.locate(lr, ls);
      if (!loc) throw new Error("crdt: consistent with an unknown left origin");
      const [L, k] = loc;
      li = L.leaf.idx;
      i = L.leaf.items.indexOf(L);
      if (k + 1 < L.n) from = L.seq + k + 1;
      else i++;
    }
    // Changes are atomic: naming a character, the sender knew its whole
    // change (its end looked up only when a character past it turns up).
    let knownL = 0;
    let knownR = 0;
    const gap: number[] = []; // the items passed: replica, first seq
    for (;;) {
      while (li < leaves.length && i >= leaves[li].items.length) {
        li++;
        i = 0;
      }
      if (li >= leaves.length) {
        if (rs !== 0) return false;
        break;
      }
      const o = leaves[li].items[i];
      let s0 = o.seq;
      if (from !== 0) {
        s0 = from;
        from = 0;
      }
      // The greatest seq of o's replica the sender must have known.
      let known = 0;
      if (ls !== 0 && o.r === lr) {
        known = ls;
        if (s0 > known) {
          if (knownL === 0) knownL = this.changeEnd(lr, ls);
          known = knownL;
        }
      }
      if (rs !== 0 && o.r === rr) {
        known = Math.max(known, rs);
        if (s0 > known) {
          if (knownR === 0) knownR = this.changeEnd(rr, rs);
          known = Math.max(known, knownR);
        }
      }
      if (o.r === r) known = Math.max(known, seq - 1);
      if (s0 <= known) {
        if (o.r !== rr || s0 !== rs) return false;
        break;
      }
      gap.push(o.r, s0);
      i++;
    }
    // The sender may not have known the characters in between (inserted
    // concurrently), or may have, through what it knew.
    return gap.length === 0 || !this.knowsAny(lr, ls, rr, rs, r, seq, gap);
  }

  /** The last seq of the change of replica r holding seq: a change is the maximal run of seqs with one time. */
  private changeEnd(r: number, seq: number): number {
    const tr = this.logs[r].times;
    let i = this.timeIndex(r, seq);
    if (i === tr.length) {
      if (i === 0) return seq;
      i--; // the change being applied, whose later ops have no time yet
    }
    if (tr[i].stepped && seq < tr[i].seq + tr[i].n - 1) return seq; // one seq per change inside a stepped run
    const t = timeAtRun(tr[i], seq);
    let end = tr[i].seq + tr[i].n - 1;
    while (i + 1 < tr.length && tr[i + 1].t === t) {
      i++;
      end = tr[i].stepped ? tr[i].seq : tr[i].seq + tr[i].n - 1;
    }
    return end;
  }

  /**
   * knowsAny reports whether the insert by r at seq with the given origins
   * depends on any of the gap items (pairs of replica, first seq): on r's
   * earlier ops, the changes holding its origins (whole), or, transitively,
   * what those depend on. r's own closure is kept and grown; the origins'
   * part is computed over it reading only ops stamped after the earliest
   * gap item (what is stamped earlier depends only on earlier things).
   */
  private knowsAny(lr: number, ls: number, rr: number, rs: number, r: number, seq: number, gap: number[]): boolean {
    if (this.closures.size >= MAX_CLOSURES) this.closures.clear();
    let pc = this.closures.get(r);
    if (!pc) {
      pc = new Closure();
      this.closures.set(r, pc);
    }
    if (seq > 1) this.grow(pc, null, [r, seq - 1], false, 0n);
    for (let g = 0; g < gap.length; g += 2) if (gap[g + 1] <= pc.get(gap[g])) return true;
    for (const [x, xs] of [[lr, ls], [rr, rs]]) {
      if (xs !== 0 && this.changeEnd(x, xs) > pc.get(x)) {
        let tmin: Timestamp | undefined;
        for (let g = 0; g < gap.length; g += 2) {
          const t = this.timeAt(gap[g], gap[g + 1]);
          if (tmin === undefined || t < tmin) tmin = t;
        }
        const ov = new Closure();
        this.grow(ov, pc, [lr, ls, rr, rs], true, tmin!);
        for (let g = 0; g < gap.length; g += 2) if (gap[g + 1] <= ov.get(gap[g])) return true;
        return false;
      }
    }
    return false;
  }

  /**
   * grow adds to c what the refs (pairs of replica, seq) depend on (their
   * whole changes when whole), over base (whose entries count as c's; not
   * changed), reading only ops stamped after tmin.
   */
  private grow(c: Closure, base: Closure | null, refs: number[], whole: boolean, tmin: Timestamp): void {
    const work: number[] = [];
    const raise = (x: number, xs: number, whole: boolean) => {
      if (xs === 0) return;
      const k = Math.max(c.get(x), base ? base.get(x) : 0);
      const end = whole ? this.changeEnd(x, xs) : xs;
      if (end > k) {
        c.known.set(x, end);
        work.push(x);
      }
    };
    for (let i = 0; i < refs.length; i += 2) raise(refs[i], refs[i + 1], whole);
    while (work.length > 0) {
      const x = work.pop()!;
      let from = (c.done.get(x) ?? 0) + 1;
      let to = c.get(x);
      if (base) {
        from = Math.max(from, (base.done.get(x) ?? 0) + 1);
        to = Math.max(to, base.get(x));
      }
      if (from > to) continue;
      c.done.set(x, to);
      if (tmin > 0n) {
        // Skip what is stamped no later than tmin.
        const tr = this.logs[x].times;
        let lo = 0;
        let hi = tr.length;
        while (lo < hi) {
          const m = (lo + hi) >> 1;
          if (lastTime(tr[m]) > tmin) hi = m;
          else lo = m + 1;
        }
        if (lo === tr.length) continue;
        let first = tr[lo].seq; // the first seq stamped after tmin
        if (tr[lo].stepped && tr[lo].t <= tmin) first += Number(tmin - tr[lo].t) + 1;
        from = Math.max(from, first);
        if (from > to) continue;
      }
      const sp = this.logs[x].spans;
      for (let i = this.spanIndex(x, from); i < sp.length && sp[i].seq <= to; i++) {
        const s = sp[i];
        if (s.kind === OpKind.Ins) {
          if (s.seq >= from) raise(s.ar, s.as, true);
          raise(s.br, s.bs, true);
        } else if (s.kind === OpKind.Del) {
          const a = Math.max(from, s.seq) - s.seq;
          const b = Math.min(to, s.seq + s.n - 1) - s.seq;
          raise(s.ar, s.back ? s.as - a : s.as + b, true);
        }
      }
    }
  }

  /**
   * rollback takes the document back to seqs 1..cut[r] of each replica r
   * (a version it held before: what a refused batch found) by rebuilding
   * it from that history: a refused batch whose fault showed only while
   * it was applied leaves no trace. It costs a pass over the document,
   * paid only by bad input. The pending buffer and the clock are kept;
   * replicas the batch added are dropped.
   */
  private rollback(cut: number[]): void {
    let nrep = this.replicas.length;
    while (nrep > 1 && (cut[nrep - 1] ?? 0) === 0) nrep--;
    const hs: Head[] = [];
    for (let r = 0; r < nrep; r++) {
      const from = hs.length;
      this.heads(hs, r, 1, cut[r] ?? 0);
      for (let k = from; k < hs.length; k++) hs[k].end = Math.min(hs[k].end, cut[r]);
    }
    hs.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
    const kept = hs.filter((h) => h.seq <= h.end).map((h) => ({ replica: this.replicas[h.r], seq: h.seq, time: h.t, ops: this.ops(h.r, h.seq, h.end) }));
    const nd = new Doc(this.replica, this.clock, { maxPending: this.maxPending });
    for (let r = 0; r < nrep; r++) nd.replicaIndex(this.replicas[r]);
    nd.applyTrusted(kept);
    this.replicas = nd.replicas;
    this.rindex = nd.rindex;
    this.logs = nd.logs;
    this.contentLen = nd.contentLen;
    this.fields = nd.fields;
    this.fieldIdx = nd.fieldIdx;
    this.lastField = undefined;
    this.tx = null;
    this.closures = new Map();
  }

  // ---- remote changes ----

  /**
   * apply merges remote changes. The batch is atomic: if any change is
   * invalid (InvalidChangeError: malformed, naming what is not there,
   * stamped no later than what it follows, or an insert whose origins
   * contradict the text, as Go's crdt refuses), stamped too far ahead
   * (ClockSkewError), or
   * the pending buffer would overflow (PendingFullError), apply throws and
   * the document is exactly as it was. Changes may come in any order;
   * applying one twice is a no-op; one whose dependencies are missing waits.
   * Returns the changes applied, in order (trimmed of what the document had).
   */
  apply(changes: readonly Change[]): Change[] {
    return this.applyMaybeTrusted(changes, false);
  }

  /**
   * applyTrusted is apply for the replica's own stored history: times are
   * not checked against the wall clock or what they follow.
   */
  applyTrusted(changes: readonly Change[]): Change[] {
    return this.applyMaybeTrusted(changes, true);
  }

  private applyMaybeTrusted(changes: readonly Change[], trusted: boolean): Change[] {
    if (this.tx) this.tx.commit();
    changes.forEach((c, i) => {
      const err = checkShape(c);
      if (err) throw new InvalidChangeError(`change ${i} (${c.replica.slice(0, 8)}@${c.seq}): ${err}`);
    });
    const p = new Plan(this, trusted);
    p.run(changes, false);
    if (p.waiting.length + this.pending.length > this.maxPending)
      throw new PendingFullError(`${p.waiting.length + this.pending.length} changes would wait for missing dependencies (max ${this.maxPending})`);
    for (const c of p.ready) {
      try {
        this.applyChange(c, !trusted);
      } catch (e) {
        if (!(e instanceof InvalidChangeError)) throw e;
        // Origins that contradict the text show only against the text the
        // batch's earlier changes made: take the batch back.
        const cut = this.logs.map((lg) => lg.next - 1);
        for (const [r, a] of p.adv) {
          const ri = this.rindex.get(r);
          if (ri !== undefined) cut[ri] = a.base - 1;
        }
        this.rollback(cut);
        throw new InvalidChangeError(`change ${c.replica.slice(0, 8)}@${c.seq}: ${e.message.replace(/^crdt: invalid change: /, "")}`);
      }
    }
    // Every ready time passed the offset check when it was planned.
    for (const c of p.ready) this.clock.witness(c.time);
    const applied = p.ready.slice();
    this.addPending(p.waiting);
    if (p.ready.length > 0 && this.pending.length > 0) this.retryPending(applied, trusted);
    return applied;
  }

  private addPending(cs: Change[]): void {
    const have = new Set(this.pending.map((c) => c.replica + "@" + c.seq));
    for (const c of cs) {
      const k = c.replica + "@" + c.seq;
      if (!have.has(k)) {
        have.add(k);
        this.pending.push(c);
      }
    }
  }

  private retryPending(applied: Change[], trusted: boolean): void {
    for (;;) {
      const p = new Plan(this, trusted);
      const cands = this.pending;
      this.pending = [];
      p.run(cands, true);
      this.rejectedCount += p.dropped;
      let bad = -1;
      for (let i = 0; i < p.ready.length; i++) {
        const c = p.ready[i];
        try {
          this.applyChange(c, !trusted);
        } catch (e) {
          if (!(e instanceof InvalidChangeError)) throw e;
          // It contradicts the text: take it back and drop it; the ready
          // changes after it may depend on it, so they are planned again.
          const cut = this.logs.map((lg) => lg.next - 1);
          cut[this.rindex.get(c.replica)!] = c.seq - 1;
          this.rollback(cut);
          this.rejectedCount++;
          bad = i;
          break;
        }
        this.clock.witness(c.time);
        applied.push(c);
      }
      this.pending = p.waiting;
      if (bad >= 0) {
        this.pending = [...p.ready.slice(bad + 1), ...this.pending];
        continue;
      }
      if (p.ready.length === 0 || this.pending.length === 0) return;
    }
  }

  /** @internal for Plan */
  _nextSeqOf(r: ReplicaID): number {
    const i = this.rindex.get(r);
    return i === undefined ? 1 : this.logs[i].next;
  }
  /** @internal for Plan */
  _covered(field: string, r: ReplicaID, lo: number, hi: number): boolean {
    const f = this.field(field, FieldType.Text, false);
    const i = this.rindex.get(r);
    return !!f && i !== undefined && f.text!.covered(i, lo, hi);
  }

  // ---- reading the log back as changes ----

  /**
   * changesSince returns the changes the document holds that v does not
   * include, in Go's ChangesSince order (by HLC time across replicas), a
   * change v includes in part returned whole.
   */
  changesSince(v?: VersionVector): Change[] {
    const hs: Head[] = [];
    let nrep = 0;
    for (let r = 0; r < this.replicas.length; r++) {
      const lg = this.logs[r];
      let from = 1;
      if (v) {
        const s = v.get(this.replicas[r]) ?? 0;
        if (s >= lg.next - 1) continue;
        from = s + 1;
      }
      if (from >= lg.next) continue;
      this.heads(hs, r, from, lg.next - 1);
      nrep++;
    }
    if (nrep > 1) {
      // A stable sort by time (Array.prototype.sort is stable).
      hs.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
    }
    return hs.map((h) => ({ replica: this.replicas[h.r], seq: h.seq, time: h.t, ops: this.ops(h.r, h.seq, h.end) }));
  }

  private timeIndex(r: number, seq: number): number {
    const tr = this.logs[r].times;
    let lo = 0, hi = tr.length;
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      if (tr[m].seq + tr[m].n > seq) hi = m;
      else lo = m + 1;
    }
    return lo;
  }

  private timeAt(r: number, seq: number): Timestamp {
    const tr = this.logs[r].times;
    return timeAtRun(tr[this.timeIndex(r, seq)], seq);
  }

  private heads(out: Head[], r: number, from: number, to: number): void {
    const runs = this.logs[r].times;
    if (from > to || runs.length === 0) return;
    while (from > 1 && this.timeAt(r, from - 1) === this.timeAt(r, from)) from--;
    let cur: Head | null = null;
    for (let ri = this.timeIndex(r, from); ri < runs.length; ri++) {
      const run = runs[ri];
      const a = Math.max(from, run.seq);
      const b = Math.min(to, run.seq + run.n - 1);
      if (a > b) break;
      if (run.stepped) {
        for (let s = a; s <= b; s++) {
          const t = timeAtRun(run, s);
          if (cur && cur.t === t && cur.end + 1 === s) cur.end = s;
          else out.push((cur = { t, r, seq: s, end: s }));
        }
      } else if (cur && cur.t === run.t && cur.end + 1 === a) cur.end = b;
      else out.push((cur = { t: run.t, r, seq: a, end: b }));
    }
    // A change that the to bound cut is returned whole.
    if (cur) {
      while (cur.end + 1 < this.logs[r].next && this.timeAt(r, cur.end + 1) === cur.t) cur.end++;
    }
  }

  private spanIndex(r: number, seq: number): number {
    const sp = this.logs[r].spans;
    let lo = 0, hi = sp.length;
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      if (sp[m].seq + sp[m].n > seq) hi = m;
      else lo = m + 1;
    }
    return lo;
  }

  private idOf(r: number, seq: number): ID | null {
    return seq === 0 ? null : { replica: this.replicas[r], seq };
  }

  private ops(r: number, from: number, to: number): Op[] {
    const out: Op[] = [];
    const sp = this.logs[r].spans;
    for (let i = this.spanIndex(r, from); i < sp.length && sp[i].seq <= to; i++) {
      const s = sp[i];
      const a = Math.max(from, s.seq);
      const b = Math.min(to, s.seq + s.n - 1);
      const name = s.field.name;
      switch (s.kind) {
        case OpKind.Ins: {
          const bo = runeOffset(s.text, s.n, a - s.seq);
          const rest = s.text.slice(bo);
          const be = runeOffset(rest, s.n - (a - s.seq), b - a + 1);
          out.push({
            kind: OpKind.Ins,
            field: name,
            text: rest.slice(0, be),
            left: a > s.seq ? this.idOf(r, a - 1) : this.idOf(s.ar, s.as),
            right: this.idOf(s.br, s.bs),
          });
          break;
        }
        case OpKind.Del: {
          const k = a - s.seq;
          const ts = s.back ? s.as - k : s.as + k;
          out.push({ kind: OpKind.Del, field: name, target: { replica: this.replicas[s.ar], seq: ts }, count: b - a + 1, backward: s.back && b > a });
          break;
        }
        case OpKind.Add:
          for (let k = a; k <= b; k++) out.push({ kind: OpKind.Add, field: name, delta: s.delta });
          break;
        case OpKind.Set:
          out.push({ kind: OpKind.Set, field: name, value: s.value!.slice() });
          break;
      }
    }
    return out;
  }

  // ---- anchors ----

  /** An anchor for rune position index of a text (see crdt.AnchorAt). */
  anchorAt(name: string, index: number, side: Side): Anchor {
    const f = this.field(name, FieldType.Text, false);
    const n = f ? f.text!.vis : 0;
    if (index < 0 || index > n) throw new OutOfRangeError(`anchor at ${index} in text ${JSON.stringify(name)} of length ${n}`);
    if (side === Side.Before) {
      if (index === n) return { id: null, side: Side.After };
      const t = f!.text!;
      const [li, i, k] = t.visAt(index);
      const it = t.leaves[li].items[i];
      return { id: { replica: this.replicas[it.r], seq: it.seq + k }, side: Side.Before };
    }
    if (index === 0) return { id: null, side: Side.Before };
    const t = f!.text!;
    const [li, i, k] = t.visAt(index - 1);
    const it = t.leaves[li].items[i];
    return { id: { replica: this.replicas[it.r], seq: it.seq + k }, side: Side.After };
  }

  /** The current rune position of an anchor (a deleted character's: where it would be). */
  indexOf(name: string, a: Anchor): number {
    const f = this.field(name, FieldType.Text, false);
    if (!a.id || a.id.seq === 0) return a.side === Side.After && f ? f.text!.vis : 0;
    const r = this.rindex.get(a.id.replica);
    if (!f || r === undefined || !f.text!.locate(r, a.id.seq)) throw new OutOfRangeError(`anchor ${a.id.replica.slice(0, 8)}@${a.id.seq} is not a character of text ${JSON.stringify(name)}`);
    const [pos, visible] = f.text!.visIndex(r, a.id.seq);
    return visible && a.side === Side.After ? pos + 1 : pos;
  }

  /** Renders every field, one line each, sorted (as Go's Doc.Describe). */
  /**
   * @internal _fromState builds a document from a decoded snapshot state
   * (src/snapshot.ts), as crdt.FromState does: the logs are taken as they
   * are and each text is laid out from its items in document order, with
   * every index, length and reference checked first. Nothing is replayed.
   */
  static _fromState(s: DocState, replica: ReplicaID, clock: Clock, opts: DocOptions = {}): Doc {
    if (s.logs.length !== s.replicas.length || s.texts.length !== s.fields.length) badState("table sizes disagree");
    const d = new Doc(replica, clock, opts);
    const rmap: number[] = [];
    for (const r of s.replicas) {
      if (/^0+$/.test(r)) badState("zero replica id");
      if (d.rindex.has(r) && r !== replica) badState(`replica ${r} listed twice`);
      rmap.push(d.replicaIndex(r));
    }
    for (const f of s.fields) {
      try {
        checkName(f.name);
      } catch {
        badState(`bad field name ${JSON.stringify(f.name)}`);
      }
      if (f.type < FieldType.Counter || f.type > FieldType.Text) badState(`bad field ${JSON.stringify(f.name)} type ${f.type}`);
      if (d.fieldLookup(f.name, f.type, false)) badState(`field ${JSON.stringify(f.name)} listed twice`);
      d.fieldLookup(f.name, f.type, true);
    }
    // Each stage is a function of its own, small and called with the same
    // shapes every time: a snapshot is usually decoded once, so what counts
    // is how fast the code runs before the engine has optimized it much,
    // and small functions are optimized sooner (and more cheaply) than one
    // large one.
    const fields = d.fields;
    const content = s.content;
    const region = new Region();
    let off = 0;
    let sets = 0;
    for (let si = 0; si < s.logs.length; si++) {
      const lg = d.logs[rmap[si]];
      startFirstRegion(region, content, off, s.logs[si].spans);
      off = stateSpans(s.logs[si].spans, lg, rmap, fields, content, off, region);
      const ls = lg.spans[lg.spans.length - 1];
      lg.next = ls ? ls.seq + ls.n : 1;
      stateTimes(s.logs[si].times, lg);
      sets += lg.sets;
    }
    if (off !== content.length) badState("content length disagrees with the log");
    d.contentLen = off;
    for (let fi = 0; fi < s.texts.length; fi++) {
      const f = fields[fi];
      if (f.type !== FieldType.Text) {
        if (s.texts[fi].length !== 0) badState("items for a non-text field");
        continue;
      }
      const t = f.text!;
      const lay = new Layout(d.logs.length);
      stateText(s.texts[fi], f, d.logs, rmap, lay);
      if (lay.leaves[0].items.length > 0) t.leaves = lay.leaves;
      for (const lf of lay.leaves) {
        t.raw += lf.raw;
        t.vis += lf.vis;
        t.vis16 += lf.vis16;
      }
      for (let r = 0; r < d.logs.length; r++) {
        if (lay.byReplica[r].length === 0) continue;
        while (t.runs.length <= r) t.runs.push([]);
        t.runs[r] = stateRuns(lay.byReplica[r], lay.spanOf[r], d.logs[r].spans.length);
      }
    }
    // Every insert must have its characters in the text, every reference
    // must name characters of the right field; counters and registers are
    // recomputed.
    for (let r = 0; r < d.logs.length; r++) if (d.logs[r].spans.length > 0) checkSpans(d.logs[r].spans, r);
    if (sets > 0) {
      for (let r = 0; r < d.logs.length; r++) {
        const sp = d.logs[r].spans;
        for (let j = 0; j < sp.length; j++) {
          const x = sp[j];
          if (x.kind !== OpKind.Set) continue;
          const w: RegState = { t: d.timeAt(r, x.seq), r, seq: x.seq, value: x.value! };
          if (!x.field.reg || d.regLess(x.field.reg, w)) x.field.reg = w;
        }
      }
    }
    for (const lg of d.logs) {
      lg.sets = 0;
      const n = lg.times.length;
      // Stored history is not a remote claim: witness it without the
      // offset check, so local changes are ordered after it.
      if (n > 0) clock.witness(lastTime(lg.times[n - 1]));
    }
    return d;
  }

  describe(): string {
    let out = "";
    for (const f of this.fieldList()) {
      if (f.type === FieldType.Text) out += `text ${f.name}=${JSON.stringify(this.text(f.name))}\n`;
      else if (f.type === FieldType.Counter) out += `counter ${f.name}=${this.counter(f.name)}\n`;
      else {
        const v = this.register(f.name);
        out += `register ${f.name}=${v ? Array.from(v, (b) => b.toString(16).padStart(2, "0")).join("") : ""} set=${!!v}\n`;
      }
    }
    return out;
  }

  /** @internal for Plan */
  _clockCheck(t: Timestamp): void {
    this.clock.check(t);
  }

  /** @internal for Plan: the time of seq of replica r, if the document holds it. */
  _timeOf(r: ReplicaID, seq: number): Timestamp | undefined {
    const i = this.rindex.get(r);
    if (i === undefined) return undefined;
    const lg = this.logs[i];
    if (seq >= lg.next || lg.times.length === 0) return undefined;
    return this.timeAt(i, seq);
  }
}

/** Tx is a local transaction: its edits become one change with one time. */
export class Tx {
  time?: Timestamp;
  private open = true;
  private ops = 0; // operations its change holds at most (MAX_CHANGE_OPS)
  constructor(
    private readonly d: Doc,
    readonly first: number,
  ) {}

  private check(): void {
    if (!this.open) throw new Error("crdt: transaction already finished");
  }
  /** Inserts s at rune position pos of text field name. */
  insert(name: string, pos: number, s: string): this {
    this.check();
    const n = s === "" ? 0 : 1;
    this.room(n);
    this.d._insert(this, name, pos, s);
    this.ops += n;
    return this;
  }
  /** Deletes n runes from rune position pos of text field name. */
  delete(name: string, pos: number, n: number): this {
    this.check();
    const runs = this.d._deleteRuns(name, pos, n, MAX_CHANGE_OPS - this.ops + 1);
    this.room(runs);
    this.d._delete(this, name, pos, n);
    this.ops += runs;
    return this;
  }
  /** Adds delta (non-zero) to counter field name. */
  add(name: string, delta: number | bigint): this {
    this.check();
    this.room(1);
    this.d._add(this, name, BigInt(delta));
    this.ops++;
    return this;
  }
  /** Writes one msgpack-encoded value to register field name. */
  set(name: string, value: Uint8Array): this {
    this.check();
    this.room(1);
    this.d._set(this, name, value);
    this.ops++;
    return this;
  }
  /** room refuses, before anything changes, n more ops past MAX_CHANGE_OPS. */
  private room(n: number): void {
    if (this.ops + n > MAX_CHANGE_OPS) throw new ChangeFullError();
  }
  commit(): void {
    if (!this.open) return;
    this.open = false;
    this.d._endTx(this);
  }
}

function checkName(name: string): void {
  if (name === "" || utf8Len(name) > MAX_FIELD_NAME || !isWellFormed(name)) throw new FieldTypeError(`field name must be 1..${MAX_FIELD_NAME} bytes of UTF-8`);
}

function isWellFormed(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdfff) {
      if (c > 0xdbff || i + 1 >= s.length) return false;
      const d = s.charCodeAt(i + 1);
      if (d < 0xdc00 || d > 0xdfff) return false;
      i++;
    }
  }
  return true;
}

function checkShape(c: Change): string | null {
  if (!c.replica || /^0+$/.test(c.replica)) return "zero replica id";
  if (!Number.isInteger(c.seq) || c.seq === 0) return "seq 0";
  if (c.ops.length === 0) return "no ops";
  let n = 0;
  for (let i = 0; i < c.ops.length; i++) {
    const op = c.ops[i];
    if (op.field === "" || utf8Len(op.field) > MAX_FIELD_NAME || !isWellFormed(op.field)) return `op ${i}: field name must be 1..${MAX_FIELD_NAME} bytes of UTF-8`;
    switch (op.kind) {
      case OpKind.Add:
        if (op.delta === 0n) return `op ${i}: counter delta 0`;
        break;
      case OpKind.Set:
        try {
          checkMsgpack(op.value);
        } catch (e) {
          return `op ${i}: register value: ${(e as Error).message}`;
        }
        break;
      case OpKind.Ins:
        if (op.text === "" || !isWellFormed(op.text)) return `op ${i}: inserted text must be non-empty UTF-8`;
        if ((op.left?.seq ?? 0) > MAX_SEQ || (op.right?.seq ?? 0) > MAX_SEQ) return `op ${i}: origin seq out of range`;
        break;
      case OpKind.Del:
        if (op.count === 0 || op.target.seq === 0 || op.target.seq > MAX_SEQ || op.count > MAX_SEQ) return `op ${i}: bad delete target or count`;
        if (op.backward && op.count > op.target.seq) return `op ${i}: backward delete runs below seq 1`;
        if (!op.backward && op.target.seq + op.count - 1 > MAX_SEQ) return `op ${i}: delete runs past the largest seq`;
        break;
      default:
        return `op ${i}: unknown kind ${(op as Op).kind}`;
    }
    n += opLenOf(op);
    if (n > MAX_SEQ) return "change too long";
  }
  if (c.seq + n - 1 > MAX_SEQ) return `seq ${c.seq}+${n} past the largest seq`;
  return null;
}

function opLenOf(op: Op): number {
  return op.kind === OpKind.Ins ? runeCount(op.text) : op.kind === OpKind.Del ? op.count : 1;
}

// ---- the origin check's closures (crdt/document.go's closure) ----

/** The closures a Doc keeps: those of the replicas inserting among concurrent inserts now, not one per writer it ever had. */
const MAX_CLOSURES = 32;

/**
 * Closure is what a set of changes depends on: known[r] the highest seq of
 * replica r depended on (every lower one too: a replica's ops depend on its
 * earlier ones), done[r] how far r's ops have had their own dependencies
 * added.
 */
class Closure {
  known = new Map<number, number>();
  done = new Map<number, number>();
  get(r: number): number {
    return this.known.get(r) ?? 0;
  }
}

function idString(id: ID | null): string {
  return id && id.seq !== 0 ? `${id.replica.slice(0, 8)}@${id.seq}` : "none";
}

// ---- planning a batch (crdt/apply.go's plan) ----

interface PlanRange {
  lo: number;
  hi: number;
  name: string;
}

const WAIT = Symbol("wait");

interface PlanReplica {
  next: number;
  inserts: PlanRange[];
  base: number;
  /** The time and first seq of the replica's last ready change. */
  lastT: Timestamp;
  lastStart: number;
}

class Plan {
  adv = new Map<ReplicaID, PlanReplica>();
  ready: Change[] = [];
  waiting: Change[] = [];
  dropped = 0;
  constructor(
    private d: Doc,
    private trusted = false,
  ) {}

  private nextSeq(r: ReplicaID): number {
    return this.adv.get(r)?.next ?? this.d._nextSeqOf(r);
  }

  /**
   * run plans the changes in time order (a stable sort, when they are not
   * in it): every change is stamped after what it depends on (checkTimes),
   * so its dependencies in the batch come before it.
   */
  run(changes: readonly Change[], drop: boolean): void {
    let todo: Change[] = changes.slice();
    let sorted = true;
    for (let i = 1; i < todo.length && sorted; i++) if (todo[i].time < todo[i - 1].time) sorted = false;
    if (!sorted) todo.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0));
    for (;;) {
      const later: Change[] = [];
      let progress = false;
      for (let c of todo) {
        const next = this.nextSeq(c.replica);
        const n = changeLenOf(c);
        if (c.seq + n <= next) continue; // duplicate
        if (c.seq > next) {
          later.push(c);
          continue;
        }
        const from = c.seq; // where the change starts as sent
        if (c.seq < next) c = trimChange(c, next - c.seq);
        const err = this.validate(c, from);
        if (err === WAIT) {
          later.push(c);
          continue;
        }
        if (err) {
          if (drop) {
            this.dropped++;
            continue;
          }
          throw err;
        }
        this.accept(c);
        progress = true;
      }
      todo = later;
      if (!progress || todo.length === 0) break;
    }
    this.waiting = todo;
  }

  /**
   * validate: from is the first seq of c as it was sent, below c.seq when c
   * is what is left of a change the document holds in part (its first
   * seqs, which carry c's time).
   */
  private validate(c: Change, from: number): Error | typeof WAIT | null {
    let err: string | typeof WAIT | null = this.check(c);
    if (err === WAIT) return WAIT;
    if (!err && !this.trusted) err = this.checkTimes(c, from);
    if (err) return new InvalidChangeError(`change ${c.replica.slice(0, 8)}@${c.seq}: ${err}`);
    if (this.trusted) return null;
    try {
      this.d._clockCheck(c.time);
    } catch (e) {
      if (e instanceof ClockSkewError) return e;
      throw e;
    }
    return null;
  }

  /**
   * checkTimes: c must be stamped after its replica's previous change and
   * after every character it references outside itself (Go: ErrBackdated),
   * which keeps "the changes stamped ≤ T" causally closed. c was sent
   * starting at seq from: everything from there is c's own.
   */
  private checkTimes(c: Change, from: number): string | null {
    if (from > 1) {
      const t = this.timeOf(c.replica, from - 1);
      if (t !== undefined && c.time <= t) return `change stamped before what it follows: stamped ${c.time}, its replica's previous change ${t}`;
    }
    for (let i = 0; i < c.ops.length; i++) {
      const op = c.ops[i];
      let e: string | null = null;
      if (op.kind === OpKind.Ins) {
        e = this.refTime(c, from, op.left, 1, false) ?? this.refTime(c, from, op.right, 1, false);
        if (e) return `op ${i} origin: ${e}`;
      } else if (op.kind === OpKind.Del) {
        e = this.refTime(c, from, op.target, op.count, op.backward);
        if (e) return `op ${i} target: ${e}`;
      }
    }
    return null;
  }

  private refTime(c: Change, from: number, id: ID | null, n: number, back: boolean): string | null {
    if (!id || id.seq === 0) return null;
    let top = back ? id.seq : id.seq + n - 1;
    if (id.replica === c.replica && top >= from) {
      if (back || id.seq >= from) return null; // c's own characters (check made sure of that)
      top = from - 1; // the rest: c's replica's previous change
    }
    const t = this.timeOf(id.replica, top);
    if (t !== undefined && c.time <= t) return `change stamped before what it follows: stamped ${c.time}, the character it names ${t}`;
    return null;
  }

  private timeOf(r: ReplicaID, seq: number): Timestamp | undefined {
    const a = this.adv.get(r);
    if (a && seq >= a.base) return seq >= a.lastStart ? a.lastT : 0n;
    return this.d._timeOf(r, seq);
  }

  private accept(c: Change): void {
    let a = this.adv.get(c.replica);
    if (!a) {
      a = { next: c.seq, inserts: [], base: c.seq, lastT: c.time, lastStart: c.seq };
      this.adv.set(c.replica, a);
    }
    a.lastT = c.time;
    a.lastStart = c.seq;
    let seq = c.seq;
    for (const op of c.ops) {
      const n = opLenOf(op);
      if (op.kind === OpKind.Ins) {
        const last = a.inserts[a.inserts.length - 1];
        if (last && last.hi === seq && last.name === op.field) last.hi = seq + n;
        else a.inserts.push({ lo: seq, hi: seq + n, name: op.field });
      }
      seq += n;
    }
    a.next = seq;
    this.ready.push(c);
  }

  private check(c: Change): string | typeof WAIT | null {
    let seq = c.seq;
    const own: PlanRange[] = [];
    for (let i = 0; i < c.ops.length; i++) {
      const op = c.ops[i];
      if (op.kind === OpKind.Ins) {
        for (const id of [op.left, op.right]) {
          if (!id || id.seq === 0) continue;
          const e = this.isChar(id, 1, false, op.field, c, own, seq);
          if (e === WAIT) return e;
          if (e) return `op ${i} origin ${id.replica.slice(0, 8)}@${id.seq}: ${e}`;
        }
        own.push({ lo: seq, hi: seq + opLenOf(op), name: op.field });
      } else if (op.kind === OpKind.Del) {
        const e = this.isChar(op.target, op.count, op.backward, op.field, c, own, seq);
        if (e === WAIT) return e;
        if (e) return `op ${i} target ${op.target.replica.slice(0, 8)}@${op.target.seq}+${op.count}: ${e}`;
      }
      seq += opLenOf(op);
    }
    return null;
  }

  private isChar(id: ID, n: number, back: boolean, name: string, c: Change, own: PlanRange[], opSeq: number): string | typeof WAIT | null {
    let lo = id.seq, hi = id.seq + n;
    if (back) {
      lo = id.seq - n + 1;
      hi = id.seq + 1;
    }
    const notChar = `not a character of text ${JSON.stringify(name)}`;
    if (id.replica === c.replica && hi > c.seq) {
      if (hi > opSeq) return "refers to the change's own later ops";
      if (!coveredBy(own, Math.max(lo, c.seq), hi, name)) return notChar;
      hi = Math.max(lo, c.seq);
    }
    if (lo >= hi) return null;
    const docNext = this.d._nextSeqOf(id.replica);
    const a = this.adv.get(id.replica);
    const next = a ? a.next : docNext;
    if (hi > next) return WAIT;
    let fromDoc = hi;
    if (hi > docNext) {
      const from = Math.max(lo, docNext);
      if (!a || !coveredBy(a.inserts, from, hi, name)) return notChar;
      fromDoc = from;
    }
    if (lo >= fromDoc) return null;
    if (!this.d._covered(name, id.replica, lo, fromDoc)) return notChar;
    return null;
  }
}

function changeLenOf(c: Change): number {
  let n = 0;
  for (const op of c.ops) n += opLenOf(op);
  return n;
}

function coveredBy(rs: PlanRange[], lo: number, hi: number, name: string): boolean {
  // The first range ending after lo (ranges are sorted and disjoint).
  let i = 0;
  let j = rs.length;
  while (i < j) {
    const m = (i + j) >> 1;
    if (rs[m].hi > lo) j = m;
    else i = m + 1;
  }
  while (lo < hi) {
    if (i >= rs.length || rs[i].lo > lo || rs[i].name !== name) return false;
    lo = rs[i].hi;
    i++;
  }
  return true;
}

function trimChange(c: Change, k: number): Change {
  // NB: the left origin of a cut insert is the character just before its
  // first kept one. (Go's trimChange takes c.Seq+k-1, which is that
  // character only when the cut falls in the change's first op.)
  let ops = c.ops.slice();
  let opStart = c.seq;
  while (k > 0) {
    const op = ops[0];
    const n = opLenOf(op);
    if (n <= k) {
      ops.shift();
      k -= n;
      opStart += n;
      continue;
    }
    let cut: Op;
    if (op.kind === OpKind.Ins) {
      cut = { ...op, left: { replica: c.replica, seq: opStart + k - 1 }, text: op.text.slice(runeOffset(op.text, n, k)) };
    } else if (op.kind === OpKind.Del) {
      cut = { ...op, target: { replica: op.target.replica, seq: op.backward ? op.target.seq - k : op.target.seq + k }, count: op.count - k };
    } else cut = op;
    ops = [cut, ...ops.slice(1)];
    k = 0;
  }
  const total = changeLenOf(c);
  const rest = ops.reduce((s, op) => s + opLenOf(op), 0);
  return { replica: c.replica, seq: c.seq + total - rest, time: c.time, ops };
}

const utf8Strict = new TextDecoder("utf-8", { fatal: true });

/** Decodes UTF-8, refusing invalid input; ASCII without a TextDecoder call. */
function utf8Text(b: Uint8Array): string {
  if (b.length <= 32) {
    let ascii = true;
    for (let i = 0; i < b.length; i++) if (b[i] >= 0x80) ascii = false;
    if (ascii) return String.fromCharCode.apply(null, b as unknown as number[]);
  }
  return utf8Strict.decode(b);
}

// ---- building a document from a snapshot's state (Doc._fromState) ----

function badState(msg: string): never {
  throw new InvalidChangeError(`snapshot: ${msg}`);
}

/**
 * The inserted text being sliced: decoded a region at a time (the content
 * between register values) rather than span by span, one TextDecoder call
 * for the whole region, each span's string then a slice of it, found by
 * counting its bytes. A region that is not valid UTF-8 falls back to
 * decoding span by span, which says which span is bad.
 */
class Region {
  text = "";
  end = -1;
  ascii = false;
  /** UTF-16 units of text already sliced. */
  u16 = 0;
}

/**
 * stateSpans appends one replica's spans, checked, to its log lg (empty),
 * their content read from off; returns the offset after their content.
 */
function stateSpans(spans: StateSpans, lg: RLog, rmap: number[], fields: Field[], content: Uint8Array, off: number, reg: Region): number {
  const SN = spans.n, SF = spans.field, SK = spans.kind, SB = spans.bytes, SAR = spans.ar, SAS = spans.as, SBR = spans.br, SBS = spans.bs, BACK = spans.back;
  const ns = spans.length;
  // A fresh array of this literal's own: the engine learns that it holds
  // spans (an object's elements kind) and allocates it so from the start.
  const out: Span[] = [];
  lg.spans = out;
  const nrep = rmap.length;
  let seq = 1;
  for (let j = 0; j < ns; j++) {
    const spN = SN[j], spField = SF[j], spKind = SK[j] as OpKind, spBytes = SB[j];
    if (spN === 0 || seq + spN > MAX_SEQ || spField >= fields.length || fieldTypeOf(spKind) !== fields[spField].type) badState("bad span");
    const field = fields[spField];
    const end = off + spBytes;
    if (end > content.length) badState("span content past the end");
    let ar = 0, as = 0, br = 0, bs = 0;
    if (SAS[j] !== 0) {
      if (SAR[j] >= nrep) badState("bad reference");
      ar = rmap[SAR[j]];
      as = SAS[j];
    } else if (SAR[j] !== 0) badState("bad reference");
    if (SBS[j] !== 0) {
      if (SBR[j] >= nrep) badState("bad reference");
      br = rmap[SBR[j]];
      bs = SBS[j];
    } else if (SBR[j] !== 0) badState("bad reference");
    const back = BACK[j] === 1;
    const delta = spKind === OpKind.Add ? spans.delta[j] : 0n;
    const x: Span = { seq, n: spN, field, kind: spKind, back, off, nb: spBytes, ar, as, br, bs, delta, text: "" };
    switch (spKind) {
      case OpKind.Ins:
        x.text = insertText(content, off, end, spN, j, spans, reg);
        break;
      case OpKind.Set: {
        const b = content.subarray(off, end);
        if (spN !== 1) badState("bad register value");
        try {
          checkMsgpack(b);
        } catch {
          badState("bad register value");
        }
        x.value = b.slice();
        lg.sets++;
        break;
      }
      case OpKind.Add:
        if (delta === 0n || spBytes !== 0) badState("bad counter span");
        break;
      case OpKind.Del:
        if (spBytes !== 0 || as === 0 || (back && as < spN) || as + spN > MAX_SEQ) badState("bad delete span");
        break;
    }
    out.push(x);
    off = end;
    seq += spN;
  }
  return off;
}

/** Decodes the region of inserted text that starts with insert span j, at off. */
function startRegion(reg: Region, content: Uint8Array, off: number, spans: StateSpans, j: number): void {
  const SK = spans.kind, SB = spans.bytes;
  let e = off;
  for (let k = j; k < spans.length && SK[k] !== OpKind.Set; k++) if (SK[k] === OpKind.Ins) e += SB[k];
  reg.end = Math.min(e, content.length);
  reg.u16 = 0;
  try {
    reg.text = utf8Strict.decode(content.subarray(off, reg.end));
  } catch {
    reg.text = "";
    reg.end = -1;
  }
  // One UTF-16 unit per byte only when every byte is ASCII.
  reg.ascii = reg.text.length === reg.end - off;
}

/**
 * Starts the region of a log's first insert before its spans are read, as
 * insertText would on reaching it: insertText then starts regions only
 * after register values, and its optimized code is not dropped at the
 * first insert of the next decode (code that ran only on the very first
 * call has no type feedback).
 */
function startFirstRegion(reg: Region, content: Uint8Array, off: number, spans: StateSpans): void {
  const SK = spans.kind, SB = spans.bytes;
  for (let j = 0; j < spans.length; j++) {
    if (SK[j] === OpKind.Ins) {
      if (off >= reg.end) startRegion(reg, content, off, spans, j);
      return;
    }
    off += SB[j];
  }
}

/** The text of insert span j (content[off:end], n characters). */
function insertText(content: Uint8Array, off: number, end: number, n: number, j: number, spans: StateSpans, reg: Region): string {
  if (off >= reg.end) startRegion(reg, content, off, spans, j);
  const nb = end - off;
  let t: string;
  let runes = 0;
  if (reg.ascii && reg.end >= end) {
    t = reg.text.slice(reg.u16, reg.u16 + nb);
    reg.u16 += nb;
    runes = nb;
  } else if (reg.end >= end) {
    // Runes and UTF-16 units of the span's bytes; it must start and end
    // on character boundaries.
    let n16 = 0;
    for (let i = off; i < end; i++) {
      const c = content[i];
      if (c < 0x80) {
        n16++;
        runes++;
      } else if (c >= 0xc0) {
        n16 += c >= 0xf0 ? 2 : 1;
        runes++;
      } else if (i === off) badState("insert content is not UTF-8");
    }
    if (end < reg.end && (content[end] & 0xc0) === 0x80) badState("insert content is not UTF-8");
    t = reg.text.slice(reg.u16, reg.u16 + n16);
    reg.u16 += n16;
  } else {
    t = "";
    try {
      t = utf8Strict.decode(content.subarray(off, end));
    } catch {
      badState("insert content is not UTF-8");
    }
    runes = runeCount(t);
  }
  if (runes !== n) badState("insert content does not match its length");
  return t;
}

/** stateTimes sets the time runs of lg (its spans already set). */
function stateTimes(times: StateTime[], lg: RLog): void {
  const seq = lg.next;
  let tseq = 1;
  for (let j = 0; j < times.length; j++) {
    const tr = times[j];
    if (tr.n === 0 || tseq + tr.n > seq) badState("time runs do not match the log");
    lg.times.push({ seq: tseq, n: tr.n, stepped: tr.stepped, t: tr.t });
    tseq += tr.n;
  }
  if (tseq !== seq) badState("time runs do not cover the log");
}

/** The index of the span of spans holding seq (which the log holds). */
function spanAt(spans: Span[], seq: number): number {
  let lo = 0, hi = spans.length;
  while (lo < hi) {
    const m = (lo + hi) >> 1;
    const x = spans[m];
    if (x.seq + x.n > seq) hi = m;
    else lo = m + 1;
  }
  return lo;
}

/** A text being laid out from a snapshot's items (stateText). */
class Layout {
  /** Begun with its first leaf, so that it only ever holds leaves. */
  leaves: Leaf[] = [new Leaf()];
  /** Per replica: its items in document order, and the span of each. */
  byReplica: Item[][] = [];
  spanOf: number[][] = [];
  constructor(nrep: number) {
    for (let r = 0; r < nrep; r++) {
      // Created holding objects: a fresh [] would change its elements kind
      // at its first push, in stateText's loop, and that drops the loop's
      // optimized code (this constructor runs too rarely for the engine
      // to learn the kind from it).
      const its = [NO_ITEM];
      its.pop();
      this.byReplica.push(its);
      this.spanOf.push([]);
    }
  }
}

const NO_ITEM = new Item(0, 0, 0, "", false, 0, 0, 0, 0);

/**
 * stateText lays out the text of field f from its items in document
 * order, each exactly characters its replica inserted into that field,
 * cut where spans change so that an item's characters share their origins
 * (the first's left origin is its span's, or its predecessor; the right
 * origin is the span's). The caller builds the id index.
 */
function stateText(items: StateItems, f: Field, logs: RLog[], rmap: number[], lay: Layout): void {
  const IR = items.r, IS = items.seq, IN = items.n, ID = items.del;
  const leaves = lay.leaves, byReplica = lay.byReplica, spanOf = lay.spanOf;
  // The span the last item of each replica came from: characters typed in
  // order come from consecutive spans, so most lookups need no search.
  const last = new Int32Array(logs.length);
  let l = leaves[0];
  const full = (LEAF_CAP * 3) >> 2;
  for (let ii = 0; ii < items.length; ii++) {
    const siR = IR[ii];
    const del = ID[ii] === 1;
    if (siR >= rmap.length || IN[ii] === 0) badState("bad item");
    const r = rmap[siR];
    const lg = logs[r];
    const spans = lg.spans;
    let seq = IS[ii];
    let n = IN[ii];
    while (n > 0) {
      if (seq === 0 || seq >= lg.next) badState("item names unknown ids");
      let spi = last[r];
      let sp = spans[spi];
      if (seq < sp.seq || seq >= sp.seq + sp.n) {
        spi++;
        sp = spans[spi];
        if (!sp || seq < sp.seq || seq >= sp.seq + sp.n) {
          spi = spanAt(spans, seq);
          sp = spans[spi];
        }
      }
      last[r] = spi;
      if (sp.kind !== OpKind.Ins || sp.field !== f) badState("item is not an insert of its field");
      const k = seq - sp.seq;
      const left = sp.n - k;
      const m = n < left ? n : left;
      const st = sp.text;
      let text: string;
      if (k === 0 && m === sp.n) text = st;
      else if (st.length === sp.n) text = st.slice(k, k + m);
      else text = st.slice(runeOffset(st, sp.n, k), m === left ? st.length : runeOffset(st, sp.n, k + m));
      const it = k === 0 ? new Item(r, seq, m, text, del, sp.ar, sp.as, sp.br, sp.bs) : new Item(r, seq, m, text, del, r, seq - 1, sp.br, sp.bs);
      if (l.items.length >= full) {
        l = new Leaf();
        l.idx = leaves.length;
        leaves.push(l);
      }
      it.leaf = l;
      l.items.push(it);
      l.raw += m;
      if (!del) {
        l.vis += m;
        l.vis16 += text.length;
      }
      byReplica[r].push(it);
      spanOf[r].push(spi);
      seq += m;
      n -= m;
    }
  }
}

/**
 * The id index of one replica's items (in document order, with the span
 * of each): its items sorted by seq, contiguous ones in one run. Sorted
 * without comparisons: the characters of one span are in document order
 * in seq order (each follows its left origin, its predecessor), so
 * bucketing the items by span (spans are in seq order) sorts them. A
 * corrupt order shows up as overlap.
 */
function stateRuns(inDoc: Item[], so: number[], nspans: number): Run[] {
  // One loop a function, so that the code each loop's optimized version
  // was compiled from has type feedback for all of it.
  const start = new Int32Array(nspans + 1);
  countSpans(so, start);
  prefixSums(start);
  return runsOf(bucketed(inDoc, so, start));
}

function countSpans(so: number[], start: Int32Array): void {
  for (let k = 0; k < so.length; k++) start[so[k] + 1]++;
}

function prefixSums(start: Int32Array): void {
  for (let k = 1; k < start.length; k++) start[k] += start[k - 1];
}

/** The items in the order of their spans (start: where each span's go). */
function bucketed(inDoc: Item[], so: number[], start: Int32Array): Item[] {
  const its = inDoc.slice();
  for (let k = 0; k < inDoc.length; k++) its[start[so[k]]++] = inDoc[k];
  return its;
}

/** The runs of items sorted by seq. */
function runsOf(its: Item[]): Run[] {
  // Each run's pieces are sliced at their exact length (pushing one at a
  // time would leave most of them with room for 17).
  const runs: Run[] = [];
  for (let a = 0; a < its.length; ) {
    const first = its[a];
    let end = first.seq + first.n;
    let b = a + 1;
    for (; b < its.length; b++) {
      const it = its[b];
      if (it.seq < end) badState("characters listed twice");
      if (it.seq !== end) break;
      end += it.n;
    }
    const run = new Run(first.seq, end, b === a + 1 ? [first] : its.slice(a, b));
    for (let k = a; k < b; k++) its[k].run = run;
    runs.push(run);
    a = b;
  }
  return runs;
}

/** Checks that the inserts and references of replica r's spans are characters of their texts; sums counters. */
function checkSpans(spans: Span[], r: number): void {
  for (let j = 0; j < spans.length; j++) {
    const sp = spans[j];
    switch (sp.kind) {
      case OpKind.Ins: {
        const t = sp.field.text!;
        if (!t.covered(r, sp.seq, sp.seq + sp.n)) badState("inserted characters missing from the text");
        if (sp.as !== 0 && !t.covered(sp.ar, sp.as, sp.as + 1)) badState("origin is not a character of its text");
        if (sp.bs !== 0 && !t.covered(sp.br, sp.bs, sp.bs + 1)) badState("origin is not a character of its text");
        break;
      }
      case OpKind.Del: {
        const lo = sp.back ? sp.as - sp.n + 1 : sp.as;
        if (!sp.field.text!.covered(sp.ar, lo, lo + sp.n)) badState("delete target is not a character of its text");
        break;
      }
      case OpKind.Add:
        sp.field.counter += sp.delta * BigInt(sp.n);
        break;
    }
  }
}
