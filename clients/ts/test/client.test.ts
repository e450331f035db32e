// The protocol client against a real `weft serve` on 127.0.0.1.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Client, ConnectionError, Doc, DocumentError, MemoryStore, PROTOCOL_VERSION, Side, Status, decodeMessage, encodeChanges, encodeMessage, newReplica, statusName, timestamp } from "../src/index.js";
import type { Change, ClientOptions, Document, Message } from "../src/index.js";
import { Server, waitFor, weftBinary } from "./server.js";
import { spawnSync } from "node:child_process";

let srv: Server;
const clients: Client[] = [];

before(async () => {
  srv = await Server.start();
});
after(async () => {
  for (const c of clients) c.close();
  await srv.stop();
});

function client(o: Partial<ClientOptions> = {}): Client {
  const c = new Client({ url: srv.url, WebSocket, backoffBaseMs: 20, backoffCapMs: 200, ...o });
  clients.push(c);
  return c;
}

const typeAt = (d: Document, pos: number, s: string) => d.edit((tx) => tx.insert("body", pos, s));

test("two clients edit one document concurrently and converge, saved", async () => {
  const a = client();
  const b = client();
  const da = await a.open("t/converge");
  const db = await b.open("t/converge");
  await waitFor("both connected", () => a.state === "connected" && b.state === "connected");
  for (let i = 0; i < 20; i++) {
    typeAt(da, da.doc.textLen("body"), "a");
    typeAt(db, 0, "b");
    if (i % 5 === 0) db.edit((tx) => tx.add("likes", 1));
  }
  await waitFor("convergence", () => da.doc.text("body") === db.doc.text("body") && da.doc.textLen("body") === 40 && da.doc.counter("likes") === 4n);
  await waitFor("saved", () => da.saved && db.saved);
  // No interleaving: a's run and b's run stay whole.
  assert.match(da.doc.text("body"), /^(b{20}a{20}|a{20}b{20})$/);
});

test("a third client opening later catches up; text outside the BMP", async () => {
  const a = client();
  const da = await a.open("t/catchup");
  typeAt(da, 0, "héllo 😀 wörld");
  await waitFor("saved", () => da.saved && a.state === "connected");
  const c = client();
  const dc = await c.open("t/catchup");
  await waitFor("catch-up", () => dc.doc.text("body") === "héllo 😀 wörld");
});

test("presence is relayed with the server's identity, and leaves are announced", async () => {
  const a = client();
  const b = client();
  const da = await a.open("t/presence");
  const db = await b.open("t/presence");
  typeAt(da, 0, "abc");
  await waitFor("b has the text", () => db.doc.text("body") === "abc");
  da.setPresence({ field: "body", cursor: da.doc.anchorAt("body", 2, Side.Before), typing: true });
  await waitFor("b sees a's cursor", () => [...db.peers.values()].some((p) => p.cursor !== null));
  const p = [...db.peers.values()][0];
  assert.equal(p.user, "anonymous");
  assert.equal(db.doc.indexOf("body", p.cursor!), 2);
  assert.equal(p.typing, true);
  a.close();
  await waitFor("a's leave", () => db.peers.size === 0);
});

test("offline edits merge on reconnect, nothing lost or duplicated", async () => {
  const store = new MemoryStore();
  const a = client({ store });
  const b = client();
  const da = await a.open("t/offline");
  const db = await b.open("t/offline");
  await waitFor("connected", () => a.state === "connected" && b.state === "connected");
  typeAt(da, 0, "base ");
  await waitFor("b has base", () => db.doc.text("body") === "base ");
  a.setOnline(false);
  assert.equal(a.state, "offline");
  for (let i = 0; i < 10; i++) typeAt(da, da.doc.textLen("body"), String(i));
  typeAt(db, 0, "B:");
  assert.equal(da.saved, false);
  a.setOnline(true);
  await waitFor("converged", () => da.doc.text("body") === db.doc.text("body") && da.doc.textLen("body") === 17);
  assert.equal(da.doc.text("body"), "B:base 0123456789");
  await waitFor("a saved", () => da.saved);
});

test("a server restart mid-session: both reconnect by themselves and lose nothing", async () => {
  const a = client();
  const b = client();
  const da = await a.open("t/restart");
  const db = await b.open("t/restart");
  typeAt(da, 0, "one ");
  await waitFor("saved before", () => da.saved && db.doc.text("body") === "one ");
  const restarted = srv.restart();
  typeAt(da, da.doc.textLen("body"), "two ");
  typeAt(db, 0, "zero ");
  await restarted;
  await waitFor("converged after restart", () => da.doc.text("body") === db.doc.text("body") && da.doc.textLen("body") === 13 && da.saved && db.saved, 20_000);
  assert.equal(da.doc.text("body"), "zero one two ");
});

