// Hybrid logical clock, as hlc/ in Go: a Timestamp packs wall-clock
// milliseconds into its upper 48 bits and a logical counter into its lower
// 16. Timestamps exceed 2^53, so they are BigInts.

export type Timestamp = bigint;

export const LOGICAL_BITS = 16n;
const LOGICAL_MASK = (1n << LOGICAL_BITS) - 1n;

/** The timestamp with the given wall milliseconds and logical counter. */
export function timestamp(wallMillis: number, logical = 0): Timestamp {
  return (BigInt(wallMillis) << LOGICAL_BITS) | BigInt(logical & 0xffff);
}

export function wallOf(t: Timestamp): number {
  return Number(t >> LOGICAL_BITS);
}

export function logicalOf(t: Timestamp): number {
  return Number(t & LOGICAL_MASK);
}

/** Reads a wall clock in milliseconds since the Unix epoch. */
export type Wall = () => number;

export const systemWall: Wall = () => Date.now();

/** ClockSkewError: a remote timestamp is too far ahead of the local wall clock. */
export class ClockSkewError extends Error {
  constructor(
    readonly remote: Timestamp,
    readonly aheadMs: number,
    readonly maxOffsetMs: number,
  ) {
    super(`hlc: remote clock too far ahead: ${aheadMs}ms ahead of local wall clock (max offset ${maxOffsetMs}ms)`);
    this.name = "ClockSkewError";
  }
}

/**
 * Clock is a hybrid logical clock: now() never repeats or goes back, and
 * update() folds in remote timestamps (refusing ones more than maxOffsetMs
 * ahead of the wall clock, so one wrong clock cannot drag everyone along).
 */
export class Clock {
  private lastT: Timestamp = 0n;
  constructor(
    public wall: Wall = systemWall,
    readonly maxOffsetMs = 500,
  ) {}

  last(): Timestamp {
    return this.lastT;
  }

  now(): Timestamp {
    let t = timestamp(this.wall(), 0);
    if (t <= this.lastT) t = this.lastT + 1n;
    this.lastT = t;
    return t;
  }

  /** Throws ClockSkewError if update(remote) would refuse it. */
  check(remote: Timestamp): void {
    if (this.maxOffsetMs > 0) {
      const ahead = wallOf(remote) - this.wall();
      if (ahead > this.maxOffsetMs) throw new ClockSkewError(remote, ahead, this.maxOffsetMs);
    }
  }

  update(remote: Timestamp): Timestamp {
    this.check(remote);
    if (remote > this.lastT) this.lastT = remote;
    return this.lastT;
  }

  /** Folds in a timestamp from trusted history without the offset check. */
  witness(t: Timestamp): void {
    if (t > this.lastT) this.lastT = t;
  }
}
