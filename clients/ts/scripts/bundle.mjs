// Builds the demo page into internal/webui/dist (committed, embedded in the
// weft binary): `npm run bundle`. With --check, builds in memory and exits
// non-zero if the committed files differ (test/bundle.test.ts does the same).
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
export const tsRoot = path.resolve(here, "..");
export const outDir = path.resolve(tsRoot, "../../internal/webui/dist");

/** The demo's files: name → bytes. */
export async function buildDemo() {
  const r = await esbuild.build({
    entryPoints: [path.join(tsRoot, "src/demo/main.ts")],
    bundle: true,
    minify: true,
    format: "iife",
    target: "es2022",
    write: false,
    legalComments: "none",
    outfile: "app.js",
    logLevel: "silent",
  });
  return {
    "app.js": r.outputFiles[0].contents,
    "index.html": readFileSync(path.join(tsRoot, "demo/index.html")),
  };
}

/** The client library alone, minified (for its size). */
export async function buildClient() {
  const r = await esbuild.build({
    entryPoints: [path.join(tsRoot, "src/index.ts")],
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2022",
    write: false,
    outfile: "weft.js",
    logLevel: "silent",
  });
  return r.outputFiles[0].contents;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const files = await buildDemo();
  if (process.argv.includes("--check")) {
    let stale = false;
    for (const [name, bytes] of Object.entries(files)) {
      let have;
      try {
        have = readFileSync(path.join(outDir, name));
      } catch {
        have = Buffer.alloc(0);
      }
      if (!Buffer.from(bytes).equals(have)) {
        console.error(`internal/webui/dist/${name} is stale: run npm run bundle in clients/ts`);
        stale = true;
      }
    }
    process.exit(stale ? 1 : 0);
  }
  mkdirSync(outDir, { recursive: true });
  for (const [name, bytes] of Object.entries(files)) writeFileSync(path.join(outDir, name), bytes);
  console.log(`wrote ${Object.keys(files).join(", ")} to ${path.relative(process.cwd(), outDir)}`);
}
