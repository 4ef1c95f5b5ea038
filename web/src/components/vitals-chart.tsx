// A small hand-written SVG line chart for one vital over a time range, with the patient's
// limits drawn as labelled lines. role="img" with a spoken summary; the readings table below
// the charts is the full accessible equivalent. Series differ by line style and marker shape,
// not only by colour.
import { formatDay, num, SEVERITY_LABEL } from '../lib/format.ts'
import { prettyOp, type ThresholdLine } from '../lib/thresholds.ts'

export interface Series {
  name: string
  field: string
  points: Array<{ t: number; v: number }>
  style: 'solid' | 'dashed'
}

interface Props {
  title: string
  unit: string
  digits: number
  series: Series[]
  thresholds: ThresholdLine[]
  from: number
  to: number
  days: number
  /** Short names of fields for limit labels when a chart has several ("Sys", "Dia"). */
  fieldShort?: Record<string, string>
}

const W = 640
const H = 230
const M = { left: 44, right: 136, top: 14, bottom: 30 }
const PLOT_W = W - M.left - M.right
const PLOT_H = H - M.top - M.bottom
const COLORS = ['#0b4a8b', '#6a1b9a']
const SEV_COLOR = { info: '#0b4a8b', warning: '#6b5300', urgent: '#a33c00', critical: '#a3001b' } as const

function niceTicks(min: number, max: number, count = 5): number[] {
  const span = max - min || 1
  const raw = span / count
  const mag = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => span / s <= count) ?? 10 * mag
  const out: number[] = []
  for (let v = Math.ceil(min / step) * step; v <= max + 1e-9; v += step) out.push(Number(v.toFixed(6)))
  return out
}

