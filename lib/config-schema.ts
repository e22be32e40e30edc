import { z } from 'zod';
import { validate as validateCron } from 'node-cron';
import { parseDuration } from './duration.js';
import { isRecipient } from '../secrets/keys.js';

// The schema of ramboot.yaml. Defaults here are what a user gets when a key is left out.

const duration = z
  .union([z.number(), z.string()])
  .transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration; use seconds or e.g. "30s", "5m", "1h"` });
      return z.NEVER;
    }
    return ms;
  });

const cron = z.string().refine((v) => validateCron(v), { message: 'is not a cron expression (five or six fields, e.g. "*/5 * * * *")' });

const mode = z
  .union([z.string(), z.number()])
  .transform((v, ctx) => {
    const s = String(v);
    if (!/^0?[0-7]{3,4}$/.test(s)) {
      ctx.addIssue({ code: 'custom', message: `"${s}" is not an octal file mode such as "0600"` });
      return z.NEVER;
    }
    return parseInt(s, 8);
  });

// Checked in full (bech32 checksum, ssh wire format, curve point), so a mistyped key is
// reported here with its line rather than when a secret is encrypted.
const recipient = z.string().refine(isRecipient, {
  message: 'must be an age X25519 public key (age1…) or an ssh-ed25519 public key ("ssh-ed25519 AAAA…")',
});

const secretPath = z.string().refine((p) => !p.split('/').includes('..') && !p.startsWith('/') && p.length > 0, {
  message: 'must be a relative path inside the image, without ".."',
});

const healthCheck = z
  .object({
    name: z.string().min(1),
    cmd: z.string().optional(),
    http: z.string().url().optional(),
    status: z.number().int().default(200),
    body: z.string().optional(),
    period: duration.default(5_000),
    timeout: duration.default(10_000),
    retries: z.number().int().min(0).default(3),
  })
  .strict()
  .refine((c) => (c.cmd === undefined) !== (c.http === undefined), {
    message: 'a health check has exactly one of "cmd" (run on the machine) or "http" (fetched by the controller)',
  });

export const configSchema = z
  .object({
    host: z
      .object({
        name: z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9.-]*$/, 'must be a host name'),
        address: z.string().min(1).optional(),
        port: z.number().int().min(1).max(65535).default(22),
        user: z.string().default('root'),
        identity: z.string().optional(),
      })
      .strict(),
    distro: z
      .object({
        name: z.enum(['alpine', 'debian']).default('alpine'),
        release: z.string().optional(),
        mirror: z.string().optional(),
        arch: z.string().optional(),
        /** Packages need not be signed: for a local repository of one's own packages. */
        allow_untrusted: z.boolean().default(false),
        minirootfs: z
          .object({ url: z.string(), sha512: z.string().regex(/^[0-9a-f]{128}$/, 'must be a sha512 hex digest') })
          .strict()
          .optional(),
      })
      .strict()
      .default({ name: 'alpine', allow_untrusted: false }),
    boot: z
      .object({
        medium: z.string().default('/media/usb'),
        kernel: z.string().default('vmlinuz*'),
        ucode: z.string().optional(),
        append: z.string().default(''),
      })
      .strict()
      .default({ medium: '/media/usb', kernel: 'vmlinuz*', append: '' }),
    trial: z
      .object({
        confirm_timeout: duration.default(600_000),
        reboot_deadline: duration.default(600_000),
        watchdog: z.boolean().default(false),
        power_cycle: z.string().optional(),
      })
      .strict()
      .default({ confirm_timeout: 600_000, reboot_deadline: 600_000, watchdog: false }),
    health: z
      .object({
        deadline: duration.default(300_000),
        checks: z.array(healthCheck).default([]),
      })
      .strict()
      .default({ deadline: 300_000, checks: [] }),
    secrets: z
      .object({
        recipients: z.array(recipient).default([]),
        identity: z.string().optional(),
        host_key: secretPath.default('etc/ssh/ssh_host_ed25519_key'),
        files: z
          .record(
            secretPath,
            z
              .object({
                mode: mode.default(0o600),
                owner: z.union([z.string(), z.number()]).default(0),
                group: z.union([z.string(), z.number()]).default(0),
                recipients: z.array(recipient).optional(),
              })
              .strict(),
          )
          .default({}),
      })
      .strict()
      .default({ recipients: [], host_key: 'etc/ssh/ssh_host_ed25519_key', files: {} }),
    skeleton: z
      .object({ owners: z.record(z.string(), z.string().regex(/^\d+:\d+$/, 'must be "uid:gid"')).default({}) })
      .strict()
      .default({ owners: {} }),
    /** How `ramboot up` follows the repository. */
    watch: z
      .object({
        branch: z.string().min(1).default('main'),
        /** When an HTTP(S) remote is polled (node-cron syntax, seconds allowed). */
        poll: cron.default('* * * * *'),
        /** Rebuild the deployed commit with fresh packages; deployed through the same trial when the image changes. */
        refresh: cron.optional(),
        /** An allowed-signers file on the controller host: every deployed commit must carry a good SSH signature from it. */
        signers: z.string().min(1).optional(),
        /** Reconciles kept in the history. */
        history: z.number().int().min(1).default(200),
      })
      .strict()
      .default({ branch: 'main', poll: '* * * * *', history: 200 }),
  })
  .strict();

export type Config = z.output<typeof configSchema>;
export type HealthCheck = Config['health']['checks'][number];
export type SecretSpec = Config['secrets']['files'][string];
