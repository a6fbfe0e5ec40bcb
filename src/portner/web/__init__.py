"""Portner as a service: the HTTP API and the web apps (FastAPI, server-rendered pages)."""
