#!/usr/bin/env node
// Render the mermaid diagrams of a Markdown file in headless Chromium (the npm `mermaid`
// package, pinned in package-lock.json), as GitHub would, and save each as a PNG.
//
//   node browser/mermaid.cjs README.md OUTDIR
//
// Prints a JSON report: one entry per diagram with `ok`, `error`, the SVG size and the PNG path.
// Exit code 0 when every diagram rendered, 1 otherwise, 2 on bad usage.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

async function main() {
  const [markdown, out] = process.argv.slice(2);
  if (!markdown || !out) {
    process.stderr.write('usage: mermaid.cjs FILE.md OUTDIR\n');
    process.exit(2);
  }
  const text = fs.readFileSync(markdown, 'utf8');
  const diagrams = [...text.matchAll(/^```mermaid\n([\s\S]*?)^```/gm)].map((m) => m[1]);
  fs.mkdirSync(out, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-stac-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.TESSERA_STAC_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    viewport: { width: 1400, height: 900 },
  });
  const report = [];
  try {
    const page = context.pages()[0] || (await context.newPage());
    await page.setContent('<!doctype html><html><body><div id="out"></div></body></html>');
    await page.addScriptTag({ path: require.resolve('mermaid/dist/mermaid.min.js') });
    await page.evaluate(() => window.mermaid.initialize({ startOnLoad: false, securityLevel: 'strict' }));
    for (const [index, code] of diagrams.entries()) {
      const result = await page.evaluate(async ([id, source]) => {
        try {
          const { svg } = await window.mermaid.render(id, source);
          document.getElementById('out').innerHTML = svg;
          const box = document.querySelector('#out svg').getBoundingClientRect();
          const labels = document.querySelectorAll('#out svg .node').length;
          return { ok: true, width: box.width, height: box.height, nodes: labels };
        } catch (err) {
          return { ok: false, error: String(err && err.message ? err.message : err) };
        }
      }, [`diagram${index}`, code]);
      if (result.ok) {
        result.png = path.join(out, `diagram-${index + 1}.png`);
        await page.locator('#out svg').screenshot({ path: result.png });
      }
      report.push(result);
    }
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  process.exit(report.every((r) => r.ok) ? 0 : 1);
}

main().catch((err) => {
  process.stderr.write(`mermaid.cjs failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
