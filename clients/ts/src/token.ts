// Reads the grants of a weft access token (an HS256 JWT, docs/PROTOCOL.md
// section 11) without verifying it: the server verifies; the client only
// wants to know, before the user types, whether a document is read-only.

export type Access = "write" | "read" | "none" | "unknown";

/** path.Match for the syntax weft's grants use: * and ? (not crossing /), [...] classes, \ escapes. */
export function pathMatch(pattern: string, name: string): boolean {
  let re = "^";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "[") {
      const j = pattern.indexOf("]", i + 1);
      if (j < 0) return false;
      let cls = pattern.slice(i + 1, j).replace(/\\/g, "\\\\");
      if (cls.startsWith("^")) cls = "^" + cls.slice(1);
      re += `(?!/)[${cls}]`;
      i = j;
    } else if (c === "\\" && i + 1 < pattern.length) re += "\\" + pattern[++i].replace(/[^\w]/, (m) => m);
    else re += c.replace(/[.+^${}()|\\/]/g, "\\$&");
  }
  try {
    return new RegExp(re + "$").test(name);
  } catch {
    return false;
  }
}

/** The access a token grants to doc: the widest of its matching grants. */
export function tokenAccess(token: string, doc: string): Access {
  if (!token) return "unknown";
  const parts = token.split(".");
  if (parts.length !== 3) return "unknown";
  let claims: { docs?: { pattern?: string; access?: string }[] };
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = new TextDecoder().decode(Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0)));
    claims = JSON.parse(json);
  } catch {
    return "unknown";
  }
  let best: Access = "none";
  for (const g of claims.docs ?? []) {
    if (typeof g.pattern !== "string" || !pathMatch(g.pattern, doc)) continue;
    if (g.access === "write") return "write";
    if (g.access === "read") best = "read";
  }
  return best;
}