export function VitalsChart({ title, unit, digits, series, thresholds, from, to, days, fieldShort }: Props) {
  const values = series.flatMap((s) => s.points.map((p) => p.v))
  const fields = new Set(series.map((s) => s.field))
  const limits = thresholds.filter((t) => fields.has(t.field))
  const count = Math.max(0, ...series.map((s) => s.points.length))

  let lo = values.length ? Math.min(...values) : 0
  let hi = values.length ? Math.max(...values) : 1
  const span = Math.max(hi - lo, Math.abs(hi) * 0.05, 1)
  // Limits near the data widen the scale; far-off ones are listed under the chart instead.
  const shown = limits.filter((t) => !values.length || (t.value >= lo - span * 1.5 && t.value <= hi + span * 1.5))
  const offChart = limits.filter((t) => !shown.includes(t))
  for (const t of shown) {
    lo = Math.min(lo, t.value)
    hi = Math.max(hi, t.value)
  }
  const pad = (hi - lo || span) * 0.08
  lo -= pad
  hi += pad
  const ticks = niceTicks(lo, hi)
  lo = Math.min(lo, ticks[0] ?? lo)
  hi = Math.max(hi, ticks[ticks.length - 1] ?? hi)

  const x = (t: number) => M.left + ((t - from) / (to - from || 1)) * PLOT_W
  const y = (v: number) => M.top + (1 - (v - lo) / (hi - lo || 1)) * PLOT_H

  const dayMs = 86_400_000
  const stepDays = days <= 7 ? 1 : days <= 30 ? 5 : 15
  const xTicks: number[] = []
  const start = new Date(from)
  start.setHours(0, 0, 0, 0)
  for (let t = start.getTime() + dayMs; t <= to; t += stepDays * dayMs) xTicks.push(t)

  // Limit labels at the right edge, nudged apart so they do not overlap.
  const labels = shown
    .map((t) => ({ t, y: y(t.value) }))
    .sort((a, b) => a.y - b.y)
  for (let i = 1; i < labels.length; i++) if (labels[i]!.y - labels[i - 1]!.y < 12) labels[i]!.y = labels[i - 1]!.y + 12

  const limitText = (t: ThresholdLine) => `${SEVERITY_LABEL[t.severity]}${fields.size > 1 ? ` ${fieldShort?.[t.field] ?? t.field}` : ''} ${prettyOp(`${t.op} ${t.value}`)}`

  const summary = values.length
    ? `${title}, last ${days} days: ${count} reading${count === 1 ? '' : 's'}. ` +
      series
        .filter((s) => s.points.length)
        .map((s) => {
          const vs = s.points.map((p) => p.v)
          return `${s.name} from ${num(Math.min(...vs), digits)} to ${num(Math.max(...vs), digits)} ${unit}, latest ${num(s.points[s.points.length - 1]!.v, digits)}`
        })
        .join('; ') +
      '.' +
      (limits.length ? ` Limits: ${limits.map(limitText).join(', ')} ${unit}.` : '')
    : `${title}: no readings in the last ${days} days.`

  return (
    <figure class="chart">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={summary} preserveAspectRatio="xMidYMid meet">
        <g class="grid" aria-hidden="true">
          {ticks.map((v) => (
            <g key={v}>
              <line x1={M.left} x2={M.left + PLOT_W} y1={y(v)} y2={y(v)} />
              <text x={M.left - 6} y={y(v) + 4} text-anchor="end">
                {num(v, Math.abs(v) < 10 && digits > 0 ? 1 : 0)}
              </text>
            </g>
          ))}
          {xTicks.map((t) => (
            <text key={t} x={x(t)} y={H - 8} text-anchor="middle">
              {formatDay(t)}
            </text>
          ))}
          <line class="axis" x1={M.left} x2={M.left} y1={M.top} y2={M.top + PLOT_H} />
          <line class="axis" x1={M.left} x2={M.left + PLOT_W} y1={M.top + PLOT_H} y2={M.top + PLOT_H} />
        </g>
        <g class="limits">
          {shown.map((t, i) => (
            <line key={i} x1={M.left} x2={M.left + PLOT_W} y1={y(t.value)} y2={y(t.value)} stroke={SEV_COLOR[t.severity]} stroke-dasharray={t.severity === 'warning' ? '6 4' : t.severity === 'info' ? '2 3' : '10 3 2 3'} />
          ))}
          {labels.map(({ t, y: ly }, i) => (
            <text key={i} x={M.left + PLOT_W + 6} y={ly + 4} fill={SEV_COLOR[t.severity]}>
              {limitText(t)}
            </text>
          ))}
        </g>
        {series.map((s, i) => {
          const color = COLORS[i % COLORS.length]!
          const pts = s.points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ')
          const markers = s.points.length <= 120
          return (
            <g key={s.field} class="series">
              <polyline points={pts} fill="none" stroke={color} stroke-width="2" stroke-dasharray={s.style === 'dashed' ? '7 4' : undefined} stroke-linejoin="round" />
              {markers &&
                s.points.map((p) =>
                  i % 2 === 0 ? (
                    <circle cx={x(p.t)} cy={y(p.v)} r="3" fill={color} />
                  ) : (
                    <rect x={x(p.t) - 3} y={y(p.v) - 3} width="6" height="6" fill="#fff" stroke={color} stroke-width="1.5" />
                  ),
                )}
            </g>
          )
        })}
        {!values.length && (
          <text x={M.left + PLOT_W / 2} y={M.top + PLOT_H / 2} text-anchor="middle" class="no-data">
            No readings in this period
          </text>
        )}
      </svg>
      <figcaption>
        <ul class="legend">
          {series.map((s, i) => (
            <li key={s.field}>
              <svg viewBox="0 0 28 12" width="28" height="12" aria-hidden="true" focusable="false">
                <line x1="0" x2="28" y1="6" y2="6" stroke={COLORS[i % COLORS.length]} stroke-width="2" stroke-dasharray={s.style === 'dashed' ? '7 4' : undefined} />
                {i % 2 === 0 ? <circle cx="14" cy="6" r="3" fill={COLORS[i % COLORS.length]} /> : <rect x="11" y="3" width="6" height="6" fill="#fff" stroke={COLORS[i % COLORS.length]} stroke-width="1.5" />}
              </svg>
              {s.name} ({unit})
            </li>
          ))}
          {shown.length > 0 && (
            <li>
              <svg viewBox="0 0 28 12" width="28" height="12" aria-hidden="true" focusable="false">
                <line x1="0" x2="28" y1="6" y2="6" stroke="#444" stroke-width="1.5" stroke-dasharray="6 4" />
              </svg>
              Alert limits (labelled at the right)
            </li>
          )}
        </ul>
        {offChart.length > 0 && <p class="muted small">Limits outside this chart: {offChart.map(limitText).join(', ')} {unit}.</p>}
      </figcaption>
    </figure>
  )
}
