// Who is who in a patient's thread: the patient, the care team, the devices, the gateway.
import { useEffect, useState } from 'preact/hooks'
import type { Device, Message, Patient, User } from '../api/types.ts'
import { DEVICE_LABEL } from '../lib/format.ts'
import type { Console } from './console.ts'

export interface Participants {
  patient: Patient | null
  careTeam: User[]
  devices: Device[]
  /** Learned from the thread: the patient's own user id (their messages, their typing). */
  patientUserIds: Set<string>
  nameOf(from: Message['from']): string
  userName(userId: string, role?: string): string | null
}

export function useParticipants(c: Console, patientId: string): Participants {
  const [patient, setPatient] = useState<Patient | null>(c.patients.all.value.get(patientId) ?? null)
  const [careTeam, setCareTeam] = useState<User[]>([])
  const [devices, setDevices] = useState<Device[]>([])
  const [patientUserIds] = useState(() => new Set<string>(c.user.role === 'patient' && c.user.patientId === patientId ? [c.user.id] : []))

  useEffect(() => {
    let live = true
    const id = encodeURIComponent(patientId)
    if (!patient) c.api.get<Patient>(`/patients/${id}`).then((p) => live && setPatient(p), () => {})
    c.api.get<{ items: User[] }>(`/patients/${id}/care-team`).then((r) => live && setCareTeam(r.items), () => {})
    c.api.get<{ items: Device[] }>(`/patients/${id}/devices`).then((r) => live && setDevices(r.items), () => {})
    return () => {
      live = false
    }
  }, [patientId])

  const userName = (userId: string, role?: string): string | null => {
    if (userId === c.user.id) return 'You'
    const member = careTeam.find((u) => u.id === userId)
    if (member) return member.name || member.username
    if (patientUserIds.has(userId) || role === 'patient') return patient?.name ?? 'The patient'
    return null
  }

  const nameOf = (from: Message['from']): string => {
    if (from.role === 'system') return 'Care system'
    if (from.role === 'device') {
      const d = devices.find((x) => x.id === from.deviceId)
      return d ? (DEVICE_LABEL[d.kind] ?? d.kind) : 'A device'
    }
    if (from.userId) {
      if (from.role === 'patient') patientUserIds.add(from.userId)
      const n = userName(from.userId, from.role)
      if (n) return n
    }
    if (from.role === 'patient') {
      const who = c.user.role === 'patient' ? 'You' : (patient?.name ?? 'The patient')
      return from.deviceId ? `${who} (home hub)` : who
    }
    return from.role === 'provider' ? 'Care team member' : 'Administrator'
  }

  return { patient, careTeam, devices, patientUserIds, nameOf, userName }
}
