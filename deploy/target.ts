import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import type { DeploySettings } from '../image/manifest.js';
import { UsageError } from '../lib/errors.js';
import type { Target } from './ssh.js';

// The machine an image goes to: the commit's `host` settings (from the manifest) with
// what is local to the controller laid over them: another address or port (the virtual
// NAS's forwarded port), the controller's own SSH key, a way to power-cycle it.

export interface LocalSettings {
  address?: string;
  port?: number;
  /** The controller's SSH key; default host.identity, then ~/.ssh/id_ed25519. */
  identity?: string;
  powerCycle?: Target['powerCycle'];
}

/** The target of the settings an image carries (manifest.settings), with the local settings laid over them. */
export function targetFor(settings: DeploySettings, local: LocalSettings = {}): Omit<Target, 'hostKey'> {
  const h = settings.host;
  return {
    name: h.name,
    address: local.address ?? h.address ?? h.name,
    port: local.port ?? h.port,
    user: h.user,
    identityFile: identityFile(local.identity ?? h.identity),
    powerCycle: local.powerCycle ?? settings.trial.power_cycle,
  };
}

function identityFile(configured: string | undefined): string {
  if (configured) {
    const expanded = configured.startsWith('~/') ? join(homedir(), configured.slice(2)) : configured;
    if (!isAbsolute(expanded)) {
      throw new UsageError(`failed to find the SSH key ${configured}: host.identity must be an absolute path or start with ~/ (or pass --identity)`, {
        step: 'load config',
        input: configured,
      });
    }
    return expanded;
  }
  const fallback = join(homedir(), '.ssh', 'id_ed25519');
  if (!existsSync(fallback)) {
    throw new UsageError(`failed to find an SSH key for the machine: set host.identity in ramboot.yaml or pass --identity (${fallback} does not exist)`, {
      step: 'load config',
    });
  }
  return fallback;
}
