import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { PACKAGE_ROOT } from '../../lib/package.js';

// Debian's Chromium (apt: chromium) driven by playwright-core, which downloads no
// browser: a fresh, empty profile per context, no network but what the page asks for.

export const CHROMIUM = '/usr/bin/chromium';
/** Screenshots and other things a person may want to look at after a run (git-ignored). */
export const ARTIFACTS = join(PACKAGE_ROOT, 'test-artifacts');

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

export async function launchBrowser(o: { javaScript?: boolean; viewport?: { width: number; height: number } } = {}): Promise<Browser> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'ramboot-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    javaScriptEnabled: o.javaScript ?? true,
    viewport: o.viewport ?? { width: 1280, height: 900 },
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
