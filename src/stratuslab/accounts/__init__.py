"""Accounts: users and groups, their credentials (passwords, API keys, sessions,
certificates), and the authentication that turns a request's credentials into a principal.

This module imports nothing, so that the CLI's client may take the cookie's name from here
without loading the accounts' services."""

COOKIE = "com.sixsq.slipstream.cookie"  # the session cookie's name, SlipStream's clients' own
