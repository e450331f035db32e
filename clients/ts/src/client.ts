// Client: one WebSocket to a weft server carrying any number of open
// documents (docs/PROTOCOL.md). Each Document holds a replica (Doc) that
// local edits change at once, online or offline. Every document writes
// with the client's one replica id, kept in the store and declared in
// hello, so that the server binds it to the user at the first write and
// refuses it to anyone else (PROTOCOL.md section 4, hello). The client keeps it in
// sync with the server by version vector, resends what was not acked,
// reconnects with exponential backoff and full jitter, re-stamps after a
// clock_skew refusal, and reports saved state, presence, statuses and
// close codes as typed events.
//
// Sync per document and connection (the client role of docs/PROTOCOL.md
// section 7a): subscribe with the replica's version (in version_part
// messages first when it exceeds a frame); apply the catch-up
// (changes…, version parts…, then sync); count own changes the sync's
// (durable) version, its parts included, covers as saved; then send as
// update batches whatever the server lacks (doc.changesSince(what it
// has)), and every later local change the same way. A batch is remembered until acked: ok → saved; rate_limited,
// overloaded, internal, peer_timeout → forget the optimistic belief and
// resend after a backoff; pending_full, missing_deps → resubscribe;
// clock_skew → halt, wait for the outcome of the batches still in flight,
// re-stamp the own changes the server cannot hold and reconnect; anything
// else halts sending for that document with a DocumentError.
//
// A change the server may hold (sent in a batch whose outcome does not
// prove the server changed nothing) is never re-stamped: the server may
// have applied and fanned it out under its old time, and a second version
// of it (an LWW write that wins here and loses everywhere else) would
// never heal. docs/PROTOCOL.md section 6, clock_skew.

import { decodeChanges, encodeChanges, inflateBatch } from "./codec.js";
import { Doc, Tx } from "./doc.js";
import type { TextEvent } from "./doc.js";
import { Clock, wallOf } from "./hlc.js";
import { CloseCode, MAX_VERSION_ENTRIES, PROTOCOL_VERSION, Status, decodeMessage, encodeMessage, splitVersion, statusName } from "./protocol.js";
import type { Limits, Message, Selection } from "./protocol.js";
import type { Store } from "./store.js";
import { tokenAccess } from "./token.js";
import { changeLen, newReplica, vvMerge } from "./types.js";
import type { Anchor, Change, ReplicaID, VersionVector } from "./types.js";

type Listener<T> = (v: T) => void;

class Emitter<T> {
  private ls = new Set<Listener<T>>();
  on(fn: Listener<T>): () => void {
    this.ls.add(fn);
    return () => this.ls.delete(fn);
  }
  emit(v: T): void {
    for (const fn of [...this.ls]) {
      try {
        fn(v);
      } catch (e) {
        console.error("weft: listener failed", e);
      }
    }
  }
}

/** DocumentError: the server refused a document's batch or subscription. */
export class DocumentError extends Error {
  constructor(
    readonly doc: string,
    readonly status: number,
    readonly serverMessage: string,
  ) {
    super(`weft: ${doc}: ${statusName(status)}${serverMessage ? ": " + serverMessage : ""}`);
    this.name = "DocumentError";
  }
  get statusName(): string {
    return statusName(this.status);
  }
}

/** ConnectionError: the server closed the connection with a code the client cannot retry. */
export class ConnectionError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
  ) {
    super(`weft: connection closed: ${code}${reason ? " " + reason : ""}`);
    this.name = "ConnectionError";
  }
}

/** ReadOnlyError: an edit of a document the token grants read access only. */
export class ReadOnlyError extends Error {
  constructor(doc: string) {
    super(`weft: ${doc} is read-only`);
    this.name = "ReadOnlyError";
  }
}

export type ConnectionState = "connecting" | "connected" | "offline" | "closed";

export interface ClientOptions {
  /** ws:// or wss:// URL of the server's /v1/ws endpoint. */
  url: string;
  /** Auth token (empty against `weft serve --insecure`). */
  token?: string;
  /** Where documents persist (IndexedDBStore in a browser). Default: none. */
  store?: Store;
  /** The WebSocket constructor. Default: globalThis.WebSocket (pass `ws` in Node). */
  WebSocket?: any;
  /** Free text for the server's logs. Default: "weft-ts/0.1". */
  clientName?: string;
  /** First reconnect delay bound. Default: 250 ms. */
  backoffBaseMs?: number;
  /** Largest reconnect delay. Default: 30 s. */
  backoffCapMs?: number;
  /**
   * How long a connection stays open after its welcome (and, with documents
   * open, one subscribe answered) before the reconnect backoff starts over.
   * Default: 5 s (PROTOCOL.md section 5).
   */
  stableAfterMs?: number;
  /** Application ping period. Default: 15 s. */
  pingIntervalMs?: number;
  /** Time for any frame after a ping before the connection is given up. Default: 10 s. */
  pongTimeoutMs?: number;
  /** Ops per update batch. Default: 8192. */
  maxBatchOps?: number;
  /** Start offline (setOnline(true) connects). Default: false. */
  offline?: boolean;
  /**
   * The replica id every document writes with, declared in hello. Default:
   * the one kept in the store (kept there on first use), or a fresh one
   * without a store or while another tab writes with the kept one.
   */
  replica?: ReplicaID;
}

