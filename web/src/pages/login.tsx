// Sign-in: POST /api/v1/auth/login with session "cookie" (state/session.ts).
import { useState } from 'preact/hooks'
import { ApiError, describeError } from '../api/http.ts'
import { ErrorNote, PageHeading } from '../components/common.tsx'
import type { AppServices } from '../state/console.ts'

export function homeFor(role: string): string {
  return role === 'patient' ? '/me' : '/alerts'
}

/** Only an in-app path may be the place to return to after signing in. */
export function safeNext(search: string): string | null {
  const next = new URLSearchParams(search).get('next')
  if (!next || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/login') || /^\/(api|docs|metrics|healthz|readyz|mqtt)(\/|$)/.test(next)) return null
  return next
}

export function LoginPage({ app, message }: { app: AppServices; message: string | null }) {
  const [username, setUsername] = useState('')
  const [password, setPassword] = useState('')
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<string | null>(null)

  const submit = async (e: Event) => {
    e.preventDefault()
    if (!username.trim() || !password) {
      setError('Enter your username and password.')
      return
    }
    setBusy(true)
    setError(null)
    try {
      // Signed in: the console takes over and opens ?next= or the start page (app.tsx Routes).
      await app.session.login(username.trim(), password)
    } catch (err) {
      setBusy(false)
      if (err instanceof ApiError && err.code === 'RPM_ERR_BAD_CREDENTIALS') setError('Wrong username or password. Please check them and try again.')
      else if (err instanceof ApiError && err.code === 'RPM_ERR_ACCOUNT_LOCKED') setError('This account is locked for a while after too many attempts. Please try again later, or ask an administrator.')
      else setError(describeError(err))
    }
  }

  return (
    <div class="login">
      <PageHeading title="Sign in" router={app.router} />
      {message && (
        <p class="note note-info" role="alert">
          {message}
        </p>
      )}
      <form class="login-form" onSubmit={(e) => void submit(e)} noValidate>
        <div class="field">
          <label for="login-username">Username</label>
          <input
            id="login-username"
            name="username"
            type="text"
            autoComplete="username"
            autoCapitalize="none"
            spellcheck={false}
            required
            value={username}
            onInput={(e) => setUsername(e.currentTarget.value)}
          />
        </div>
        <div class="field">
          <label for="login-password">Password</label>
          <input id="login-password" name="password" type="password" autoComplete="current-password" required value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
        </div>
        <button type="submit" class="btn btn-primary btn-large" disabled={busy}>
          Sign in
        </button>
        {busy && (
          <p role="status" class="muted">
            Signing in…
          </p>
        )}
        <ErrorNote>{error}</ErrorNote>
      </form>
      <p class="muted small">For the care team and patients of this clinic. Activity is recorded. You are signed out after 15 minutes without activity.</p>
    </div>
  )
}
