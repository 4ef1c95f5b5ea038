/** Plain words for what a rule matched, for thread messages: "185/110 mmHg", "52 mg/dL". */
export function describeValues(readingType: string | null, v: Record<string, unknown>): string {
  const n = (k: string) => (typeof v[k] === 'number' ? (v[k] as number) : undefined)
  const fixed = (x: number | undefined, digits = 1) => (x === undefined ? '?' : Number.isInteger(x) ? String(x) : x.toFixed(digits))
  if (n('change') !== undefined) {
    const field = Object.keys(v).find((k) => k !== 'change' && k !== 'baseline' && k !== 'baselineAt' && k !== 'windowHours')
    const unit = field === 'weightKg' ? ' kg' : ''
    const sign = n('change')! >= 0 ? '+' : ''
    return `${sign}${fixed(n('change'), 2)}${unit} within ${fixed(n('windowHours'), 0)} h (now ${fixed(field ? n(field) : undefined)}${unit})`
  }
  if (n('hoursWithoutData') !== undefined) return `no reading for ${fixed(n('hoursWithoutData'), 0)} hours`
  if (Array.isArray(v.devices)) return `${v.devices.length} device(s) offline for ${fixed(n('hoursOffline'), 0)}+ hours`
  if (typeof v.event === 'string') return v.event === 'dose.missed' ? 'a dose was not confirmed in time' : v.event
  switch (readingType) {
    case 'blood_pressure':
      return `blood pressure ${fixed(n('systolicMmHg'), 0)}/${fixed(n('diastolicMmHg'), 0)} mmHg`
    case 'glucose':
      return `glucose ${fixed(n('glucoseMgDl'), 0)} mg/dL`
    case 'spo2':
      return `SpO2 ${fixed(n('spo2Percent'), 0)}%`
    case 'heart_rate':
      return `heart rate ${fixed(n('heartRateBpm'), 0)} bpm`
    case 'weight':
      return `weight ${fixed(n('weightKg'))} kg`
    case 'temperature':
      return `temperature ${fixed(n('temperatureC'))} °C`
    default:
      return 'see the alert'
  }
}
