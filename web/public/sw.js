// Service worker of the RPM web console: shows Web Push notifications and opens the console at
// the alert or conversation they concern (docs/notifications.md "Web Push").
//
// A notification carries no patient data: fixed words ({title, body}), a collapse `tag` and
// opaque ids in `data` ({type, notificationId, alertId | threadId | occurrenceId}). The console
// fetches the record itself after sign-in.
/* eslint-env serviceworker */

self.addEventListener('install', () => {
  self.skipWaiting()
})

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim())
})

self.addEventListener('push', (event) => {
  let n = {}
  try {
    n = event.data ? event.data.json() : {}
  } catch {
    n = {}
  }
  const title = typeof n.title === 'string' && n.title ? n.title : 'RPM console'
  const options = {
    body: typeof n.body === 'string' ? n.body : 'Sign in to see it.',
    data: n.data && typeof n.data === 'object' ? n.data : {},
    icon: '/favicon.svg',
    // An alert pushed again (escalation) alerts again rather than replacing silently.
    renotify: Boolean(n.tag) && n.data && n.data.type === 'alert',
    requireInteraction: Boolean(n.data && n.data.type === 'alert'),
  }
  if (typeof n.tag === 'string' && n.tag) options.tag = n.tag
  event.waitUntil(self.registration.showNotification(title, options))
})

/** Where a notification leads: ids only, validated so a payload cannot point elsewhere. */
function targetOf(data) {
  const id = (v) => typeof v === 'string' && /^[A-Za-z0-9._:-]{1,128}$/.test(v)
  if (data && id(data.alertId)) return `/alerts/${encodeURIComponent(data.alertId)}`
  if (data && id(data.threadId)) return `/threads/${encodeURIComponent(data.threadId)}`
  if (data && data.type === 'reminder') return '/me'
  return '/'
}

self.addEventListener('notificationclick', (event) => {
  const url = new URL(targetOf(event.notification.data), self.location.origin).href
  event.notification.close()
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true })
      const open = windows.find((c) => new URL(c.url).origin === self.location.origin)
      if (open) {
        // The open console navigates in the page (keeping its in-memory sign-in) and comes forward.
        open.postMessage({ type: 'rpm.navigate', url: new URL(url).pathname })
        return open.focus()
      }
      return self.clients.openWindow(url)
    })(),
  )
})
