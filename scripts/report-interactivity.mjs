// How report.html responds in Chromium: load it in headless Chromium
// through the DevTools protocol, then time what a reader does on it (sort
// the flow table, filter it, page through it, click a timeline lane, scroll
// to the bottom). Each time runs from the action to the next painted frame
// after the page's answer, measured inside the page (performance.now()).
//
// Usage: node --experimental-websocket scripts/report-interactivity.mjs REPORT.html [ROUNDS]
// Needs chromium on PATH and Node 20+ (WebSocket behind the flag above;
// built in from Node 22).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const page = resolve(process.argv[2] || '');
const rounds = Number(process.argv[3] || 3);
if (!process.argv[2] || !existsSync(page)) {
  console.error('usage: report-interactivity.mjs REPORT.html [ROUNDS]');
  process.exit(2);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const profile = mkdtempSync(join(tmpdir(), 'procflow-cdp-'));
const browser = spawn('chromium', ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--window-size=1300,1400', `--user-data-dir=${profile}`, '--remote-debugging-port=0', 'about:blank'],
{ stdio: 'ignore' });
process.on('exit', () => { try { browser.kill('SIGKILL'); } catch { /* gone */ } rmSync(profile, { recursive: true, force: true }); });

let port = null;
for (let i = 0; i < 200 && !port; i++) {
  const f = join(profile, 'DevToolsActivePort');
  if (existsSync(f)) port = readFileSync(f, 'utf8').split('\n')[0];
  else await sleep(50);
}
if (!port) { console.error('chromium did not open its DevTools port'); process.exit(1); }
const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
const target = targets.find((t) => t.type === 'page');
const ws = new WebSocket(target.webSocketDebuggerUrl);
await new Promise((r, j) => { ws.onopen = r; ws.onerror = j; });
let seq = 0;
const waiting = new Map();
const events = [];
ws.onmessage = (m) => {
  const msg = JSON.parse(m.data);
  if (msg.id && waiting.has(msg.id)) { waiting.get(msg.id)(msg); waiting.delete(msg.id); } else events.push(msg);
};
const send = (method, params = {}) => new Promise((r) => { const id = ++seq; waiting.set(id, r); ws.send(JSON.stringify({ id, method, params })); });
const evaluate = async (expr) => {
  const r = await send('Runtime.evaluate', { expression: expr, awaitPromise: true, returnByValue: true });
  if (r.result.exceptionDetails) throw new Error(JSON.stringify(r.result.exceptionDetails));
  return r.result.result.value;
};

// In the page: run an action, then wait for the page's answer (a predicate)
// and the frame painted after it.
const timed = (action, until = 'true') => `(async () => {
  const t0 = performance.now();
  ${action};
  while (!(${until})) await new Promise((r) => setTimeout(r, 1));
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  return performance.now() - t0;
})()`;
const info = "document.querySelector('.controls .sub').textContent";

await send('Page.enable');
const results = {};
const add = (k, v) => { (results[k] = results[k] || []).push(v); };
for (let round = 0; round < rounds; round++) {
  const t0 = Date.now();
  await send('Page.navigate', { url: 'file://' + page });
  while (!(await evaluate("document.body && document.body.getAttribute('data-rendered') === 'ok'").catch(() => false))) await sleep(10);
  add('load to rendered (wall, ms)', Date.now() - t0);
  add('script done at (page ms)', Number(await evaluate("document.body.getAttribute('data-render-ms')")));
  const flows = await evaluate(`${info}`);
  add('sort by bytes_out', await evaluate(timed(
    "window.th = [...document.querySelectorAll('#flow-table th')].find((h) => h.textContent === 'bytes_out'); th.click()",
    "th.getAttribute('data-dir') !== ''")));
  add('sort again (descending)', await evaluate(timed("th.click()", "th.getAttribute('data-dir') === 'desc'")));
  add('next page', await evaluate(timed(`window.before = ${info}; document.querySelector('.controls button:nth-of-type(2)').click()`, `${info} !== before`)));
  add('filter "udp" (incl. 150 ms typing pause)', await evaluate(timed(
    `window.before = ${info}; window.q = document.querySelector('.controls input'); q.value = 'udp'; q.dispatchEvent(new Event('input'))`,
    `${info} !== before`)));
  add('clear filter (incl. 150 ms pause)', await evaluate(timed(
    `window.before = ${info}; q.value = ''; q.dispatchEvent(new Event('input'))`, `${info} !== before`)));
  add('click the first timeline lane', await evaluate(timed(
    `window.before = ${info}; document.querySelector('g.lane').dispatchEvent(new MouseEvent('click', { bubbles: true }))`, `${info} !== before`)));
  add('scroll to the bottom', await evaluate(timed('window.scrollTo(0, document.body.scrollHeight)')));
  if (round === 0) console.log(`page: ${page}\nflow table: ${flows}`);
}
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
for (const [k, v] of Object.entries(results)) {
  console.log(`${k.padEnd(44)} median ${median(v).toFixed(0).padStart(6)} ms   (${v.map((x) => x.toFixed(0)).join(', ')})`);
}
ws.close();
process.exit(0);