export interface PeerPresence {
  session: string;
  user: string;
  name: string;
  color: string;
  field: string;
  cursor: Anchor | null;
  selection: Selection | null;
  typing: boolean;
  state: Uint8Array | null;
  clock: number;
}

export interface LocalPresence {
  field?: string;
  cursor?: Anchor | null;
  selection?: Selection | null;
  typing?: boolean;
  state?: Uint8Array | null;
}

export interface RemoteChange {
  changes: Change[];
  /** Visible text changes, in order, field by field. */
  text: { field: string; event: TextEvent }[];
}

/** The replicas that Clients of this process write with, by store. */
const heldHere = new WeakMap<Store, Set<ReplicaID>>();

/**
 * holdReplica makes this client the one writer with the store's replica
 * (two writing with it would reuse sequence numbers): within the process,
 * and across the tabs of a browser, which share IndexedDB, by a Web Lock.
 * It returns the release, or null if another client or tab holds it.
 */
async function holdReplica(store: Store, replica: ReplicaID): Promise<(() => void) | null> {
  let here = heldHere.get(store);
  if (!here) heldHere.set(store, (here = new Set()));
  if (here.has(replica)) return null;
  here.add(replica);
  const unhold = () => here!.delete(replica);
  const locks = (globalThis as any).navigator?.locks;
  if (!locks) return unhold;
  const release = await new Promise<(() => void) | null>((resolve) => {
    locks
      .request(`weft:replica:${replica}`, { ifAvailable: true }, (lock: unknown) => {
        if (!lock) return resolve(null);
        return new Promise<void>((end) => resolve(end)); // held until released or the page goes
      })
      .catch(() => resolve(null));
  });
  if (!release) {
    unhold();
    return null;
  }
  return () => (unhold(), release());
}

const TRANSIENT = new Set<number>([Status.rateLimited, Status.overloaded, Status.internal, Status.peerTimeout]);
/**
 * Statuses of an ack that prove the server applied none of the batch (it
 * refused it before or in an atomic apply). Every other outcome (ok,
 * missing_deps: held in the pending buffer, internal: maybe applied before
 * the store failed, overloaded, peer_timeout: durable here, statuses this
 * client does not know) may leave the batch's changes with the server.
 */
const REFUSED_WHOLE = new Set<number>([
  Status.clockSkew, Status.invalid, Status.readOnly, Status.tooLarge, Status.rateLimited,
  Status.unauthorized, Status.notFound, Status.pendingFull,
]);
const RESYNC = new Set<number>([Status.pendingFull, Status.missingDeps]);
const TERMINAL_CLOSE = new Set<number>([CloseCode.authFailed, CloseCode.unsupportedVersion, CloseCode.replicaConflict]);
const PRESENCE_REFRESH_MS = 15_000;
/** How long no presence is sent after the server refused one over its rate. */
const PRESENCE_PAUSE_MS = 1_000;
/** Bytes a message adds around its version or change batch (tag, document id, batch id, headers). */
const FRAME_OVERHEAD = 512 + 64;
/** Encoded bytes of one message's version or change batch, at most (PROTOCOL.md section 7a, "Splitting"). */
const MAX_MESSAGE_BYTES = 256 << 10;

export class Client {
  readonly opts: Required<Omit<ClientOptions, "store" | "WebSocket" | "replica">> & Pick<ClientOptions, "store" | "WebSocket" | "replica">;
  private replicaV: ReplicaID = "";
  /** Resolves once replica is settled (read from the store). */
  readonly ready: Promise<void>;
  private unhold: (() => void) | null = null;
  private awaitingReplica = false;
  private ws: any = null;
  private docs = new Map<string, Document>();
  private stateV: ConnectionState = "connecting";
  private online: boolean;
  /** Reconnects since the last stable connection: the backoff's exponent. */
  private attempt = 0;
  private reconnectTimer: any = null;
  /** Set once the connection is up stableAfterMs after its welcome; cleared with the connection. */
  private stableTimer: any = null;
  private upLong = false;
  private sawSync = false;
  /** Documents with presence to send, in turn; the time the next may go; its timer. */
  private presenceQueue = new Set<Document>();
  private presenceNext = 0;
  private presenceTimer: any = null;
  private pingTimer: any = null;
  private deadline: any = null;
  private nonce = 0;
  private inbox: Promise<void> = Promise.resolve();
  /** Added to Date.now() for stamping (corrected after clock_skew). */
  wallOffset = 0;
  /** Local wall minus the server's at the last welcome (ms). */
  private lead = 0;
  limits: Limits | null = null;
  session = "";
  user = "";
  readonly onState = new Emitter<ConnectionState>();
  readonly onError = new Emitter<Error>();

