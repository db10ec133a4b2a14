// Drives one headless Debian Chromium for tests/console_browser.rs: the
// Rust test sends one JSON command a line on stdin and reads one JSON
// answer a line on stdout, so a whole console session runs in a single
// browser while the test checks the gateway between steps. Every console
// error and uncaught page error (a CSP violation shows as one) is kept for
// the `errors` command.
//   node console.mjs
// Commands: goto{url} submit{sel} click{sel} fill{sel,value} select{sel,value}
// check{sel} press{key,nav?} type{value} focused text{sel} count{sel} url shot{path,width?}
// download{sel,path} overflow errors close
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--lang=ja-JP'],
});
const context = await browser.newContext({ locale: 'ja-JP', timezoneId: 'Asia/Tokyo', acceptDownloads: true,
                                           viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
const errors = [];
// An answer's own status (a refused form is a 400 page) is not a script
// error; a CSP violation ("Refused to ...") or an exception is.
page.on('console', (m) => {
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource: the server responded with a status of')) {
    errors.push(m.text());
  }
});
page.on('pageerror', (e) => errors.push(String(e)));

const status = async (response) => ({ status: response ? response.status() : 0, url: page.url(), title: await page.title() });

const ops = {
  goto: async (c) => status(await page.goto(c.url, { waitUntil: 'load' })),
  // A click that sends a form or follows a link: waits for the next page.
  submit: async (c) => {
    const [response] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(c.sel)]);
    return status(response);
  },
  click: async (c) => { await page.click(c.sel); return {}; },
  fill: async (c) => { await page.fill(c.sel, c.value); return {}; },
  select: async (c) => { await page.selectOption(c.sel, c.value); return {}; },
  check: async (c) => { await page.check(c.sel); return {}; },
  press: async (c) => {
    if (!c.nav) { await page.keyboard.press(c.key); return {}; }
    const [response] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.keyboard.press(c.key)]);
    return status(response);
  },
  type: async (c) => { await page.keyboard.type(c.value); return {}; },
  focused: async () => page.evaluate(() => {
    const el = document.activeElement;
    const label = el && el.labels && el.labels[0] ? el.labels[0].textContent.trim() : '';
    return { tag: el ? el.tagName.toLowerCase() : '', id: el ? el.id : '', label, text: el ? el.textContent.trim() : '' };
  }),
  text: async (c) => ({ text: (await page.textContent(c.sel)) ?? '' }),
  count: async (c) => ({ count: await page.locator(c.sel).count() }),
  url: async () => ({ url: page.url() }),
  shot: async (c) => {
    const size = page.viewportSize();
    if (c.width) await page.setViewportSize({ width: c.width, height: size.height });
    await page.screenshot({ path: c.path, fullPage: true });
    if (c.width) await page.setViewportSize(size);
    return {};
  },
  // Whether the page is wider than the window (what 200 % zoom would show as a sideways scroll).
  overflow: async (c) => {
    const size = page.viewportSize();
    await page.setViewportSize({ width: c.width, height: size.height });
    const widths = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
    await page.setViewportSize(size);
    return widths;
  },
  download: async (c) => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.click(c.sel)]);
    await download.saveAs(c.path);
    return { name: download.suggestedFilename() };
  },
  errors: async () => ({ errors }),
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const command = JSON.parse(line);
  if (command.op === 'close') break;
  let answer;
  try {
    answer = { ok: true, ...(await ops[command.op](command)) };
  } catch (e) {
    answer = { ok: false, error: String(e) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}
await browser.close();
