// Go and TypeScript clients edit the same documents concurrently through a
// real weft serve, with random edits and offline periods, and end
// identical: to each other, to the server's JSON and to a fresh Go client.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { Client } from "../src/index.js";
import type { Document } from "../src/index.js";
import { Server, waitFor } from "./server.js";
import { repoRoot } from "./util.js";

const DOCS = ["x/1", "x/2"];
const ALPHABET = ["t", "s", " ", "ü", "😀", "字"];

function goClient(): string {
  const out = path.join(os.tmpdir(), `weft-goclient-${process.pid}`);
  const r = spawnSync("go", ["build", "-o", out, "./clients/ts/testdata/goclient"], { cwd: repoRoot, stdio: "inherit" });
  if (r.status !== 0) throw new Error("building goclient failed");
  return out;
}

function runGo(bin: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.on("data", (b) => (out += b));
    p.stderr.on("data", (b) => (err += b));
    p.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`goclient ${args.join(" ")}: exit ${code}: ${err}`))));
  });
}

/** A seeded PRNG (mulberry32), so that a failure can be replayed. */
function rng(seed: number) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomEdit(r: () => number, d: Document): void {
  d.edit((tx, doc) => {
    const n = doc.textLen("body");
    const k = r();
    if (k < 0.6 || n === 0) tx.insert("body", Math.floor(r() * (n + 1)), ALPHABET[Math.floor(r() * ALPHABET.length)]);
    else if (k < 0.9) {
      const pos = Math.floor(r() * n);
      tx.delete("body", pos, 1 + Math.floor(r() * Math.min(2, n - pos)));
    } else tx.add("likes", 1 + Math.floor(r() * 3));
  });
}

test("Go and TypeScript clients converge through weft serve", async () => {
  const seed = Number(process.env.WEFT_SEED ?? 42);
  const bin = goClient();
  const srv = await Server.start();
  const clients: Client[] = [];
  try {
    const goDone = runGo(bin, ["--url", srv.url, "--dir", mkdtempSync(path.join(os.tmpdir(), "weft-go-")), "--docs", DOCS.join(","), "--seed", String(seed), "--rounds", "6", "--edits", "15"]);
    const ts = [0, 1].map(async (k) => {
      const r = rng(seed * 31 + k);
      const c = new Client({ url: srv.url, WebSocket, backoffBaseMs: 10, backoffCapMs: 200 });
      clients.push(c);
      const docs = await Promise.all(DOCS.map((id) => c.open(id)));
      for (let round = 0; round < 6; round++) {
        c.setOnline(round % 3 !== 1);
        for (let i = 0; i < 15; i++) {
          for (const d of docs) randomEdit(r, d);
          await new Promise((res) => setTimeout(res, 1 + Math.floor(r() * 4)));
        }
      }
      c.setOnline(true);
      await waitFor(`TS client ${k} saved`, () => docs.every((d) => d.saved), 30_000);
      return docs;
    });
    await goDone;
    const tsDocs = await Promise.all(ts);
    for (const id of DOCS) {
      const want = async () => (await (await fetch(`${srv.http}/v1/docs/${id}`)).json()) as { text: Record<string, string>; counter: Record<string, number> };
      // The server holds every client's edits (all saved); each client has
      // them once the last ones have been fanned out to it.
      const server = await want();
      await waitFor(`${id} converged`, () => tsDocs.every((docs) => docs[DOCS.indexOf(id)].doc.text("body") === server.text.body), 30_000);
      for (const docs of tsDocs) {
        const d = docs[DOCS.indexOf(id)];
        assert.equal(d.doc.text("body"), server.text.body, `seed ${seed}: ${id} text`);
        assert.equal(Number(d.doc.counter("likes")), server.counter?.likes ?? 0, `seed ${seed}: ${id} counter`);
      }
    }
    const dump = JSON.parse(await runGo(bin, ["--dump", "--url", srv.url, "--docs", DOCS.join(",")]));
    for (const [k, id] of DOCS.entries()) {
      assert.equal(dump[id].text, tsDocs[0][k].doc.text("body"), `seed ${seed}: Go sees ${id} as TS does`);
      assert.equal(dump[id].likes, tsDocs[0][k].doc.counter("likes").toString());
      assert.ok(tsDocs[0][k].doc.textLen("body") > 0);
    }
  } finally {
    for (const c of clients) c.close();
    await srv.stop();
  }
});
