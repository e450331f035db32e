// Local persistence of documents, so that edits survive a closed tab or a
// restarted process while offline. A Store keeps the client's replica id
// (the one it writes every document with and declares in hello, so the
// server binds it to the user: PROTOCOL.md section 4, hello) and, per
// document, its history as encoded change batches (every change the
// replica holds, its own unsent ones included). On open the client loads
// them, and it appends every change it makes or receives; compact replaces
// the batches with one.

export interface StoredDoc {
  /**
   * The replica id the document was first stored with: the client's, or,
   * in stores written by clients before 0.2, a replica of this document
   * alone (its changes are kept and relayed; new edits use the client's).
   */
  replica: string;
  batches: Uint8Array[];
}

/**
 * Store persists documents. Methods may be called concurrently for
 * different documents; for one document the client serialises them.
 * Batches passed in are owned by the store afterwards.
 */
export interface Store {
  /**
   * The client replica id kept in the store; if none is kept yet, keeps
   * fresh and returns it (atomically: two tabs starting at once agree).
   */
  clientReplica(fresh: string): Promise<string>;
  load(doc: string): Promise<StoredDoc | null>;
  /** Records the replica id of a document that has no stored history yet. */
  init(doc: string, replica: string): Promise<void>;
  append(doc: string, batch: Uint8Array): Promise<void>;
  /** Replaces the document's batches with one holding its whole history. */
  compact(doc: string, all: Uint8Array): Promise<void>;
}

/** MemoryStore keeps documents in memory: for Node tools and tests. */
export class MemoryStore implements Store {
  private docs = new Map<string, StoredDoc>();
  private replica: string | null = null;
  async clientReplica(fresh: string): Promise<string> {
    return (this.replica ??= fresh);
  }
  async load(doc: string): Promise<StoredDoc | null> {
    const d = this.docs.get(doc);
    return d ? { replica: d.replica, batches: d.batches.slice() } : null;
  }
  async init(doc: string, replica: string): Promise<void> {
    if (!this.docs.has(doc)) this.docs.set(doc, { replica, batches: [] });
  }
  async append(doc: string, batch: Uint8Array): Promise<void> {
    const d = this.docs.get(doc);
    if (!d) throw new Error(`weft: store: append to ${doc} before init`);
    d.batches.push(batch);
  }
  async compact(doc: string, all: Uint8Array): Promise<void> {
    const d = this.docs.get(doc);
    if (!d) throw new Error(`weft: store: compact of ${doc} before init`);
    d.batches = [all];
  }
}

function req<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("weft: IndexedDB transaction aborted"));
  });
}

/**
 * IndexedDBStore keeps documents in the browser's IndexedDB: object store
 * "docs" (doc → replica), "batches" (auto-increment key → {doc, bytes},
 * indexed by doc) and "meta" ("replica" → the client replica id). An
 * append is durable once its transaction completes.
 */
export class IndexedDBStore implements Store {
  private db: Promise<IDBDatabase>;
  constructor(name = "weft") {
    this.db = new Promise((resolve, reject) => {
      const r = indexedDB.open(name, 2);
      r.onupgradeneeded = (ev) => {
        const db = r.result;
        if (ev.oldVersion < 1) {
          db.createObjectStore("docs");
          const b = db.createObjectStore("batches", { autoIncrement: true });
          b.createIndex("doc", "doc");
        }
        if (ev.oldVersion < 2) db.createObjectStore("meta");
      };
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
  }

  async clientReplica(fresh: string): Promise<string> {
    const db = await this.db;
    const tx = db.transaction("meta", "readwrite");
    const s = tx.objectStore("meta");
    let r = (await req(s.get("replica"))) as string | undefined;
    if (r === undefined) {
      r = fresh;
      s.put(r, "replica");
    }
    await done(tx);
    return r;
  }

  async load(doc: string): Promise<StoredDoc | null> {
    const db = await this.db;
    const tx = db.transaction(["docs", "batches"], "readonly");
    const replica = (await req(tx.objectStore("docs").get(doc))) as string | undefined;
    if (replica === undefined) return null;
    const rows = (await req(tx.objectStore("batches").index("doc").getAll(IDBKeyRange.only(doc)))) as { doc: string; bytes: Uint8Array }[];
    return { replica, batches: rows.map((r) => new Uint8Array(r.bytes)) };
  }

  async init(doc: string, replica: string): Promise<void> {
    const db = await this.db;
    const tx = db.transaction("docs", "readwrite");
    const s = tx.objectStore("docs");
    if ((await req(s.get(doc))) === undefined) s.put(replica, doc);
    await done(tx);
  }

  async append(doc: string, batch: Uint8Array): Promise<void> {
    const db = await this.db;
    const tx = db.transaction("batches", "readwrite");
    tx.objectStore("batches").add({ doc, bytes: batch });
    await done(tx);
  }

  async compact(doc: string, all: Uint8Array): Promise<void> {
    const db = await this.db;
    const tx = db.transaction("batches", "readwrite");
    const s = tx.objectStore("batches");
    const keys = await req(s.index("doc").getAllKeys(IDBKeyRange.only(doc)));
    for (const k of keys) s.delete(k);
    s.add({ doc, bytes: all });
    await done(tx);
  }
}
