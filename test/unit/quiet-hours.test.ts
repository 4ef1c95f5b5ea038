import { describe, expect, it } from 'vitest'
import { contentFor, smsText } from '../../src/notify/content.ts'
import { quietUntil } from '../../src/notify/quiet-hours.ts'
import { pushTopic } from '../../src/notify/webpush.ts'

const at = (iso: string) => Date.parse(iso)

describe('quiet hours', () => {
  const night = { start: '22:00', end: '07:00', timezone: 'America/New_York' }

  it('spans midnight in the user\'s zone and ends at the local end time', () => {
    // 23:30 in New York (EST, UTC-5) is 04:30 UTC the next day.
    expect(quietUntil(night, at('2026-01-15T04:30:00Z'))).toBe(at('2026-01-15T12:00:00Z'))
    // 02:00 local: same end.
    expect(quietUntil(night, at('2026-01-15T07:00:00Z'))).toBe(at('2026-01-15T12:00:00Z'))
    // 07:00 local is already outside; 21:59 too.
    expect(quietUntil(night, at('2026-01-15T12:00:00Z'))).toBeNull()
    expect(quietUntil(night, at('2026-01-16T02:59:00Z'))).toBeNull()
    expect(quietUntil(night, at('2026-01-16T03:00:00Z'))).toBe(at('2026-01-16T12:00:00Z'))
  })

  it('follows the wall clock across a DST change', () => {
    // 2026-03-08: New York springs forward at 02:00. 23:00 EST on the 7th -> 07:00 EDT on the 8th (11:00 UTC).
    expect(quietUntil(night, at('2026-03-08T04:00:00Z'))).toBe(at('2026-03-08T11:00:00Z'))
  })

  it('works within one day and treats equal start and end as no quiet hours', () => {
    const lunch = { start: '12:00', end: '13:30', timezone: 'UTC' }
    expect(quietUntil(lunch, at('2026-05-01T12:45:00Z'))).toBe(at('2026-05-01T13:30:00Z'))
    expect(quietUntil(lunch, at('2026-05-01T13:30:00Z'))).toBeNull()
    expect(quietUntil({ start: '08:00', end: '08:00', timezone: 'UTC' }, at('2026-05-01T08:00:00Z'))).toBeNull()
  })
})

describe('notification words', () => {
  it('carry only ids and fixed words, whoever reads them', () => {
    const alert = contentFor({ id: 'ntf-1', kind: 'alert', audience: 'staff', severity: 'critical', refId: 'alt-9', step: 0 })
    expect(alert).toEqual({ title: 'Critical alert for a patient on your team', body: 'Sign in to see it and respond.', data: { type: 'alert', notificationId: 'ntf-1', alertId: 'alt-9' } })
    expect(contentFor({ id: 'ntf-2', kind: 'message', audience: 'patient', severity: null, refId: 'thr-1', step: 0 }).title).toBe('New message from your care team')
    expect(smsText(alert, '')).toBe('Critical alert for a patient on your team. Sign in to see it and respond.')
  })

  it('make Web Push topics of at most 32 URL-safe characters (RFC 8030 §5.4), the same for the same key', () => {
    const topic = pushTopic('alert-alt-0mww5cjm60001c6fa1c-and-a-long-suffix')
    expect(topic).toMatch(/^[A-Za-z0-9_-]{32}$/)
    expect(pushTopic('alert-alt-0mww5cjm60001c6fa1c-and-a-long-suffix')).toBe(topic)
    expect(pushTopic('thread-thr-1')).not.toBe(topic)
  })
})
