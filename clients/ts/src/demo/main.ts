// The demo page `weft serve` serves at /: a document picker, a CodeMirror
// editor bound to the document's "body" with remote cursors, who is here,
// a connection / saved indicator and an offline toggle. Documents persist
// in IndexedDB, so edits made offline survive a reload.

import { EditorState } from "@codemirror/state";
import { EditorView, drawSelection, keymap, lineNumbers } from "@codemirror/view";
import { defaultKeymap, history, historyKeymap } from "@codemirror/commands";
import { Client, IndexedDBStore, encodeValue } from "../index.js";
import type { Document } from "../index.js";
import { peerLabel, weftCollab } from "../codemirror.js";

const params = new URLSearchParams(location.search);
const token = params.get("token") ?? localStorage.getItem("weft-token") ?? "";
if (params.get("token")) localStorage.setItem("weft-token", token);
const docId = params.get("doc") ?? "";
const $ = (id: string) => document.getElementById(id)!;

const COLORS = ["#e91e63", "#3f51b5", "#009688", "#ff9800", "#795548", "#9c27b0", "#4caf50"];
const me = JSON.parse(sessionStorage.getItem("weft-me") ?? "null") ?? {
  name: `guest-${Math.floor(Math.random() * 900 + 100)}`,
  color: COLORS[Math.floor(Math.random() * COLORS.length)],
};
sessionStorage.setItem("weft-me", JSON.stringify(me));

const wsURL = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`;

async function listDocs(): Promise<void> {
  const ul = $("docs");
  try {
    const r = await fetch("/v1/docs?limit=100", token ? { headers: { Authorization: `Bearer ${token}` } } : {});
    if (!r.ok) throw new Error(`${r.status}`);
    const { docs } = (await r.json()) as { docs: string[] };
    ul.replaceChildren(
      ...docs.map((d) => {
        const li = document.createElement("li");
        const a = document.createElement("a");
        a.href = `?doc=${encodeURIComponent(d)}`;
        a.textContent = d;
        li.appendChild(a);
        return li;
      }),
    );
    if (docs.length === 0) ul.textContent = "no documents yet";
  } catch (e) {
    ul.textContent = `could not list documents (${(e as Error).message})`;
  }
}

function showPicker(): void {
  $("picker").hidden = false;
  ($("newdoc") as HTMLInputElement).value = `notes/${Math.floor(Math.random() * 1000)}`;
  void listDocs();
}

async function showEditor(id: string): Promise<void> {
  $("editor-pane").hidden = false;
  $("docname").textContent = id;
  document.title = `${id} — weft`;
  const pingMs = Number(params.get("ping") ?? 5000);
  const startOffline = params.get("offline") === "1";
  const client = new Client({ url: wsURL, token, store: new IndexedDBStore(), pingIntervalMs: pingMs, pongTimeoutMs: pingMs, clientName: "weft-demo", offline: startOffline });
  const doc: Document = await client.open(id);
  doc.setPresence({ state: encodeValue(me) });
  const view = new EditorView({
    parent: $("editor"),
    state: EditorState.create({
      doc: doc.doc.text("body"),
      extensions: [lineNumbers(), history(), drawSelection(), keymap.of([...defaultKeymap, ...historyKeymap]), EditorView.lineWrapping, weftCollab(doc)],
    }),
  });
  view.focus();

  const status = () => {
    const s = client.state;
    const saved = doc.saved;
    $("conn").textContent = s === "connected" ? "online" : s;
    $("conn").className = `pill ${s}`;
    $("saved").textContent = saved ? "saved" : "unsaved changes";
    $("saved").className = `pill ${saved ? "ok" : "pending"}`;
  };
  client.onState.on(status);
  doc.onSaved.on(status);
  status();

  const roBanner = () => {
    const b = $("readonly");
    b.hidden = !doc.readOnly;
    if (doc.readOnly) b.textContent = doc.error ? `Read-only: ${doc.error.message}` : "Read-only: your token grants read access to this document; typing is disabled.";
  };
  doc.onError.on((e) => {
    roBanner();
    if (!doc.readOnly) {
      $("errors").hidden = false;
      $("errors").textContent = e.message;
    }
  });
  roBanner();

  const who = () => {
    const ul = $("who");
    const items = [`<li><span class="dot" style="background:${me.color}"></span>${escapeHTML(me.name)} (you)</li>`];
    for (const p of doc.peers.values()) {
      const { name, color } = peerLabel(p);
      items.push(`<li data-session="${escapeHTML(p.session)}"><span class="dot" style="background:${color}"></span>${escapeHTML(name)}${p.typing ? " <em>typing…</em>" : ""}</li>`);
    }
    ul.innerHTML = items.join("");
  };
  doc.onPresence.on(who);
  who();

  const offline = $("offline") as HTMLInputElement;
  offline.checked = startOffline;
  offline.onchange = () => client.setOnline(!offline.checked);
  addEventListener("offline", () => client.setOnline(false));
  addEventListener("online", () => client.setOnline(!offline.checked));

  (globalThis as any).weftDemo = { client, doc, view, me };
}

function escapeHTML(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

if (docId) void showEditor(docId);
else showPicker();
