// A real OpenID provider for Portner's tests: the `oidc-provider` package (v9) on loopback.
//
//   node oidc-provider.mjs CONFIG.json [PORT]      (PORT also from $OIDC_PORT; 0 or none = any)
//
// Prints one JSON line {"issuer": ..., "url": ...} on stdout once it accepts requests (url is where
// it listens; it differs from the issuer only for a twin, see below). CONFIG.json:
//   issuer               optional; default http://127.0.0.1:<port> (a test may start a twin that
//                        claims another provider's issuer, to see that the tokens are refused)
//   web_clients          [{client_id, client_secret, redirect_uris}]: confidential web apps,
//                        client_secret_basic, authorization code with PKCE
//   integration_clients  [{client_id, jwks: {keys: [public JWKs]}, scope}]: private_key_jwt,
//                        client_credentials, only these scopes
//   resources            {indicator: scope string}: resource servers; access tokens for them are
//                        JWTs (RFC 9068) whose aud is the indicator. The first is the default.
//   users                {login: display name}: any login name signs in (it becomes the subject);
//                        the map only supplies the `name` claim
//   signing_jwks         optional private JWKS; default: an RSA key generated at start
//   ttl                  optional {AccessToken, ClientCredentials, IdToken, ...} in seconds
//   clock_offset_seconds optional; shifts the provider's clock (a twin that issues expired tokens)
//
// Sign-in uses the package's development interactions: a form that takes any login name. Consent
// is implied for the registered clients (they are the municipality's own), so the form is the
// only page a person sees.

import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

const [configPath, portArg] = process.argv.slice(2);
if (!configPath) {
  console.error('usage: node oidc-provider.mjs CONFIG.json [PORT]');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));

if (config.clock_offset_seconds) {
  // Everything in oidc-provider (and jose underneath) reads the time through Date.now.
  const realNow = Date.now;
  Date.now = () => realNow() + config.clock_offset_seconds * 1000;
}

const { default: Provider, errors } = await import('oidc-provider');

function signingKeys() {
  if (config.signing_jwks) return config.signing_jwks;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: randomUUID(), use: 'sig', alg: 'RS256' }] };
}

const resources = config.resources ?? {};
const defaultIndicator = Object.keys(resources)[0];
const users = config.users ?? {};
const ttl = { AccessToken: 300, ClientCredentials: 300, IdToken: 300, AuthorizationCode: 60,
  Interaction: 600, Session: 3600, Grant: 3600, ...(config.ttl ?? {}) };

const clients = [
  ...(config.web_clients ?? []).map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'openid profile',
  })),
  ...(config.integration_clients ?? []).map((c) => ({
    client_id: c.client_id,
    jwks: c.jwks,
    scope: c.scope,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'private_key_jwt',
  })),
];

// Listen first, so that port 0 works: the issuer needs the port.
const server = createServer();
await new Promise((resolve) => server.listen(Number(portArg ?? process.env.OIDC_PORT ?? 0), '127.0.0.1', resolve));
const url = `http://127.0.0.1:${server.address().port}`;
const issuer = config.issuer ?? url;

const scopes = new Set(['openid', 'profile', ...Object.values(resources).join(' ').split(' ').filter(Boolean)]);

const provider = new Provider(issuer, {
  clients,
  scopes: [...scopes],
  jwks: signingKeys(),
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  ttl,
  claims: { openid: ['sub'], profile: ['name'] },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: false },
    revocation: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf ?? defaultIndicator,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (!(indicator in resources)) throw new errors.InvalidTarget();
        return {
          scope: resources[indicator],
          audience: indicator,
          accessTokenTTL: ttl.AccessToken,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  async findAccount(_ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, name: users[sub] ?? sub };
      },
    };
  },
  // Consent is implied: grant what the registered client asked for.
  async loadExistingGrant(ctx) {
    const { client, session, params } = ctx.oidc;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ accountId: session.accountId, clientId: client.clientId });
    grant.addOIDCScope(String(params.scope ?? 'openid'));
    grant.addOIDCClaims(['name']);
    await grant.save();
    return grant;
  },
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
});

server.on('request', provider.callback());
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.stdout.write(`${JSON.stringify({ issuer, url })}\n`);
