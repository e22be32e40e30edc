import { readFileSync } from 'node:fs';
import { packagePath } from '../lib/package.js';
import type { Config } from '../lib/config-schema.js';

// The trial agent (image/agent/) goes into every image (docs/ARCHITECTURE.md, "Deploy"): an openrc
// service in the boot runlevel that reboots a trial boot into `lts` unless the
// controller confirms it. Deploy's side of the conversation is in deploy/trial.ts.

/** A file the build adds to the image. A symlink's data is its target. */
export interface AgentFile {
  path: string;
  type: 'file' | 'symlink';
  /** Permission bits only. */
  mode: number;
  data: Buffer;
}

export const AGENT_BIN = '/usr/sbin/ramboot-trial';
export const AGENT_INITD = '/etc/init.d/ramboot-trial';
export const AGENT_RUNLEVEL_LINK = '/etc/runlevels/boot/ramboot-trial';
/**
 * Debian's inittab runs `openrc sysinit` (rcS) and then `openrc default` (rc 2): it never
 * enters the boot runlevel, so there the agent starts in sysinit (after openrc mounted /run).
 */
export const AGENT_RUNLEVEL_LINK_DEBIAN = '/etc/runlevels/sysinit/ramboot-trial';

export function agentRunlevelLink(distro: string | undefined): string {
  return distro === 'debian' ? AGENT_RUNLEVEL_LINK_DEBIAN : AGENT_RUNLEVEL_LINK;
}
export const AGENT_CONF = '/etc/ramboot/trial.conf';
/** The image's first process on a trial boot with an early watchdog: it arms it, then runs /init. */
export const EARLY_BIN = '/usr/sbin/ramboot-early';

/** The kernel argument that makes EARLY_BIN the first process: only in images configured for it (an adopted image has no such file). */
export function earlyArgs(trial: Config['trial']): string {
  return trial.watchdog && trial.watchdog_module ? `rdinit=${EARLY_BIN}` : '';
}


/** The agent's files, exactly as they must appear in the image. */
export function agentFiles(config: Pick<Config, 'trial'> & { distro?: { name: string }; boot?: { medium: string } }): AgentFile[] {
  return [
    { path: EARLY_BIN, type: 'file', mode: 0o755, data: readFileSync(packagePath('image/agent/ramboot-early')) },
    { path: AGENT_BIN, type: 'file', mode: 0o755, data: readFileSync(packagePath('image/agent/ramboot-trial')) },
    { path: AGENT_INITD, type: 'file', mode: 0o755, data: readFileSync(packagePath('image/agent/ramboot-trial.initd')) },
    { path: agentRunlevelLink(config.distro?.name), type: 'symlink', mode: 0o777, data: Buffer.from(AGENT_INITD) },
    { path: AGENT_CONF, type: 'file', mode: 0o644, data: Buffer.from(trialConf(config.trial, config.boot?.medium)) },
  ];
}

export const SEALED_BIN = '/usr/sbin/ramboot-sealed';
export const SEALED_INITD = '/etc/init.d/ramboot-secrets';
/** In sysinit on both distributions: before the boot runlevel, whose services may read secrets (a console password). */
export const SEALED_RUNLEVEL_LINK = '/etc/runlevels/sysinit/ramboot-secrets';
export const SEALED_CONF = '/etc/ramboot/sealed/conf';
/** What image/agent/ramboot-sealed runs on the machine: its recovery boot and `seal` need them too. */
export const SEALED_TOOLS = ['tpm2_createprimary', 'tpm2_create', 'tpm2_load', 'tpm2_unseal', 'tpm2_flushcontext', 'age', 'age-keygen', 'cpio', 'ssh-keygen'];

/** The files that unseal secrets at boot (secrets.at_rest: tpm). */
export function sealedFiles(config: Pick<Config, 'secrets'>): AgentFile[] {
  return [
    { path: SEALED_BIN, type: 'file', mode: 0o755, data: readFileSync(packagePath('image/agent/ramboot-sealed')) },
    { path: SEALED_INITD, type: 'file', mode: 0o755, data: readFileSync(packagePath('image/agent/ramboot-secrets.initd')) },
    { path: SEALED_RUNLEVEL_LINK, type: 'symlink', mode: 0o777, data: Buffer.from(SEALED_INITD) },
    {
      path: SEALED_CONF,
      type: 'file',
      mode: 0o644,
      data: Buffer.from(`# Written by ramboot from ramboot.yaml; read by ramboot-sealed.\nHOST_KEY='${config.secrets.host_key}'\n`),
    },
  ];
}

export function trialConf(trial: Config['trial'], medium?: string): string {
  return [
    '# Written by ramboot from ramboot.yaml (trial.*, boot.medium); read by ramboot-trial and ramboot-early.',
    `CONFIRM_TIMEOUT=${Math.ceil(trial.confirm_timeout / 1000)}`,
    `WATCHDOG=${trial.watchdog ? 1 : 0}`,
    ...(trial.watchdog_module ? [`WATCHDOG_MODULE='${trial.watchdog_module}'`] : []),
    ...(medium ? [`MEDIUM='${medium}'`] : []),
    '',
  ].join('\n');
}
