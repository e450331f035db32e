// @weftsync/client: the browser (and Node) client of weft.
export * from "./types.js";
export * from "./hlc.js";
export { Doc, Tx, InvalidChangeError, PendingFullError, OutOfRangeError, FieldTypeError, ChangeFullError, MAX_CHANGE_OPS } from "./doc.js";
export type { TextEvent, DocOptions } from "./doc.js";
export { encodeChanges, decodeChanges, inflateBatch, CorruptError } from "./codec.js";
export { decodeSnapshot, decodeState, SnapshotError, SNAPSHOT_MEDIA_TYPE, MAX_SNAPSHOT_RAW } from "./snapshot.js";
export type { DocState, StateSpans, StateTime, StateItems } from "./snapshot.js";
export { encodeMessage, decodeMessage, ProtocolError, Status, CloseCode, statusName, PROTOCOL_VERSION } from "./protocol.js";
export type { Message, Limits, Selection } from "./protocol.js";
export { Client, Document, DocumentError, ConnectionError, ReadOnlyError } from "./client.js";
export type { ClientOptions, ConnectionState, PeerPresence, LocalPresence, RemoteChange } from "./client.js";
export { MemoryStore, IndexedDBStore } from "./store.js";
export type { Store, StoredDoc } from "./store.js";
export { encode as encodeValue, decode as decodeValue } from "./msgpack.js";
export { utf16ToRunes, runesToUtf16 } from "./utf16.js";
export { tokenAccess, pathMatch } from "./token.js";
export type { Access } from "./token.js";
