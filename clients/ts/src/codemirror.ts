// weftCollab binds a CodeMirror 6 editor to one text field of a weft
// Document:
//
//   - each CodeMirror transaction that changes the document becomes one
//     CRDT transaction (one change), positions converted from UTF-16 code
//     units to runes;
//   - remote changes become one CodeMirror transaction, not added to the
//     undo history (so undo/redo with @codemirror/commands' history() undo
//     one's own edits only), and the local selection is restored from
//     anchors (character ids), not offsets: text inserted at the cursor by
//     someone else goes after the character the cursor follows;
//   - the local cursor and selection are published as presence; other
//     sessions' cursors and selections are drawn with their name and colour
//     (from the token, or the presence state {name, color} when the server
//     runs without tokens), marked while they type, and removed when their
//     session leaves or times out;
//   - a read-only document (the token grants read access, or the server
//     refused an edit with read_only) makes the editor read-only.

import { Annotation, ChangeSet, Compartment, EditorSelection, EditorState, StateEffect, StateField, Transaction } from "@codemirror/state";
import type { Extension, Range } from "@codemirror/state";
import { Decoration, EditorView, ViewPlugin, WidgetType } from "@codemirror/view";
import type { DecorationSet, PluginValue, ViewUpdate } from "@codemirror/view";
import type { Document, PeerPresence, RemoteChange } from "./client.js";
import { ChangeFullError } from "./doc.js";
import { decode } from "./msgpack.js";
import { Side } from "./types.js";
import type { Anchor } from "./types.js";

/** Marks the transactions the binding makes from remote changes. */
export const remoteChange = Annotation.define<boolean>();

const setPeers = StateEffect.define<DecorationSet>();

const peersField = StateField.define<DecorationSet>({
  create: () => Decoration.none,
  update(v, tr) {
    v = v.map(tr.changes);
    for (const e of tr.effects) if (e.is(setPeers)) v = e.value;
    return v;
  },
  provide: (f) => EditorView.decorations.from(f),
});

class CaretWidget extends WidgetType {
  constructor(
    readonly name: string,
    readonly color: string,
    readonly typing: boolean,
  ) {
    super();
  }
  eq(o: CaretWidget): boolean {
    return o.name === this.name && o.color === this.color && o.typing === this.typing;
  }
  toDOM(): HTMLElement {
    const caret = document.createElement("span");
    caret.className = "weft-caret";
    caret.style.borderLeft = `2px solid ${this.color}`;
    caret.style.marginLeft = "-1px";
    caret.style.marginRight = "-1px";
    caret.style.position = "relative";
    const label = document.createElement("span");
    label.className = "weft-caret-label";
    label.textContent = this.name + (this.typing ? " ✎" : "");
    label.style.cssText = `position:absolute;top:-1.3em;left:-2px;font-size:11px;line-height:1.2;padding:0 3px;border-radius:3px;white-space:nowrap;color:#fff;background:${this.color};pointer-events:none;`;
    caret.appendChild(label);
    return caret;
  }
  ignoreEvent(): boolean {
    return true;
  }
}

