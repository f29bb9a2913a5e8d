"""`stratus`: one module per command group, thin over the services (or, later, the API)."""