  constructor(opts: ClientOptions) {
    this.opts = {
      token: "",
      clientName: "weft-ts/0.1",
      backoffBaseMs: 250,
      backoffCapMs: 30_000,
      stableAfterMs: 5_000,
      pingIntervalMs: 15_000,
      pongTimeoutMs: 10_000,
      maxBatchOps: 8192,
      offline: false,
      ...opts,
    };
    if (this.opts.replica || !this.opts.store) {
      this.replicaV = this.opts.replica || newReplica();
      this.ready = Promise.resolve();
    } else this.ready = this.settleReplica(this.opts.store);
    this.online = !this.opts.offline;
    if (this.online) this.connect();
    else this.setState("offline");
  }

  get state(): ConnectionState {
    return this.stateV;
  }

  /** The replica id every document writes with, declared in hello ("" until settled: see ready). */
  get replica(): ReplicaID {
    return this.replicaV;
  }

  /**
   * settleReplica takes the replica kept in the store, or keeps a new one
   * there; if another client or tab writes with it, this one writes with a
   * fresh id for its lifetime (its changes are stored and relayed all the
   * same, and declared in its own hellos).
   */
  private async settleReplica(store: Store): Promise<void> {
    let r = newReplica();
    try {
      const kept = await store.clientReplica(r);
      const unhold = await holdReplica(store, kept);
      if (unhold && this.stateV === "closed") unhold();
      else if (unhold) {
        this.unhold = unhold;
        r = kept;
      }
    } catch (e) {
      this.onError.emit(e as Error);
    }
    this.replicaV = r;
  }

  private setState(s: ConnectionState): void {
    if (this.stateV === s) return;
    this.stateV = s;
    this.onState.emit(s);
  }

  /** The wall clock documents stamp with. */
  wall = (): number => Date.now() + this.wallOffset;

  /** Goes offline (closes the socket, stops reconnecting) or back online. */
  setOnline(on: boolean): void {
    if (this.stateV === "closed" || on === this.online) return;
    this.online = on;
    if (on) {
      this.attempt = 0;
      this.connect();
    } else {
      this.dropSocket();
      this.setState("offline");
    }
  }

