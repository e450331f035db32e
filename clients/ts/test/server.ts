// Runs a real `weft serve` for tests: built once from the repository with
// go build (cached), on 127.0.0.1 with a free port.

import { spawn, spawnSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { repoRoot } from "./util.js";

let built: string | null = null;

export function weftBinary(): string {
  if (process.env.WEFT_BIN) return process.env.WEFT_BIN;
  if (built) return built;
  const out = path.join(os.tmpdir(), `weft-ts-test-${process.pid}`);
  const r = spawnSync("go", ["build", "-o", out, "./cmd/weft"], { cwd: repoRoot, stdio: "inherit" });
  if (r.status !== 0) throw new Error("go build ./cmd/weft failed");
  built = out;
  return out;
}

export class Server {
  proc!: ChildProcess;
  url = "";
  http = "";
  stderr = "";
  constructor(
    readonly dataDir: string,
    readonly args: string[] = ["--insecure"],
  ) {}

  static async start(args: string[] = ["--insecure"], dataDir?: string, listen = "127.0.0.1:0"): Promise<Server> {
    const s = new Server(dataDir ?? mkdtempSync(path.join(os.tmpdir(), "weft-ts-data-")), args);
    await s.run(listen);
    return s;
  }

  /** Starts (or restarts) the server on listen; resolves once it listens. */
  run(listen: string): Promise<void> {
    const bin = weftBinary();
    this.proc = spawn(bin, ["serve", "--listen", listen, "--data", this.dataDir, "--log-level", "warn", ...this.args], { stdio: ["ignore", "pipe", "pipe"] });
    this.proc.stderr!.on("data", (b) => (this.stderr += b.toString()));
    return new Promise((resolve, reject) => {
      let out = "";
      const t = setTimeout(() => reject(new Error(`weft serve did not start: ${this.stderr}`)), 20_000);
      this.proc.stdout!.on("data", (b) => {
        out += b.toString();
        const m = /weft serving http:\/\/(\S+)/.exec(out);
        if (m) {
          clearTimeout(t);
          this.http = `http://${m[1]}`;
          this.url = `ws://${m[1]}/v1/ws`;
          resolve();
        }
      });
      this.proc.on("exit", (code) => {
        clearTimeout(t);
        reject(new Error(`weft serve exited with ${code}: ${this.stderr}`));
      });
    });
  }

  /** The host:port it listens on. */
  get addr(): string {
    return this.http.replace("http://", "");
  }

  /** Stops it with SIGTERM (graceful: acked data is durable, sockets closed with 1001). */
  stop(): Promise<void> {
    if (this.proc.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      this.proc.once("exit", () => resolve());
      this.proc.kill("SIGTERM");
    });
  }

  async restart(): Promise<void> {
    const addr = this.addr;
    await this.stop();
    await this.run(addr);
  }
}

export function exists(p: string): boolean {
  return existsSync(p);
}

/** Waits for cond to hold, polling every few ms, up to ms (then throws with what). */
export async function waitFor(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
