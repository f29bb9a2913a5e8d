"""StratusLab's Marketplace: signed metadata entries about images (identifier, entry, signing),
and the site's trust policy on them (policy, pure; trust, the trust store's files; gate, both
applied to an image about to start).

No store, no routes, no CLI. See docs/architecture.md, "Marketplace".
"""
