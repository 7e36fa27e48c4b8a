// Generates tests/data/envelope-vectors.json with Node's own crypto, following
// llxprt-code's documented envelope format (scrypt N=16384 r=8 p=1, AES-256-GCM,
// data = base64(salt || iv || tag || ciphertext)). The Rust tests decode these
// vectors and re-encode them byte for byte, so the two implementations are
// checked against each other, not against themselves.
// Run: node scripts/make-envelope-vectors.js > tests/data/envelope-vectors.json
'use strict';
const crypto = require('node:crypto');

const hostname = 'credd-vector-host';
const username = 'alice';
const machineId = crypto.createHash('sha256').update(hostname + username).digest('hex');
const secret = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
const salt = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
const iv = Buffer.from('a0a1a2a3a4a5a6a7a8a9aaab', 'hex');

function seal(version, service, plaintext) {
  const kdfInput = version === 1
    ? `${service}-${machineId}`
    : `${secret.toString('hex')}|${service}|${machineId}`;
  const key = crypto.scryptSync(kdfInput, salt, 32, { N: 16384, r: 8, p: 1 });
  const cipher = crypto.createCipheriv('aes-256-gcm', key, iv);
  const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  const tag = cipher.getAuthTag();
  return JSON.stringify({
    v: version,
    crypto: { alg: 'aes-256-gcm', kdf: 'scrypt', N: 16384, r: 8, p: 1, saltLen: 16 },
    data: Buffer.concat([salt, iv, tag, ct]).toString('base64'),
  });
}

const token = JSON.stringify({
  access_token: 'vector-access', refresh_token: 'vector-refresh', expiry: 1893456000,
  token_type: 'Bearer', account_id: 'acct-ü', id_token: 'x.y.z',
});
const vectors = {
  hostname, username, machineId,
  machineSecretBase64: secret.toString('base64'),
  saltHex: salt.toString('hex'), ivHex: iv.toString('hex'),
  cases: [
    { version: 1, service: 'llxprt-code-oauth', plaintext: token, envelope: seal(1, 'llxprt-code-oauth', token) },
    { version: 2, service: 'llxprt-code-oauth', plaintext: token, envelope: seal(2, 'llxprt-code-oauth', token) },
    { version: 2, service: 'llxprt-code-provider-keys', plaintext: 'sk-vector-key', envelope: seal(2, 'llxprt-code-provider-keys', 'sk-vector-key') },
    { version: 1, service: 'llxprt-code-provider-keys', plaintext: '', envelope: seal(1, 'llxprt-code-provider-keys', '') },
  ],
};
process.stdout.write(JSON.stringify(vectors, null, 2) + '\n');
