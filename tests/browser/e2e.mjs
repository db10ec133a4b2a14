// Drives Debian's Chromium (headless) through the gateway and reports, as
// one JSON line, what a person would see: the page's own status line (set
// by its script after a fetch() and a WebSocket round trip) or the block
// page's reason code. Usage:
//   node e2e.mjs URL SCREENSHOT [CERT.pem KEY.pem]
// With NSS_HOME set, Chromium runs with that HOME, so it takes its client
// certificate from $NSS_HOME/.pki/nssdb as an installed browser does
// (picked without a prompt by the AutoSelectCertificateForUrls policy).
import { chromium } from 'playwright-core';

const [url, shot, cert, key] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  env: process.env.NSS_HOME ? { ...process.env, HOME: process.env.NSS_HOME } : process.env,
});
try {
  const origin = new URL(url).origin;
  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    clientCertificates: cert ? [{ origin, certPath: cert, keyPath: key }] : [],
  });
  const page = await context.newPage();
  const response = await page.goto(url, { waitUntil: 'load' });
  const status = response ? response.status() : 0;
  let result = {};
  if (status === 200) {
    await page.waitForFunction(() => document.querySelector('#status')?.dataset.done === '1', null, { timeout: 10000 });
    result = { kind: 'app', status, text: await page.textContent('#status') };
  } else {
    const reason = response ? (await response.allHeaders())['sekisho-deny-reason'] : undefined;
    result = { kind: 'block', status, reason, title: await page.textContent('h1') };
  }
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
