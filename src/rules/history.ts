import type { ReadingType } from '../ingest/types.ts'
import type { Sample } from './evaluate.ts'
import type { Rule } from './spec.ts'

/** How far back the rules of one reading type look: a number of readings and a span of time. */
export interface HistoryNeed {
  count: number
  spanMs: number
}

/** History kept per patient and reading type at most, whatever the rules say. */
export const MAX_SAMPLES = 1000

/** Adds what `rule` looks back over to the needs of its reading type. */
export function addNeed(needs: Map<ReadingType, HistoryNeed>, rule: Rule): void {
  if (rule.kind !== 'threshold' && rule.kind !== 'delta') return
  const n = needs.get(rule.reading) ?? { count: 1, spanMs: 0 }
  if (rule.kind === 'threshold') {
    n.count = Math.max(n.count, rule.consecutive, rule.clear?.consecutive ?? 1)
    n.spanMs = Math.max(n.spanMs, rule.forMs ?? 0)
  } else n.spanMs = Math.max(n.spanMs, rule.windowMs)
  needs.set(rule.reading, n)
}

/**
 * Adds a reading to its history in time order (once: a reading already there keeps its place)
 * and drops what the rules no longer look back over: older than the newest reading by more than
 * the span, beyond the last `count` readings. Returns the reading's position.
 */
export function placeSample(samples: Sample[], s: Sample, need: HistoryNeed): number {
  let i = samples.findIndex((x) => x.readingId === s.readingId)
  if (i < 0) {
    i = samples.length
    while (i > 0 && (samples[i - 1]!.t > s.t || (samples[i - 1]!.t === s.t && samples[i - 1]!.readingId > s.readingId))) i--
    samples.splice(i, 0, s)
  }
  const newest = samples[samples.length - 1]!.t
  // A sample goes only when the next one is also outside the span: the last one at or before
  // the span's start stays, so a run that began there still measures as long as it is.
  let drop = 0
  while (
    samples.length - drop > need.count + 1 &&
    (samples[drop + 1]!.t <= newest - need.spanMs || samples.length - drop > MAX_SAMPLES)
  ) drop++
  if (drop > 0) {
    samples.splice(0, drop)
    i -= drop
  }
  return i
}