  /** Reconnects now if waiting for a backoff (the browser came back online). */
  reconnectNow(): void {
    if (this.online && this.reconnectTimer) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
      this.connect();
    }
  }

  /** Opens a document: loads it from the store, then syncs it while connected. */
  async open(id: string): Promise<Document> {
    if (this.stateV === "closed") throw new Error("weft: client closed");
    const have = this.docs.get(id);
    if (have) return have;
    const store = this.opts.store;
    await this.ready;
    const stored = store ? await store.load(id) : null;
    const existing = this.docs.get(id);
    if (existing) return existing;
    if ((this.stateV as ConnectionState) === "closed") throw new Error("weft: client closed");
    if (store && !stored) await store.init(id, this.replica);
    const d = new Document(this, id, this.replica);
    if (stored && stored.batches.length > 0) {
      const all: Change[] = [];
      for (const b of stored.batches) all.push(...decodeChanges(b));
      d.doc.applyTrusted(all);
      // A store written before the client replica holds the document's
      // own replica: its changes stay and count as ours until saved.
      d.loadedFromStore(stored.replica !== this.replica ? stored.replica : null);
    }
    this.docs.set(id, d);
    if (this.ws && this.stateV === "connected") d.subscribe();
    return d;
  }

  /** Closes a document: unsubscribes it. */
  closeDoc(d: Document): void {
    if (this.docs.get(d.id) !== d) return;
    this.docs.delete(d.id);
    if (this.stateV === "connected") this.send({ type: "unsubscribe", doc: d.id });
    d.closed = true;
  }

  /** Closes the client for good. */
  close(): void {
    if (this.stateV === "closed") return;
    this.online = false;
    this.dropSocket();
    this.setState("closed");
    this.unhold?.();
    this.unhold = null;
  }

  private connect(): void {
    this.reconnectTimer = null;
    if (!this.online) return;
    if (!this.replica) {
      // hello declares the replica: wait until the store has told it.
      this.setState("connecting");
      if (!this.awaitingReplica) {
        this.awaitingReplica = true;
        void this.ready.then(() => {
          this.awaitingReplica = false;
          if (this.online && !this.ws && !this.reconnectTimer) this.connect();
        });
      }
      return;
    }
    const WS = this.opts.WebSocket ?? (globalThis as any).WebSocket;
    if (!WS) throw new Error("weft: no WebSocket implementation (pass options.WebSocket)");
    this.setState("connecting");
    let ws: any;
    try {
      ws = new WS(this.opts.url);
    } catch (e) {
      this.onError.emit(e as Error);
      this.scheduleReconnect(false);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.send({ type: "hello", version: PROTOCOL_VERSION, token: this.opts.token, replica: this.replica, client: this.opts.clientName });
      this.startPing();
    };
    ws.onmessage = (ev: any) => {
      if (this.ws !== ws) return;
      this.alive();
      if (typeof ev.data === "string") return;
      const frame = new Uint8Array(ev.data as ArrayBuffer);
      this.inbox = this.inbox.then(() => this.receive(frame)).catch((e) => this.onError.emit(e));
    };
    ws.onclose = (ev: any) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.stopPing();
      this.stopStable();
      this.stopPresence();
      for (const d of this.docs.values()) d.disconnected();
      const code = ev.code as number;
      if (TERMINAL_CLOSE.has(code)) {
        this.onError.emit(new ConnectionError(code, ev.reason ?? ""));
        this.online = false;
        this.setState("closed");
        return;
      }
      if (!this.online) return;
      // 1001 (the server shuts down): at once, unless the connection never
      // proved stable (then the server may be going away at every welcome).
      this.scheduleReconnect(code === CloseCode.goingAway && this.attempt === 0);
    };
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  private scheduleReconnect(now: boolean): void {
    this.setState("connecting");
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    let delay = 0;
    if (!now) {
      // Full jitter: uniform in [0, min(cap, base·2^attempt)].
      const bound = Math.min(this.opts.backoffCapMs, this.opts.backoffBaseMs * 2 ** this.attempt);
      delay = Math.random() * bound;
    }
    // Counted even at once: only a stable connection starts it over.
    this.attempt = Math.min(this.attempt + 1, 30);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  private dropSocket(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.stopPing();
    this.stopStable();
    this.stopPresence();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      try {
        ws.close(1000);
      } catch {
        /* already closing */
      }
      for (const d of this.docs.values()) d.disconnected();
    }
  }

  private startPing(): void {
    this.stopPing();
    this.pingTimer = setInterval(() => {
      this.send({ type: "ping", nonce: ++this.nonce });
      if (!this.deadline) {
        this.deadline = setTimeout(() => {
          // Nothing heard since the ping: the connection is dead.
          const ws = this.ws;
          if (ws) {
            try {
              ws.close(4007);
            } catch {
              /* closing */
            }
            ws.onclose?.({ code: 4007, reason: "no answer to ping" });
          }
        }, this.opts.pongTimeoutMs);
      }
    }, this.opts.pingIntervalMs);
  }

  private alive(): void {
    if (this.deadline) clearTimeout(this.deadline);
    this.deadline = null;
  }

  private stopPing(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
    this.alive();
  }

  /** @internal */
  send(m: Message): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(encodeMessage(m));
    return true;
  }

  /** @internal */
  connected(): boolean {
    return this.stateV === "connected" && !!this.ws;
  }

  private async receive(frame: Uint8Array): Promise<void> {
    let m: Message;
    try {
      m = decodeMessage(frame);
    } catch (e) {
      this.onError.emit(e as Error);
      return;
    }
    switch (m.type) {
      case "welcome": {
        this.limits = m.limits;
        this.session = m.session;
        this.user = m.user;
        this.lead = this.wall() - wallOf(m.serverTime);
        // A welcome alone does not reset the backoff: a server that closes
        // right after it would be hammered. Stability does (markStable).
        this.upLong = false;
        this.sawSync = false;
        if (this.stableTimer) clearTimeout(this.stableTimer);
        this.stableTimer = setTimeout(() => {
          this.stableTimer = null;
          this.upLong = true;
          this.markStable();
        }, this.opts.stableAfterMs);
        this.setState("connected");
        for (const d of this.docs.values()) {
          d.doc.clock.witness(m.serverTime);
          d.subscribe();
        }
        return;
      }
      case "ping":
        this.send({ type: "pong", nonce: m.nonce });
        return;
      case "pong":
      case "unknown":
        return;
      case "error": {
        const d = m.doc ? this.docs.get(m.doc) : undefined;
        if (d) d.refused(m.status, m.message, "error");
        else this.onError.emit(new DocumentError(m.doc, m.status, m.message));
        return;
      }
      case "sync":
        if (!this.sawSync) {
          this.sawSync = true;
          this.markStable();
        }
      // falls through
      case "versionPart":
      case "changes":
      case "ack":
      case "presence":
      case "presenceLeave": {
        const d = this.docs.get(m.doc);
        if (d) await d.receive(m);
        return;
      }
    }
  }

  /**
   * markStable starts the reconnect backoff over once the connection has
   * been up stableAfterMs since its welcome and, if documents are open,
   * the server has answered a subscribe with a sync.
   */
  private markStable(): void {
    if (this.upLong && (this.sawSync || this.docs.size === 0) && this.ws) this.attempt = 0;
  }

  /**
   * @internal: d has presence to send. Presence is paced over the
   * connection by the welcome's max_presence_per_s (20/s where it is 0,
   * unlimited): documents take turns, and each sends its latest state when
   * its turn comes, so bursts coalesce.
   */
  queuePresence(d: Document): void {
    this.presenceQueue.add(d);
    this.pumpPresence();
  }

  /** @internal: the server refused a presence over its rate: none for a second. */
  pausePresence(): void {
    this.presenceNext = Math.max(this.presenceNext, Date.now() + PRESENCE_PAUSE_MS);
    if (this.presenceTimer) clearTimeout(this.presenceTimer);
    this.presenceTimer = null;
    this.pumpPresence();
  }

  private pumpPresence(): void {
    if (this.presenceTimer) return;
    for (;;) {
      const now = Date.now();
      if (now < this.presenceNext) {
        if (this.presenceQueue.size > 0) {
          this.presenceTimer = setTimeout(() => {
            this.presenceTimer = null;
            this.pumpPresence();
          }, this.presenceNext - now);
        }
        return;
      }
      const d = this.presenceQueue.values().next().value as Document | undefined;
      if (!d) return;
      this.presenceQueue.delete(d);
      if (d.sendPresenceNow()) {
        const rate = this.limits?.maxPresencePerSec ?? 0;
        this.presenceNext = now + 1000 / (rate > 0 ? rate : 20);
      }
    }
  }

  private stopPresence(): void {
    this.presenceQueue.clear();
    if (this.presenceTimer) clearTimeout(this.presenceTimer);
    this.presenceTimer = null;
    this.presenceNext = 0;
  }

  private stopStable(): void {
    if (this.stableTimer) clearTimeout(this.stableTimer);
    this.stableTimer = null;
    this.upLong = false;
  }

  /**
   * @internal: drops the connection and reconnects after the usual
   * backoff: after a re-stamp, so the next welcome measures how far our
   * clock leads the server's again (a clock that jumped after the welcome
   * is corrected at the next refusal), and no ack of a batch sent before
   * the re-stamp can be taken for one sent after it.
   */
  restartConnection(): void {
    if (!this.online || !this.ws) return;
    this.dropSocket();
    this.scheduleReconnect(false);
  }

  /**
   * @internal: the encoded bytes a version vector or a change batch may
   * take in one message (256 KiB, less when the welcome's max_frame less a
   * message's overhead is less).
   */
  maxMessageBytes(): number {
    const mf = this.limits?.maxFrame ?? 0;
    return mf > 0 ? Math.max(1, Math.min(MAX_MESSAGE_BYTES, mf - FRAME_OVERHEAD)) : MAX_MESSAGE_BYTES;
  }

  /** @internal: correct the wall clock after a clock_skew refusal. */
  correctClock(): void {
    // Our stamps were too far ahead of the server's clock: run ours behind
    // by the lead measured at welcome (with a margin for the round trip).
    if (this.lead > 0) {
      this.wallOffset -= this.lead + 50;
      this.lead = -50;
    }
  }
}

