// Entry: the page-long services, the session restored from the refresh cookie, the app.
import { render } from 'preact'
import { App } from './app.tsx'
import { initApp } from './state/console.ts'
import './styles.css'

const app = initApp()
render(<App app={app} />, document.getElementById('app')!)
void app.session.restore()
