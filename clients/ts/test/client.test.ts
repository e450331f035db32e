// The protocol client against a real `weft serve` on 127.0.0.1.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Client, ConnectionError, DocumentError, MemoryStore, Side } from "../src/index.js";
import type { ClientOptions, Document } from "../src/index.js";
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
