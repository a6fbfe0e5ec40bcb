"""The web apps: nurse, response center, resident portal, administration."""
