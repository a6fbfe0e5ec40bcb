"""Message catalogs, one module per app (see portner.web.i18n)."""
