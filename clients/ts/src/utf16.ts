// CodeMirror and the DOM count positions in UTF-16 code units; weft counts
// runes (code points). These convert offsets within a string.

/** The rune offset of UTF-16 offset u16 in s. Throws if it splits a surrogate pair. */
export function utf16ToRunes(s: string, u16: number): number {
  if (u16 < 0 || u16 > s.length) throw new RangeError(`weft: UTF-16 offset ${u16} outside 0..${s.length}`);
  let runes = u16;
  for (let i = 0; i < u16; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      if (i + 1 === u16) throw new RangeError(`weft: UTF-16 offset ${u16} splits a surrogate pair`);
      runes--;
      i++;
    }
  }
  return runes;
}

/** The UTF-16 offset of rune offset runes in s. */
export function runesToUtf16(s: string, runes: number): number {
  let i = 0;
  for (; runes > 0; runes--) {
    if (i >= s.length) throw new RangeError("weft: rune offset past the end");
    const c = s.charCodeAt(i);
    i += c >= 0xd800 && c <= 0xdbff ? 2 : 1;
  }
  return i;
}