/**
 * Document is one open document: a replica (doc) plus its sync state.
 * Edit through edit(); read through doc (text, counter, register, ...).
 */
export class Document {
  readonly doc: Doc;
  closed = false;
  /** Set when the server refused the document for good (read_only, ...). */
  error: DocumentError | null = null;
  readOnly = false;
  readonly onRemote = new Emitter<RemoteChange>();
  readonly onSaved = new Emitter<boolean>();
  readonly onPresence = new Emitter<Map<string, PeerPresence>>();
  readonly onError = new Emitter<DocumentError>();
  /** Other sessions' presence, by session. */
  readonly peers = new Map<string, PeerPresence>();

  private synced = false;
  private subscribed = false;
  /** What the server has (durable or in memory) as far as we know. */
  private serverHas: VersionVector = new Map();
  /** serverHas plus what was sent and not refused. */
  private theirs: VersionVector = new Map();
  /**
   * The update batches in flight → the highest own seq each carries (0:
   * none): durable once it is acked ok; the server may hold it once it was
   * sent, unless refused whole.
   */
  private inflight = new Map<number, number>();
  private nextBatch = 1;
  private durableOwn = 0;
  /**
   * The document's own replica in a store written before the client
   * replica (null: none), the highest seq of it stored, the highest the
   * server holds durably, and the highest each batch in flight carries:
   * its stored changes are local edits, not saved until the server has them.
   */
  private legacy: ReplicaID | null = null;
  private legacyTop = 0;
  private durableLegacy = 0;
  private inflightLegacy = new Map<number, number>();
  /**
   * The highest own seq the server may hold without having acked it: every
   * own seq of a batch sent whose outcome does not prove the server changed
   * nothing (REFUSED_WHOLE), or that was lost (a sync, a disconnect). Such
   * changes are never re-stamped. It survives reconnection; for a document
   * read from the store it starts at the stored own seq (an earlier run may
   * have sent it).
   */
  private mayHold = 0;
  /** A batch was refused with clock_skew: sending halts and the re-stamp waits until no batch is in flight. */
  private restampDue = false;
  /** The version_part messages received since the last sync (null: none). */
  private parts: VersionVector | null = null;
  private retryTimer: any = null;
  private retries = 0;
  private storeChain: Promise<void> = Promise.resolve();
  private storedBatches = 0;
  private presenceClock = 0;
  private local: LocalPresence | null = null;
  private presenceTimer: any = null;
  private savedV = true;

  constructor(
    readonly client: Client,
    readonly id: string,
    readonly replica: ReplicaID,
  ) {
    this.doc = new Doc(replica, new Clock(client.wall, 0));
    // The server enforces access; knowing it from the token spares the
    // user typing into a document that will refuse the edit.
    this.readOnly = tokenAccess(client.opts.token, id) === "read";
  }

