#!/usr/bin/env node
// End-to-end look at STAC Browser served by the tessera-stac API, in Debian's headless Chromium
// driven by playwright-core (which never downloads a browser of its own).
//
//   node browser/e2e.cjs --base http://127.0.0.1:PORT --collection ID --item ID --out DIR \
//        [--others ID,ID]   (more collections to find on the landing page and open)
//        [--collection-maps ID,ID]  (of those, the ones whose map must draw: waited for, saved)
//        [--thumbnails no]  (the items have no thumbnails: their images are not waited for)
//        [--maps COLL/ITEM,COLL/ITEM]   (more item pages whose Map view to capture)
//        [--asset-text TEXT]   (an asset of the item to wait for; default: embeddings)
//
// Opens the landing page, the collection and the item; waits for what a person would look for
// (the collection's card, item cards with their thumbnails decoded, the item's assets), saves a
// screenshot of each page in DIR (and of the map area of the collection and item pages, with
// the map tiles they loaded), and prints a JSON report on stdout. Exit code 0 when the run
// completed (the report says what was seen; the caller asserts), 2 on bad usage, 1 on a crash.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

function parseArgs(argv) {
  const args = { timeout: 30000 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    args[key] = argv[i + 1];
  }
  for (const required of ['base', 'collection', 'item', 'out']) {
    if (!args[required]) {
      process.stderr.write(`usage: e2e.cjs --base URL --collection ID --item ID --out DIR (missing --${required})\n`);
      process.exit(2);
    }
  }
  args.base = args.base.replace(/\/$/, '');
  args.timeout = Number(args.timeout);
  return args;
}

// Wait until every <img> matching `selector` (at least `min`) has loaded and decoded.
async function imagesLoaded(page, selector, min, timeout) {
  try {
    await page.waitForFunction(
      ([sel, n]) => {
        const imgs = Array.from(document.querySelectorAll(sel));
        return imgs.length >= n && imgs.every((img) => img.complete && img.naturalWidth > 0);
      },
      [selector, min],
      { timeout },
    );
  } catch (err) {
    // fall through: the report says what was (not) loaded
  }
  return page.$$eval(selector, (imgs) => imgs.map((img) => ({
    src: img.currentSrc || img.src,
    loaded: img.complete && img.naturalWidth > 0,
    width: img.naturalWidth,
    height: img.naturalHeight,
  })));
}

// Open `url` and wait for `locator(page)` to be visible; report whether it appeared.
async function visit(page, url, locator, timeout) {
  const started = Date.now();
  const response = await page.goto(url, { waitUntil: 'domcontentloaded', timeout });
  let found = true;
  try {
    await locator(page).first().waitFor({ state: 'visible', timeout });
  } catch (err) {
    found = false;
  }
  return { url, status: response ? response.status() : null, found, visit_ms: Date.now() - started };
}

