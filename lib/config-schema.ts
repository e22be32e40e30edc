import { z } from 'zod';
import { validate as validateCron } from 'node-cron';
import { parseDuration } from './duration.js';
import { isRecipient } from './recipient.js';

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

// distro.* strings reach command lines (mmdebstrap, apk) as arguments of their own:
// whatever a commit writes there must never read as an option ("--setup-hook=…" runs a
// command on the build host) nor smuggle a second line into a file.
const NO_SPACE_OR_CONTROL = /^[^\s\x00-\x1f\x7f]+$/;
const plainName = z.string().regex(/^[a-z0-9][a-z0-9._+-]*$/i, 'must be a plain name: letters, digits, ".", "_", "+" and "-", starting with a letter or digit');

/** A mirror or tarball: an http(s) or file URL, or a path; never an option, no spaces or control characters. */
const location = z.string().refine((v) => NO_SPACE_OR_CONTROL.test(v) && (/^(https?|file):\/\/./.test(v) || (!/^[a-z][a-z0-9+.-]*:/i.test(v) && !v.startsWith('-'))), {
  message: 'must be an http(s) URL (or file:///path) or a path, not starting with "-", without spaces or control characters',
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

// Where notifications go. A token or signing secret is never a value in ramboot.yaml:
// it names a file on the controller host or an environment variable of the controller,
// read when a notification is sent.
const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name');
const hostPath = z.string().refine((p) => p.startsWith('/') || p.startsWith('~/'), { message: 'must be an absolute path on the controller host (or start with ~/)' });
const ownerName = z.string().regex(/^[\w.-]+\/[\w.-]+$/, 'must be "owner/name"');

const tokenRef = { token_file: hostPath.optional(), token_env: envName.optional(), token: z.unknown().optional() };
const secretRef = { secret_file: hostPath.optional(), secret_env: envName.optional(), secret: z.unknown().optional() };

/**
 * A target names its secret by `<key>_file` or `<key>_env` (at most one; exactly one
 * when required). `<key>` itself is accepted by the parser only to be refused with the
 * fix, rather than as an "unknown key".
 */
function namesSecret<O extends z.ZodObject>(target: O, key: 'token' | 'secret', required: boolean): O {
  const [file, env] = [`${key}_file`, `${key}_env`];
  return target
    .refine((o: Record<string, unknown>) => o[key] === undefined, {
      path: [key],
      message: `a ${key} is never written in ramboot.yaml (the repository is not the place for it): name a file on the controller host (${file}) or an environment variable (${env})`,
    })
    .refine((o: Record<string, unknown>) => [o[file], o[env]].filter((v) => v !== undefined).length <= 1 && (!required || o[file] !== undefined || o[env] !== undefined), {
      message: `give the ${key} as ${required ? 'exactly' : 'at most'} one of "${file}" (a path on the controller host) or "${env}" (an environment variable)`,
    });
}

const notify = z
  .object({
    /** The status page's public address (https://nas.example:8180): notifications link to the history entry there. */
    url: z.string().url().optional(),
    github: namesSecret(z.object({ repo: ownerName, url: z.string().url().default('https://api.github.com'), ...tokenRef }).strict(), 'token', true).optional(),
    gitea: namesSecret(z.object({ url: z.string().url(), repo: ownerName, ...tokenRef }).strict(), 'token', true).optional(),
    forgejo: namesSecret(z.object({ url: z.string().url(), repo: ownerName, ...tokenRef }).strict(), 'token', true).optional(),
    /** project: the numeric id or the path ("group/name"). */
    gitlab: namesSecret(
      z.object({ url: z.string().url().default('https://gitlab.com'), project: z.union([z.number().int().positive(), z.string().min(1)]), ...tokenRef }).strict(),
      'token',
      true,
    ).optional(),
    /** A JSON POST of each event, signed (X-Ramboot-Signature) when a secret is named. */
    webhook: namesSecret(z.object({ url: z.string().url(), ...secretRef }).strict(), 'secret', false).optional(),
    ntfy: namesSecret(
      z
        .object({
          url: z.string().url().default('https://ntfy.sh'),
          topic: z.string().regex(/^[-_A-Za-z0-9]{1,64}$/, 'must be an ntfy topic (letters, digits, "-" and "_", at most 64)'),
          ...tokenRef,
        })
        .strict(),
      'token',
      false,
    ).optional(),
  })
  .strict();

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
        release: plainName.optional(),
        mirror: location.optional(),
        arch: plainName.optional(),
        /** Packages need not be signed: for a local repository of one's own packages. */
        allow_untrusted: z.boolean().default(false),
        /**
         * Alpine: public keys apk trusts besides Alpine's own, as files in the repository
         * (e.g. keys/me@example.org-5f1a2b3c.rsa.pub); the file name is the key's name,
         * the one a signed index names. Installed in /etc/apk/keys.
         */
        keys: z.array(z.string().refine((p) => !p.split('/').includes('..') && !p.startsWith('/') && p.length > 0, {
          message: 'must be a path inside the repository, without ".."',
        })).default([]),
        minirootfs: z
          .object({ url: location, sha512: z.string().regex(/^[0-9a-f]{128}$/, 'must be a sha512 hex digest') })
          .strict()
          .optional(),
      })
      .strict()
      .default({ name: 'alpine', allow_untrusted: false, keys: [] }),
    boot: z
      .object({
        medium: z.string().regex(/^\/[^\x00-\x1f\x7f'"\\ ]*$/, 'must be an absolute path without quotes, spaces or control characters').default('/media/usb'),
        /** How the machine boots: BIOS (syslinux, extlinux --once) or UEFI (systemd-boot, boot counting). */
        firmware: z.enum(['bios', 'uefi']).default('bios'),
        kernel: z.string().default('vmlinuz*'),
        ucode: z.string().optional(),
        /** Written into syslinux.cfg's APPEND line: a newline would start a line of its own (DEFAULT …). */
        append: z.string().regex(/^[^\x00-\x1f\x7f]*$/, 'must be one line of kernel parameters, without newlines or control characters').default(''),
      })
      .strict()
      .default({ medium: '/media/usb', firmware: 'bios', kernel: 'vmlinuz*', append: '' }),
    trial: z
      .object({
        confirm_timeout: duration.default(600_000),
        reboot_deadline: duration.default(600_000),
        watchdog: z.boolean().default(false),
        /**
         * The watchdog driver and its options, loaded at the very start of a trial boot
         * (e.g. "i6300esb heartbeat=600", "iTCO_wdt heartbeat=600", "softdog soft_margin=600"):
         * with watchdog, a trial whose kernel or init hangs before the agent runs is reset.
         */
        watchdog_module: z.string().regex(/^[A-Za-z0-9_-]+( [A-Za-z0-9_.,=-]+)*$/, 'must be a module name and its options ("i6300esb heartbeat=600")').optional(),
        power_cycle: z.string().optional(),
      })
      .strict()
      .default({ confirm_timeout: 600_000, reboot_deadline: 600_000, watchdog: false }),
    health: z
      .object({
        deadline: duration.default(300_000),
        /** After the checks, the services are looked at once more, no sooner than this after they first ran: a service that crashes soon after starting fails the trial. */
        settle: duration.default(20_000),
        checks: z.array(healthCheck).default([]),
      })
      .strict()
      .default({ deadline: 300_000, settle: 20_000, checks: [] }),
    secrets: z
      .object({
        recipients: z.array(recipient).default([]),
        identity: z.string().optional(),
        host_key: secretPath.default('etc/ssh/ssh_host_ed25519_key'),
        /** Where the secrets segment keeps them on the medium: in plaintext (0600), or age-encrypted to the machine's TPM-sealed key (secrets/sealed.ts). */
        at_rest: z.enum(['medium', 'tpm']).default('medium'),
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
      .default({ recipients: [], host_key: 'etc/ssh/ssh_host_ed25519_key', at_rest: 'medium', files: {} }),
    skeleton: z
      .object({ owners: z.record(z.string(), z.string().regex(/^\d+:\d+$/, 'must be "uid:gid"')).default({}) })
      .strict()
      .default({ owners: {} }),
    /** What the repository's code (setup.sh, bins/) may reach while it is built. */
    build: z
      .object({
        /** setup.sh gets the network (it runs without one unless this says so). */
        network: z.boolean().default(false),
      })
      .strict()
      .default({ network: false }),
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
    /**
     * How `ramboot up` rolls a commit out to the machines of a repository of several
     * (machines/NAME/): the canary alone first, then the others, `parallel` at a time.
     */
    rollout: z
      .object({
        canary: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be the name of a machine (a directory under machines/)').optional(),
        parallel: z.number().int().min(1).default(1),
      })
      .strict()
      .default({ parallel: 1 }),
    /** Commit statuses on the forge, a signed webhook, ntfy: on each deploy's start and verdict. */
    notify: notify.default({}),
    /** The boot medium's upkeep: when the controller hashes every file its labels name, and repairs what it can. */
    medium: z
      .object({ scrub: cron.default('0 3 * * 0') })
      .strict()
      .default({ scrub: '0 3 * * 0' }),
  })
  .strict();

export type Config = z.output<typeof configSchema>;
export type HealthCheck = Config['health']['checks'][number];
export type SecretSpec = Config['secrets']['files'][string];
export type NotifyConfig = Config['notify'];