  /** Whether every local change is durable on the server. */
  get saved(): boolean {
    return this.savedV;
  }

  private updateSaved(): void {
    const own = this.doc.version().get(this.replica) ?? 0;
    const s = this.durableOwn >= own && this.durableLegacy >= this.legacyTop;
    if (s !== this.savedV) {
      this.savedV = s;
      this.onSaved.emit(s);
    }
  }

  /**
   * edit runs fn in one local transaction (one change), persists it and
   * sends it. Throws ReadOnlyError on a read-only document.
   */
  edit<T>(fn: (tx: Tx, doc: Doc) => T): T {
    if (this.readOnly) throw new ReadOnlyError(this.id);
    const before = this.doc.version();
    const out = this.doc.transact((tx) => fn(tx, this.doc));
    const cs = this.doc.changesSince(before);
    if (cs.length > 0) {
      this.persist(cs);
      this.updateSaved();
      this.flush();
    }
    return out;
  }

  /** Sets this session's presence (merged with what was set before). */
  setPresence(p: LocalPresence): void {
    this.local = { ...(this.local ?? {}), ...p };
    this.sendPresence();
  }

  /** Queues the latest presence to go when the connection's pace allows. */
  private sendPresence(): void {
    if (this.presenceReady()) this.client.queuePresence(this);
  }

  /**
   * Only once synced: the server answers a presence for a document whose
   * subscribe it refused with not_found.
   */
  private presenceReady(): boolean {
    return !!this.local && !this.closed && this.synced && this.client.connected();
  }

  /** @internal: sends the latest presence now (its turn came); false if there is none to send. */
  sendPresenceNow(): boolean {
    if (!this.presenceReady()) return false;
    const l = this.local!;
    this.client.send({
      type: "presence", doc: this.id, session: "", user: "", name: "", color: "", clock: ++this.presenceClock,
      field: l.field ?? "", cursor: l.cursor ?? null, selection: l.selection ?? null, typing: !!l.typing, state: l.state ?? null,
    });
    if (this.presenceTimer) clearTimeout(this.presenceTimer);
    // Refresh before the server's 30 s expiry.
    this.presenceTimer = setTimeout(() => ((this.presenceTimer = null), this.sendPresence()), PRESENCE_REFRESH_MS);
    return true;
  }

  /** @internal: the replica was read from the store (legacy: the replica it was stored with, if not the client's). */
  loadedFromStore(legacy: ReplicaID | null): void {
    this.mayHold = Math.max(this.mayHold, this.doc.version().get(this.replica) ?? 0);
    const top = legacy ? (this.doc.version().get(legacy) ?? 0) : 0;
    if (top > 0) {
      this.legacy = legacy;
      this.legacyTop = top;
    }
    this.updateSaved(); // not saved until the server's sync says so
  }

  /** Drops the batches in flight without an outcome: the server may hold each. */
  private forgetInflight(): void {
    for (const reach of this.inflight.values()) this.mayHold = Math.max(this.mayHold, reach);
    this.inflight.clear();
    this.inflightLegacy.clear();
  }

  /** @internal */
  subscribe(): void {
    if (this.closed) return;
    this.subscribed = true;
    this.synced = false;
    this.forgetInflight();
    this.serverHas = new Map();
    this.theirs = new Map();
    // A version too large for a frame goes in parts: version_part
    // messages, then the subscribe with the last part.
    const parts = splitVersion(this.doc.version(), this.client.maxMessageBytes());
    for (const p of parts.slice(0, -1)) this.client.send({ type: "versionPart", doc: this.id, version: p });
    this.client.send({ type: "subscribe", doc: this.id, version: parts[parts.length - 1] });
  }

