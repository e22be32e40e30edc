import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRunning } from '../../deploy/running.js';
import { requestReboot, waitUntil } from '../../deploy/reboot.js';
import type { Built } from '../helpers/ramboot.js';
import { startNas, strangerKey, type VirtualNas } from '../helpers/nas.js';

// The deploy protocol of DESIGN.md §4 on the virtual NAS with the Debian example: one
// machine, booted once from a formatted stick, then deployed to again and again. Each
// `it` leaves the machine running a known build from `lts` for the next one.

describe('deploying to the virtual NAS (Debian example)', () => {
  let nas: VirtualNas;
  let current: Built;

  beforeAll(async () => {
    nas = await startNas('deploy e2e');
    current = nas.first;
  }, 20 * 60_000);

  afterAll(async () => {
    await nas?.stop();
  });

  it('6: refuses a machine presenting a different host key before writing anything', async () => {
    const before = await nas.listing();
    // The image says which key the machine must present; this one says a key no machine has.
    const forged = join(nas.work, 'forged');
    cpSync(nas.first.imageDir, forged, { recursive: true });
    const m = JSON.parse(readFileSync(join(forged, 'manifest.json'), 'utf8'));
    m.hostKey = strangerKey();
    m.buildId = `${m.buildId}-forged`;
    writeFileSync(join(forged, 'manifest.json'), JSON.stringify(m));
    const r = await nas.deploy(forged, ['--host-key', strangerKey()]);
    expect(r.code).toBe(11);
    expect(`${r.stdout}${r.stderr}`).toMatch(/host key/i);
    expect(await nas.listing()).toBe(before);
    const now = await nas.running();
    expect(now.slot).toBe('lts');
    expect(now.build).toBe(nas.first.buildId);
  }, 5 * 60_000);

  it('1, 7: promotes a healthy root/-only change, uploading only overlay and secrets; a plain reboot keeps it', async () => {
    const b = await nas.change({ 'root/etc/deploy-test': 'healthy change\n' }, 'a healthy root/ change');
    const r = await nas.deploy(b.imageDir);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/^promoted: /);
    const pct = Number(/sent .* of a .* image, ([\d.]+)%/.exec(r.stdout)?.[1]);
    nas.log(`sent ${pct}% of the image`);
    expect(pct).toBeLessThan(10);
    const table = await nas.slots();
    expect(table.lts?.buildId).toBe(b.buildId);
    expect(table.old?.buildId).toBe(nas.first.buildId);
    expect(table.new).toBeUndefined();
    // Only the segments that changed went over the wire: base and kernel were on the stick.
    const changed = b.segments.filter((s) => !nas.first.segments.some((p) => p.sha256 === s.sha256));
    expect(changed.map((s) => s.name).sort().join(' ')).toMatch(/overlay/);
    expect(changed.some((s) => /base/.test(s.name))).toBe(false);
    const running = await nas.running();
    expect(running.build).toBe(b.buildId);
    // The plain reboot: lts is the new build now.
    const s = await nas.session();
    const bootId = (await readRunning(s)).bootId;
    await requestReboot(s);
    s.close();
    const t = Date.now();
    const back = await waitUntil(s.target, 6 * 60_000, (x) => x.bootId !== bootId);
    nas.log(`plain reboot back after ${Math.round((Date.now() - t) / 1000)} s`);
    expect(back.running?.slot).toBe('lts');
    expect(back.running?.build).toBe(b.buildId);
    expect(back.running?.cmdlineBuild).toBe(b.buildId);
    current = b;
  }, 20 * 60_000);

  it('2: rolls back a change whose health check fails, naming the check and showing its output', async () => {
    const good = current;
    nas.settings({ checks: [{ name: 'marker present', cmd: 'ls /nonexistent-marker', retries: 1, period: '5s' }] });
    const b = await nas.change({ 'root/etc/deploy-test': 'unhealthy change\n' }, 'a change whose health check fails');
    const r = await nas.deploy(b.imageDir);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(12);
    expect(r.stdout).toMatch(/trial not healthy/);
    expect(r.stdout).toContain('marker present');
    expect(r.stdout).toMatch(/nonexistent-marker/);
    const running = await nas.running();
    expect(running.slot).toBe('lts');
    expect(running.build).toBe(good.buildId);
    const table = await nas.slots();
    expect(table.lts?.buildId).toBe(good.buildId);
    expect(table.new).toBeUndefined();
  }, 20 * 60_000);

  it('3: a trial whose network never comes up is rebooted into lts by the agent; the verdict says unreachable', async () => {
    const good = current;
    nas.settings({ confirm: '90s' });
    const b = await nas.change(
      { 'root/etc/network/interfaces': 'auto lo\niface lo inet loopback\n\n# broken: no such interface\nauto eth9\niface eth9 inet static\n\taddress 10.0.9.15/24\n' },
      'a change that breaks the network',
    );
    const r = await nas.deploy(b.imageDir);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(13);
    expect(r.stdout).toMatch(/trial unreachable \(rolled back\)/);
    const running = await nas.running();
    expect(running.slot).toBe('lts');
    expect(running.build).toBe(good.buildId);
    expect((await nas.slots()).lts?.buildId).toBe(good.buildId);
    // The controller never reached the trial, so only the agent can have rebooted it: the
    // console shows the trial boot followed by a boot of lts.
    const boots = [...nas.vm.serial().matchAll(/^\[\s*0\.0+\] Command line: .*ramboot\.slot=(\w+) ramboot\.build=(\S+)/gm)].map((m) => `${m[1]} ${m[2]}`);
    expect(boots.slice(-2)).toEqual([`new ${b.buildId}`, `lts ${good.buildId}`]);
    expect(r.stdout).toMatch(/came back on slot lts|did not answer/);
  }, 25 * 60_000);
});