// Wait for the map of the page to draw: a tile (or image) answered for it, then a quiet moment;
// save the map element's screenshot as NAME-map.png and report what it loaded.
async function captureMap(page, out, name, tiles, timeout) {
  const map = page.locator('.map-container .map').first();
  const started = Date.now();
  const result = { map: false };
  try {
    await map.waitFor({ state: 'visible', timeout });
    result.map = true;
  } catch (err) {
    return result;
  }
  const deadline = Date.now() + timeout;
  while (tiles.length === 0 && Date.now() < deadline) {
    await page.waitForTimeout(250);
  }
  try {
    await page.waitForLoadState('networkidle', { timeout: Math.max(1000, deadline - Date.now()) });
  } catch (err) {
    // a basemap that never loads (no internet) must not block the capture
  }
  await page.waitForTimeout(1500);
  result.tiles = tiles.slice(0, 50);
  result.map_screenshot = path.join(out, `${name}-map.png`);
  await map.screenshot({ path: result.map_screenshot });
  result.map_ms = Date.now() - started;
  return result;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  fs.mkdirSync(args.out, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-stac-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.TESSERA_STAC_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 900 },
  });
  const report = { failed_requests: [], console_errors: [], pages: {} };
  const page = context.pages()[0] || (await context.newPage());
  const sameOrigin = (u) => u.startsWith(args.base);
  page.on('response', (r) => {
    if (r.status() >= 400 && sameOrigin(r.url())) report.failed_requests.push(`${r.status()} ${r.url()}`);
  });
  page.on('requestfailed', (r) => {
    // a request the page itself aborted (navigating on) is no failure of the server
    const aborted = /ERR_ABORTED/.test((r.failure() || {}).errorText || '');
    if (sameOrigin(r.url()) && !aborted) report.failed_requests.push(`failed ${r.url()}`);
  });
  page.on('console', (m) => { if (m.type() === 'error') report.console_errors.push(m.text()); });
  // map imagery answered by our API (tiles, overlays, COGs), per page visit
  let tiles = [];
  page.on('response', (r) => {
    const u = r.url();
    if (sameOrigin(u) && r.status() === 200 && (/\/tiles\/.*\/\d+\/\d+\/\d+/.test(u) || /\/data\/.*\.(png|tif)$/.test(u))) {
      tiles.push(u);
    }
  });
  try {
    const browser = `${args.base}/browser`;
    const shot = async (name) => {
      const file = path.join(args.out, `${name}.png`);
      await page.screenshot({ path: file, fullPage: true });
      return file;
    };
    // 1. landing page: the embedding collection is listed
    const landing = await visit(page, `${browser}/`, (p) => p.locator(`a[href$="/collections/${args.collection}"]`), args.timeout);
    landing.screenshot = await shot('1-landing');
    report.pages.landing = landing;
    // 2. the collection: item cards with their thumbnails decoded, its map drawn
    tiles = [];
    const coll = await visit(page, `${browser}/collections/${args.collection}`, (p) => p.locator(`a[href$="/items/${args.item}"]`), args.timeout);
    // (--thumbnails no: the items have none, so nothing is waited for)
    const thumbnails = args.thumbnails !== 'no';
    const thumbsStarted = Date.now();
    coll.thumbnails = await imagesLoaded(page, `.card img`, thumbnails ? 1 : 0, args.timeout);
    coll.thumbnails_ms = Date.now() - thumbsStarted;
    coll.cards = await page.$$eval('.card a[href*="/items/"]', (as) => as.map((a) => a.getAttribute('href')));
    Object.assign(coll, await captureMap(page, args.out, '2-collection', tiles, args.timeout));
    coll.screenshot = await shot('2-collection');
    report.pages.collection = coll;
    // 3. the item: its assets listed, its thumbnail/preview decoded
    tiles = [];
    const item = await visit(page, `${browser}/collections/${args.collection}/items/${args.item}`, (p) => p.locator('.assets').getByText(args['asset-text'] || 'embeddings', { exact: false }), args.timeout);
    Object.assign(item, await captureMap(page, args.out, '3-item', tiles, args.timeout));
    // the item's preview sits in the "Thumbnails" tab beside the map: open it
    const tab = page.getByRole('tab', { name: 'Thumbnails' });
    try {
      await tab.first().waitFor({ state: 'visible', timeout: thumbnails ? args.timeout : 1000 });
      item.thumbnails_tab = true;
    } catch (err) {
      item.thumbnails_tab = false;
    }
    if (item.thumbnails_tab) {
      await tab.first().click();
      try {
        await page.locator('.tab-pane.active img').first().waitFor({ state: 'visible', timeout: args.timeout });
      } catch (err) {
        // reported below
      }
    }
    const imagesStarted = Date.now();
    item.images = await imagesLoaded(page, 'img', thumbnails ? 1 : 0, args.timeout);
    item.images_ms = Date.now() - imagesStarted;
    item.visible_images = await page.$$eval('img', (imgs) => imgs
      .filter((img) => img.complete && img.naturalWidth > 0 && img.getBoundingClientRect().width > 0)
      .map((img) => img.currentSrc || img.src));
    item.text = (await page.innerText('body')).slice(0, 4000);
    item.screenshot = await shot('3-item');
    report.pages.item = item;
    // 4. other collections (e.g. the CoRE Stack ones): listed on the landing page and opening
    const others = (args.others || '').split(',').filter(Boolean);
    const collectionMaps = (args['collection-maps'] || '').split(',').filter(Boolean);
    for (const [index, id] of others.entries()) {
      const listed = await visit(page, `${browser}/`, (p) => p.locator(`a[href$="/collections/${id}"]`), args.timeout);
      tiles = [];
      const opened = await visit(page, `${browser}/collections/${id}`, (p) => p.locator('a[href*="/items/"]'), args.timeout);
      opened.listed_on_landing = listed.found;
      // the ones named in --collection-maps: their map drawn (tiles answered) before the shot
      if (collectionMaps.includes(id)) {
        Object.assign(opened, await captureMap(page, args.out, `${4 + index}-collection-${id}`, tiles, args.timeout));
      }
      opened.screenshot = await shot(`${4 + index}-collection-${id}`);
      report.pages[`collection ${id}`] = opened;
    }
    // 5. more item pages (the join, the MWS layer): their Map view
    const maps = (args.maps || '').split(',').filter(Boolean);
    for (const ref of maps) {
      const [cid, iid] = ref.split('/');
      tiles = [];
      const visited = await visit(page, `${browser}/collections/${cid}/items/${iid}`, (p) => p.locator('.map-container'), args.timeout);
      Object.assign(visited, await captureMap(page, args.out, `item-${cid}`, tiles, args.timeout));
      visited.screenshot = await shot(`item-${cid}`);
      report.pages[`item ${cid}`] = visited;
    }
    // 6. the API documentation (Swagger UI, served by the API itself)
    const docs = await visit(page, `${args.base}/api.html`, (p) => p.locator('.swagger-ui .info .title'), args.timeout);
    docs.screenshot = await shot('api-docs');
    report.pages.docs = docs;
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(report, null, 2) + '\n');
}

main().catch((err) => {
  process.stderr.write(`e2e failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
