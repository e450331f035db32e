// The editing traces (internal/traces/data) replayed by the TypeScript Doc
// must give Go's final text and byte-identical encoded histories
// (crdt/codec/testdata/conformance/traces.json, written by Go). The
// longest sequential traces are replayed by the bench (npm run bench), not
// here.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { encodeChanges } from "../src/codec.js";
import { loadTrace, replayConcurrent, replaySequential } from "./tracekit.js";
import { readRepo } from "./util.js";

const sha = (b: Uint8Array | string) => createHash("sha256").update(b).digest("hex");

const want: { name: string; concurrent?: boolean; end_sha256: string; history_sha256: string; plain_bytes: number }[] = JSON.parse(
  readRepo("crdt/codec/testdata/conformance/traces.json").toString(),
);

for (const name of ["friendsforever_flat.json.gz", "clownschool_flat.json.gz", "concurrent/friendsforever.json.gz"]) {
  test(`trace ${name}: Go's text and history, byte for byte`, () => {
    const w = want.find((x) => x.name === name)!;
    assert.ok(w, `${name} in traces.json`);
    const tr = loadTrace(name);
    const d = w.concurrent ? replayConcurrent(tr) : replaySequential(tr);
    assert.equal(d.text("body"), tr.endContent);
    assert.equal(sha(d.text("body")), w.end_sha256);
    const b = encodeChanges(d.changesSince());
    assert.equal(b.length, w.plain_bytes);
    assert.equal(sha(b), w.history_sha256);
  });
}