/** The name and colour to show for a peer. */
export function peerLabel(p: PeerPresence): { name: string; color: string } {
  let name = p.name || p.user;
  let color = p.color;
  if (p.state) {
    try {
      const v = decode(p.state) as { name?: unknown; color?: unknown } | null;
      if (v && typeof v === "object") {
        if ((!p.name || p.user === "anonymous") && typeof v.name === "string" && v.name) name = v.name;
        if (!color && typeof v.color === "string") color = v.color;
      }
    } catch {
      /* not ours */
    }
  }
  if (!/^#[0-9a-fA-F]{3,8}$/.test(color)) color = "#888888";
  return { name: name || "someone", color };
}

export interface CollabOptions {
  /** The text field. Default: "body". */
  field?: string;
  /** How long after a local edit presence says "typing". Default: 1500 ms. */
  typingMs?: number;
}

/** The CodeMirror extension that binds the editor to doc's text field. */
export function weftCollab(doc: Document, opts: CollabOptions = {}): Extension {
  const field = opts.field ?? "body";
  const typingMs = opts.typingMs ?? 1500;
  const editable = new Compartment();
  const ro = () => [EditorState.readOnly.of(doc.readOnly), EditorView.editable.of(!doc.readOnly)];

  const plugin = ViewPlugin.fromClass(
    class implements PluginValue {
      private anchor: Anchor | null = null;
      private head: Anchor | null = null;
      private typingUntil = 0;
      private typingTimer: ReturnType<typeof setTimeout> | null = null;
      private offs: (() => void)[] = [];

      constructor(readonly view: EditorView) {
        this.rememberSelection(view.state);
        this.offs.push(doc.onRemote.on((rc) => this.remote(rc)));
        this.offs.push(doc.onPresence.on(() => this.drawPeers()));
        this.offs.push(doc.onError.on(() => this.syncReadOnly()));
        // Start from the document as the replica holds it.
        const text = doc.doc.text(field);
        if (view.state.doc.toString() !== text) {
          queueMicrotask(() =>
            view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text }, annotations: [remoteChange.of(true), Transaction.addToHistory.of(false)] }),
          );
        }
        queueMicrotask(() => {
          this.syncReadOnly();
          this.publish();
          this.drawPeers();
        });
      }

      private syncReadOnly(): void {
        if (this.view.state.readOnly !== doc.readOnly) this.view.dispatch({ effects: editable.reconfigure(ro()) });
      }

      private rememberSelection(state: EditorState): void {
        const sel = state.selection.main;
        try {
          this.anchor = doc.doc.anchorAt(field, doc.doc.runesFromUtf16(field, sel.anchor), Side.After);
          this.head = sel.empty ? this.anchor : doc.doc.anchorAt(field, doc.doc.runesFromUtf16(field, sel.head), Side.After);
        } catch {
          this.anchor = this.head = null;
        }
      }

      update(u: ViewUpdate): void {
        let local = false;
        for (const tr of u.transactions) {
          if (!tr.docChanged || tr.annotation(remoteChange)) continue;
          local = true;
          this.applyLocal(tr);
        }
        if (local) {
          this.typingUntil = Date.now() + typingMs;
          if (this.typingTimer) clearTimeout(this.typingTimer);
          this.typingTimer = setTimeout(() => ((this.typingTimer = null), this.publish()), typingMs + 10);
        }
        if (u.docChanged || u.selectionSet) {
          this.rememberSelection(u.state);
          if (local || u.selectionSet) this.publish();
        }
      }

      private applyLocal(tr: Transaction): void {
        // Changes in the old document's coordinates, applied last first so
        // that each position is still valid when it is used.
        // Rune positions are taken before anything is applied: applying
        // last first keeps every lower one valid.
        const changes: { from: number; n: number; text: string }[] = [];
        const d = doc.doc;
        tr.changes.iterChanges((fromA, toA, _fromB, _toB, ins) => {
          const from = d.runesFromUtf16(field, fromA);
          changes.push({ from, n: toA > fromA ? d.runesFromUtf16(field, toA) - from : 0, text: ins.toString() });
        });
        // One CRDT change, unless the deletes cross more runs of text than a
        // change holds (MAX_CHANGE_OPS: a select-all delete in a much-edited
        // document): then the rest goes on in the next change, a delete too
        // large for one change deleted from its end in pieces.
        let i = changes.length - 1;
        while (i >= 0) {
          doc.edit((tx) => {
            let used = false;
            for (; i >= 0; i--) {
              const c = changes[i];
              while (c.n > 0) {
                let m = c.n;
                for (;;) {
                  try {
                    tx.delete(field, c.from + c.n - m, m);
                    break;
                  } catch (e) {
                    if (!(e instanceof ChangeFullError)) throw e;
                    if (used && m === c.n) return; // the next change takes this delete
                    m = Math.ceil(m / 2); // never fails at 1 in a change with room
                  }
                }
                c.n -= m;
                used = true;
                if (c.n > 0) return; // this change is full: the rest next
              }
              if (c.text) {
                try {
                  tx.insert(field, c.from, c.text);
                } catch (e) {
                  if (!(e instanceof ChangeFullError)) throw e;
                  return;
                }
                c.text = "";
                used = true;
              }
            }
          });
        }
      }

      private remote(rc: RemoteChange): void {
        const view = this.view;
        let len = view.state.doc.length;
        let cs = ChangeSet.empty(len);
        for (const { field: f, event: e } of rc.text) {
          if (f !== field) continue;
          const c = ChangeSet.of({ from: e.pos16, to: e.pos16 + e.delete16, insert: e.insert }, len);
          cs = cs.compose(c);
          len = c.newLength;
        }
        if (cs.empty) {
          this.drawPeers();
          return;
        }
        let selection: EditorSelection | undefined;
        if (this.anchor && this.head) {
          try {
            const a = doc.doc.utf16FromRunes(field, doc.doc.indexOf(field, this.anchor));
            const h = doc.doc.utf16FromRunes(field, doc.doc.indexOf(field, this.head));
            selection = EditorSelection.single(a, h);
          } catch {
            selection = undefined;
          }
        }
        view.dispatch({ changes: cs, selection, annotations: [remoteChange.of(true), Transaction.addToHistory.of(false)] });
        this.drawPeers();
      }

      private publish(): void {
        const sel = this.view.state.selection.main;
        try {
          const head = doc.doc.anchorAt(field, doc.doc.runesFromUtf16(field, sel.head), Side.After);
          const anchor = sel.empty ? head : doc.doc.anchorAt(field, doc.doc.runesFromUtf16(field, sel.anchor), Side.After);
          doc.setPresence({ field, cursor: head, selection: sel.empty ? null : { anchor, head }, typing: Date.now() < this.typingUntil });
        } catch {
          /* a position inside a surrogate pair: the next update publishes */
        }
      }

      drawPeers(): void {
        const decos: Range<Decoration>[] = [];
        const len = this.view.state.doc.length;
        const pos = (a: Anchor) => Math.min(len, doc.doc.utf16FromRunes(field, doc.doc.indexOf(field, a)));
        for (const p of doc.peers.values()) {
          if (p.field !== field || !p.cursor) continue;
          const { name, color } = peerLabel(p);
          try {
            const at = pos(p.cursor);
            if (p.selection) {
              const a = pos(p.selection.anchor);
              const h = pos(p.selection.head);
              if (a !== h) decos.push(Decoration.mark({ attributes: { style: `background-color:${color}33` }, class: "weft-selection" }).range(Math.min(a, h), Math.max(a, h)));
            }
            decos.push(Decoration.widget({ widget: new CaretWidget(name, color, p.typing), side: 1 }).range(at));
          } catch {
            /* an anchor on a character this replica does not have yet */
          }
        }
        this.view.dispatch({ effects: setPeers.of(Decoration.set(decos, true)) });
      }

      destroy(): void {
        for (const off of this.offs) off();
        if (this.typingTimer) clearTimeout(this.typingTimer);
      }
    },
  );
  return [editable.of(ro()), peersField, plugin];
}
