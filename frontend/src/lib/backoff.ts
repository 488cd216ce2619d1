// Reconnect delays: exponential with jitter, capped.

export interface BackoffOptions {
  /** Delay of the first retry before jitter, in ms. */
  base: number;
  /** Longest delay before jitter, in ms. */
  max: number;
}

export const defaultBackoff: BackoffOptions = { base: 500, max: 15_000 };

/**
 * backoffDelay is the wait before retry number `attempt` (1, 2, …): the
 * exponential step min(max, base·2^(attempt-1)), of which a random half is
 * dropped ("equal jitter"), so clients cut off at the same moment, say by a
 * gateway that died, spread their reconnects instead of arriving together.
 */
export function backoffDelay(attempt: number, random: () => number = Math.random, opts: BackoffOptions = defaultBackoff): number {
  const n = Math.max(1, Math.floor(attempt));
  const step = Math.min(opts.max, opts.base * 2 ** Math.min(n - 1, 30));
  return Math.round(step / 2 + random() * (step / 2));
}
