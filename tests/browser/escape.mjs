// A log line and an input that are HTML show as text: no dialog fires, no element is
// made of them, on the live path (the line arrives while the page follows) and on the
// fetched path (after a reload), and through the log text filter.
import { writeFileSync } from 'node:fs';
import { scenario, waitText, check } from './lib.mjs';

const LINE = '<script>alert(1)</script>';
const INPUT_MARK = '<img src=x onerror=alert(2)>';

await scenario('escape', async ({ page, base, data, shot }) => {
  await page.goto(`${base}/runs/${data.run}`);
  await page.locator('#log-state').filter({ hasText: 'lines' }).waitFor();
  check((await page.textContent('#run-input')).includes(INPUT_MARK), 'the input shows as text');
  check(await page.locator('#run-input img').count() === 0, 'no element is made of the input');
  // The step waits for this file, so its line can only arrive through live follow.
  writeFileSync(data.gate, '');
  const line = page.locator('#log-lines li .msg', { hasText: LINE });
  await line.waitFor();
  check(await page.locator('#log-lines script, #log-lines img').count() === 0,
    'no element is made of the log line');
  await waitText(page, '#run-status .chip', 'completed');
  await shot('run-escaped-log.png');

  await page.reload();
  await page.locator('#log-lines li .msg', { hasText: LINE }).waitFor();
  await page.fill('#log-filter input[name=q]', 'alert(1)');
  await page.waitForFunction(() => document.querySelectorAll('#log-lines li').length === 1);
  check((await page.textContent('#log-lines li .msg')) === LINE, 'the filtered line is the text');
  await page.fill('#log-filter input[name=q]', 'no such words');
  await page.waitForFunction(() => document.querySelectorAll('#log-lines li').length === 0);
  return { escaped: true };
});
