// The Deployments tab: write the spec in the page's editor, Start, watch the logs
// stream until the run is ready (and its URL serves the site), Stop, see it stopped.
import { scenario, waitText, check } from './lib.mjs';

await scenario('deploy', async ({ page, base, data, shot }) => {
  const tab = `${base}/agents/${data.agent}/deployments`;
  await page.goto(tab);
  await waitText(page, '#spec-chip', 'Missing');
  check(await page.isVisible('#spec-editor'), 'a missing spec opens the editor');
  await page.fill('#spec-editor input[name=name]', 'browser site');
  await page.fill('#spec-editor input[name=sourceDir]', data.sourceDir);
  await page.fill('#spec-editor input[name=installCommand]', 'echo installing');
  await page.fill('#spec-editor input[name=buildCommand]', 'echo building $GREETING && ls /workspace/app');
  await page.fill('#spec-editor input[name=startCommand]', data.startCommand);
  await page.fill('#spec-editor input[name=runtimePort]', '3000');
  await page.selectOption('#spec-editor select[name=targetDefault]', 'preview');
  await page.fill('#spec-editor input[name=image]', data.image);
  await page.click('#spec-editor button[data-action=env-add]');
  await page.fill('#spec-editor .env-row:last-of-type input[name=envKey]', 'GREETING');
  await page.fill('#spec-editor .env-row:last-of-type input[name=envValue]', 'hello-from-the-browser');
  await shot('deployments-editor.png');
  await page.click('#spec-editor button[data-action=spec-save]');
  await waitText(page, '#spec-chip', 'Configured');
  await waitText(page, '#spec-source', data.sourceDir);

  await page.click('#dep-header button[data-action=dep-start]');
  await page.waitForURL(/\?run=/);
  const run = new URL(page.url()).searchParams.get('run');
  await page.locator('#log-lines li').first().waitFor({ timeout: 60_000 });
  await waitText(page, '#dep-status .chip', 'ready', 90_000);
  await page.locator('#log-lines li .msg', { hasText: 'hello-from-the-browser' }).waitFor();
  const lines = await page.locator('#log-lines li').count();
  const url = await page.getAttribute('#dep-url a', 'href');
  check(url && url.startsWith('http://'), `the ready run shows its URL (${url})`);
  const served = await (await fetch(url)).text();
  check(served.includes(data.marker), 'the URL serves the site');
  check((await page.textContent('#dep-commands')).includes(data.startCommand), 'the commands are shown');
  check((await page.textContent(`li[data-dep-run="${run}"]`)).includes('sha_'), 'the runs list shows the snapshot hash');
  await shot('deployments-ready.png');

  await page.click('#dep-info button[data-action=dep-stop]');
  await waitText(page, '#dep-status .chip', 'stopped', 60_000);
  await shot('deployments-stopped.png');
  return { run, url, lines };
});
