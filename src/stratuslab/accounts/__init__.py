"""Accounts: users and groups, their credentials (passwords, API keys, sessions,
certificates), and the authentication that turns a request's credentials into a principal."""