test("read-only and uncovered documents are refused with typed errors; a bad token closes for good", async () => {
  const secret = "0123456789abcdef0123456789abcdef";
  const auth = await Server.start(["--secret", secret]);
  try {
    const tok = token(secret, "bob", "ro/*:read,rw/*:write");
    const w = new Client({ url: auth.url, WebSocket, token: token(secret, "alice", "ro/*:write"), backoffBaseMs: 20 });
    clients.push(w);
    const dw = await w.open("ro/doc");
    dw.edit((tx) => tx.insert("body", 0, "hello"));
    await waitFor("alice saved", () => dw.saved);

    const r = new Client({ url: auth.url, WebSocket, token: tok, backoffBaseMs: 20 });
    clients.push(r);
    const dr = await r.open("ro/doc");
    await waitFor("bob reads", () => dr.doc.text("body") === "hello");
    // The token says read-only: edits are refused before they are made.
    assert.equal(dr.readOnly, true);
    assert.throws(() => dr.edit((tx) => tx.insert("body", 0, "x")), /read-only/);
    // A client that did not know (a token it cannot read) is refused by
    // the server, and learns it.
    dr.readOnly = false;
    const errs: DocumentError[] = [];
    dr.onError.on((e) => errs.push(e));
    dr.edit((tx) => tx.insert("body", 5, "!"));
    await waitFor("read_only", () => errs.length > 0);
    assert.equal(errs[0].statusName, "read_only");
    assert.equal(dr.readOnly, true);
    assert.throws(() => dr.edit((tx) => tx.insert("body", 0, "x")), /read-only/);
    assert.equal(dw.doc.text("body"), "hello");

    const du = await r.open("other/doc");
    const uerrs: DocumentError[] = [];
    du.onError.on((e) => uerrs.push(e));
    await waitFor("unauthorized", () => uerrs.length > 0);
    assert.equal(uerrs[0].statusName, "unauthorized");

    const bad = new Client({ url: auth.url, WebSocket, token: "not-a-token", backoffBaseMs: 20 });
    clients.push(bad);
    const cerrs: Error[] = [];
    bad.onError.on((e) => cerrs.push(e));
    await waitFor("auth failure", () => bad.state === "closed");
    assert.ok(cerrs.some((e) => e instanceof ConnectionError && e.code === 4001), String(cerrs));
  } finally {
    await auth.stop();
  }
});

