// The demo bundle committed under internal/webui/dist (embedded in the weft
// binary) must be what the sources build to; and the size budgets hold.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { repoRoot } from "./util.js";

const bundle = await import(path.join(repoRoot, "clients/ts/scripts/bundle.mjs"));

test("internal/webui/dist is up to date (npm run bundle)", async () => {
  const files: Record<string, Uint8Array> = await bundle.buildDemo();
  for (const [name, bytes] of Object.entries(files)) {
    const have = readFileSync(path.join(repoRoot, "internal/webui/dist", name));
    assert.ok(Buffer.from(bytes).equals(have), `internal/webui/dist/${name} is stale: run npm run bundle in clients/ts and commit it`);
  }
});

test("size budgets: client ≤ 40 KB gzipped, demo page ≤ 400 KB gzipped", async () => {
  const client = gzipSync(await bundle.buildClient()).length;
  const files: Record<string, Uint8Array> = await bundle.buildDemo();
  const page = Object.values(files).reduce((n, b) => n + gzipSync(b).length, 0);
  console.log(`client ${(client / 1024).toFixed(1)} KB gz, demo page ${(page / 1024).toFixed(1)} KB gz`);
  assert.ok(client <= 40 * 1024, `client bundle ${client} bytes gzipped`);
  assert.ok(page <= 400 * 1024, `demo page ${page} bytes gzipped`);
});
