// Per-patient thresholds (docs/rules.md "Per-patient thresholds"): every rule as it applies to
// the patient, and a form to override its tunable values with a required reason. Saving is a
// PUT of the changed keys only; "Return to default" is a DELETE, also with a reason.
import { useState } from 'preact/hooks'
import type { Condition, PatientRule, RuleSpec, Severity } from '../api/types.ts'
import { describeError } from '../api/http.ts'
import { FIELD, readingLabel, SEVERITY_LABEL } from '../lib/format.ts'
import { describeCondition, effectiveSpec, isMonitored, parseComparison, prettyOp, TUNABLE_KEYS } from '../lib/thresholds.ts'
import { useConsole } from '../state/console.ts'
import { ErrorNote, focusOnMount, When } from './common.tsx'

const fieldLabel = (f: string) => (FIELD[f] ? `${FIELD[f].label} (${FIELD[f].unit})` : f)
const shortField = (f: string) => { const l = FIELD[f]?.label ?? f; return /[A-Z]/.test(l.slice(1)) ? l : l.toLowerCase() }

export function describeRule(spec: RuleSpec): string {
  const parts: string[] = []
  for (const l of spec.levels ?? []) parts.push(`${SEVERITY_LABEL[l.severity]}: ${describeCondition(l, shortField)}`)
  if (spec.clear) parts.push(`clears when ${describeCondition(spec.clear, shortField)}`)
  if (typeof spec['consecutive'] === 'number') parts.push(`${spec['consecutive']} readings in a row`)
  for (const k of ['window', 'for', 'after', 'cooldown'] as const) if (typeof spec[k] === 'string') parts.push(`${k} ${String(spec[k])}`)
  if (!spec.levels && typeof spec['severity'] === 'string') parts.push(`severity ${String(spec['severity'])}`)
  return parts.join('; ')
}

export function ThresholdsEditor({ patientId, rules, onChanged, canEdit }: { patientId: string; rules: PatientRule[]; onChanged: () => void; canEdit: boolean }) {
  const [editing, setEditing] = useState<string | null>(null)
  const groups = new Map<string, PatientRule[]>()
  for (const r of rules) {
    const reading = r.reading ?? effectiveSpec(r).reading
    const key = !reading || reading === 'any' ? 'other' : reading
    groups.set(key, [...(groups.get(key) ?? []), r])
  }
  return (
    <div class="thresholds">
      {[...groups.entries()].map(([reading, list]) => (
        <div key={reading} class="rule-group">
          <h3>{reading === 'other' ? 'Other rules' : readingLabel(reading)}</h3>
          <ul class="rule-list">
            {list.map((r) => (
              <li key={r.id} class="rule">
                <RuleRow rule={r} />
                {editing === r.id ? (
                  <RuleForm
                    rule={r}
                    patientId={patientId}
                    onDone={(changed) => {
                      setEditing(null)
                      if (changed) onChanged()
                    }}
                  />
                ) : (
                  canEdit && (
                    <button type="button" class="btn btn-small" onClick={() => setEditing(r.id)}>
                      Change<span class="sr-only"> {r.title}</span>
                    </button>
                  )
                )}
              </li>
            ))}
          </ul>
        </div>
      ))}
    </div>
  )
}

function RuleRow({ rule }: { rule: PatientRule }) {
  const spec = effectiveSpec(rule)
  return (
    <div>
      <p class="rule-title">
        <strong>{rule.title}</strong> {!isMonitored(rule) && <span class="status-tag">Not monitored</span>}
        {rule.override && !rule.override.problem && <span class="status-tag status-override">Set for this patient</span>}
      </p>
      <p class="small">{describeRule(spec)}</p>
      {rule.override && (
        <p class="small muted">
          Version {rule.override.version}, <When iso={rule.override.changedAt} />: {rule.override.reason}
        </p>
      )}
      {rule.override?.problem && <p class="small note-warn">The patient’s setting no longer fits the rule, so the default applies: {rule.override.problem}</p>}
    </div>
  )
}

type Draft = Record<string, unknown>

function tunable(spec: RuleSpec): Draft {
  const out: Draft = {}
  for (const k of TUNABLE_KEYS) if (spec[k] !== undefined) out[k] = structuredClone(spec[k])
  return out
}

