// A relying party driven by the Python tests over stdin/stdout (one JSON object per line).
// Step 1 ("start"): discovery, PKCE and nonce, prints the authorization URL.
// Step 2 ("finish"): code exchange and ID token validation by openid-client, prints the claims.
import * as client from 'openid-client';
import { createInterface } from 'node:readline';

const [issuer, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin });
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

const config = await client.discovery(new URL(issuer), clientId, undefined,
  client.ClientSecretBasic(clientSecret), { execute: [client.allowInsecureRequests] });
const verifier = client.randomPKCECodeVerifier();
const nonce = client.randomNonce();
const state = client.randomState();
const challenge = await client.calculatePKCECodeChallenge(verifier);
out({ url: client.buildAuthorizationUrl(config, {
  redirect_uri: redirectUri, scope: 'openid profile rpps', code_challenge: challenge,
  code_challenge_method: 'S256', nonce, state,
}).href });

for await (const line of lines) {
  try {
    const tokens = await client.authorizationCodeGrant(config, new URL(line.trim()), {
      pkceCodeVerifier: verifier, expectedNonce: nonce, expectedState: state,
      idTokenExpected: true,
    });
    const userinfo = await client.fetchUserInfo(config, tokens.access_token,
      tokens.claims().sub);
    out({ claims: tokens.claims(), userinfo });
  } catch (error) {
    out({ error: String(error && (error.code || error.message) || error) });
  }
  break;
}
process.exit(0);
