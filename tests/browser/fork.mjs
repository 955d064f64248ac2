// A failed run's page: fork it from its failed step (after the test made the step able
// to succeed) and watch the new run complete on its own page. Also screenshots the
// runs list, the schedules page (pausing and resuming a schedule) and the queues page.
import { scenario, waitText, check } from './lib.mjs';

await scenario('fork', async ({ page, base, data, shot }) => {
  await page.goto(`${base}/`);
  await page.locator(`tr[data-run-row="${data.run}"]`).waitFor();
  await shot('runs-list.png');
  await page.selectOption('#run-filters select[name=status]', 'failed');
  await page.click('#run-filters button[type=submit]');
  await page.waitForURL(/status=failed/);
  await page.locator(`tr[data-run-row="${data.run}"]`).waitFor();
  check(await page.locator('tr[data-run-row] .chip:not([data-status=failed])').count() === 0,
    'the failed filter shows only failed runs');

  await page.fill('#jump input[name=id]', data.run);
  await page.click('#jump button');
  await page.waitForURL(`${base}/runs/${data.run}`);
  await waitText(page, '#run-status .chip', 'failed');
  check((await page.textContent('#run-error')).length > 0, 'the run shows its error');
  await page.locator(`li.step[data-step="${data.step}"] pre.error`).waitFor();
  await shot('run-failed.png');

  await page.click(`li.step[data-step="${data.step}"] button.fork`);
  await page.waitForURL((url) => url.pathname.startsWith('/runs/') && !url.pathname.endsWith(data.run));
  const forked = new URL(page.url()).pathname.split('/').pop();
  await waitText(page, '#run-status .chip', 'completed', 45_000);
  await page.locator(`li.step[data-step="${data.step}"][data-status="completed"]`).waitFor();
  await page.locator('#log-lines li').first().waitFor();
  await shot('run-forked-completed.png');

  await page.goto(`${base}/schedules`);
  const row = page.locator(`tr[data-schedule="${data.schedule}"]`);
  await row.waitFor();
  await shot('schedules.png');
  await row.locator('button[data-action=schedule-pause]').click();
  await page.locator(`tr[data-schedule="${data.schedule}"] button[data-action=schedule-resume]`).waitFor();
  await page.locator(`tr[data-schedule="${data.schedule}"] button[data-action=schedule-resume]`).click();
  await page.locator(`tr[data-schedule="${data.schedule}"] button[data-action=schedule-pause]`).waitFor();

  await page.goto(`${base}/queues`);
  await page.locator('tr[data-queue="default"]').waitFor();
  await shot('queues.png');
  return { forked };
});
