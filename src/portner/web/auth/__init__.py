"""Sign-in: the OpenID Connect adapter, and the development sign-in."""
