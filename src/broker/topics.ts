/** The topics a device may use, all under its own `devices/{deviceId}/`. */
export const DEVICE_PUBLISH_LEAVES = new Set(['readings', 'events', 'status'])
export const DEVICE_SUBSCRIBE_LEAVES = new Set(['commands', 'errors'])

export function deviceTopic(deviceId: string, leaf: string): string {
  return `devices/${deviceId}/${leaf}`
}

/** Splits `devices/{id}/{leaf}`; null for anything else (more levels, wildcards, other roots). */
export function parseDeviceTopic(topic: string): { deviceId: string; leaf: string } | null {
  const parts = topic.split('/')
  if (parts.length !== 3 || parts[0] !== 'devices' || !parts[1] || !parts[2]) return null
  return { deviceId: parts[1], leaf: parts[2] }
}

export function mayPublish(deviceId: string, topic: string): boolean {
  const t = parseDeviceTopic(topic)
  return t !== null && t.deviceId === deviceId && DEVICE_PUBLISH_LEAVES.has(t.leaf)
}

/** Exact topics only: a wildcard could reach beyond the device's own tree. */
export function maySubscribe(deviceId: string, topic: string): boolean {
  if (topic.includes('+') || topic.includes('#')) return false
  const t = parseDeviceTopic(topic)
  return t !== null && t.deviceId === deviceId && DEVICE_SUBSCRIBE_LEAVES.has(t.leaf)
}
