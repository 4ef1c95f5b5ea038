import type { NotificationContent } from './types.ts'

export type Audience = 'patient' | 'staff'

export interface ContentInput {
  id: string
  kind: 'message' | 'alert' | 'reminder' | 'test'
  audience: Audience
  severity: string | null
  refId: string | null
  /** For alerts: 0 when raised, then each escalation step. */
  step: number
}

/**
 * The words of every notification. Lock screens and SMS are read by whoever holds the phone, so
 * nothing here names a patient, a value, a medication or a rule: only that there is something to
 * see, and ids in `data` for the app to fetch it after sign-in (45 CFR 164.312, minimum necessary).
 */
export function contentFor(n: ContentInput): NotificationContent {
  const data: Record<string, string> = { type: n.kind, notificationId: n.id }
  switch (n.kind) {
    case 'message':
      if (n.refId) data.threadId = n.refId
      return n.audience === 'patient'
        ? { title: 'New message from your care team', body: 'Open the app to read it.', data }
        : { title: 'New message from a patient on your team', body: 'Sign in to read it.', data }
    case 'alert': {
      if (n.refId) data.alertId = n.refId
      const level = n.severity === 'critical' ? 'Critical' : n.severity === 'urgent' ? 'Urgent' : 'New'
      return {
        title: `${level} alert for a patient on your team`,
        body: n.step > 0 ? 'Still not acknowledged. Sign in to respond.' : 'Sign in to see it and respond.',
        data,
      }
    }
    case 'reminder':
      if (n.refId) data.occurrenceId = n.refId
      return { title: 'Reminder from your care team', body: 'Open the app to see it.', data }
    case 'test':
      return { title: 'Test notification', body: 'Notifications reach this device.', data }
  }
}

/** An SMS: the same words in one line, and the console link when one is configured. */
export function smsText(content: NotificationContent, consoleUrl: string): string {
  return `${content.title}. ${content.body}${consoleUrl ? ` ${consoleUrl}` : ''}`
}
