// The demo page in a real headless Chromium (Debian's chromium package,
// driven by playwright-core: it speaks CDP to a browser we install
// ourselves, with auto-waiting locators and per-context offline mode;
// chromedp would mean a Go test depending on node's build output).
//
// Scenarios: concurrent typing converges without interleaving; a remote
// cursor shows at the right place; offline editing survives a reload from
// IndexedDB and merges; a server restart mid-session is survived; a
// read-only token shows the document and refuses typing visibly.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { Server, weftBinary } from "../test/server.js";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const TIMEOUT = 30_000;

let srv: Server;
let browser: Browser;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: apt-get install chromium (make test does)`);
  srv = await Server.start();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  await srv?.stop();
});

const contexts: BrowserContext[] = [];
async function openPage(doc: string, extra = ""): Promise<Page> {
  const ctx = await browser.newContext();
  contexts.push(ctx);
  const page = await ctx.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(`${srv.http}/?doc=${encodeURIComponent(doc)}${extra}`);
  await waitState(page, "connected");
  return page;
}

function waitState(page: Page, s: string) {
  return page.waitForFunction((s) => (globalThis as any).weftDemo?.client.state === s, s, { timeout: TIMEOUT });
}

const text = (page: Page) => page.evaluate(() => (globalThis as any).weftDemo.view.state.doc.toString() as string);
const crdtText = (page: Page) => page.evaluate(() => (globalThis as any).weftDemo.doc.doc.text("body") as string);

async function waitText(page: Page, want: string) {
  await page.waitForFunction((w) => (globalThis as any).weftDemo.view.state.doc.toString() === w, want, { timeout: TIMEOUT });
}

async function waitSame(a: Page, b: Page, pred: (s: string) => boolean = () => true): Promise<string> {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const [ta, tb] = await Promise.all([text(a), text(b)]);
    if (ta === tb && pred(ta)) return ta;
    if (Date.now() > deadline) throw new Error(`pages did not converge: ${JSON.stringify(ta)} vs ${JSON.stringify(tb)}`);
    await a.waitForTimeout(20);
  }
}

/** Puts the cursor at UTF-16 offset pos. */
async function cursorAt(page: Page, pos: number) {
  await page.evaluate((pos) => {
    const v = (globalThis as any).weftDemo.view;
    v.focus();
    v.dispatch({ selection: { anchor: pos } });
  }, pos);
}

test("two windows of one browser type concurrently at one place and converge without interleaving", async () => {
  // One context: the windows share IndexedDB, as two windows of a browser do.
  const a = await openPage("e2e/concurrent");
  const b = await a.context().newPage();
  b.on("pageerror", (e) => console.error("page error:", e));
  await b.goto(`${srv.http}/?doc=e2e%2Fconcurrent`);
  await waitState(b, "connected");
  const replicas = await Promise.all([a, b].map((p) => p.evaluate(() => (globalThis as any).weftDemo.doc.replica as string)));
  assert.notEqual(replicas[0], replicas[1], "two windows write with one replica id");
  await a.locator(".cm-content").click();
  await a.keyboard.type("[]");
  await waitText(b, "[]");
  await cursorAt(a, 1);
  await cursorAt(b, 1);
  await Promise.all([a.keyboard.type("alpha😀", { delay: 15 }), b.keyboard.type("bravo中", { delay: 15 })]);
  const t = await waitSame(a, b, (s) => s.length === "[alpha😀bravo中]".length);
  assert.ok(t === "[alpha😀bravo中]" || t === "[bravo中alpha😀]", `interleaved: ${t}`);
  assert.equal(await crdtText(a), t);
  await a.waitForFunction(() => (globalThis as any).weftDemo.doc.saved, null, { timeout: TIMEOUT });
});

test("the remote cursor of page A shows in page B at the right place, with A's name", async () => {
  const a = await openPage("e2e/cursor");
  const b = await openPage("e2e/cursor");
  await a.locator(".cm-content").click();
  await a.keyboard.type("hello 😀 world");
  await waitText(b, "hello 😀 world");
  await cursorAt(a, "hello 😀".length);
  const name = await a.evaluate(() => (globalThis as any).weftDemo.me.name as string);
  const caret = b.locator(".weft-caret");
  await caret.waitFor({ timeout: TIMEOUT });
  await b.waitForFunction(
    (want) => {
      const v = (globalThis as any).weftDemo.view;
      const el = document.querySelector(".weft-caret");
      return !!el && v.posAtDOM(el) === want;
    },
    "hello 😀".length,
    { timeout: TIMEOUT },
  );
  assert.equal((await b.locator(".weft-caret-label").textContent())?.replace(" ✎", ""), name);
  // Who is here lists A; when A leaves, its cursor goes.
  await b.locator("#who li", { hasText: name }).waitFor({ timeout: TIMEOUT });
  await a.close();
  await caret.waitFor({ state: "detached", timeout: TIMEOUT });
});

test("a select-all delete across more runs than one change holds (MAX_CHANGE_OPS) empties both pages", async () => {
  const a = await openPage("e2e/bigdelete");
  const b = await openPage("e2e/bigdelete");
  // 5,000 runs of text: "ab" typed 5,000 times, then every "b" deleted
  // (4,000 and 1,000 deletes, each batch one change within the bound).
  await a.evaluate(() => {
    const w = (globalThis as any).weftDemo;
    w.doc.edit((tx: any) => tx.insert("body", 0, "ab".repeat(5000)));
    w.doc.edit((tx: any) => {
      for (let i = 0; i < 4000; i++) tx.delete("body", i + 1, 1);
    });
    w.doc.edit((tx: any) => {
      for (let i = 4000; i < 5000; i++) tx.delete("body", i + 1, 1);
    });
  });
  // B received them as remote changes, so its editor shows them: B
  // selects all and deletes.
  await waitText(b, "a".repeat(5000));
  await b.evaluate(() => {
    const v = (globalThis as any).weftDemo.view;
    v.dispatch({ changes: { from: 0, to: v.state.doc.length } });
  });
  assert.equal(await crdtText(b), "");
  await a.waitForFunction(() => (globalThis as any).weftDemo.doc.doc.text("body") === "", null, { timeout: TIMEOUT });
  await b.waitForFunction(() => (globalThis as any).weftDemo.doc.saved, null, { timeout: TIMEOUT });
});

test("offline: both type, B reloads (its edits come back from IndexedDB), goes online, both converge", async () => {
  const a = await openPage("e2e/offline");
  const b = await openPage("e2e/offline");
  await a.locator(".cm-content").click();
  await a.keyboard.type("shared ");
  await waitText(b, "shared ");
  await b.context().setOffline(true);
  await waitState(b, "offline");
  await cursorAt(b, 0);
  await b.keyboard.type("B1 ");
  await cursorAt(a, 7);
  await a.keyboard.type("A1 ");
  assert.equal(await text(b), "B1 shared ");
  // Reload B: the network is back for the page itself, but the client
  // stays offline (?offline=1) until toggled, so what it shows comes from
  // IndexedDB alone.
  await b.evaluate(() => (globalThis as any).weftDemo.doc.flushStore());
  // The demo's own offline toggle keeps this page's client offline when
  // the browser comes back online (else it would sync before the reload).
  await b.locator("#offline").check();
  await b.context().setOffline(false);
  await b.goto(`${srv.http}/?doc=e2e%2Foffline&offline=1`);
  await b.waitForFunction(() => (globalThis as any).weftDemo?.client.state === "offline", null, { timeout: TIMEOUT });
  await waitText(b, "B1 shared ");
  await cursorAt(b, 3);
  await b.keyboard.type("B2 ");
  await b.locator("#offline").uncheck();
  const t = await waitSame(a, b, (s) => s.length === "B1 B2 shared A1 ".length);
  assert.equal(t, "B1 B2 shared A1 ");
  await b.waitForFunction(() => (globalThis as any).weftDemo.doc.saved, null, { timeout: TIMEOUT });
});

test("the server restarts mid-session: both pages reconnect by themselves and lose nothing", async () => {
  const a = await openPage("e2e/restart");
  const b = await openPage("e2e/restart");
  await a.locator(".cm-content").click();
  await a.keyboard.type("before ");
  await waitText(b, "before ");
  await a.waitForFunction(() => (globalThis as any).weftDemo.doc.saved, null, { timeout: TIMEOUT });
  await srv.stop();
  await Promise.all([waitState(a, "connecting"), waitState(b, "connecting")]);
  await a.keyboard.type("during ");
  await srv.run(srv.addr);
  await Promise.all([waitState(a, "connected"), waitState(b, "connected")]);
  await cursorAt(b, 0);
  await b.keyboard.type("after ");
  const t = await waitSame(a, b, (s) => s.length === "after before during ".length);
  assert.equal(t, "after before during ");
  await Promise.all([a, b].map((p) => p.waitForFunction(() => (globalThis as any).weftDemo.doc.saved, null, { timeout: TIMEOUT })));
});

test("a read-only token shows the document and refuses typing with a visible message", async () => {
  const secret = "e2e-secret-0123456789abcdef";
  const auth = await Server.start(["--secret", secret]);
  try {
    const tok = (user: string, docs: string) => spawnSync(weftBinary(), ["token", "--secret", secret, "--user", user, "--docs", docs], { encoding: "utf8" }).stdout.trim();
    const ctxW = await browser.newContext();
    contexts.push(ctxW);
    const w = await ctxW.newPage();
    await w.goto(`${auth.http}/?doc=ro%2Fdoc&token=${tok("writer", "ro/*:write")}`);
    await waitState(w, "connected");
    await w.locator(".cm-content").click();
    await w.keyboard.type("written by the writer");
    await w.waitForFunction(() => (globalThis as any).weftDemo.doc.saved, null, { timeout: TIMEOUT });

    const ctxR = await browser.newContext();
    contexts.push(ctxR);
    const r = await ctxR.newPage();
    await r.goto(`${auth.http}/?doc=ro%2Fdoc&token=${tok("reader", "ro/*:read")}`);
    await waitState(r, "connected");
    await waitText(r, "written by the writer");
    const banner = r.locator("#readonly");
    await banner.waitFor({ state: "visible", timeout: TIMEOUT });
    assert.match((await banner.textContent()) ?? "", /Read-only/);
    await r.locator(".cm-content").click();
    await r.keyboard.type("sneaky");
    assert.equal(await text(r), "written by the writer");
    assert.equal(await text(w), "written by the writer");
  } finally {
    await auth.stop();
  }
});

after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
});