function RuleForm({ rule, patientId, onDone }: { rule: PatientRule; patientId: string; onDone: (changed: boolean) => void }) {
  const c = useConsole()
  const [draft, setDraft] = useState<Draft>(() => tunable(effectiveSpec(rule)))
  const [reason, setReason] = useState('')
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<string | null>(null)
  const base = `rule-${rule.id}`
  const update = (fn: (d: Draft) => void) => {
    const next = structuredClone(draft)
    fn(next)
    setDraft(next)
  }

  const save = async (toDefault: boolean) => {
    if (reason.trim().length < 5) return setError('Give a reason of at least 5 characters: it is kept with the change.')
    const override: Draft = {}
    const defaults = tunable(rule.spec)
    for (const k of TUNABLE_KEYS) if (JSON.stringify(draft[k]) !== JSON.stringify(defaults[k]) && draft[k] !== undefined) override[k] = draft[k]
    setBusy(true)
    setError(null)
    try {
      const path = `/patients/${encodeURIComponent(patientId)}/thresholds/${encodeURIComponent(rule.id)}`
      if (toDefault || Object.keys(override).length === 0) {
        if (!rule.override) {
          setBusy(false)
          return setError('Nothing was changed from the default.')
        }
        await c.api.delete(path, { reason: reason.trim() })
        c.announcer.say(`${rule.title}: back to the default for this patient.`)
      } else {
        await c.api.put(path, { override, reason: reason.trim() })
        c.announcer.say(`${rule.title}: saved for this patient.`)
      }
      onDone(true)
    } catch (err) {
      setBusy(false)
      const field = (err as { field?: string }).field
      setError(field ? `${describeError(err)} (${field})` : describeError(err))
    }
  }

  const levels = (draft['levels'] as Array<Condition & { severity: Severity }> | undefined) ?? []
  const clear = draft['clear'] as Condition | undefined
  return (
    <form
      class="rule-form"
      noValidate
      onSubmit={(e) => {
        e.preventDefault()
        void save(false)
      }}
    >
      <fieldset>
        <legend>Limits for this patient: {rule.title}</legend>
        {levels.map((level, i) => (
          <ConditionInputs key={i} idBase={`${base}-l${i}`} title={SEVERITY_LABEL[level.severity]} cond={level} onChange={(fn) => update((d) => fn((d['levels'] as Condition[])[i]!))} />
        ))}
        {clear && <ConditionInputs idBase={`${base}-clear`} title="Clears when" cond={clear} onChange={(fn) => update((d) => fn(d['clear'] as Condition))} />}
        {(['consecutive', 'for', 'window', 'after', 'cooldown'] as const).map((k) =>
          draft[k] === undefined ? null : (
            <div class="field inline-field" key={k}>
              <label for={`${base}-${k}`}>{k === 'consecutive' ? 'Readings in a row' : k === 'for' ? 'Lasting at least (e.g. 30m)' : k === 'window' ? 'Within (e.g. 30h)' : k === 'after' ? 'After (e.g. 48h)' : 'Cooldown (e.g. 12h)'}</label>
              <input
                id={`${base}-${k}`}
                type="text"
                inputMode={k === 'consecutive' ? 'numeric' : 'text'}
                value={String(draft[k])}
                onInput={(e) => {
                  const v = e.currentTarget.value
                  update((d) => {
                    d[k] = k === 'consecutive' && /^\d+$/.test(v) ? Number(v) : v
                  })
                }}
              />
            </div>
          ),
        )}
        {typeof draft['severity'] === 'string' && (
          <div class="field inline-field">
            <label for={`${base}-severity`}>Severity</label>
            <select id={`${base}-severity`} value={draft['severity']} onChange={(e) => update((d) => void (d['severity'] = e.currentTarget.value))}>
              {(['info', 'warning', 'urgent', 'critical'] as const).map((s) => (
                <option value={s}>{SEVERITY_LABEL[s]}</option>
              ))}
            </select>
          </div>
        )}
        <label class="check">
          <input type="checkbox" checked={draft['enabled'] !== false} onChange={(e) => update((d) => void (d['enabled'] = e.currentTarget.checked))} /> Monitor this rule for this patient
        </label>
      </fieldset>
      <div class="field">
        <label for={`${base}-reason`}>Reason for the change (required)</label>
        <textarea id={`${base}-reason`} rows={2} required minLength={5} maxLength={500} value={reason} onInput={(e) => setReason(e.currentTarget.value)} ref={focusOnMount} />
      </div>
      <div class="button-row">
        <button type="submit" class="btn btn-primary" disabled={busy}>
          Save for this patient
        </button>
        {rule.override && (
          <button type="button" class="btn" disabled={busy} onClick={() => void save(true)}>
            Return to default
          </button>
        )}
        <button type="button" class="btn" onClick={() => onDone(false)}>
          Cancel
        </button>
      </div>
      <ErrorNote>{error}</ErrorNote>
    </form>
  )
}

function ConditionInputs({ idBase, title, cond, onChange }: { idBase: string; title: string; cond: Condition; onChange: (fn: (c: Condition) => void) => void }) {
  const groups: Array<['any' | 'all', Record<string, string>]> = []
  if (cond.any) groups.push(['any', cond.any])
  if (cond.all) groups.push(['all', cond.all])
  return (
    <div class="condition">
      <p class="condition-title">
        {title === 'Clears when' ? 'The alert clears when' : `${title} alert when`}
        {groups.some(([, g]) => Object.keys(g).length > 1) ? (groups[0]![0] === 'any' ? ' any of these holds' : ' all of these hold') : ''}:
      </p>
      <div class="field-row">
        {groups.flatMap(([kind, g]) =>
          Object.entries(g).map(([field, cmp]) => {
            const p = parseComparison(cmp)
            const id = `${idBase}-${kind}-${field}`
            return (
              <div class="field" key={id}>
                <label for={id}>
                  {title}: {fieldLabel(field)} {p ? prettyOp(p.op) : ''}
                </label>
                <input
                  id={id}
                  type="number"
                  step="any"
                  inputMode="decimal"
                  value={p ? String(p.value) : ''}
                  onInput={(e) => {
                    const v = e.currentTarget.value
                    onChange((c) => void ((c[kind] as Record<string, string>)[field] = `${p?.op ?? '>'} ${v}`))
                  }}
                />
              </div>
            )
          }),
        )}
        {cond.change !== undefined &&
          (() => {
            const p = parseComparison(cond.change)
            const id = `${idBase}-change`
            return (
              <div class="field">
                <label for={id}>
                  {title}: change {p ? prettyOp(p.op) : ''}
                </label>
                <input id={id} type="number" step="any" value={p ? String(p.value) : ''} onInput={(e) => onChange((c) => void (c.change = `${p?.op ?? '>='} ${e.currentTarget.value}`))} />
              </div>
            )
          })()}
      </div>
    </div>
  )
}
