// The readings, newest first, a page at a time by cursor: the accessible equivalent of the charts.
import { useEffect, useState } from 'preact/hooks'
import type { Device, Page, Reading } from '../api/types.ts'
import { describeError } from '../api/http.ts'
import { DEVICE_LABEL, formatValues, READING_LABEL, readingLabel } from '../lib/format.ts'
import { useConsole } from '../state/console.ts'
import { ErrorNote, When } from './common.tsx'

const PAGE = 20

export function ReadingsTable({ patientId, devices }: { patientId: string; devices: Device[] }) {
  const c = useConsole()
  const [type, setType] = useState('')
  // cursors[i] is the cursor of page i (page 0 has none).
  const [cursors, setCursors] = useState<Array<string | null>>([null])
  const [page, setPage] = useState<Page<Reading> | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)
  const index = cursors.length - 1

  const load = async (cursor: string | null) => {
    setBusy(true)
    setError(null)
    try {
      setPage(await c.api.get<Page<Reading>>(`/patients/${encodeURIComponent(patientId)}/readings`, { limit: PAGE, cursor, type: type || undefined }))
    } catch (err) {
      setError(describeError(err))
    } finally {
      setBusy(false)
    }
  }

  useEffect(() => {
    setCursors([null])
    void load(null)
  }, [patientId, type])

  // New readings appear at the top of the first page as they arrive.
  useEffect(
    () =>
      c.socket.events.on('reading', (e) => {
        if (e.patientId !== patientId || index !== 0 || (type && e.reading.type !== type)) return
        setPage((p) => (p && !p.items.some((r) => r.id === e.reading.id) ? { ...p, items: [{ ...e.reading, patientId }, ...p.items].slice(0, PAGE) } : p))
      }),
    [patientId, index, type],
  )

  const deviceName = (id: string) => {
    const d = devices.find((x) => x.id === id)
    return d ? (DEVICE_LABEL[d.kind] ?? d.kind) : id
  }

  return (
    <div class="readings">
      <div class="field inline-field">
        <label for="readings-type">Reading type</label>
        <select id="readings-type" value={type} onChange={(e) => setType(e.currentTarget.value)}>
          <option value="">All readings</option>
          {Object.entries(READING_LABEL).map(([v, l]) => (
            <option value={v}>{l}</option>
          ))}
        </select>
      </div>
      <div class="table-wrap" tabIndex={0} role="region" aria-labelledby="readings-caption">
        <table>
          <caption id="readings-caption">
            Readings, newest first (page {index + 1}){busy ? ', loading' : ''}
          </caption>
          <thead>
            <tr>
              <th scope="col">Measured</th>
              <th scope="col">Type</th>
              <th scope="col">Values</th>
              <th scope="col">Device</th>
            </tr>
          </thead>
          <tbody>
            {page?.items.map((r) => (
              <tr key={r.id}>
                <td>
                  <When iso={r.measuredAt} />
                </td>
                <td>{readingLabel(r.type)}</td>
                <td>{formatValues(r.type, r.values)}</td>
                <td>{deviceName(r.deviceId)}</td>
              </tr>
            ))}
            {page && page.items.length === 0 && (
              <tr>
                <td colSpan={4}>No readings.</td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      <div class="button-row pager">
        <button
          type="button"
          class="btn"
          disabled={index === 0 || busy}
          onClick={() => {
            const next = cursors.slice(0, -1)
            setCursors(next)
            void load(next[next.length - 1] ?? null)
          }}
        >
          Newer readings
        </button>
        <button
          type="button"
          class="btn"
          disabled={!page?.nextCursor || busy}
          onClick={() => {
            setCursors([...cursors, page!.nextCursor])
            void load(page!.nextCursor)
          }}
        >
          Older readings
        </button>
      </div>
      <ErrorNote>{error}</ErrorNote>
    </div>
  )
}