  /** @internal */
  disconnected(): void {
    this.subscribed = false;
    this.synced = false;
    this.parts = null;
    this.forgetInflight();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.presenceTimer) clearTimeout(this.presenceTimer);
    this.presenceTimer = null;
    if (this.peers.size > 0) {
      this.peers.clear();
      this.onPresence.emit(this.peers);
    }
    // Every outcome is known now (lost batches count as held): a re-stamp
    // that waited for them runs; the next connection sends the result.
    this.maybeRestamp();
  }

  private persist(cs: Change[]): void {
    const store = this.client.opts.store;
    if (!store || cs.length === 0) return;
    const b = encodeChanges(cs);
    this.storeChain = this.storeChain
      .then(async () => {
        if (++this.storedBatches > 256) {
          this.storedBatches = 1;
          await store.compact(this.id, encodeChanges(this.doc.changesSince()));
        } else await store.append(this.id, b);
      })
      .catch((e) => this.client.onError.emit(e));
  }

  /** Resolves once everything persisted so far is in the store. */
  async flushStore(): Promise<void> {
    await this.storeChain;
  }

  private applyRemote(batch: Uint8Array): Change[] {
    const cs = decodeChanges(batch);
    const text: { field: string; event: TextEvent }[] = [];
    this.doc.onText = (field, event) => text.push({ field, event });
    let applied: Change[];
    try {
      applied = this.doc.apply(cs);
    } finally {
      this.doc.onText = undefined;
    }
    this.persist(applied);
    for (const c of cs) {
      const end = c.seq + changeLen(c) - 1;
      if (end > (this.serverHas.get(c.replica) ?? 0)) this.serverHas.set(c.replica, end);
      if (end > (this.theirs.get(c.replica) ?? 0)) this.theirs.set(c.replica, end);
    }
    if (applied.length > 0) this.onRemote.emit({ changes: applied, text });
    return applied;
  }

  /** @internal */
  async receive(m: Message): Promise<void> {
    switch (m.type) {
      case "versionPart": {
        // Part of the next sync's version (a vector too large for one
        // frame). It is durable like the rest: our own entry in it is saved.
        const v = (this.parts ??= new Map());
        vvMerge(v, m.version);
        if (v.size > MAX_VERSION_ENTRIES) {
          this.parts = null;
          this.client.onError.emit(new Error(`weft: ${this.id}: version parts of more than ${MAX_VERSION_ENTRIES} replicas`));
          return;
        }
        const own = m.version.get(this.replica) ?? 0;
        if (own > this.durableOwn) this.durableOwn = own;
        if (this.legacy) this.durableLegacy = Math.max(this.durableLegacy, m.version.get(this.legacy) ?? 0);
        this.updateSaved();
        return;
      }
      case "changes":
      case "sync": {
        let plain: Uint8Array | null = null;
        if (m.changes.length > 0) {
          try {
            plain = await inflateBatch(m.changes);
          } catch (e) {
            this.client.onError.emit(e as Error);
            return;
          }
        }
        const pendingBefore = this.doc.pendingCount();
        if (plain) {
          try {
            this.applyRemote(plain);
          } catch (e) {
            this.client.onError.emit(e as Error);
          }
        }
        if (m.type === "sync") {
          // The sync's version is the union of the parts before it and its own.
          const version = this.parts ?? new Map();
          this.parts = null;
          vvMerge(version, m.version);
          vvMerge(this.serverHas, version);
          this.theirs = new Map(this.serverHas);
          this.durableOwn = Math.max(this.durableOwn, version.get(this.replica) ?? 0);
          if (this.legacy) this.durableLegacy = Math.max(this.durableLegacy, version.get(this.legacy) ?? 0);
          this.synced = true;
          this.updateSaved();
          this.flush();
          this.sendPresence();
        } else if (this.synced && this.doc.pendingCount() > pendingBefore) {
          // Changes arrived whose dependencies we lack: resync.
          this.subscribe();
        }
        this.maybeRestamp(); // a resync forgets the batches in flight
        return;
      }
      case "ack": {
        const reach = this.inflight.get(m.batch);
        if (reach === undefined) return; // sent before a resync: its outcome was counted as unknown
        this.inflight.delete(m.batch);
        const legacyReach = this.inflightLegacy.get(m.batch) ?? 0;
        this.inflightLegacy.delete(m.batch);
        if (!REFUSED_WHOLE.has(m.status)) this.mayHold = Math.max(this.mayHold, reach);
        if (m.status === Status.ok) {
          this.retries = 0;
          this.durableOwn = Math.max(this.durableOwn, reach);
          this.durableLegacy = Math.max(this.durableLegacy, legacyReach);
          this.updateSaved();
        } else this.refused(m.status, m.message, "ack");
        this.maybeRestamp();
        return;
      }
      case "presence": {
        const last = this.peers.get(m.session);
        if (last && m.clock <= last.clock) return;
        this.peers.set(m.session, {
          session: m.session, user: m.user, name: m.name, color: m.color, field: m.field,
          cursor: m.cursor, selection: m.selection, typing: m.typing, state: m.state, clock: m.clock,
        });
        this.onPresence.emit(this.peers);
        return;
      }
      case "presenceLeave":
        if (this.peers.delete(m.session)) this.onPresence.emit(this.peers);
        return;
    }
  }

  /** @internal: a refused batch (ack) or subscription (error). */
  refused(status: number, message: string, via: "ack" | "error"): void {
    // error(rate_limited) refuses a presence (sent only once synced) or,
    // while the subscribe is unanswered, the subscribe: resubscribe below.
    if (via === "error" && status === Status.rateLimited && (this.synced || !this.subscribed)) {
      // The refused state is lost: the latest goes after the pause.
      this.client.pausePresence();
      this.sendPresence();
      return;
    }
    if (TRANSIENT.has(status) || (via === "error" && status === Status.overloaded)) {
      // A refused subscribe is over: no later error is about it.
      if (via === "error") this.subscribed = false;
      this.theirs = new Map(this.serverHas);
      this.forgetInflight();
      const delay = Math.random() * Math.min(30_000, 200 * 2 ** this.retries++);
      if (this.retryTimer) clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        if (via === "error") this.subscribe();
        else this.flush();
      }, delay);
      this.maybeRestamp();
      return;
    }
    if (RESYNC.has(status)) {
      this.subscribe();
      this.maybeRestamp();
      return;
    }
    if (status === Status.clockSkew) {
      // Sending halts; the re-stamp waits for the outcomes of the batches
      // still in flight, which say what the server may hold.
      this.restampDue = true;
      this.maybeRestamp();
      return;
    }
    const err = new DocumentError(this.id, status, message);
    this.error = err;
    if (status === Status.readOnly) this.readOnly = true;
    this.onError.emit(err);
  }

  /**
   * maybeRestamp runs the re-stamp a clock_skew refusal asked for once no
   * batch is in flight. If it re-stamped changes, the client reconnects
   * (the next welcome measures the clock's lead again) and sends them; if
   * every refused change may be held by the server, nothing can change:
   * it resubscribes after a growing pause, when the server's clock has
   * caught up.
   */
  private maybeRestamp(): void {
    if (!this.restampDue || this.inflight.size > 0 || this.error) return;
    this.restampDue = false;
    let n: number;
    try {
      n = this.restamp();
    } catch (e) {
      const err = new DocumentError(this.id, Status.clockSkew, `re-stamping failed: ${(e as Error).message}`);
      this.error = err;
      this.onError.emit(err);
      return;
    }
    if (n > 0) {
      this.client.restartConnection();
      return;
    }
    if (!this.client.connected()) return; // the next connection resubscribes
    const delay = Math.random() * Math.min(30_000, 200 * 2 ** this.retries++);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.client.connected()) this.subscribe();
    }, delay);
  }

  /**
   * restamp corrects the client's clock and gives the own changes the
   * server cannot hold (above both durableOwn and mayHold: never sent, or
   * sent only in batches it refused whole) new times from it, rebuilding
   * the replica from its history. Nobody else has seen those times. It
   * returns how many changes it re-stamped.
   *
   * NB: a change the server may hold keeps its time even if it was refused
   * too: re-stamping it could make two versions of one change.
   *
   * HAZARD: an own change straddling the boundary keeps its old time (the
   * server would refuse it again); batches end on change boundaries, so
   * this client's own batches never make one.
   */
  private restamp(): number {
    this.client.correctClock();
    const keepBelow = Math.max(this.durableOwn, this.mayHold);
    if ((this.doc.version().get(this.replica) ?? 0) <= keepBelow) return 0;
    const all = this.doc.changesSince();
    const clock = new Clock(this.client.wall, 0);
    const fresh = new Doc(this.replica, clock);
    const keep: Change[] = [];
    const redo: Change[] = [];
    for (const c of all) (c.replica === this.replica && c.seq > keepBelow ? redo : keep).push(c);
    fresh.applyTrusted(keep);
    for (const c of redo) fresh.applyTrusted([{ ...c, time: clock.now() }]);
    if (fresh.pendingCount() !== 0) throw new Error(`the rebuilt replica left ${fresh.pendingCount()} changes pending`);
    (this as { doc: Doc }).doc = fresh;
    const store = this.client.opts.store;
    if (store) {
      const b = encodeChanges(fresh.changesSince());
      this.storeChain = this.storeChain.then(() => store.compact(this.id, b)).catch((e) => this.client.onError.emit(e));
    }
    return redo.length;
  }

  /** @internal: sends what the server lacks. */
  flush(): void {
    if (!this.synced || this.error || this.retryTimer || this.restampDue || !this.client.connected()) return;
    const cs = this.doc.changesSince(this.theirs);
    if (cs.length === 0) return;
    // At most the server's ops burst (welcome's max_ops_burst): a larger
    // batch is refused too_large however long the client waits.
    const burst = this.client.limits?.maxOpsBurst ?? 0;
    const max = burst > 0 ? Math.min(this.client.opts.maxBatchOps, burst) : this.client.opts.maxBatchOps;
    const maxBytes = this.client.maxMessageBytes();
    // Batches of at most max ops and maxBytes encoded (a change larger
    // than that goes alone), in order, so they arrive causally ordered.
    const send = (part: Change[]): boolean => {
      const bytes = encodeChanges(part);
      if (bytes.length > maxBytes && part.length > 1) {
        const h = part.length >> 1;
        return send(part.slice(0, h)) && send(part.slice(h));
      }
      const batch = this.nextBatch++;
      let reach = 0;
      let legacyReach = 0;
      for (const c of part) {
        const end = c.seq + changeLen(c) - 1;
        if (c.replica === this.replica) reach = Math.max(reach, end);
        else if (c.replica === this.legacy) legacyReach = Math.max(legacyReach, end);
        if (end > (this.theirs.get(c.replica) ?? 0)) this.theirs.set(c.replica, end);
      }
      if (!this.client.send({ type: "update", doc: this.id, batch, changes: bytes })) return false;
      this.inflight.set(batch, reach);
      if (legacyReach > 0) this.inflightLegacy.set(batch, legacyReach);
      return true;
    };
    let chunk: Change[] = [];
    let ops = 0;
    for (const c of cs) {
      if (ops + c.ops.length > max && chunk.length > 0) {
        if (!send(chunk)) return;
        chunk = [];
        ops = 0;
      }
      chunk.push(c);
      ops += c.ops.length;
    }
    if (chunk.length > 0) send(chunk);
  }
}
