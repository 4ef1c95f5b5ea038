// Client-side routes under / with the history API. The gateway serves index.html for them.
import type { ComponentChildren, TargetedMouseEvent } from 'preact'
import { Store, useStore } from './store.ts'

export class Router {
  readonly path = new Store(location.pathname)
  readonly search = new Store(location.search)
  /** Navigations made in the page (not the first load): focus moves to the new page's heading. */
  navigations = 0

  constructor() {
    addEventListener('popstate', () => this.#sync())
  }

  navigate(to: string, { replace = false } = {}): void {
    if (to === location.pathname + location.search) return
    history[replace ? 'replaceState' : 'pushState'](null, '', to)
    this.navigations += 1
    this.#sync()
  }

  #sync(): void {
    this.search.set(location.search)
    this.path.set(location.pathname)
  }
}

/** Matches "/patients/:id/thread" against a path; the params, or null. */
export function match(pattern: string, path: string): Record<string, string> | null {
  const p = pattern.split('/').filter(Boolean)
  const s = path.split('/').filter(Boolean)
  if (p.length !== s.length) return null
  const params: Record<string, string> = {}
  for (let i = 0; i < p.length; i++) {
    const part = p[i]!
    if (part.startsWith(':')) params[part.slice(1)] = decodeURIComponent(s[i]!)
    else if (part !== s[i]) return null
  }
  return params
}

export function usePath(router: Router): string {
  return useStore(router.path)
}

interface LinkProps {
  href: string
  router: Router
  children?: ComponentChildren
  class?: string
  onClick?: (e: TargetedMouseEvent<HTMLAnchorElement>) => void
  'aria-current'?: 'page' | undefined
}

/** An ordinary link (opens in a new tab with a modifier) that navigates in the page otherwise. */
export function Link({ href, router, onClick, ...rest }: LinkProps) {
  return (
    <a
      {...rest}
      href={href}
      onClick={(e: TargetedMouseEvent<HTMLAnchorElement>) => {
        onClick?.(e)
        if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return
        e.preventDefault()
        router.navigate(href)
      }}
    />
  )
}
