/**
 * Self-test of the fake remote services (test/fakes) with the real SDKs, no gateway: if these
 * pass, a gateway test that uses the fakes checks what the SDK really put on the wire.
 */
import https from 'node:https'
import { deleteApp, initializeApp, type App } from 'firebase-admin/app'
import { getMessaging } from 'firebase-admin/messaging'
import twilio from 'twilio'
import webpush from 'web-push'
import { afterEach, describe, expect, it } from 'vitest'
import { FakeFcm } from '../fakes/fcm.ts'
import { FakePushService } from '../fakes/push-service.ts'
import { fakeTls } from '../fakes/tls.ts'
import { FakeTwilio, twilioHttpClient } from '../fakes/twilio.ts'

const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  // Apps before servers, so no SDK is left talking to a closed port.
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

function later<T extends { close(): Promise<void> }>(fake: T): T {
  cleanups.push(() => fake.close())
  return fake
}

/** A raw HTTPS POST trusting the fake CA, for requests the SDKs refuse to build. */
async function post(url: string, headers: Record<string, string>, body: string | Buffer): Promise<{ status: number; text: string }> {
  const { ca } = await fakeTls()
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method: 'POST', headers, ca }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (text += chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

describe('FakePushService with web-push', () => {
  async function setup() {
    const push = later(await FakePushService.start())
    const { ca } = await fakeTls()
    const agent = new https.Agent({ ca })
    cleanups.push(async () => agent.destroy())
    const vapidKeys = webpush.generateVAPIDKeys()
    const vapidDetails = { subject: 'mailto:ops@example.org', publicKey: vapidKeys.publicKey, privateKey: vapidKeys.privateKey }
    return { push, agent, vapidKeys, vapidDetails }
  }

  it('decrypts the exact payload and reports the headers and VAPID claims', async () => {
    const { push, agent, vapidKeys, vapidDetails } = await setup()
    const sub = push.subscription({ applicationServerKey: vapidKeys.publicKey })
    const payload = { type: 'alert', alertId: 42, text: 'SpO₂ 86 % — call the patient' }

    const result = await webpush.sendNotification(sub, JSON.stringify(payload), {
      vapidDetails,
      TTL: 120,
      urgency: 'high',
      topic: 'alert-42',
      agent,
    })

    expect(result.statusCode).toBe(201)
    expect(result.headers.location).toMatch(new RegExp(`^${push.origin}/message/`))
    const [got] = await push.waitFor(1)
    expect(got!.endpoint).toBe(sub.endpoint)
    expect(got!.payload).toEqual(payload)
    expect(got!.text).toBe(JSON.stringify(payload))
    expect(got!.headers).toEqual({ ttl: 120, urgency: 'high', topic: 'alert-42', contentEncoding: 'aes128gcm' })
    expect(got!.vapid.aud).toBe(push.origin)
    expect(got!.vapid.sub).toBe('mailto:ops@example.org')
    expect(got!.vapid.publicKey).toBe(vapidKeys.publicKey)
    // web-push signs for 12 h.
    expect(got!.vapid.exp - Date.now() / 1000).toBeGreaterThan(11 * 3600)
    expect(push.requests).toBe(1)
  })

  it('answers 410 for a gone subscription and 404 for an unknown one', async () => {
    const { push, agent, vapidDetails } = await setup()
    const sub = push.subscription()
    push.gone(sub.endpoint)

    const gone = await webpush.sendNotification(sub, 'hi', { vapidDetails, agent }).catch((e: unknown) => e)
    expect(gone).toBeInstanceOf(webpush.WebPushError)
    expect((gone as webpush.WebPushError).statusCode).toBe(410)

    const unknown = { ...push.subscription(), endpoint: `${push.origin}/push/not-a-subscription` }
    const missing = await webpush.sendNotification(unknown, 'hi', { vapidDetails, agent }).catch((e: unknown) => e)
    expect((missing as webpush.WebPushError).statusCode).toBe(404)
    expect(push.received).toEqual([])
  })

  it('refuses a VAPID token not signed by the key in k', async () => {
    const { push, agent, vapidKeys } = await setup()
    const sub = push.subscription()
    const other = webpush.generateVAPIDKeys()
    // k = our public key, signature by another private key: what a tampered token looks like.
    const tampered = { subject: 'mailto:ops@example.org', publicKey: vapidKeys.publicKey, privateKey: other.privateKey }

    const err = await webpush.sendNotification(sub, 'hi', { vapidDetails: tampered, agent }).catch((e: unknown) => e)
    expect((err as webpush.WebPushError).statusCode).toBe(403)
    expect(push.refused[0]!.reason).toMatch(/signature/i)
    expect(push.received).toEqual([])
  })

  it('checks aud, the key of a restricted subscription, and that VAPID is present at all', async () => {
    const { push, vapidKeys, vapidDetails } = await setup()
    const restricted = push.subscription({ applicationServerKey: webpush.generateVAPIDKeys().publicKey })
    const sub = push.subscription()
    const encrypted = (s: typeof sub) => webpush.generateRequestDetails(s, 'hi', { vapidDetails })

    // Token for another origin.
    const wrongAud = webpush.getVapidHeaders('https://push.example.net', vapidDetails.subject, vapidKeys.publicKey, vapidKeys.privateKey, 'aes128gcm')
    const details = encrypted(sub)
    const asStrings = (h: Record<string, unknown>) => Object.fromEntries(Object.entries(h).map(([k, v]) => [k, String(v)]))
    const res1 = await post(sub.endpoint, asStrings({ ...details.headers, Authorization: wrongAud.Authorization }), details.body!)
    expect(res1.status).toBe(403)
    expect(res1.text).toMatch(/aud/)

    // Signed correctly, but the subscription was made for another applicationServerKey.
    const forRestricted = encrypted(restricted)
    const res2 = await post(restricted.endpoint, asStrings(forRestricted.headers), forRestricted.body!)
    expect(res2.status).toBe(403)
    expect(push.refused.at(-1)!.reason).toMatch(/applicationServerKey/)

    const { Authorization: _, ...noAuth } = details.headers as Record<string, unknown>
    const res3 = await post(sub.endpoint, asStrings(noAuth), details.body!)
    expect(res3.status).toBe(401)
    expect(push.received).toEqual([])
  })

  it('failNext answers the status without recording; holdNext keeps the request open until released', async () => {
    const { push, agent, vapidDetails } = await setup()
    const sub = push.subscription()
    push.failNext(1, 503)
    const failed = await webpush.sendNotification(sub, '{"n":0}', { vapidDetails, agent }).catch((e: unknown) => e)
    expect((failed as webpush.WebPushError).statusCode).toBe(503)

    const hold = push.holdNext()
    const sending = webpush.sendNotification(sub, '{"n":1}', { vapidDetails, agent })
    await hold.requested
    expect(push.held.map((h) => h.payload)).toEqual([{ n: 1 }])
    expect(push.received).toEqual([])
    hold.release()
    expect((await sending).statusCode).toBe(201)
    expect(push.held).toEqual([])
    expect((await push.waitFor(1)).map((r) => r.payload)).toEqual([{ n: 1 }])
    expect(push.requests).toBe(2)
  })

  it('close() does not wait for a held request', async () => {
    const { push, agent, vapidDetails } = await setup()
    const sub = push.subscription()
    const hold = push.holdNext()
    const sending = webpush.sendNotification(sub, 'x', { vapidDetails, agent }).catch((e: unknown) => e)
    await hold.requested
    await push.close()
    expect(await sending).toBeInstanceOf(Error)
  })
})

describe('FakeFcm with firebase-admin', () => {
  let appSeq = 0
  async function setup() {
    const fcm = later(await FakeFcm.start())
    const app: App = initializeApp(fcm.transport(), `fake-fcm-${process.pid}-${++appSeq}`)
    cleanups.push(() => deleteApp(app))
    return { fcm, messaging: getMessaging(app) }
  }

  it('send() lands with the bearer token and the message as firebase-admin serialises it', async () => {
    const { fcm, messaging } = await setup()
    const name = await messaging.send({
      token: 'device-token-1',
      notification: { title: 'Alert', body: 'SpO₂ low' },
      data: { alertId: '42', kind: 'spo2' },
      android: { priority: 'high', ttl: 60_000 },
      apns: { headers: { 'apns-priority': '10' } },
    })

    const [got] = await fcm.waitFor(1)
    expect(name).toBe(got!.name)
    expect(name).toMatch(/^projects\/rpm-test\/messages\//)
    expect(got!.authorization).toBe(`Bearer ${fcm.accessToken}`)
    expect(got!.projectId).toBe('rpm-test')
    expect(got!.message).toEqual({
      token: 'device-token-1',
      notification: { title: 'Alert', body: 'SpO₂ low' },
      data: { alertId: '42', kind: 'spo2' },
      android: { priority: 'high', ttl: '60s' },
      apns: { headers: { 'apns-priority': '10' } },
    })
  })

  it('an unregistered token raises messaging/registration-token-not-registered', async () => {
    const { fcm, messaging } = await setup()
    fcm.unregister('stale-token')
    const err = await messaging.send({ token: 'stale-token', data: { a: 'b' } }).catch((e: unknown) => e)
    expect((err as { code?: string }).code).toBe('messaging/registration-token-not-registered')
    expect(fcm.received).toEqual([])
  })

  it('firebase-admin retries a 503 by itself; a 500 surfaces as messaging/internal-error', async () => {
    const { fcm, messaging } = await setup()
    fcm.failNext(1, 503)
    await messaging.send({ topic: 'ward-3', data: { a: 'b' } })
    expect(fcm.requests).toBe(2)
    expect(fcm.received).toHaveLength(1)

    fcm.failNext(1, 500)
    const err = await messaging.send({ topic: 'ward-3', data: { a: 'b' } }).catch((e: unknown) => e)
    expect((err as { code?: string }).code).toBe('messaging/internal-error')
  })

  it('sendEach() reaches the fake only with the legacy HTTP/1.1 transport', async () => {
    const { fcm, messaging } = await setup()
    messaging.enableLegacyHttpTransport()
    const batch = await messaging.sendEach([{ token: 'a', data: { n: '1' } }, { token: 'b', data: { n: '2' } }])
    expect(batch.successCount).toBe(2)
    expect((await fcm.waitFor(2)).map((r) => r.message.token).sort()).toEqual(['a', 'b'])
  })

  it('refuses what real FCM refuses: wrong token, non-string data, two targets, unknown fields', async () => {
    const { fcm } = await setup()
    const url = `${fcm.origin}/v1/projects/${fcm.projectId}/messages:send`
    const auth = { authorization: `Bearer ${fcm.accessToken}`, 'content-type': 'application/json' }
    const send = (headers: Record<string, string>, body: unknown) => post(url, headers, JSON.stringify(body))

    const unauth = await send({ ...auth, authorization: 'Bearer nope' }, { message: { token: 't' } })
    expect(unauth.status).toBe(401)
    expect(JSON.parse(unauth.text).error.status).toBe('UNAUTHENTICATED')

    const numeric = await send(auth, { message: { token: 't', data: { n: 1 } } })
    expect(numeric.status).toBe(400)
    expect(JSON.parse(numeric.text).error.status).toBe('INVALID_ARGUMENT')

    expect((await send(auth, { message: { token: 't', topic: 'x' } })).status).toBe(400)
    expect((await send(auth, { message: { data: { a: 'b' } } })).status).toBe(400)
    expect((await send(auth, { message: { token: 't', priority: 'high' } })).status).toBe(400)
    expect((await send(auth, { message: { token: 't', android: { ttl: 60 } } })).status).toBe(400)
    expect(fcm.received).toEqual([])
  })
})

describe('FakeTwilio with the twilio SDK', () => {
  async function setup() {
    const fake = later(await FakeTwilio.start())
    const { ca } = await fakeTls()
    const client = twilio(fake.accountSid, fake.authToken, { httpClient: twilioHttpClient(fake.origin, ca) })
    return { fake, client }
  }

  it('messages.create lands with basic auth and the form fields', async () => {
    const { fake, client } = await setup()
    const message = await client.messages.create({
      to: '+15551230001',
      from: '+15005550006',
      body: 'Your reading needs attention',
      statusCallback: 'https://gateway.example.org/api/v1/sms/status',
    })

    const [got] = await fake.waitFor(1)
    expect(message.sid).toBe(got!.sid)
    expect(message.sid).toMatch(/^SM[0-9a-f]{32}$/)
    expect(message.status).toBe('queued')
    expect(message.accountSid).toBe(fake.accountSid)
    expect(message.dateCreated).toBeInstanceOf(Date)
    expect(got).toMatchObject({
      to: '+15551230001',
      from: '+15005550006',
      body: 'Your reading needs attention',
      statusCallback: 'https://gateway.example.org/api/v1/sms/status',
      authorization: fake.accountSid,
    })
  })

  it('an opted-out recipient and a bad number become RestExceptions 21610 and 21211', async () => {
    const { fake, client } = await setup()
    fake.optOut('+15551230002')
    const optedOut = await client.messages.create({ to: '+15551230002', from: '+15005550006', body: 'x' }).catch((e: unknown) => e)
    expect(optedOut).toBeInstanceOf(twilio.RestException)
    expect(optedOut).toMatchObject({ status: 400, code: 21610, moreInfo: 'https://www.twilio.com/docs/errors/21610' })

    const invalid = await client.messages.create({ to: '555-0100', from: '+15005550006', body: 'x' }).catch((e: unknown) => e)
    expect(invalid).toMatchObject({ status: 400, code: 21211 })
    expect(fake.sent).toEqual([])
  })

  it('refuses a wrong auth token with 20003 and failNext with 20500', async () => {
    const { fake } = await setup()
    const { ca } = await fakeTls()
    const wrong = twilio(fake.accountSid, 'f'.repeat(32), { httpClient: twilioHttpClient(fake.origin, ca) })
    const err = await wrong.messages.create({ to: '+15551230001', from: '+15005550006', body: 'x' }).catch((e: unknown) => e)
    expect(err).toMatchObject({ status: 401, code: 20003 })

    const client = twilio(fake.accountSid, fake.authToken, { httpClient: twilioHttpClient(fake.origin, ca) })
    fake.failNext(1)
    const down = await client.messages.create({ to: '+15551230001', from: '+15005550006', body: 'x' }).catch((e: unknown) => e)
    expect(down).toMatchObject({ status: 503, code: 20500 })
    expect(fake.requests).toBe(2)
  })

  it('signedCallback validates with twilio.validateRequest, and fails with badSignature', async () => {
    const { fake, client } = await setup()
    await client.messages.create({ to: '+15551230001', from: '+15005550006', body: 'x' })
    const [sent] = await fake.waitFor(1)
    const url = 'https://gateway.example.org/api/v1/sms/status?tenant=a'
    const params = fake.callbackParams(sent!, 'delivered')

    const good = fake.signedCallback(url, params)
    expect(Object.fromEntries(new URLSearchParams(good.body))).toEqual(params)
    expect(twilio.validateRequest(fake.authToken, good.headers['x-twilio-signature']!, url, params)).toBe(true)

    const bad = fake.signedCallback(url, params, { badSignature: true })
    expect(twilio.validateRequest(fake.authToken, bad.headers['x-twilio-signature']!, url, params)).toBe(false)
  })
})
