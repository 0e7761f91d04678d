// The Node.js peer of bench/run.py: oidc-provider, in-memory adapter (its default), one
// confidential client (client_credentials + refresh_token), keys generated at start, no logs.
// Prints one JSON line on stdout once listening: {"ready": true, "refresh_token": "..."}.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 3000);
const issuer = `http://127.0.0.1:${port}`;
const clientId = process.env.CLIENT_ID || 'bench';
const clientSecret = process.env.CLIENT_SECRET || 'bench-secret';

const jwk = (key, kid) => ({ ...key.export({ format: 'jwk' }), kid, use: 'sig' });
const es = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
const rs = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      grant_types: ['client_credentials', 'refresh_token', 'authorization_code'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1:9999/callback'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
      scope: 'openid offline_access api',
    },
  ],
  jwks: { keys: [jwk(rs, 'rs'), jwk(es, 'es')] },
  scopes: ['openid', 'offline_access', 'api'],
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: true },
  },
  // Refresh tokens are not rotated, so one token serves the whole run.
  rotateRefreshToken: () => false,
  ttl: { Grant: 86400, RefreshToken: 86400, AccessToken: 600, ClientCredentials: 600 },
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
});
provider.on('server_error', (_ctx, err) => process.stderr.write(`${err.stack}\n`));

// A refresh token minted through the provider's own models (as a completed
// authorization code flow with offline_access would leave one).
async function mintRefreshToken() {
  const client = await provider.Client.find(clientId);
  const accountId = `account-${randomBytes(4).toString('hex')}`;
  const grant = new provider.Grant({ accountId, clientId });
  grant.addOIDCScope('openid offline_access');
  const grantId = await grant.save();
  const token = new provider.RefreshToken({
    accountId,
    client,
    grantId,
    scope: 'openid offline_access',
    gty: 'authorization_code',
    authTime: Math.floor(Date.now() / 1000),
  });
  return token.save();
}

provider.listen(port, '127.0.0.1', async () => {
  const refreshToken = await mintRefreshToken();
  process.stdout.write(`${JSON.stringify({ ready: true, refresh_token: refreshToken })}\n`);
});
