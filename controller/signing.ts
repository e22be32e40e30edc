import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { UsageError } from '../lib/errors.js';

// Signed commits: the commit to deploy must carry an SSH signature (`git commit -S` with
// gpg.format=ssh) that `ssh-keygen -Y verify` accepts against an allowed-signers file on
// the controller host, for the committer's email, in git's namespace. Anything else
// (unsigned, a PGP signature, an unknown key, another principal, a damaged signature)
// fails closed. The policy never comes from the commit being verified.

export type SignatureCheck = { ok: true; detail: string } | { ok: false; reason: string };

const SSH_SIGNATURE = '-----BEGIN SSH SIGNATURE-----';

/**
 * Splits a raw commit object into what was signed and the signature: git signs the
 * object without its `gpgsig` header (whose value continues on lines starting with a
 * space). isomorphic-git's `payload` only strips PGP signatures, hence this.
 */
export function splitSignedCommit(raw: Buffer): { payload: Buffer; signature?: string } {
  const text = raw.toString('utf8');
  const end = text.indexOf('\n\n');
  const headers = (end < 0 ? text : text.slice(0, end)).split('\n');
  const kept: string[] = [];
  let sig: string[] | undefined;
  let inSig = false;
  for (const line of headers) {
    if (line.startsWith('gpgsig ')) {
      sig = [line.slice('gpgsig '.length)];
      inSig = true;
    } else if (inSig && line.startsWith(' ')) {
      sig!.push(line.slice(1));
    } else {
      inSig = false;
      kept.push(line);
    }
  }
  const payload = kept.join('\n') + (end < 0 ? '' : text.slice(end));
  return { payload: Buffer.from(payload, 'utf8'), signature: sig?.join('\n') };
}

/** Fails when the file is missing or lists nobody: an empty policy is a mistake, never "allow all". */
export async function checkSignersFile(file: string): Promise<void> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`failed to read the allowed-signers file ${file}: ${(err as NodeJS.ErrnoException).code ?? err} (watch.signers, or --signers)`, {
      step: 'verify signature',
      input: file,
    });
  }
  if (!text.split('\n').some((l) => l.trim() && !l.trim().startsWith('#'))) {
    throw new UsageError(`the allowed-signers file ${file} lists no signer: refusing every commit rather than allowing all; add "EMAIL ssh-ed25519 AAAA…" lines`, {
      step: 'verify signature',
      input: file,
    });
  }
}

export async function verifyCommit(raw: Buffer, committerEmail: string, signersFile: string): Promise<SignatureCheck> {
  await checkSignersFile(signersFile);
  const { payload, signature } = splitSignedCommit(raw);
  if (!signature) return { ok: false, reason: 'the commit is not signed' };
  if (!signature.startsWith(SSH_SIGNATURE)) return { ok: false, reason: 'the commit carries a signature that is not an SSH signature (gpg.format=ssh)' };
  const dir = await mkdtemp(join(tmpdir(), 'ramboot-verify-'));
  try {
    const sigFile = join(dir, 'commit.sig');
    await writeFile(sigFile, `${signature}\n`);
    const r = await execa('ssh-keygen', ['-Y', 'verify', '-f', signersFile, '-I', committerEmail, '-n', 'git', '-s', sigFile], {
      input: payload,
      reject: false,
      all: true,
    });
    const out = String(r.all ?? '').trim();
    if (r.exitCode === 0) return { ok: true, detail: out };
    return { ok: false, reason: `the signature does not verify for ${committerEmail} against ${signersFile}: ${out.split('\n')[0] || `ssh-keygen exited with ${r.exitCode}`}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
