"""The authorization server: who may call the broker's APIs, for which grants, for how long.

Customers consent in the browser (authorization code with PKCE), partners'
back ends authenticate with signed assertions (``private_key_jwt``), and every
API call carries a short-lived JWT access token. All JWT signing and checking
lives in one module, :mod:`broker.oauth.jose` (PyJWT, never ``authlib.jose``);
the signing keys and their rotation live in :mod:`broker.oauth.keys`.

- OAuth 2.0: https://www.rfc-editor.org/rfc/rfc6749
- JWT access tokens: https://www.rfc-editor.org/rfc/rfc9068
- JWT client authentication: https://www.rfc-editor.org/rfc/rfc7523 (section 2.2)
  and https://openid.net/specs/openid-connect-core-1_0.html#ClientAuthentication
- DPoP: https://www.rfc-editor.org/rfc/rfc9449
- JWK and JWK thumbprints: https://www.rfc-editor.org/rfc/rfc7517,
  https://www.rfc-editor.org/rfc/rfc7638
- JWT best current practice: https://www.rfc-editor.org/rfc/rfc8725
"""