function token(secret: string, user: string, docs: string): string {
  const r = spawnSync(weftBinary(), ["token", "--secret", secret, "--user", user, "--docs", docs], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout.trim();
}

test("clock_skew: the client corrects its clock, re-stamps its unacked edits and they are saved", async () => {
  const skewed = await Server.start(["--insecure", "--max-clock-offset", "2s"]);
  try {
    const c = new Client({ url: skewed.url, WebSocket, backoffBaseMs: 20, offline: true });
    clients.push(c);
    // This client's clock runs a minute ahead of the server's.
    c.wallOffset = 60_000;
    const d = await c.open("t/skew");
    d.edit((tx) => tx.insert("body", 0, "from the future"));
    c.setOnline(true);
    await waitFor("saved after re-stamping", () => d.saved, 20_000);
    assert.ok(c.wallOffset < 1_000, `wall offset ${c.wallOffset} after correction`);
    const server = (await (await fetch(`${skewed.http}/v1/docs/t%2Fskew`)).json()) as { text: { body: string } };
    assert.equal(server.text.body, "from the future");
    d.edit((tx) => tx.insert("body", d.doc.textLen("body"), "!"));
    await waitFor("saved again", () => d.saved);
  } finally {
    await skewed.stop();
  }
});

/**
 * A WebSocket (ws) whose incoming ok acks are held while gate.hold is set,
 * as if the server's write to disk took long; every other frame passes.
 * Lets a test deliver a later refusal ahead of an earlier batch's ack.
 */
class AckGate {
  hold = false;
  statuses: number[] = [];
  private held: (() => void)[] = [];
  // A function, not an arrow: the client calls it with new.
  readonly WebSocket = ((gate: AckGate) =>
    function (url: string) {
      return gate.open(url);
    })(this);
  private open(url: string): WebSocket {
    const ws = new WebSocket(url);
    const d = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onmessage")!;
    Object.defineProperty(ws, "onmessage", {
      configurable: true,
      get: () => d.get!.call(ws),
      set: (fn: ((ev: any) => void) | null) =>
        d.set!.call(ws, fn && ((ev: any) => {
          const m = decodeMessage(new Uint8Array(ev.data as ArrayBuffer));
          if (m.type === "ack") this.statuses.push(m.status);
          if (this.hold && m.type === "ack" && m.status === Status.ok) this.held.push(() => fn(ev));
          else fn(ev);
        })),
    });
    return ws;
  }
  release(): void {
    this.hold = false;
    for (const f of this.held.splice(0)) f();
  }
}

test("clock_skew never re-stamps a change the server may hold (its batch's ack still in flight)", async () => {
  // A's register write is applied (its ack held back), B then writes the
  // register after seeing it, so B's value wins; then A's clock jumps an
  // hour ahead and its next batch is refused with clock_skew while the
  // first batch's outcome is still unknown. Re-stamping A's applied write
  // would make it win on A alone, with equal versions, forever.
  const gate = new AckGate();
  const a = client({ WebSocket: gate.WebSocket });
  const b = client();
  const da = await a.open("t/lww-skew");
  const db = await b.open("t/lww-skew");
  await waitFor("connected", () => a.state === "connected" && b.state === "connected");
  const reg = (d: Document) => d.doc.register("title")?.[0];

  gate.hold = true;
  da.edit((tx) => tx.set("title", new Uint8Array([1])));
  const own = () => da.doc.changesSince().filter((c) => c.replica === da.replica);
  const [written] = own();
  await waitFor("B sees A's write", () => reg(db) === 1);
  db.edit((tx) => tx.set("title", new Uint8Array([2])));
  await waitFor("A sees B's write", () => reg(da) === 2);

  a.wallOffset = 3_600_000;
  da.edit((tx) => tx.add("n", 1));
  await waitFor("the skewed batch refused", () => gate.statuses.includes(Status.clockSkew));
  // Let the refusal be handled before the earlier batch's ack arrives.
  await new Promise((r) => setTimeout(r, 50));
  gate.release();

  await waitFor(
    "converged and saved",
    () => da.saved && db.saved && da.doc.counter("n") === 1n && db.doc.counter("n") === 1n && reg(da) === reg(db),
    20_000,
  );
  assert.equal(reg(da), 2, "A's applied write must not be re-stamped into winning");
  assert.equal(reg(db), 2);
  const after = own().find((c) => c.seq === written.seq)!;
  assert.equal(after.time, written.time, "the time of a change the server may hold changed");
});

/** A WebSocket (ws) that records the messages a client sends and receives. */
class FrameSpy {
  sent: Message[] = [];
  received: Message[] = [];
  largestSent = 0;
  readonly WebSocket = ((spy: FrameSpy) =>
    function (url: string) {
      return spy.open(url);
    })(this);
  private open(url: string): WebSocket {
    const ws = new WebSocket(url);
    const send = ws.send.bind(ws);
    ws.send = ((data: Uint8Array, ...rest: any[]) => {
      this.sent.push(decodeMessage(data));
      this.largestSent = Math.max(this.largestSent, data.length);
      return (send as any)(data, ...rest);
    }) as any;
    ws.on("message", (data: Buffer) => this.received.push(decodeMessage(new Uint8Array(data))));
    return ws;
  }
  count(dir: "sent" | "received", type: Message["type"]): number {
    return this[dir].filter((m) => m.type === type).length;
  }
}

test("version vectors and change batches larger than max_frame are split (version_part, update), both ways", async () => {
  const maxFrame = 4096;
  const small = await Server.start(["--insecure", "--max-frame", String(maxFrame)]);
  try {
    // 300 replicas wrote one change each, and so did OWN, whose id sorts
    // first: its entry is in the first part of the server's version, not
    // in the sync itself.
    const OWN = "00000000000000000000000000000001";
    const all: Change[] = [];
    for (const r of [OWN, ...Array.from({ length: 300 }, () => newReplica())]) {
      const d = new Doc(r);
      d.transact((tx) => tx.add("n", 1));
      all.push(...d.changesSince());
    }
    // A client relays them all, in batches it splits to fit max_frame.
    const seeder = new FrameSpy();
    const s = new Client({ url: small.url, WebSocket: seeder.WebSocket, backoffBaseMs: 20 });
    clients.push(s);
    const ds = await s.open("t/many");
    await waitFor("seeder connected", () => s.state === "connected");
    ds.doc.apply(all);
    ds.edit((tx) => tx.add("n", 1));
    await waitFor("seeded", () => ds.saved, 20_000);
    assert.ok(seeder.count("sent", "update") > 1 && seeder.largestSent <= maxFrame, `the seeder sent a frame of ${seeder.largestSent} bytes`);
    const probe = new Client({ url: small.url, WebSocket, backoffBaseMs: 20 });
    clients.push(probe);
    const dp = await probe.open("t/many");
    await waitFor("the server holds every change", () => dp.doc.counter("n") === 302n, 20_000);

    // OWN's client reopens the document from its store: its version (301
    // replicas) is larger than a frame, and so is the server's answer.
    const store = new MemoryStore();
    await store.init("t/many", OWN);
    await store.append("t/many", encodeChanges(all));
    const spy = new FrameSpy();
    const a = new Client({ url: small.url, WebSocket: spy.WebSocket, backoffBaseMs: 20, store, replica: OWN });
    clients.push(a);
    const da = await a.open("t/many");
    assert.equal(da.replica, OWN);
    assert.equal(da.saved, false, "a document read from the store is not saved before the server says so");
    await waitFor("caught up and saved", () => da.doc.counter("n") === 302n && da.saved, 20_000);
    // Let any resend the client would make go out.
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(spy.count("sent", "versionPart") >= 1, "the subscribe's version was not split");
    assert.ok(spy.largestSent <= maxFrame, `a frame of ${spy.largestSent} bytes sent`);
    assert.ok(spy.count("received", "versionPart") >= 1, "the server's sync was not split");
    // The version parts said the server holds everything: nothing to send,
    // and OWN's change (in a part) counts as saved.
    assert.equal(spy.count("sent", "update"), 0, "the client resent changes the server holds");
    assert.equal(a.state, "connected");
  } finally {
    await small.stop();
  }
});

test("clock_skew of changes read from the store: they keep their times and wait for the server's clock", async () => {
  // A previous run may have sent what the store holds, so the server may
  // hold it under its old time: it is never re-stamped, only resent until
  // the server's clock has caught up.
  const skewed = await Server.start(["--insecure", "--max-clock-offset", "1s"]);
  try {
    const store = new MemoryStore();
    const first = new Client({ url: skewed.url, WebSocket, backoffBaseMs: 20, store, offline: true });
    clients.push(first);
    first.wallOffset = 2_500;
    const d1 = await first.open("t/skew-stored");
    d1.edit((tx) => tx.insert("body", 0, "early"));
    await d1.flushStore();
    const [stamped] = d1.doc.changesSince();
    first.close();

    const second = new Client({ url: skewed.url, WebSocket, backoffBaseMs: 20, store });
    clients.push(second);
    const d2 = await second.open("t/skew-stored");
    await waitFor("saved once the server's clock caught up", () => d2.saved, 15_000);
    const [sent] = d2.doc.changesSince();
    assert.equal(sent.time, stamped.time, "a change the server may hold was re-stamped");
    const server = (await (await fetch(`${skewed.http}/v1/docs/t%2Fskew-stored`)).json()) as { text: { body: string } };
    assert.equal(server.text.body, "early");
  } finally {
    await skewed.stop();
  }
});

/**
 * rawUpdate connects as a bare protocol session declaring replica in its
 * hello, subscribes to doc, sends changes as one update batch and returns
 * the ack's status.
 */
async function rawUpdate(url: string, tok: string, replica: string, doc: string, changes: Change[]): Promise<number> {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const inbox: Message[] = [];
  ws.on("message", (b: ArrayBuffer) => inbox.push(decodeMessage(new Uint8Array(b))));
  await new Promise((r, j) => (ws.once("open", r), ws.once("error", j)));
  const next = async (type: Message["type"]): Promise<Message> => {
    await waitFor(type, () => inbox.some((m) => m.type === type || m.type === "error"));
    const m = inbox.find((m) => m.type === type || m.type === "error")!;
    inbox.splice(inbox.indexOf(m), 1);
    return m;
  };
  try {
    ws.send(encodeMessage({ type: "hello", version: PROTOCOL_VERSION, token: tok, replica, client: "forger" }));
    await next("welcome");
    ws.send(encodeMessage({ type: "subscribe", doc, version: new Map() }));
    await next("sync");
    ws.send(encodeMessage({ type: "update", doc, batch: 1, changes: encodeChanges(changes) }));
    const ack = await next("ack");
    if (ack.type !== "ack") throw new Error(`an ${ack.type} instead of an ack`);
    return ack.status;
  } finally {
    ws.close();
  }
}

test("every document writes with the client's replica, declared in hello: another user cannot write with it", async () => {
  const secret = "0123456789abcdef0123456789abcdef";
  const auth = await Server.start(["--secret", secret]);
  try {
    const store = new MemoryStore();
    const spy = new FrameSpy();
    const alice = token(secret, "alice", "own/*:write");
    const a = new Client({ url: auth.url, WebSocket: spy.WebSocket, token: alice, backoffBaseMs: 20, store });
    clients.push(a);
    const d1 = await a.open("own/1");
    const d2 = await a.open("own/2");
    typeAt(d1, 0, "alice");
    typeAt(d2, 0, "alice");
    await waitFor("saved", () => d1.saved && d2.saved);

    // Mallory declares the replica alice's edits carry and writes with it.
    const forger = new Doc(d1.replica);
    forger.applyTrusted(d1.doc.changesSince());
    forger.transact((tx) => tx.insert("body", 0, "mallory "));
    const forged = forger.changesSince(d1.doc.version());
    const status = await rawUpdate(auth.url, token(secret, "mallory", "own/*:write"), d1.replica, "own/1", forged);
    assert.equal(status, Status.unauthorized, `a forged write with alice's replica got ${statusName(status)}`);
    const server = (await (await fetch(`${auth.http}/v1/docs/own%2F1`, { headers: { Authorization: `Bearer ${alice}` } })).json()) as { text: { body: string } };
    assert.equal(server.text.body, "alice");

    const hellos = spy.sent.filter((m) => m.type === "hello");
    assert.ok(hellos.every((m) => m.type === "hello" && m.replica === d1.replica), "hello does not declare the replica documents write with");
    assert.equal(d2.replica, d1.replica);

    // The replica is kept in the store: a restarted client continues it.
    a.close();
    const b = new Client({ url: auth.url, WebSocket, token: alice, backoffBaseMs: 20, store });
    clients.push(b);
    const e1 = await b.open("own/1");
    assert.equal(e1.replica, d1.replica);
    typeAt(e1, 5, "!");
    await waitFor("saved again", () => e1.saved);
    assert.equal(e1.doc.text("body"), "alice!");
  } finally {
    await auth.stop();
  }
});

test("a document stored with its own replica (before the client replica) keeps its changes; new edits use the client's", async () => {
  const OLD = newReplica();
  const old = new Doc(OLD);
  old.transact((tx) => tx.insert("body", 0, "offline "));
  const store = new MemoryStore();
  await store.init("t/legacy", OLD);
  await store.append("t/legacy", encodeChanges(old.changesSince()));
  const c = client({ store });
  const d = await c.open("t/legacy");
  assert.notEqual(d.replica, OLD);
  assert.equal(d.saved, false, "stored edits not yet on the server count as unsaved");
  typeAt(d, 8, "edit");
  await waitFor("saved", () => d.saved);
  const server = (await (await fetch(`${srv.http}/v1/docs/t%2Flegacy`)).json()) as { text: { body: string } };
  assert.equal(server.text.body, "offline edit");
  const replicas = new Set(d.doc.changesSince().map((ch) => ch.replica));
  assert.deepEqual([...replicas].sort(), [OLD, c.replica].sort());
});

test("subscribes refused as rate_limited are retried after a backoff: every document syncs", async () => {
  // A burst of 5 subscribes (max docs 4 + 1/s), then one per second.
  const slow = await Server.start(["--insecure", "--max-docs-per-conn", "4", "--max-subscribes-per-sec", "1"]);
  try {
    const ids = Array.from({ length: 8 }, (_, i) => `t/rl/${i}`);
    for (const half of [ids.slice(0, 4), ids.slice(4)]) {
      const w = new Client({ url: slow.url, WebSocket, backoffBaseMs: 20 });
      clients.push(w);
      const ds = await Promise.all(half.map((id) => w.open(id)));
      for (const d of ds) typeAt(d, 0, d.id);
      await waitFor("seeded", () => ds.every((d) => d.saved));
      w.close();
    }

    const spy = new FrameSpy();
    const r = new Client({ url: slow.url, WebSocket: spy.WebSocket, backoffBaseMs: 20 });
    clients.push(r);
    const first = await Promise.all(ids.slice(0, 4).map((id) => r.open(id)));
    await waitFor("the first four synced", () => first.every((d) => d.doc.text("body") === d.id));
    for (const d of first) r.closeDoc(d);
    // Switching to four others at once exceeds the subscribe rate.
    const next = await Promise.all(ids.slice(4).map((id) => r.open(id)));
    await waitFor("a subscribe refused", () => spy.received.some((m) => m.type === "error" && m.status === Status.rateLimited));
    await waitFor("every document synced", () => next.every((d) => d.doc.text("body") === d.id), 20_000);
    assert.equal(r.state, "connected");
  } finally {
    await slow.stop();
  }
});

test("a server that closes right after welcome sees reconnects spaced out by a growing backoff, reset once a connection is stable", async () => {
  const { WebSocketServer } = await import("ws");
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => wss.once("listening", r));
  const url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}/v1/ws`;
  const opened: number[] = [];
  let closeCode = 1011;
  let keep = false;
  const live = new Set<WebSocket>();
  wss.on("connection", (ws) => {
    opened.push(Date.now());
    live.add(ws);
    ws.on("close", () => live.delete(ws));
    ws.once("message", () => {
      ws.send(encodeMessage({
        type: "welcome", version: PROTOCOL_VERSION, serverTime: timestamp(Date.now()), session: "s", user: "u",
        limits: { maxFrame: 1 << 20, maxChangesPerSec: 1000, maxPresencePerSec: 20, maxDocBytes: 0, maxPending: 0, maxDocs: 0, maxOpsBurst: 0 },
      }));
      if (!keep) ws.close(closeCode);
    });
  });
  const c = new Client({ url, WebSocket, backoffBaseMs: 50, backoffCapMs: 800, stableAfterMs: 1_000 });
  clients.push(c);
  try {
    await new Promise((r) => setTimeout(r, 3_000));
    // Reset at every welcome, the delays stay under 50 ms: some 100
    // connections in 3 s. Growing to the 800 ms cap: about a dozen.
    assert.ok(opened.length <= 20, `${opened.length} connections in 3 s`);
    closeCode = 1001; // going away at every welcome: not at once either
    const before = opened.length;
    await new Promise((r) => setTimeout(r, 1_500));
    assert.ok(opened.length - before <= 6, `${opened.length - before} connections in 1.5 s of 1001`);

    // A connection that stays up proves stable: the next reconnect comes
    // after the first delay again.
    keep = true;
    await waitFor("connected", () => c.state === "connected", 5_000);
    await new Promise((r) => setTimeout(r, 1_500));
    keep = false;
    closeCode = 1011;
    const dropped = Date.now();
    const n = opened.length;
    for (const ws of live) ws.close(1011);
    await waitFor("reconnected", () => opened.length > n, 5_000);
    assert.ok(opened[n] - dropped < 300, `reconnected ${opened[n] - dropped} ms after a stable connection dropped`);
  } finally {
    c.close();
    for (const ws of live) ws.terminate();
    await new Promise((r) => wss.close(r));
  }
});

test("presence is paced by welcome's max_presence_per_s, coalesced to the latest state, never refused", async () => {
  const slow = await Server.start(["--insecure", "--max-presence-per-sec", "4"]);
  try {
    const spy = new FrameSpy();
    const a = new Client({ url: slow.url, WebSocket: spy.WebSocket, backoffBaseMs: 20 });
    const b = new Client({ url: slow.url, WebSocket, backoffBaseMs: 20 });
    clients.push(a, b);
    const da = await a.open("t/presence-rate");
    const db = await b.open("t/presence-rate");
    const da2 = await a.open("t/presence-rate-2");
    typeAt(da, 0, "x");
    await waitFor("synced", () => db.doc.text("body") === "x" && da.saved && a.limits?.maxPresencePerSec === 4);
    // 40 states per document, one every 25 ms, on two documents of one connection.
    for (let i = 0; i < 40; i++) {
      da.setPresence({ field: `f${i}` });
      da2.setPresence({ field: `g${i}` });
      await new Promise((r) => setTimeout(r, 25));
    }
    await waitFor("b sees the latest state", () => [...db.peers.values()].some((p) => p.field === "f39"), 5_000);
    const refused = spy.received.filter((m) => m.type === "error" && m.status === Status.rateLimited).length;
    assert.equal(refused, 0, `${refused} presence messages refused as rate_limited`);
    const sent = spy.count("sent", "presence");
    assert.ok(sent <= 4 * 3 + 2, `${sent} presence messages in about 2 s at 4/s`);
  } finally {
    await slow.stop();
  }
});
