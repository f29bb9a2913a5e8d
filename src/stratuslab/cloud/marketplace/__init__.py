"""StratusLab's Marketplace: signed metadata entries about images (identifier, entry, signing).

Pure: no store, no routes, no CLI. See docs/architecture.md, "Marketplace".
"""
