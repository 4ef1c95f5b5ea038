/**
 * The gateway's /metrics (Prometheus text) as benchmark figures: what changed between two
 * scrapes, and the journal's group commits in a window.
 */
import { int, ms } from './harness.ts'

/** Samples by name and labels, e.g. `rpm_journal_commit_seconds_bucket{le="0.005"}`. */
export type Scrape = Map<string, number>

/** The gateway's /metrics now; undefined when it cannot be read. */
export async function scrape(url: string | undefined): Promise<Scrape | undefined> {
  if (!url) return undefined
  try {
    const text = await (await fetch(url)).text()
    const samples: Scrape = new Map()
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('#')) continue
      const m = /^([^\s{]+)(\{[^}]*\})?\s+(\S+)/.exec(line)
      if (m) samples.set(m[1]! + (m[2] ?? ''), Number(m[3]))
    }
    return samples
  } catch {
    return undefined
  }
}

export interface HistogramDelta {
  count: number
  sum: number
  /** Non-cumulative counts per bucket, labelled by the bucket's upper bound. */
  buckets: Array<{ le: string; count: number }>
}

export function histogramDelta(before: Scrape, after: Scrape, name: string): HistogramDelta {
  const get = (s: Scrape, key: string) => s.get(key) ?? 0
  const les: string[] = []
  for (const key of after.keys()) {
    const m = new RegExp(`^${name}_bucket\\{le="([^"]+)"\\}$`).exec(key)
    if (m) les.push(m[1]!)
  }
  let previous = 0
  const buckets = les.map((le) => {
    const key = `${name}_bucket{le="${le}"}`
    const cumulative = get(after, key) - get(before, key)
    const count = cumulative - previous
    previous = cumulative
    return { le, count }
  })
  return { count: get(after, `${name}_count`) - get(before, `${name}_count`), sum: get(after, `${name}_sum`) - get(before, `${name}_sum`), buckets }
}

export function counterDelta(before: Scrape, after: Scrape, prefix: string): number {
  let total = 0
  for (const [key, value] of after) if (key === prefix || key.startsWith(prefix + '{')) total += value - (before.get(key) ?? 0)
  return total
}

export interface JournalFigures {
  commits: number
  readingsPerCommitMean: number
  commitSizeHistogram: Array<{ le: string; count: number }>
  commitMsMean: number
  commitSecondsHistogram: Array<{ le: string; count: number }>
  /** The gateway's own PUBACK latency histogram (receive to commit), mean in ms. */
  serverPubackMsMean: number
  accepted: number
  quarantined: number
}

export function journalFigures(before: Scrape, after: Scrape): JournalFigures {
  const size = histogramDelta(before, after, 'rpm_journal_commit_readings')
  const seconds = histogramDelta(before, after, 'rpm_journal_commit_seconds')
  const puback = histogramDelta(before, after, 'rpm_puback_latency_seconds')
  return {
    commits: size.count,
    readingsPerCommitMean: size.count ? size.sum / size.count : Number.NaN,
    commitSizeHistogram: size.buckets,
    commitMsMean: seconds.count ? (seconds.sum / seconds.count) * 1000 : Number.NaN,
    commitSecondsHistogram: seconds.buckets,
    serverPubackMsMean: puback.count ? (puback.sum / puback.count) * 1000 : Number.NaN,
    accepted: counterDelta(before, after, 'rpm_readings_accepted_total'),
    quarantined: counterDelta(before, after, 'rpm_readings_quarantined_total'),
  }
}

/** The journal figures of a window as report lines. */
export function journalLines(j: JournalFigures, window: string): string[] {
  return [
    `  journal at ${window}: ${int(j.commits)} commits, ${j.readingsPerCommitMean.toFixed(1)} readings/commit on average, ` +
      `${ms(j.commitMsMean)} ms per commit (inserts + COMMIT + fsync); server-side PUBACK wait ${ms(j.serverPubackMsMean)} ms mean; ` +
      `${int(j.accepted)} accepted, ${int(j.quarantined)} quarantined`,
    `    readings per commit (rpm_journal_commit_readings): ${j.commitSizeHistogram.filter((b) => b.count > 0).map((b) => `<=${b.le}: ${int(b.count)}`).join(', ')}`,
    `    commit time (rpm_journal_commit_seconds): ${j.commitSecondsHistogram.filter((b) => b.count > 0).map((b) => `<=${b.le === '+Inf' ? b.le : `${Number(b.le) * 1000}ms`}: ${int(b.count)}`).join(', ')}`,
  ]
}
