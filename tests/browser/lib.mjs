// Shared setup of the dashboard scenarios: Debian's Chromium, headless, driven by
// playwright-core (no browser download). Each scenario is
//   node tests/browser/<scenario>.mjs <base-url> <artifacts-dir>
// with its data as JSON in $SCENARIO_DATA, and prints one JSON line of results last.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export async function scenario(name, body) {
  const [base, artifacts] = process.argv.slice(2);
  if (!base || !artifacts) {
    console.error(`usage: node ${name}.mjs <base-url> <artifacts-dir>`);
    process.exit(2);
  }
  mkdirSync(artifacts, { recursive: true });
  const data = JSON.parse(process.env.SCENARIO_DATA || '{}');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox'],
  });
  const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
  page.setDefaultTimeout(30_000);
  // Any dialog means a value ran as script: fail on it, never answer it.
  const dialogs = [];
  page.on('dialog', async (dialog) => {
    dialogs.push(dialog.message());
    await dialog.dismiss();
  });
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  page.on('console', (message) => {
    if (message.type() === 'error') console.error(`[browser console] ${message.text()}`);
  });
  const shot = async (file) => {
    const path = join(artifacts, file);
    await page.screenshot({ path, fullPage: true });
    console.error(`screenshot ${path}`);
  };
  let result;
  try {
    result = await body({ page, base, data, shot, dialogs });
    if (dialogs.length) throw new Error(`a dialog fired: ${JSON.stringify(dialogs)}`);
    if (pageErrors.length) throw new Error(`script errors on the page: ${JSON.stringify(pageErrors)}`);
  } catch (error) {
    console.error(`${name} failed: ${error.stack || error}`);
    try { await shot(`${name}-failure.png`); } catch (_) { /* the page may be gone */ }
    await browser.close();
    process.exit(1);
  }
  await browser.close();
  console.log(JSON.stringify(result || {}));
}

// Waits until the element's text is exactly `text` (live updates change it in place).
export async function waitText(page, selector, text, timeout = 30_000) {
  await page.waitForFunction(
    ([selector, text]) => document.querySelector(selector)?.textContent.trim() === text,
    [selector, text],
    { timeout },
  ).catch(async (error) => {
    const now = await page.locator(selector).first().textContent().catch(() => null);
    throw new Error(`waiting for ${selector} to read '${text}' (it reads '${now}'): ${error.message}`);
  });
}

export function check(condition, message) {
  if (!condition) throw new Error(message);
}
